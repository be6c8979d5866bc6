"""Catalogers over fixture trees (DirectoryView), hostile input, parser properties, and this machine."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import struct
import subprocess
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.engines.catalog import CatalogError, CatalogResult, DirectoryView, FileView, Package, catalog, wanted
from cloudward.engines.catalog.apk import parse_apk
from cloudward.engines.catalog.dpkg import parse_stanzas
from cloudward.engines.catalog.golang import condense_go, parse_buildinfo
from cloudward.engines.catalog.java import condense_java, scan_archive
from cloudward.engines.catalog.rpm import parse_header

DPKG_STATUS = """\
Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 6029
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 3.0.11-1~deb12u2
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols for secure communication over the

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14
Description: GCC support library

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Description: gone

Package: bash
Status: hold ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell
"""

DEBIAN_OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
)
ALPINE_OS_RELEASE = 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n'

APK_INSTALLED = """\
C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT
o:musl
T:the musl c library

P:libcrypto3
V:3.1.4-r5
A:x86_64
L:Apache-2.0
o:openssl
"""


def put(root: Path, inner: str, data: str | bytes) -> Path:
    path = root / inner.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


# --- RPM header / rpmdb fixture -------------------------------------------------------------------
# No `rpm` tool here, so headers are built from the documented layout: il, dl, il*16-byte index, store.


def rpm_header(tags: Mapping[int, str | int]) -> bytes:
    index, store = b"", b""
    for tag, value in tags.items():
        if isinstance(value, int):
            while len(store) % 4:
                store += b"\0"
            index += struct.pack(">iIiI", tag, 4, len(store), 1)
            store += struct.pack(">i", value)
        else:
            index += struct.pack(">iIiI", tag, 6, len(store), 1)
            store += value.encode() + b"\0"
    return struct.pack(">II", len(tags), len(store)) + index + store


def rpmdb(path: Path, blobs: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b,) for b in blobs])
    conn.commit()
    conn.close()


OPENSSL_RPM: dict[int, str | int] = {
    1000: "openssl-libs",
    1001: "3.0.7",
    1002: "24.el9",
    1003: 1,
    1014: "Apache-2.0",
    1022: "x86_64",
    1044: "openssl-3.0.7-24.el9.src.rpm",
}
BASH_RPM: dict[int, str | int] = {
    1000: "bash",
    1001: "5.1.8",
    1002: "6.el9",
    1022: "x86_64",
    1044: "bash-5.1.8-6.el9.src.rpm",
}


# --- Go build info fixture ------------------------------------------------------------------------
# No Go toolchain here: the bytes follow the Go >= 1.18 linker layout (16-aligned 32-byte header with
# the inline flag, then varint-prefixed version and sentinel-wrapped module text).

_SENTINEL_START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
_SENTINEL_END = bytes.fromhex("f932433186182072008242104116d8f2")


def _varint(data: bytes) -> bytes:
    n, out = len(data), b""
    while True:
        byte = n & 0x7F
        n >>= 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out + data


def go_binary(go_version: str = "go1.21.5") -> bytes:
    mod = (
        b"path\texample.com/app\n"
        b"mod\texample.com/app\t(devel)\t\n"
        b"dep\tgithub.com/google/uuid\tv1.3.0\th1:abc=\n"
        b"dep\tgolang.org/x/net\tv0.10.0\th1:def=\n"
        b"=>\tgolang.org/x/net\tv0.17.0\th1:ghi=\n"
        b"build\t-compiler=gc\n"
    )
    header = b"\xff Go buildinf:" + bytes([8, 0x2]) + b"\0" * 16
    body = b"\x7fELF\x02\x01\x01" + b"\0" * 57  # 64 bytes: keeps the header 16-aligned
    return body + header + _varint(go_version.encode()) + _varint(_SENTINEL_START + mod + _SENTINEL_END) + b"\0" * 32


# --- Java fixtures --------------------------------------------------------------------------------


def jar(
    pom: tuple[str, str, str] | None = None, manifest: str | None = None, nested: dict[str, bytes] | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if manifest is not None:
            zf.writestr("META-INF/MANIFEST.MF", manifest)
        if pom is not None:
            g, a, v = pom
            zf.writestr(
                f"META-INF/maven/{g}/{a}/pom.properties", f"#generated\ngroupId={g}\nartifactId={a}\nversion={v}\n"
            )
        for name, data in {**(nested or {}), **(extra or {})}.items():
            zf.writestr(name, data)
        zf.writestr("com/example/A.class", b"\xca\xfe\xba\xbe")
    return buf.getvalue()


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/maven/x/bomb/pom.properties", b"\0" * (17 * 1024 * 1024))
    return buf.getvalue()


# --- trees ----------------------------------------------------------------------------------------


@pytest.fixture()
def debian_root(tmp_path: Path) -> Path:
    put(tmp_path, "/usr/lib/os-release", DEBIAN_OS_RELEASE)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("../usr/lib/os-release")
    put(tmp_path, "/var/lib/dpkg/status", DPKG_STATUS)
    site = "/usr/lib/python3/dist-packages"
    put(
        tmp_path,
        f"{site}/requests-2.31.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n",
    )
    put(
        tmp_path,
        f"{site}/Jinja2-3.1.2.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.2\nClassifier: License :: OSI Approved :: BSD License\n",
    )
    put(
        tmp_path,
        f"{site}/six-1.16.0.egg-info/PKG-INFO",
        "Metadata-Version: 1.2\nName: six\nVersion: 1.16.0\nLicense: MIT\n",
    )
    put(tmp_path, f"{site}/distro_info-1.5.egg-info", "Metadata-Version: 1.1\nName: distro-info\nVersion: 1.5\n")
    app = "/srv/web"
    put(tmp_path, f"{app}/package.json", json.dumps({"name": "web", "version": "1.0.0"}))
    put(
        tmp_path,
        f"{app}/package-lock.json",
        json.dumps(
            {
                "name": "web",
                "lockfileVersion": 3,
                "packages": {
                    "": {"name": "web", "version": "1.0.0"},
                    "node_modules/lodash": {"version": "4.17.21", "license": "MIT"},
                    "node_modules/@babel/core": {"version": "7.23.0", "license": "MIT"},
                    "node_modules/local": {"link": True, "resolved": "../local"},
                },
            }
        ),
    )
    put(
        tmp_path,
        f"{app}/node_modules/lodash/package.json",
        json.dumps({"name": "lodash", "version": "4.17.21", "license": "MIT"}),
    )
    put(
        tmp_path,
        f"{app}/node_modules/@babel/core/package.json",
        json.dumps({"name": "@babel/core", "version": "7.23.0"}),
    )
    put(
        tmp_path,
        f"{app}/node_modules/lodash/test/fixture/package.json",
        json.dumps({"name": "not-installed", "version": "0.0.1"}),
    )
    put(tmp_path, "/src/tool/package.json", json.dumps({"name": "no-lockfile", "version": "9.9.9"}))
    put(tmp_path, "/usr/local/bin/app", go_binary())
    put(tmp_path, "/usr/local/bin/script.sh", "#!/bin/sh\necho hi\n")
    inner = jar(pom=("org.slf4j", "slf4j-api", "2.0.9"))
    put(tmp_path, "/opt/svc/lib/commons-lang3.jar", jar(pom=("org.apache.commons", "commons-lang3", "3.12.0")))
    put(
        tmp_path,
        "/opt/svc/app.war",
        jar(
            manifest="Manifest-Version: 1.0\nImplementation-Title: shop\nImplementation-Version: 2.1\n",
            nested={"WEB-INF/lib/slf4j-api-2.0.9.jar": inner},
        ),
    )
    return tmp_path


def by_type(result: CatalogResult, kind: str) -> set[tuple[str, str]]:
    return {(p.name, p.version) for p in result.packages if p.type == kind}


def test_debian_tree(debian_root: Path) -> None:
    result = catalog(DirectoryView(debian_root))
    assert result.errors == []
    assert result.distro is not None and result.distro.id == "debian" and result.distro.codename == "bookworm"
    assert by_type(result, "deb") == {
        ("libssl3", "3.0.11-1~deb12u2"),
        ("libgcc-s1", "12.2.0-14"),
        ("bash", "5.2.15-2+b2"),
    }
    ssl = next(p for p in result.packages if p.name == "libssl3")
    assert ssl.purl == "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"
    assert (ssl.ecosystem, ssl.source_name, ssl.source_version) == ("Debian:12", "openssl", "3.0.11-1~deb12u2")
    gcc = next(p for p in result.packages if p.name == "libgcc-s1")
    assert (gcc.source_name, gcc.source_version) == ("gcc-12", "12.2.0-14")
    assert by_type(result, "python") == {
        ("requests", "2.31.0"),
        ("Jinja2", "3.1.2"),
        ("six", "1.16.0"),
        ("distro-info", "1.5"),
    }
    jinja = next(p for p in result.packages if p.name == "Jinja2")
    assert jinja.purl == "pkg:pypi/jinja2@3.1.2" and jinja.licenses == ("BSD License",) and jinja.ecosystem == "PyPI"
    assert by_type(result, "npm") == {("web", "1.0.0"), ("lodash", "4.17.21"), ("@babel/core", "7.23.0")}
    assert "pkg:npm/%40babel/core@7.23.0" in {p.purl for p in result.packages}
    go = {(p.name, p.version) for p in result.packages if p.type == "go-module"}
    assert go == {
        ("stdlib", "go1.21.5"),
        ("example.com/app", "(devel)"),
        ("github.com/google/uuid", "v1.3.0"),
        ("golang.org/x/net", "v0.17.0"),
    }
    assert "pkg:golang/github.com/google/uuid@v1.3.0" in {p.purl for p in result.packages}
    java = {p.purl: p.locations for p in result.packages if p.type == "java-archive"}
    assert java == {
        "pkg:maven/org.apache.commons/commons-lang3@3.12.0": ("/opt/svc/lib/commons-lang3.jar",),
        "pkg:maven/shop@2.1": ("/opt/svc/app.war",),
        "pkg:maven/org.slf4j/slf4j-api@2.0.9": ("/opt/svc/app.war:WEB-INF/lib/slf4j-api-2.0.9.jar",),
    }
    assert result.packages == sorted(result.packages, key=lambda p: (p.type, p.name, p.version, p.purl, p.locations))


def test_distroless_status_d(tmp_path: Path) -> None:
    put(tmp_path, "/etc/os-release", DEBIAN_OS_RELEASE)
    put(
        tmp_path,
        "/var/lib/dpkg/status.d/base-files",
        "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
    )
    put(
        tmp_path,
        "/var/lib/dpkg/status.d/libssl3",
        "Package: libssl3\nSource: openssl\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\n",
    )
    put(tmp_path, "/var/lib/dpkg/status.d/libssl3.md5sums", "d41d8cd98f00b204e9800998ecf8427e  usr/lib/x\n")
    result = catalog(DirectoryView(tmp_path))
    assert result.errors == []
    assert by_type(result, "deb") == {("base-files", "12.4+deb12u5"), ("libssl3", "3.0.11-1~deb12u2")}
    assert next(p for p in result.packages if p.name == "libssl3").locations == ("/var/lib/dpkg/status.d/libssl3",)


def test_alpine(tmp_path: Path) -> None:
    put(tmp_path, "/etc/os-release", ALPINE_OS_RELEASE)
    put(tmp_path, "/lib/apk/db/installed", APK_INSTALLED)
    result = catalog(DirectoryView(tmp_path))
    assert result.errors == []
    musl = next(p for p in result.packages if p.name == "musl")
    assert musl.purl == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19"
    assert musl.ecosystem == "Alpine:v3.19" and musl.licenses == ("MIT",)
    crypto = next(p for p in result.packages if p.name == "libcrypto3")
    assert crypto.source_name == "openssl"


def test_rpm(tmp_path: Path) -> None:
    put(tmp_path, "/etc/os-release", 'ID="rocky"\nVERSION_ID="9.3"\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n')
    rpmdb(
        tmp_path / "var/lib/rpm/rpmdb.sqlite",
        [rpm_header(OPENSSL_RPM), rpm_header(BASH_RPM), rpm_header({1000: "gpg-pubkey", 1001: "x"})],
    )
    result = catalog(DirectoryView(tmp_path))
    assert result.errors == []
    assert by_type(result, "rpm") == {("openssl-libs", "1:3.0.7-24.el9"), ("bash", "5.1.8-6.el9")}
    ssl = next(p for p in result.packages if p.name == "openssl-libs")
    assert ssl.purl == "pkg:rpm/rocky/openssl-libs@3.0.7-24.el9?arch=x86_64&distro=rocky-9.3&epoch=1"
    assert (ssl.ecosystem, ssl.source_name, ssl.source_version, ssl.licenses) == (
        "Rocky Linux:9",
        "openssl",
        "3.0.7-24.el9",
        ("Apache-2.0",),
    )


# --- hostile input --------------------------------------------------------------------------------

GARBAGE = b"\x00\xff\xfe garbage \x80\x81 not a database\n\x01\x02"


def test_garbage_databases_become_errors_naming_files(debian_root: Path) -> None:
    root = debian_root
    put(root, "/lib/apk/db/installed", GARBAGE)
    put(root, "/var/lib/rpm/rpmdb.sqlite", GARBAGE)
    put(root, "/var/lib/dpkg/status.d/broken", GARBAGE)
    put(root, "/srv/web/node_modules/broken/package.json", GARBAGE)
    put(root, "/opt/svc/broken.jar", GARBAGE)
    put(root, "/opt/svc/bomb.jar", zip_bomb())
    put(
        root,
        "/usr/lib/python3/dist-packages/noversion-1.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: noversion\n",
    )
    result = catalog(DirectoryView(root))
    text = "\n".join(result.errors)
    for path in (
        "/lib/apk/db/installed",
        "/var/lib/rpm/rpmdb.sqlite",
        "/var/lib/dpkg/status.d/broken",
        "/srv/web/node_modules/broken/package.json",
        "/opt/svc/broken.jar",
        "/opt/svc/bomb.jar",
        "noversion-1.0.dist-info/METADATA",
    ):
        assert path in text, path
    assert len(by_type(result, "deb")) == 3 and len(by_type(result, "python")) == 4
    assert ("lodash", "4.17.21") in by_type(result, "npm") and ("stdlib", "go1.21.5") in by_type(result, "go-module")
    assert len(by_type(result, "java-archive")) == 3


def test_garbage_dpkg_status_and_truncated_rpm_header(tmp_path: Path) -> None:
    put(tmp_path, "/var/lib/dpkg/status", GARBAGE)
    put(tmp_path, "/lib/apk/db/installed", APK_INSTALLED)
    good, bad = rpm_header(BASH_RPM), rpm_header(OPENSSL_RPM)
    rpmdb(tmp_path / "usr/lib/sysimage/rpm/rpmdb.sqlite", [good, bad[: len(bad) // 2]])
    result = catalog(DirectoryView(tmp_path))
    assert any("/var/lib/dpkg/status" in e for e in result.errors)
    assert any("/usr/lib/sysimage/rpm/rpmdb.sqlite" in e and "truncated" in e for e in result.errors)
    assert by_type(result, "rpm") == {("bash", "5.1.8-6.el9")}
    assert len(by_type(result, "apk")) == 2


def test_zip_with_too_many_entries(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(10_001):
            zf.writestr(f"f{i}", b"")
    put(tmp_path, "/app/many.jar", buf.getvalue())
    result = catalog(DirectoryView(tmp_path), only=["java"])
    assert result.errors and "/app/many.jar" in result.errors[0] and "entries" in result.errors[0]


def test_directory_view_stays_inside_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    put(outside, "/secret", "host secret")
    root = tmp_path / "root"
    put(root, "/etc/real", "inside")
    (root / "etc/abs").symlink_to("/etc/real")
    (root / "etc/escape").symlink_to("../../outside/secret")
    (root / "etc/abs-escape").symlink_to(str(outside / "secret"))
    (root / "etc/loop").symlink_to("loop")
    view: FileView = DirectoryView(root)
    assert view.read("/etc/abs") == b"inside"
    assert view.read("/etc/../etc/real") == b"inside"
    assert view.read("/etc/escape") is None
    assert view.read("/etc/abs-escape") is None
    assert view.read("/etc/loop") is None
    assert view.read("/etc") is None and view.read("/missing") is None
    assert list(view.paths()) == sorted(view.paths())
    assert view.glob("/etc/r*") == ["/etc/real"]


def test_wanted() -> None:
    yes = [
        "/etc/os-release",
        "/var/lib/dpkg/status",
        "/var/lib/dpkg/status.d/libc6",
        "/lib/apk/db/installed",
        "/var/lib/rpm/rpmdb.sqlite",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite",
        "/usr/lib/python3.11/site-packages/x-1.dist-info/METADATA",
        "/usr/lib/python3/x.egg-info/PKG-INFO",
        "/usr/lib/python3/dist-packages/y-1.0.egg-info",
        "/app/node_modules/x/package.json",
        "/app/package-lock.json",
        "/usr/local/bin/app",
        "/bin/ls",
        "/go/bin/tool",
        "/opt/x/lib/a.jar",
        "/srv/app.war",
    ]
    no = [
        "/etc/passwd",
        "/usr/share/doc/x/copyright",
        "/usr/lib/python3/x.dist-info/RECORD",
        "/var/log/syslog",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    assert all(wanted(p) for p in yes), [p for p in yes if not wanted(p)]
    assert not any(wanted(p) for p in no), [p for p in no if wanted(p)]


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*"PVAo:L \t\nab-1.\x00\u00e9", "Package: ", "Status: ", "\n\n"]), max_size=120).map(
        "".join
    )
)
def test_stanza_parsers_raise_only_catalog_error(text: str) -> None:
    for parser in (parse_stanzas, parse_apk):
        with contextlib.suppress(CatalogError):
            parser(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_rpm_header_parser_raises_only_catalog_error(blob: bytes) -> None:
    with contextlib.suppress(CatalogError):
        parse_header(blob)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(max_size=64))
def test_rpm_header_truncations_and_corruptions(cut: int, noise: bytes) -> None:
    blob = rpm_header(OPENSSL_RPM)
    for candidate in (blob[:cut], blob[:cut] + noise + blob[cut:], noise + blob):
        with contextlib.suppress(CatalogError):
            parse_header(candidate)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(max_size=32))
def test_go_buildinfo_truncated(cut: int, noise: bytes) -> None:
    data = go_binary()
    with contextlib.suppress(CatalogError):
        parse_buildinfo(data[:cut] + noise)


# --- this machine ---------------------------------------------------------------------------------


def test_this_machine_dpkg_count() -> None:
    """This Debian machine (and CI's): every package dpkg lists as installed, and no more."""
    result = catalog(DirectoryView("/"), only=["dpkg"])
    assert result.errors == []
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}\\n"], capture_output=True, text=True, check=True
    ).stdout
    assert len(result.packages) == sum(1 for line in out.splitlines() if line == "installed")


