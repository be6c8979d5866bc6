"""RPM Berkeley DB / ndb benchmark: cloudward, trivy and syft list the packages of the same two images.

Why: Amazon Linux 2, CentOS/RHEL 7-8 (Berkeley DB `/var/lib/rpm/Packages`) and SUSE (ndb
`/usr/lib/sysimage/rpm/Packages.db`) images are common in the cloud, and their packages must be
found, with the versions rpm itself records, as fast as the peers find them. Both databases are
real: `--packages` rpms built by rpmbuild (varied epochs, arches, file lists, descriptions) are
installed with `rpm --justdb` into a sqlite rpmdb whose header blobs db5.3_load writes into a
Berkeley DB hash file (4 KiB pages, as rpm uses), and into an ndb database by rpm 4.16 built
with the ndb backend (PyPI rpm-inspector-rpm). `rpm -qa` on each database is the ground truth.
Each tool writes a CycloneDX SBOM of each docker-archive offline; reported: rpm packages found,
agreement on (name, epoch:version-release) with rpm and with each other, median wall clock of
`--repeat` cold runs, ratios. Results go to the `container-rpmdb` section of docs/BENCHMARKS.md.

    python benchmarks/container/rpmdb.py [--packages 400] [--repeat 3] [--peers .venv-peers/bin] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, today, write_section
from run import PEERS, Run, find_peer, read_sbom, run_cloudward, run_syft, run_trivy, version_of
from tests.harness.images import build_steps, put, to_docker_archive

QF = "%{NAME}|%{EPOCHNUM}|%{VERSION}-%{RELEASE}\\n"
IMAGES = {
    "amzn2-bdb": (
        "/var/lib/rpm/Packages",
        {"/etc/os-release": 'NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\n'
                            'VERSION_ID="2"\nPRETTY_NAME="Amazon Linux 2"\n',
         "/etc/system-release": "Amazon Linux release 2 (Karoo)\n"},
    ),
    "opensuse-ndb": (
        "/usr/lib/sysimage/rpm/Packages.db",
        {"/etc/os-release": 'NAME="openSUSE Leap"\nVERSION="15.5"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\n'
                            'VERSION_ID="15.5"\nPRETTY_NAME="openSUSE Leap 15.5"\n'},
    ),
}


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:6])} ... failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def ndb_rpm() -> list[str]:
    spec = importlib.util.find_spec("rpm_inspector_rpm")
    if not spec or not spec.submodule_search_locations:
        raise SystemExit("rpm-inspector-rpm is missing: run scripts/setup")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "bin"
    return [str(bindir / "rpm"), "--rcfile", str(bindir / "rpmrc")]


def build_rpms(work: Path, count: int) -> list[Path]:
    """`count` small but varied packages: some with epochs, noarch or x86_64, 0-120 files, long descriptions."""
    for i in range(count):
        files = (i * 37) % 121
        install = "\n".join(f"mkdir -p %{{buildroot}}/usr/share/pkg{i}; touch %{{buildroot}}/usr/share/pkg{i}/f{j}"
                            for j in range(files))
        desc = "\n".join(f"Package {i} description line {j}." for j in range(1 + (i * 13) % 200))
        spec = work / f"pkg{i}.spec"
        spec.write_text(
            f"Name: bench-pkg{i}\n" + (f"Epoch: {i % 3}\n" if i % 5 == 0 else "")
            + f"Version: {1 + i % 7}.{i % 11}.{i}\nRelease: {1 + i % 4}.el7\nSummary: benchmark package {i}\n"
            f"License: {('MIT', 'GPLv2+', 'BSD and ASL 2.0')[i % 3]}\nBuildArch: {('noarch', 'x86_64')[i % 2]}\n"
            f"%description\n{desc}\n%install\n{install}\n%files\n" + (f"/usr/share/pkg{i}\n" if files else "")
        )
        _run("rpmbuild", "--quiet", "--define", f"_topdir {work}/top", "--target", "x86_64", "-bb", str(spec))
    return sorted((work / "top" / "RPMS").rglob("*.rpm"))


def _install(dbpath: Path, rpms: list[Path]) -> list[str]:
    return ["--dbpath", str(dbpath), "-i", "--justdb", "--nodeps", "--nosignature", "--ignoreos", "--ignorearch",
            *map(str, rpms)]


def databases(work: Path, rpms: list[Path]) -> tuple[Path, Path, set[tuple[str, str]]]:
    """(Berkeley DB Packages, ndb Packages.db, rpm's own (name, [epoch:]version-release) set)."""
    sq = work / "sqlite"
    _run("rpm", "--define", "_db_backend sqlite", "--dbpath", str(sq), "--initdb")
    _run("rpm", "--define", "_db_backend sqlite", *_install(sq, rpms))
    with sqlite3.connect(sq / "rpmdb.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        blobs = list(conn.execute("SELECT hnum, blob FROM Packages ORDER BY hnum"))
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "db_lorder=1234", "db_pagesize=4096", "HEADER=END",
             " " + struct.pack("<I", 0).hex(), " " + struct.pack("<I", len(blobs) + 1).hex()]
    for hnum, blob in blobs:
        lines += [" " + struct.pack("<I", hnum).hex(), " " + bytes(blob).hex()]
    (work / "bdb.dump").write_text("\n".join([*lines, "DATA=END", ""]))
    bdb = work / "bdb" / "Packages"
    bdb.parent.mkdir()
    _run(shutil.which("db5.3_load") or "db_load", "-f", str(work / "bdb.dump"), str(bdb))
    ndb = work / "ndb"
    ndb.mkdir()
    _run(*ndb_rpm(), "--define", "_db_backend ndb", "--define", f"_rpmlock_path {ndb}/.lock",
         "--define", "_tmppath /tmp", *_install(ndb, rpms))
    truth = set()
    for line in _run("rpm", "--dbpath", str(sq), "-qa", "--qf", QF).splitlines():
        name, epoch, vr = line.split("|")
        truth.add((name, vr if epoch == "0" else f"{epoch}:{vr}"))
    for argv, path, backend in ((["rpm"], bdb.parent, "bdb_ro"), (ndb_rpm(), ndb, "ndb")):
        got = _run(*argv, "--define", f"_db_backend {backend}", "--dbpath", str(path), "-qa", "--qf", QF)
        assert len(got.splitlines()) == len(truth), f"rpm reads {len(got.splitlines())} packages from {path}"
    return bdb, ndb / "Packages.db", truth


def image(work: Path, name: str, db: Path) -> Path:
    inner, extra = IMAGES[name]

    def base(root: Path) -> None:
        for path, text in extra.items():
            put(root, path, text)
        put(root, inner, db.read_bytes())

    layout = build_steps(work / name, [base], tag=name)
    return to_docker_archive(layout, work / f"{name}.tar", name=f"bench/{name}")


def rpm_set(run: Run) -> set[tuple[str, str]]:
    """The benchmark's packages in an SBOM; an explicit epoch 0 (syft writes one when the header has
    `Epoch: 0`) is dropped, as rpm compares a missing epoch equal to 0."""
    if run.sbom is None:
        return set()
    return {(name, version.removeprefix("0:")) for name, version in read_sbom(run.sbom).sets.get("os", set())
            if name.startswith("bench-pkg")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peers", type=Path, default=ROOT / ".venv-peers" / "bin")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    bins = {n: p for n in PEERS if (p := find_peer(args.peers, n)) is not None}
    work = Path(tempfile.mkdtemp(prefix="cloudward-rpmdb-bench-"))
    try:
        rpms = build_rpms(work, args.packages)
        bdb, ndb, truth = databases(work, rpms)
        archives = {"amzn2-bdb": image(work, "amzn2-bdb", bdb), "opensuse-ndb": image(work, "opensuse-ndb", ndb)}
        rows, found_rows, ratios, diffs = [], [], [], []
        for name, archive in archives.items():
            runs: dict[str, list[Run]] = {t: [] for t in ("cloudward", *bins)}
            for i in range(args.repeat):
                runs["cloudward"].append(run_cloudward(archive, work / f"cw-{name}.json", work / f"cw-data-{name}-{i}"))
                if "trivy" in bins:
                    runs["trivy"].append(run_trivy(bins["trivy"], archive, work / f"trivy-{name}.json",
                                                   work / f"trivy-cache-{name}-{i}"))
                if "syft" in bins:
                    runs["syft"].append(run_syft(bins["syft"], archive, work / f"syft-{name}.json"))
            sets = {tool: rpm_set(r[-1]) for tool, r in runs.items()}
            median = {tool: statistics.median(x.seconds for x in r) for tool, r in runs.items()}
            for tool, r in runs.items():
                note = next((x.note for x in r if x.note), "")
                same = len(sets[tool] & truth)
                line = (f"| {name} | {tool} | {len(sets[tool])} | {same} ({same / len(truth):.0%}) | "
                        f"{median[tool]:.2f} s | "
                        + (f"{median[tool] / median['cloudward']:.2f}x" if tool != "cloudward" else "1.00x")
                        + f" | {note or '-'} |")
                rows.append(line)
                print(line, flush=True)
            for tool in runs:
                if missing := sorted(truth - sets[tool]):
                    extra = sorted(sets[tool] - truth)
                    diffs.append(f"- {name}, {tool}: {len(missing)} differ from rpm -qa, e.g. rpm "
                                 f"`{missing[0][0]} {missing[0][1]}`" + (f", {tool} `{extra[0][0]} {extra[0][1]}`"
                                                                       if extra else f", not found by {tool}"))
            for peer in bins:
                both = sets["cloudward"] & sets[peer]
                union = sets["cloudward"] | sets[peer]
                found_rows.append(f"| {name} | cloudward vs {peer} | {len(both)} | "
                                  f"{len(sets['cloudward'] - sets[peer])} / {len(sets[peer] - sets['cloudward'])} | "
                                  f"{len(both) / len(union) if union else 1:.1%} |")
                if median["cloudward"]:
                    ratios.append(f"{peer} / cloudward on {name}: {median[peer] / median['cloudward']:.2f}x")
        versions = ", ".join(f"{tool} {version_of([str(p), 'version'])}" for tool, p in bins.items())
        body = "\n".join([
            f"## RPM Berkeley DB and ndb databases vs trivy and syft ({today()})",
            "",
            f"Machine: {machine()}. `python benchmarks/container/rpmdb.py --packages {args.packages} "
            f"--repeat {args.repeat}`; peers: {versions or 'none found'}.",
            "",
            f"Two docker-archives holding the same {len(truth)} rpm packages (built by rpmbuild, installed with "
            "`rpm --justdb`): Amazon Linux 2 with a Berkeley DB `/var/lib/rpm/Packages` (written by db5.3_load "
            "from rpm's own header blobs, 4 KiB pages) and openSUSE Leap with an ndb "
            "`/usr/lib/sysimage/rpm/Packages.db` (written by rpm 4.16's ndb backend). Ground truth: `rpm -qa`. "
            "Each tool writes a CycloneDX SBOM offline; wall clock is the median of cold runs (small images: "
            "it is mostly each tool's start-up). An explicit epoch 0 counts as no epoch (syft writes `0:` when "
            "a header has `Epoch: 0`; rpm compares the two equal).",
            "",
            "| image | tool | rpm packages | equal to rpm -qa (name, epoch:version-release) | wall clock | "
            "vs cloudward | note |",
            "|---|---|---:|---:|---:|---:|---|",
            *rows,
            "",
            "| image | pair | agree | only cloudward / only peer | agreement |",
            "|---|---|---:|---:|---:|",
            *found_rows,
            "",
            *(diffs or ["No tool differs from `rpm -qa`."]),
            "",
            "Ratios: " + ("; ".join(ratios) or "no peers found") + ".",
        ])
        print(body)
        if not args.no_write:
            write_section("container-rpmdb", body)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
