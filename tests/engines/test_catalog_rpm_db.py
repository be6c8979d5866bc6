"""RPM Berkeley DB (`Packages`) and ndb (`Packages.db`) databases, read without libdb or librpm.

Fixtures are real, made here in the test: packages built by rpmbuild, installed (`--justdb`) by
Debian's rpm 4.18 into a sqlite rpmdb whose header blobs db5.3_load writes into Berkeley DB hash
files (both byte orders; 512-byte pages so big headers span overflow chains, 64 KiB pages so
small ones sit inline), and by rpm 4.16 built with the ndb backend (PyPI rpm-inspector-rpm) into
an ndb `Packages.db`. What cloudward reads must equal what `rpm -qa` reads from the same files.
Hostile variants are made by editing those real files at the places the format defines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import sqlite3
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudward.engines.catalog import CatalogError, DirectoryView, catalog
from cloudward.engines.catalog.rpm_bdb import read_bdb_blobs
from cloudward.engines.catalog.rpm_ndb import read_ndb_blobs

AMZN2 = ('NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2"\n'
         'PRETTY_NAME="Amazon Linux 2"\n')
DPKG_STATUS = "Package: other\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n"
QF = "%{NAME}|%{EPOCHNUM}|%{VERSION}|%{RELEASE}|%{ARCH}|%{SOURCERPM}|%{LICENSE}\\n"
# (name, epoch, version, release, licence, arch, description bytes): the last one's header (~30 KB)
# is many 512-byte pages long.
SPECS = (
    ("cloudward-hello", "2", "1.2.3", "4.amzn2", "MIT AND Apache-2.0", "noarch", 0),
    ("tiny", None, "0.1", "1", "GPLv2+", "x86_64", 0),
    ("bigdesc", "1", "10.0.1", "7.el7", "BSD", "x86_64", 30000),
)


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _ndb_rpm() -> list[str]:
    """rpm 4.16 with the ndb backend, from the rpm-inspector-rpm wheel (installed by scripts/setup)."""
    spec = importlib.util.find_spec("rpm_inspector_rpm")
    assert spec and spec.submodule_search_locations, "rpm-inspector-rpm missing: run scripts/setup"
    bindir = Path(next(iter(spec.submodule_search_locations))) / "bin"
    return [str(bindir / "rpm"), "--rcfile", str(bindir / "rpmrc")]


def _build_rpms(work: Path) -> list[Path]:
    for name, epoch, version, release, lic, arch, big in SPECS:
        desc = "\n".join(f"line {i} of a long description, word {i * 7919 % 10007}" for i in range(big // 50))
        (work / f"{name}.spec").write_text(
            f"Name: {name}\n" + (f"Epoch: {epoch}\n" if epoch else "")
            + f"Version: {version}\nRelease: {release}\nSummary: test\nLicense: {lic}\nBuildArch: {arch}\n"
            f"%description\n{desc or 'test'}\n%files\n"
        )
        _run("rpmbuild", "--quiet", "--define", f"_topdir {work}/top", "--target", "x86_64", "-bb",
             str(work / f"{name}.spec"))
    return sorted((work / "top" / "RPMS").rglob("*.rpm"))


def _install_args(dbpath: Path, rpms: list[Path]) -> list[str]:
    return ["--dbpath", str(dbpath), "-i", "--justdb", "--nodeps", "--nosignature", "--ignoreos", "--ignorearch",
            *map(str, rpms)]


def _sqlite_db(work: Path, rpms: list[Path]) -> Path:
    db = work / "sqlite"
    _run("rpm", "--define", "_db_backend sqlite", "--dbpath", str(db), "--initdb")
    _run("rpm", "--define", "_db_backend sqlite", *_install_args(db, rpms))
    conn = sqlite3.connect(db / "rpmdb.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file
    conn.close()
    return db / "rpmdb.sqlite"


def _bdb(work: Path, name: str, blobs: list[tuple[int, bytes]], *, big_endian: bool, page_size: int) -> Path:
    """A real Berkeley DB hash file written by db5.3_load from rpm's own header blobs, key 0 the counter."""
    order = ">" if big_endian else "<"
    lines = ["VERSION=3", "format=bytevalue", "type=hash", f"db_lorder={4321 if big_endian else 1234}",
             f"db_pagesize={page_size}", "HEADER=END",
             " " + struct.pack(order + "I", 0).hex(), " " + struct.pack(order + "I", len(blobs) + 1).hex()]
    for hnum, blob in blobs:
        lines += [" " + struct.pack(order + "I", hnum).hex(), " " + blob.hex()]
    dump = work / f"{name}.dump"
    dump.write_text("\n".join([*lines, "DATA=END", ""]))
    out = work / name / "Packages"
    out.parent.mkdir()
    _run(shutil.which("db5.3_load") or "db_load", "-f", str(dump), str(out))
    return out