def test_real_go_binary_on_this_machine() -> None:
    """skopeo (installed by scripts/setup) is a Go binary built by Debian."""
    data = Path("/usr/bin/skopeo").read_bytes()
    info = parse_buildinfo(data)
    assert info is not None and info[0].startswith("go1.")
    with Path("/usr/bin/skopeo").open("rb") as stream:
        condensed = condense_go(stream, chunk=64 * 1024)
    assert condensed is not None and len(condensed) < len(data) // 10
    assert parse_buildinfo(condensed) == info


def test_condense_keeps_the_header_aligned_across_chunk_edges() -> None:
    binary = go_binary()
    body, rest = binary[:64], binary[64:]
    padded = body + b"\0" * (3 * 1024 * 1024 + 48) + rest  # header at a 16-aligned offset past 3 MiB
    for chunk in (4096, 4099, 1024 * 1024):
        condensed = condense_go(io.BytesIO(padded), chunk=chunk)
        assert condensed is not None and parse_buildinfo(condensed) == parse_buildinfo(padded)
    assert condense_go(io.BytesIO(b"#!/bin/sh\n" * 100)) is None
    assert condense_go(io.BytesIO(b"\x7fELF" + b"\0" * 5000)) is None


def test_one_error_per_bad_file(tmp_path: Path) -> None:
    put(tmp_path, "/app/a.jar", GARBAGE)
    put(tmp_path, "/app/b.jar", GARBAGE)
    result = catalog(DirectoryView(tmp_path), only=["java"])
    assert len(result.errors) == 2 and "/app/a.jar" in result.errors[0] and "/app/b.jar" in result.errors[1]


