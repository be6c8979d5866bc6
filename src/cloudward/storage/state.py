"""What earlier storage scans concluded, per object: so a re-scan skips objects whose ETag was
already judged with the same rule set, and an interrupted scan resumes where it stopped.

An unchanged object keeps its verdict and its findings: the re-scan reports them again (without
reading the object), so the findings store sees them still open instead of wrongly fixed, and a
nightly report still lists the malware that is still in the bucket. A small SQLite file of its own
(stdlib `sqlite3`, WAL, one connection behind a lock) keeps this capability free of the store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Remembered", "ScanState"]


@dataclass(frozen=True)
class Remembered:
    verdict: str
    rule_ids: list[str]
    findings: list[dict[str, Any]]  # Finding.model_dump(mode="json") without target and fingerprint
    scanned_at: str


class ScanState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS scanned (url TEXT PRIMARY KEY, etag TEXT, ruleset TEXT NOT NULL, "
                "verdict TEXT NOT NULL, rule_ids TEXT NOT NULL, findings TEXT NOT NULL, scanned_at TEXT NOT NULL)")
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, url: str, etag: str | None, ruleset: str) -> Remembered | None:
        """The earlier result for this exact content and rule set, or None (never seen, changed, or
        judged by other rules)."""
        if not etag:
            return None
        with self._lock:
            row = self._conn.execute("SELECT etag, ruleset, verdict, rule_ids, findings, scanned_at FROM scanned "
                                     "WHERE url = ?", (url,)).fetchone()
        if row is None or row[0] != etag or row[1] != ruleset:
            return None
        try:
            return Remembered(verdict=row[2], rule_ids=json.loads(row[3]), findings=json.loads(row[4]),
                              scanned_at=row[5])
        except ValueError:
            return None

    def put(self, url: str, etag: str | None, ruleset: str, verdict: str, rule_ids: list[str],
            findings: list[dict[str, Any]]) -> None:
        """Record a finished object (errors are never recorded: the next run tries again)."""
        now = datetime.now(UTC).isoformat()
        with self._lock:
            self._conn.execute(
                "INSERT INTO scanned (url, etag, ruleset, verdict, rule_ids, findings, scanned_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET etag = excluded.etag, "
                "ruleset = excluded.ruleset, verdict = excluded.verdict, rule_ids = excluded.rule_ids, "
                "findings = excluded.findings, scanned_at = excluded.scanned_at",
                (url, etag, ruleset, verdict, json.dumps(rule_ids), json.dumps(findings), now))
            self._conn.commit()

    def forget(self, url: str) -> None:
        """An object that moved (quarantined, deleted) is no longer at this URL."""
        with self._lock:
            self._conn.execute("DELETE FROM scanned WHERE url = ?", (url,))
            self._conn.commit()