def _query(argv: list[str], dbpath: Path, backend: str) -> set[str]:
    return set(_run(*argv, "--define", f"_db_backend {backend}", "--dbpath", str(dbpath), "-qa", "--qf", QF)
               .splitlines())


@dataclass
class Fixtures:
    sqlite: Path
    bdb: dict[str, Path]  # le512, be512, le64k, tiny_only
    ndb: Path
    expected: set[str]  # rpm -qa lines of the sqlite database


@pytest.fixture(scope="session")
def rpmdbs(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    work = tmp_path_factory.mktemp("rpmdb")
    rpms = _build_rpms(work)
    sqlite = _sqlite_db(work, rpms)
    with sqlite3.connect(sqlite) as conn:
        blobs = [(int(h), bytes(b)) for h, b in conn.execute("SELECT hnum, blob FROM Packages ORDER BY hnum")]
    bdb = {
        "le512": _bdb(work, "le512", blobs, big_endian=False, page_size=512),
        "be512": _bdb(work, "be512", blobs, big_endian=True, page_size=512),
        "le64k": _bdb(work, "le64k", blobs, big_endian=False, page_size=65536),
    }
    tiny = [(h, b) for h, b in blobs if b"tiny" in b and b"bigdesc" not in b and b"cloudward-hello" not in b]
    bdb["tiny_only"] = _bdb(work, "tiny_only", tiny, big_endian=False, page_size=4096)
    ndb_dir = work / "ndb"
    ndb_dir.mkdir()
    _run(*_ndb_rpm(), "--define", "_db_backend ndb", "--define", f"_rpmlock_path {ndb_dir}/.lock",
         "--define", "_tmppath /tmp", *_install_args(ndb_dir, rpms))
    expected = _query(["rpm"], sqlite.parent, "sqlite")
    assert len(expected) == len(SPECS)
    for path in bdb.values():  # rpm itself reads what db5.3_load wrote (the first sanity check)
        assert _query(["rpm"], path.parent, "bdb_ro") <= expected
    assert _query(_ndb_rpm(), ndb_dir, "ndb") == expected
    return Fixtures(sqlite, bdb, ndb_dir / "Packages.db", expected)


def _root(tmp_path: Path, files: dict[str, bytes | str]) -> DirectoryView:
    for inner, data in {"/etc/os-release": AMZN2, **files}.items():
        path = tmp_path / inner.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return DirectoryView(tmp_path)


def _as_rpm_lines(view: DirectoryView) -> tuple[set[str], list[str], list[str]]:
    """cloudward's rpm packages in `rpm -qa --qf QF` form, their locations, and the catalog's errors."""
    result = catalog(view)
    lines, locations = set(), []
    for p in result.packages:
        if p.type != "rpm":
            continue
        epoch, _, vr = p.version.rpartition(":")
        version, release = vr.rsplit("-", 1)
        arch = p.purl.split("arch=")[1].split("&")[0]
        srpm = f"{p.source_name}-{p.source_version}.src.rpm"
        lines.add(f"{p.name}|{epoch or 0}|{version}|{release}|{arch}|{srpm}|{'|'.join(p.licenses)}")
        locations.extend(p.locations)
    return lines, locations, result.errors


@pytest.mark.parametrize("variant", ["le512", "be512", "le64k"])
def test_berkeley_db_packages_equal_what_rpm_reads(rpmdbs: Fixtures, tmp_path: Path, variant: str) -> None:
    data = rpmdbs.bdb[variant].read_bytes()
    lines, locations, errors = _as_rpm_lines(_root(tmp_path, {"/var/lib/rpm/Packages": data}))
    assert errors == []
    assert lines == rpmdbs.expected == _query(["rpm"], rpmdbs.bdb[variant].parent, "bdb_ro")
    assert set(locations) == {"/var/lib/rpm/Packages"}


def test_berkeley_db_purls_name_the_distro(rpmdbs: Fixtures, tmp_path: Path) -> None:
    view = _root(tmp_path, {"/var/lib/rpm/Packages": rpmdbs.bdb["le512"].read_bytes()})
    purls = {p.purl for p in catalog(view).packages}
    assert "pkg:rpm/amzn/cloudward-hello@1.2.3-4.amzn2?arch=noarch&distro=amzn-2&epoch=2" in purls
    assert "pkg:rpm/amzn/tiny@0.1-1?arch=x86_64&distro=amzn-2" in purls


def test_ndb_packages_equal_what_rpm_reads(rpmdbs: Fixtures, tmp_path: Path) -> None:
    view = _root(tmp_path, {"/usr/lib/sysimage/rpm/Packages.db": rpmdbs.ndb.read_bytes()})
    lines, locations, errors = _as_rpm_lines(view)
    assert errors == []
    assert lines == rpmdbs.expected
    assert set(locations) == {"/usr/lib/sysimage/rpm/Packages.db"}


def test_linked_rpmdb_directory_is_read_once(rpmdbs: Fixtures, tmp_path: Path) -> None:
    """SUSE and Fedora link /var/lib/rpm to /usr/lib/sysimage/rpm: one database, one package each."""
    view = _root(tmp_path, {"/usr/lib/sysimage/rpm/Packages.db": rpmdbs.ndb.read_bytes()})
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / "var/lib/rpm").symlink_to("../../usr/lib/sysimage/rpm")
    assert view.read("/var/lib/rpm/Packages.db") == rpmdbs.ndb.read_bytes()
    packages = [p for p in catalog(view).packages if p.type == "rpm"]
    assert len(packages) == len(SPECS)
    # negative: two different databases in the two directories are both read
    (tmp_path / "var/lib/rpm").unlink()
    view = _root(tmp_path / "two", {"/usr/lib/sysimage/rpm/Packages.db": rpmdbs.ndb.read_bytes(),
                                    "/var/lib/rpm/Packages": rpmdbs.bdb["tiny_only"].read_bytes()})
    assert len([p for p in catalog(view).packages if p.type == "rpm"]) == len(SPECS) + 1