def test_real_rpmdb_fixture(tmp_path: Path) -> None:
    """A db written by rpm 4.18 itself (see data/README.md), so the header parser meets real bytes."""
    put(tmp_path, "/etc/os-release", 'ID="almalinux"\nVERSION_ID="9.3"\n')
    put(tmp_path, "/usr/lib/sysimage/rpm/rpmdb.sqlite", (Path(__file__).parent / "data/rpmdb.sqlite").read_bytes())
    result = catalog(DirectoryView(tmp_path), only=["rpm"])
    assert result.errors == []
    [pkg] = result.packages
    assert (pkg.name, pkg.version, pkg.ecosystem) == ("cloudward-hello", "2:1.2.3-4.el9", "AlmaLinux:9")
    assert pkg.purl == "pkg:rpm/almalinux/cloudward-hello@1.2.3-4.el9?arch=noarch&distro=almalinux-9.3&epoch=2"
    assert (pkg.source_name, pkg.source_version, pkg.licenses) == (
        "cloudward-hello",
        "1.2.3-4.el9",
        ("MIT AND Apache-2.0",),
    )


def test_npm_lockfile_v1(tmp_path: Path) -> None:
    lock = {
        "name": "old",
        "lockfileVersion": 1,
        "dependencies": {
            "express": {"version": "4.18.2", "dependencies": {"debug": {"version": "2.6.9"}}},
            "local": {"version": "file:../local"},
        },
    }
    put(tmp_path, "/app/package-lock.json", json.dumps(lock))
    result = catalog(DirectoryView(tmp_path), only=["npm"])
    assert result.errors == []
    assert by_type(result, "npm") == {("express", "4.18.2"), ("debug", "2.6.9")}


