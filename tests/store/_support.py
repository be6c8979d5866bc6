"""Builders shared by the store and CLI tests: findings, scans and throwaway PostgreSQL databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def exposure(host: str, port: int = 6379, rule: str = "redis.unauthenticated",
             severity: str = "high", **extra: Any) -> Finding:
    """An exposure finding shaped like exposure/evaluate.py makes them."""
    return Finding(
        rule_id=rule, title=f"{rule} on {host}:{port}", severity=severity, category="exposure",
        target=Target(kind="service", name=f"{host}:{port}"),
        location={"host": host, "port": port, "protocol": "tcp", "tls": False},
        evidence={"banner": "redis_version:7.0.15"}, remediation="Require authentication.",
        references=["https://redis.io/docs/latest/operate/oss_and_stack/management/security/"],
        attack=["T1190"], compliance={"cis": ["1.1"]}, tags=["teamtnt"], **extra,
    )


def scan(findings: Sequence[Finding], hours: float, targets: Sequence[str] = ("10.0.0.0/24",),
         kind: str = "exposure", status: ScanStatus = ScanStatus.COMPLETED, **extra: Any) -> ScanResult:
    """A finished scan that started `hours` after T0 and took a minute."""
    return ScanResult(kind=kind, targets=list(targets), started=at(hours),
                      finished=at(hours) + timedelta(minutes=1), status=status, findings=list(findings),
                      **extra)


@contextmanager
def fresh_database(dsn: str, sqlalchemy_url: str) -> Iterator[str]:
    """A new, empty database on the harness's PostgreSQL server; dropped afterwards."""
    name = f"cw_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sqlalchemy_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