def test_sqlite_beside_a_stale_berkeley_db_wins(rpmdbs: Fixtures, tmp_path: Path) -> None:
    view = _root(tmp_path, {"/var/lib/rpm/rpmdb.sqlite": rpmdbs.sqlite.read_bytes(),
                            "/var/lib/rpm/Packages": rpmdbs.bdb["tiny_only"].read_bytes()})
    lines, locations, errors = _as_rpm_lines(view)
    assert errors == [] and lines == rpmdbs.expected and set(locations) == {"/var/lib/rpm/rpmdb.sqlite"}
    # negative: alone, the same Berkeley DB is read and holds only `tiny`
    (tmp_path / "var/lib/rpm/rpmdb.sqlite").unlink()
    lines, locations, errors = _as_rpm_lines(DirectoryView(tmp_path))
    assert [line.split("|")[0] for line in lines] == ["tiny"] and set(locations) == {"/var/lib/rpm/Packages"}


# ------------------------------------------------------------------ hostile files


def _pages(data: bytes, size: int) -> list[tuple[int, int, int]]:
    """(page number, type, next page) of every page of a little-endian Berkeley DB file."""
    return [(n, data[n * size + 25], struct.unpack_from("<I", data, n * size + 16)[0])
            for n in range(len(data) // size)]


def _chain_link(data: bytes) -> int:
    """Byte offset of the next-page field of an overflow page that has a successor."""
    number = next(n for n, kind, nxt in _pages(data, 512) if kind == 7 and nxt)
    return number * 512 + 16


def _bdb_variants(data: bytes) -> dict[str, tuple[bytes, str]]:
    link = _chain_link(data)
    own_page = link // 512
    last_page = len(data) // 512 - 1
    return {
        "zero-size": (b"", "too short"),
        "truncated": (data[: len(data) // 2], "truncated"),
        "wrong magic": (data[:12] + b"\0\0\0\0" + data[16:], "bad magic"),
        "cycle": (data[:link] + struct.pack("<I", own_page) + data[link + 4:], "reached twice"),
        "page past end": (data[:link] + struct.pack("<I", last_page + 7) + data[link + 4:], "outside"),
        "last page past end": (data[:32] + struct.pack("<I", 10**6) + data[36:], "truncated"),
    }


def _ndb_variants(data: bytes) -> dict[str, tuple[bytes, str]]:
    slot = 32  # the first slot, right after the 32-byte file header
    _magic, _index, blkoff, blkcnt = struct.unpack_from("<4sIII", data, slot)
    second = slot + 16
    body = blkoff * 16 + 40  # a byte inside the first blob's header data
    flipped = data[:body] + bytes([data[body] ^ 0xFF]) + data[body + 1:]
    return {
        "zero-size": (b"", "too short"),
        "truncated": (data[: blkoff * 16 + 8], "outside the data area"),
        "wrong magic": (b"XpmP" + data[4:], "bad magic"),
        "checksum": (flipped, "checksum mismatch"),
        "slot past end": (data[:slot + 8] + struct.pack("<I", len(data)) + data[slot + 12:], "outside the data area"),
        "overlap": (data[:second + 8] + struct.pack("<II", blkoff, blkcnt) + data[second + 16:], "overlaps"),
    }


@pytest.mark.parametrize("case", ["zero-size", "truncated", "wrong magic", "cycle", "page past end",
                                  "last page past end"])
def test_hostile_berkeley_db_is_an_error_naming_the_file(rpmdbs: Fixtures, tmp_path: Path, case: str) -> None:
    data, words = _bdb_variants(rpmdbs.bdb["le512"].read_bytes())[case]
    view = _root(tmp_path, {"/var/lib/rpm/Packages": data, "/var/lib/dpkg/status": DPKG_STATUS})
    result = catalog(view)
    assert any(e.startswith("rpm: /var/lib/rpm/Packages: ") and words in e for e in result.errors), result.errors
    assert [p.name for p in result.packages if p.type == "deb"] == ["other"]  # the other catalogers ran
    if case in ("cycle", "page past end"):  # one damaged chain costs one package, not the database
        assert len([p for p in result.packages if p.type == "rpm"]) == len(SPECS) - 1


@pytest.mark.parametrize("case", ["zero-size", "truncated", "wrong magic", "checksum", "slot past end", "overlap"])
def test_hostile_ndb_is_an_error_naming_the_file(rpmdbs: Fixtures, tmp_path: Path, case: str) -> None:
    data, words = _ndb_variants(rpmdbs.ndb.read_bytes())[case]
    view = _root(tmp_path, {"/usr/lib/sysimage/rpm/Packages.db": data, "/var/lib/dpkg/status": DPKG_STATUS})
    result = catalog(view)
    assert any(e.startswith("rpm: /usr/lib/sysimage/rpm/Packages.db: ") and words in e
               for e in result.errors), result.errors
    assert [p.name for p in result.packages if p.type == "deb"] == ["other"]
    if case == "checksum":  # the other two blobs still read
        assert len([p for p in result.packages if p.type == "rpm"]) == len(SPECS) - 1


def test_readers_are_clean_on_the_real_files(rpmdbs: Fixtures) -> None:
    """The negative side of the hostile cases: no problem is reported for an untouched file."""
    for path in rpmdbs.bdb.values():
        blobs, problems = read_bdb_blobs(path.read_bytes())
        assert blobs and problems == []
    blobs, problems = read_ndb_blobs(rpmdbs.ndb.read_bytes())
    assert len(blobs) == len(SPECS) and problems == []


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


_EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8)


@_FUZZ
@given(edits=_EDITS, cut=st.integers(0, 1 << 20))
def test_fuzz_berkeley_db_reader_raises_only_catalog_error(rpmdbs: Fixtures, edits: list[tuple[int, int]],
                                                           cut: int) -> None:
    data = _mutate(rpmdbs.bdb["le512"].read_bytes(), edits)
    for candidate in (data, data[: cut % (len(data) + 1)]):
        try:
            blobs, _problems = read_bdb_blobs(candidate)
        except CatalogError:
            continue
        assert sum(map(len, blobs)) <= len(candidate)


@_FUZZ
@given(edits=_EDITS, cut=st.integers(0, 1 << 20))
def test_fuzz_ndb_reader_raises_only_catalog_error(rpmdbs: Fixtures, edits: list[tuple[int, int]], cut: int) -> None:
    data = _mutate(rpmdbs.ndb.read_bytes(), edits)
    for candidate in (data, data[: cut % (len(data) + 1)]):
        try:
            blobs, _problems = read_ndb_blobs(candidate)
        except CatalogError:
            continue
        assert sum(map(len, blobs)) <= len(candidate)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_readers_on_arbitrary_bytes(data: bytes) -> None:
    for reader in (read_bdb_blobs, read_ndb_blobs):
        with contextlib.suppress(CatalogError):
            reader(data)


# ------------------------------------------------------------------ end to end: an Amazon Linux 2 image


def test_image_sbom_lists_packages_from_a_berkeley_db(rpmdbs: Fixtures, tmp_path: Path) -> None:
    from cloudward.cli.app import app
    from tests.harness.images import build_steps, put

    def base(root: Path) -> None:
        put(root, "/etc/os-release", AMZN2)
        put(root, "/var/lib/rpm/Packages", rpmdbs.bdb["le512"].read_bytes())

    layout = build_steps(tmp_path / "image", [base], tag="amzn2")
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    out = tmp_path / "sbom.json"
    result = CliRunner().invoke(app, ["image", "sbom", layout.ref, "--no-cache", "-o", str(out),
                                      "--config", str(tmp_path / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    purls = {c.get("purl", "") for c in json.loads(out.read_text())["components"]}
    rpm = sorted(p.split("@")[0] for p in purls if p.startswith("pkg:rpm/"))
    assert rpm == ["pkg:rpm/amzn/bigdesc", "pkg:rpm/amzn/cloudward-hello", "pkg:rpm/amzn/tiny"]