@pytest.mark.parametrize(("file_name", "manifest", "expected"), [
    # group from the OSGi name, artifact and version from the Maven file name (the title is prose)
    ("caffeine-3.2.2.jar", "Implementation-Title: A high performance caching library\n"
     "Bundle-SymbolicName: com.github.ben-manes.caffeine\nImplementation-Version: 3.2.2\n",
     ("com.github.ben-manes.caffeine:caffeine", "3.2.2")),
    ("protobuf-java-4.32.1.jar", "Bundle-SymbolicName: com.google.protobuf;singleton:=true\n",
     ("com.google.protobuf:protobuf-java", "4.32.1")),
    # a broken Implementation-Version is not a version; the file name is
    ("json-path-2.10.0.jar", "Implementation-Version: task ':json-path:jar' property 'archiveVersion'\n",
     ("json-path", "2.10.0")),
    # nothing in the manifest at all
    ("aopalliance-1.0.jar", "Manifest-Version: 1.0\n", ("aopalliance", "1.0")),
    ("okhttp-4.12.0.jar", "Automatic-Module-Name: okhttp3\n", ("okhttp", "4.12.0")),
    # no version in the name: the manifest decides, prose titles included, but only with a real version
    ("shop.war", "Implementation-Title: shop\nImplementation-Version: 2.1\n", ("shop", "2.1")),
])
def test_jar_without_pom_properties(tmp_path: Path, file_name: str, manifest: str,
                                    expected: tuple[str, str]) -> None:
    put(tmp_path, f"/opt/app/lib/{file_name}", jar(manifest="Manifest-Version: 1.0\n" + manifest))
    result = catalog(DirectoryView(tmp_path), only=["java"])
    assert result.errors == []
    assert by_type(result, "java-archive") == {expected}


