"""The local advisory database: OSV records loaded into SQLite, rebuilt atomically on update.

Why rebuild rather than patch: a new file is written beside the old one and `os.replace`d over
it, so a reader (a running image scan) never sees a half-built database and a failed download or
load leaves the previous database exactly as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from cloudward.engines.osv.match import normalise_name, record_severity
from cloudward.engines.osv.versions import ecosystem_base

DEFAULT_BASE_URL = "https://osv-vulnerabilities.storage.googleapis.com"
DEFAULT_ECOSYSTEMS = ("Debian", "Ubuntu", "Alpine", "PyPI", "npm", "Go", "Maven")
MAX_DOWNLOAD = 2 * 1024**3
MAX_UNCOMPRESSED = 8 * 1024**3
MAX_MEMBERS = 2_000_000
MAX_RECORD = 64 * 1024**2

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE advisories (
    id TEXT PRIMARY KEY, modified TEXT, published TEXT, summary TEXT, aliases TEXT NOT NULL,
    severity TEXT NOT NULL, cvss_score REAL, cvss_vector TEXT, withdrawn TEXT, refs TEXT NOT NULL);
CREATE TABLE affected (
    advisory_id TEXT NOT NULL, ecosystem TEXT NOT NULL, eco_base TEXT NOT NULL, name TEXT NOT NULL,
    ranges TEXT NOT NULL, versions TEXT NOT NULL);
CREATE INDEX affected_advisory ON affected (advisory_id);
"""
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster on big corpora
_INDEX = "CREATE INDEX affected_lookup ON affected (eco_base, name);"


class UpdateError(Exception):
    """An update could not complete; the previous database is untouched."""


@dataclass
class UpdateStats:
    records: int = 0
    affected: int = 0
    withdrawn: int = 0
    duplicates: int = 0
    malformed: list[str] = field(default_factory=list)
    per_ecosystem: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Ceilings against hostile or broken downloads (zip bombs, endless streams)."""

    download: int = MAX_DOWNLOAD
    uncompressed: int = MAX_UNCOMPRESSED
    members: int = MAX_MEMBERS
    record: int = MAX_RECORD
    timeout: float = 60.0


def default_db_path(config: Path | None = None) -> Path:
    from cloudward.core.config import load_settings

    return load_settings(config).resolved_data_dir() / "advisories.db"


def _parse(name: str, data: bytes) -> list[Any]:
    """One file's records: JSON or YAML, a single record or a list of them."""
    loaded = yaml.load(data, Loader=_LOADER) if name.endswith((".yaml", ".yml")) else json.loads(data)  # noqa: S506 - a safe loader
    return loaded if isinstance(loaded, list) else [loaded]


