"""Building the advisory database: local sources, HTTP downloads, atomic replacement, zip limits."""

from __future__ import annotations

import functools
import http.server
import json
import sqlite3
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudward.engines.osv import Matcher, PackageQuery, UpdateError, status, update
from cloudward.engines.osv.db import Limits

DATA = Path(__file__).parent / "data" / "osv"


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _records(name: str) -> dict[str, bytes]:
    return {f"{r['id']}.json": json.dumps(r).encode() for r in json.loads((DATA / name).read_text())}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local OSV-style export: <root>/<ECOSYSTEM>/all.zip, served on 127.0.0.1 only."""
    root = tmp_path / "www"
    _write_zip(root / "Debian" / "all.zip", _records("debian.json") | {"BROKEN-1.json": b"{not json"})
    _write_zip(root / "npm" / "all.zip", _records("npm.json") | {"BAD-2.json": b'{"id": "BAD-2", "affected": 3}'})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_update_from_http_counts_malformed(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    db = tmp_path / "db" / "advisories.db"
    stats = update([url], ["Debian", "npm"], db)
    assert stats.records == 4
    assert stats.withdrawn == 1
    assert len(stats.malformed) == 2
    assert any("BROKEN-1" in m for m in stats.malformed) and any("BAD-2" in m for m in stats.malformed)
    hits = Matcher(db).match([PackageQuery("Debian:12", "widget", "2.0-1"), PackageQuery("npm", "LeftPad", "1.0.0")])
    assert sorted(h.advisory_id for h in hits) == ["DSA-TEST-0001", "GHSA-test-npm1"]
    info = status(db)
    assert info.advisories == 4 and info.withdrawn == 1 and info.updated
    assert info.per_ecosystem == {"Debian": 3, "npm": 1}
    assert [p.name for p in db.parent.iterdir()] == ["advisories.db"]  # no temp files left behind


def test_failed_download_keeps_old_db(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    db = tmp_path / "advisories.db"
    update([url], ["Debian"], db)
    before = db.read_bytes()
    with pytest.raises(UpdateError, match="404"):
        update([url], ["Debian", "NoSuchEcosystem"], db)
    assert db.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name != "www"] == ["advisories.db"]


def test_unreachable_server_keeps_old_db(tmp_path: Path) -> None:
    db = tmp_path / "advisories.db"
    update([str(DATA)], None, db)
    before = db.read_bytes()
    with pytest.raises(UpdateError):
        update(["http://127.0.0.1:9"], ["PyPI"], db, Limits(timeout=2))
    assert db.read_bytes() == before


def test_download_size_limit(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(UpdateError, match="exceeds"):
        update([url], ["Debian"], tmp_path / "a.db", Limits(download=100))
    assert not (tmp_path / "a.db").exists()


def test_zip_bomb_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # 50 MB of zeros compresses to ~50 kB: refused by the uncompressed ceiling, before reading
    _write_zip(src / "PyPI" / "all.zip", {"BOMB.json": b"0" * 50_000_000})
    with pytest.raises(UpdateError, match="uncompressed"):
        update([str(src)], ["PyPI"], tmp_path / "a.db", Limits(uncompressed=10_000_000))
    many = tmp_path / "many"
    _write_zip(many / "PyPI" / "all.zip", {f"R{i}.json": b"{}" for i in range(50)})
    with pytest.raises(UpdateError, match="members"):
        update([str(many)], ["PyPI"], tmp_path / "a.db", Limits(members=10))


def test_directory_of_zips_filtered_by_ecosystem(served: tuple[str, Path], tmp_path: Path) -> None:
    _, root = served
    stats = update([str(root)], ["npm"], tmp_path / "a.db")
    assert stats.records == 1 and stats.per_ecosystem == {"npm": 1}


def test_dedup_keeps_newest_modified(tmp_path: Path) -> None:
    stats = update([str(DATA)], None, tmp_path / "a.db")
    assert stats.duplicates == 1
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("SELECT summary FROM advisories WHERE id = 'PYSEC-TEST-1'").fetchone() == ("new summary",)
    conn.close()


def test_bad_source(tmp_path: Path) -> None:
    with pytest.raises(UpdateError):
        update([str(tmp_path / "missing")], None, tmp_path / "a.db")


def test_status_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        status(tmp_path / "none.db")