def test_jar_without_any_identity_yields_nothing(tmp_path: Path) -> None:
    put(tmp_path, "/opt/app/lib/thing.jar", jar(manifest="Manifest-Version: 1.0\nImplementation-Version: oops x\n"))
    assert catalog(DirectoryView(tmp_path), only=["java"]).packages == []


def _archive_result(data: bytes, location: str) -> tuple[list[Package] | None, str | None]:
    try:
        return scan_archive(data, location), None
    except CatalogError as exc:
        return None, str(exc)


@pytest.mark.parametrize("name, data", [
    ("app.war", jar(pom=("org.acme", "web", "1.0"), manifest="Implementation-Title: web\n",
                    nested={"WEB-INF/lib/slf4j-api-2.0.9.jar": jar(pom=("org.slf4j", "slf4j-api", "2.0.9")),
                            "WEB-INF/lib/caffeine-3.2.2.jar": jar(manifest="Implementation-Version: 3.2.2\n"),
                            "WEB-INF/lib/broken.jar": GARBAGE})),
    ("caffeine-3.2.2.jar", jar(manifest="Implementation-Title: caffeine\nImplementation-Version: 3.2.2\n")),
    ("broken.jar", GARBAGE),
    ("bomb.jar", zip_bomb()),
])
def test_condensed_java_archive_catalogs_the_same(name: str, data: bytes) -> None:
    """The layer cache keeps a condensed jar: the cataloger must see exactly what the whole one gives
    (packages, or the same error), and the condensed form must not be larger."""
    condensed = condense_java(io.BytesIO(data))
    assert condensed is not None and len(condensed) <= max(len(data), 1024)
    assert _archive_result(condensed, f"/opt/{name}") == _archive_result(data, f"/opt/{name}")


def test_condensed_jar_drops_the_classes() -> None:
    classes = {f"org/acme/C{i}.class": os.urandom(2048) for i in range(50)}
    data = jar(pom=("org.acme", "core", "2.1"), extra=classes)
    condensed = condense_java(io.BytesIO(data))
    assert condensed is not None and len(condensed) < len(data) // 20
    assert [p.purl for p in scan_archive(condensed, "/a.jar")] == ["pkg:maven/org.acme/core@2.1"]