def _zip_records(path: Path, limits: Limits, stats: UpdateStats) -> Iterator[tuple[str, Any]]:
    """Records from an all.zip, refusing archives whose member count or declared/actual size
    exceeds the limits (a zip bomb), before and while reading."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpdateError(f"{path}: not a zip archive: {exc}") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.members:
            raise UpdateError(f"{path}: {len(members)} members exceed the limit of {limits.members}")
        declared = sum(m.file_size for m in members)
        if declared > limits.uncompressed:
            raise UpdateError(f"{path}: {declared} uncompressed bytes exceed the limit of {limits.uncompressed}")
        total = 0
        for member in members:
            if not member.filename.endswith((".json", ".yaml", ".yml")):
                continue
            label = f"{path.name}:{member.filename}"
            try:
                with archive.open(member) as fh:
                    data = fh.read(limits.record + 1)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:  # CRC errors, truncated members
                stats.malformed.append(f"{label}: {exc}")
                continue
            total += len(data)
            if len(data) > limits.record or total > limits.uncompressed:
                raise UpdateError(f"{path}: uncompressed content exceeds the limits (zip bomb?)")
            yield from _labelled(label, data, stats)


def _labelled(label: str, data: bytes, stats: UpdateStats) -> Iterator[tuple[str, Any]]:
    try:
        records = _parse(label, data)
    except (ValueError, yaml.YAMLError) as exc:
        stats.malformed.append(f"{label}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return
    for record in records:
        yield label, record


def _dir_records(root: Path, ecosystems: set[str], limits: Limits, stats: UpdateStats) -> Iterator[tuple[str, Any]]:
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".zip":
            # <ECOSYSTEM>/all.zip or <ECOSYSTEM>.zip
            eco = path.parent.name if path.stem == "all" else path.stem
            if not ecosystems or eco in ecosystems:
                yield from _zip_records(path, limits, stats)
        elif path.suffix in (".json", ".yaml", ".yml"):
            if path.stat().st_size > limits.record:
                stats.malformed.append(f"{path}: larger than {limits.record} bytes")
                continue
            yield from _labelled(str(path.relative_to(root)), path.read_bytes(), stats)


def _download(url: str, dest: IO[bytes], limits: Limits) -> None:
    """Stream URL into DEST, stopping at the size ceiling; any failure is an UpdateError."""
    import httpx

    try:
        with httpx.stream("GET", url, timeout=limits.timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise UpdateError(f"{url}: HTTP {response.status_code}")
            size = 0
            for chunk in response.iter_bytes(1 << 20):
                size += len(chunk)
                if size > limits.download:
                    raise UpdateError(f"{url}: download exceeds {limits.download} bytes")
                dest.write(chunk)
    except httpx.HTTPError as exc:
        raise UpdateError(f"{url}: {exc}") from None


def _url_records(base: str, ecosystems: list[str], tmpdir: Path, limits: Limits,
                 stats: UpdateStats) -> Iterator[tuple[str, Any]]:
    from urllib.parse import quote

    # Download everything first: a failure then aborts before anything is loaded.
    paths: list[Path] = []
    for eco in ecosystems:
        path = tmpdir / f"{eco.replace('/', '_')}.zip"
        with path.open("wb") as fh:
            _download(f"{base.rstrip('/')}/{quote(eco)}/all.zip", fh, limits)
        paths.append(path)
    for path in paths:
        yield from _zip_records(path, limits, stats)


def _valid(record: Any) -> str | None:
    """Why RECORD cannot be loaded, or None."""
    if not isinstance(record, dict):
        return "not a mapping"
    if not isinstance(record.get("id"), str) or not record["id"]:
        return "no id"
    if not isinstance(record.get("affected", []), list):
        return "affected is not a list"
    for entry in record.get("affected") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("package", {}), dict):
            return "malformed affected entry"
        if not isinstance(entry.get("ranges", []), list) or not isinstance(entry.get("versions", []), list):
            return "malformed ranges/versions"
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _insert(conn: sqlite3.Connection, record: dict[str, Any], stats: UpdateStats) -> None:
    """Store RECORD unless an equal or newer `modified` of the same id is already stored; records
    stream straight into SQLite so a full export never sits in memory."""
    old = conn.execute("SELECT modified FROM advisories WHERE id = ?", (record["id"],)).fetchone()
    if old is not None:
        stats.duplicates += 1
        if str(old[0] or "") >= str(record.get("modified") or ""):
            return
        conn.execute("DELETE FROM advisories WHERE id = ?", (record["id"],))
        conn.execute("DELETE FROM affected WHERE advisory_id = ?", (record["id"],))
    severity, score, vector = record_severity(record)
    refs = [str(r.get("url")) for r in record.get("references") or [] if isinstance(r, dict) and r.get("url")]
    conn.execute("INSERT INTO advisories VALUES (?,?,?,?,?,?,?,?,?,?)", (
        record["id"], _str(record.get("modified")), _str(record.get("published")),
        str(record.get("summary") or record.get("details") or "")[:1000],
        json.dumps([str(a) for a in record.get("aliases") or []]), severity, score, vector,
        _str(record.get("withdrawn")), json.dumps(refs)))
    for entry in record.get("affected") or []:
        package = entry.get("package") or {}
        ecosystem, name = str(package.get("ecosystem") or ""), str(package.get("name") or "")
        if not ecosystem or not name:
            continue
        conn.execute("INSERT INTO affected VALUES (?,?,?,?,?,?)", (
            record["id"], ecosystem, ecosystem_base(ecosystem), normalise_name(ecosystem, name),
            json.dumps(entry.get("ranges") or []), json.dumps([str(v) for v in entry.get("versions") or []])))


def _finish(conn: sqlite3.Connection, stats: UpdateStats) -> None:
    """Index, stamp, and count what was actually kept (after deduplication)."""
    conn.execute(_INDEX)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("updated", now), ("schema", "1")])
    stats.records, stats.withdrawn = conn.execute("SELECT count(*), count(withdrawn) FROM advisories").fetchone()
    stats.affected = conn.execute("SELECT count(*) FROM affected").fetchone()[0]
    stats.per_ecosystem = dict(conn.execute("SELECT eco_base, count(*) FROM affected GROUP BY eco_base").fetchall())


def _load(conn: sqlite3.Connection, sources: list[str], ecosystems: list[str], tmp: Path, limits: Limits,
          stats: UpdateStats) -> None:
    conn.executescript(_SCHEMA)
    for source in sources:
        if source.startswith(("http://", "https://")):
            stream = _url_records(source, ecosystems, tmp, limits, stats)
        elif Path(source).is_dir():
            stream = _dir_records(Path(source), set(ecosystems), limits, stats)
        else:
            raise UpdateError(f"{source}: neither a directory nor an http(s) URL")
        for label, record in stream:
            problem = _valid(record)
            if problem:
                ident = record.get("id") if isinstance(record, dict) else None
                stats.malformed.append(f"{label}{f' ({ident})' if ident else ''}: {problem}")
                continue
            try:
                _insert(conn, record, stats)
            except (TypeError, ValueError, AttributeError) as exc:  # odd field types deep in a record
                conn.execute("DELETE FROM advisories WHERE id = ?", (record["id"],))
                conn.execute("DELETE FROM affected WHERE advisory_id = ?", (record["id"],))
                stats.malformed.append(f"{label} ({record['id']}): {exc}")
    _finish(conn, stats)


def update(sources: list[str], ecosystems: list[str] | None = None, db_path: Path | str | None = None,
           limits: Limits | None = None) -> UpdateStats:
    """Rebuild the database at DB_PATH from SOURCES (directories of records / all.zip files, or base
    URLs serving `<base>/<ECOSYSTEM>/all.zip`). Malformed records are counted in the stats; records
    sharing an id keep the newest `modified`. Raises UpdateError, leaving the old database intact.

    ECOSYSTEMS (default: DEFAULT_ECOSYSTEMS) choose which all.zip files are downloaded or read;
    loose JSON/YAML record files in a directory are always loaded whole.
    """
    limits = limits or Limits()
    ecosystems = list(ecosystems) if ecosystems else list(DEFAULT_ECOSYSTEMS)
    target = Path(db_path) if db_path is not None else default_db_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    stats = UpdateStats()
    with tempfile.TemporaryDirectory(prefix="osv-", dir=target.parent) as tmp:
        new_name = Path(tmp) / "advisories.db"
        conn = sqlite3.connect(new_name)
        try:
            with conn:
                _load(conn, list(sources) or [DEFAULT_BASE_URL], ecosystems, Path(tmp), limits, stats)
        finally:
            conn.close()
        os.replace(new_name, target)
    return stats


@dataclass
class DbStatus:
    path: Path
    updated: str | None
    advisories: int
    withdrawn: int
    per_ecosystem: dict[str, int]


def status(db_path: Path | str | None = None) -> DbStatus:
    """Counts of affected entries per ecosystem base and the last update time."""
    path = Path(db_path) if db_path is not None else default_db_path()
    if not path.is_file():
        raise FileNotFoundError(f"advisory database not found: {path} (run `cloudward db update`)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        updated = conn.execute("SELECT value FROM meta WHERE key = 'updated'").fetchone()
        total, withdrawn = conn.execute(
            "SELECT count(*), count(withdrawn) FROM advisories").fetchone()
        per = dict(conn.execute(
            "SELECT eco_base, count(DISTINCT advisory_id) FROM affected GROUP BY eco_base ORDER BY eco_base"
        ).fetchall())
    finally:
        conn.close()
    return DbStatus(path, updated[0] if updated else None, total, withdrawn, per)
