"""Replay an attack corpus in go-ftw's YAML format (the OWASP CRS regression tests) against a running
application and measure, per attack class, how many attack stages it blocked and how many benign
stages it wrongly blocked.

A stage is an attack when its `output.log.expect_ids` names rules that must fire, benign when it only
names `no_expect_ids`. The class is the CRS rule-id range of the test file (942 SQLi, 941 XSS, …).
Requests are written byte for byte on a plain socket (malformed URIs and headers stay malformed, as
the corpus means them); only the target given is contacted, whatever `dest_addr` a stage names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from cloudward.core.errors import UsageError

__all__ = ["CLASSES", "ClassScore", "Outcome", "Report", "Stage", "load_corpus", "paranoia_levels", "replay",
           "score"]

CLASSES: dict[str, str] = {
    "942": "sqli", "941": "xss", "932": "rce", "930": "lfi", "931": "rfi", "934": "ssrf/generic",
    "944": "java", "913": "scanner", "920": "protocol", "921": "protocol", "933": "php",
    "943": "session-fixation", "911": "method", "922": "multipart",
}
HEADLINE = ("sqli", "xss", "rce", "lfi", "rfi", "ssrf/generic", "java", "scanner", "protocol")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ID_TEXT = re.compile(r"id \"?(\d{6})")


@dataclass(frozen=True)
class Stage:
    file: str  # e.g. REQUEST-942-APPLICATION-ATTACK-SQLI/942100.yaml
    rule_id: str
    test_id: str
    index: int
    attack_class: str
    raw: bytes  # the request exactly as it goes on the wire (Host rewritten to the target only if absent)
    expect_ids: tuple[int, ...]
    no_expect_ids: tuple[int, ...]
    status: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.rule_id}-{self.test_id}" + (f".{self.index}" if self.index else "")

    @property
    def is_attack(self) -> bool:
        return bool(self.expect_ids)


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(int(v) for v in _ID_TEXT.findall(value)) or tuple(int(v) for v in re.findall(r"\d{6}", value))
    if isinstance(value, list):
        out: list[int] = []
        for item in value:
            out.extend(_ids(item))
        return tuple(out)
    return ()


def _build(stage_input: dict[str, Any]) -> bytes:
    if stage_input.get("encoded_request"):
        try:
            return base64.b64decode(str(stage_input["encoded_request"]))
        except (binascii.Error, ValueError):
            return b""
    if stage_input.get("raw_request"):
        return str(stage_input["raw_request"]).encode("utf-8", "surrogateescape")
    method = str(stage_input.get("method", "GET"))
    uri = str(stage_input.get("uri", "/"))
    version = str(stage_input.get("version", "HTTP/1.1"))
    headers = stage_input.get("headers") or {}
    data = stage_input.get("data")
    body = b""
    if isinstance(data, list):
        data = "".join(str(d) for d in data)
    if data is not None:
        body = str(data).encode("utf-8", "surrogateescape")
    lines = [f"{method} {uri} {version}".encode("utf-8", "surrogateescape")]
    names = set()
    for key, value in headers.items():
        names.add(str(key).lower())
        lines.append(f"{key}: {value}".encode("utf-8", "surrogateescape"))
    if stage_input.get("autocomplete_headers", True):
        if body and "content-length" not in names and "transfer-encoding" not in names:
            lines.append(f"Content-Length: {len(body)}".encode())
        if "connection" not in names:
            lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def load_corpus(directory: Path, *, request_only: bool = True) -> list[Stage]:
    """Every stage of every test file under `directory` (go-ftw YAML), in a stable order."""
    if not directory.is_dir():
        raise UsageError(f"corpus: {directory} is not a directory")
    stages: list[Stage] = []
    for path in sorted(directory.rglob("*.yaml")):
        relative = path.relative_to(directory).as_posix()
        if request_only and "RESPONSE-" in relative:
            continue
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if not isinstance(document, dict):
            continue
        rule_id = str(document.get("rule_id") or path.stem)
        attack_class = CLASSES.get(rule_id[:3], "other")
        for test in document.get("tests") or []:
            if not isinstance(test, dict):
                continue
            for index, stage in enumerate(test.get("stages") or []):
                body = stage.get("stage", stage) if isinstance(stage, dict) else None
                if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
                    continue
                output = body.get("output") or {}
                log = output.get("log") or {}
                expect = _ids(log.get("expect_ids")) + _ids(output.get("log_contains"))
                no_expect = _ids(log.get("no_expect_ids")) + _ids(output.get("no_log_contains"))
                status = output.get("status")
                statuses = tuple(status) if isinstance(status, list) else ((status,) if isinstance(status, int) else ())
                stages.append(Stage(relative, rule_id, str(test.get("test_id", "?")), index, attack_class,
                                    _build(body["input"]), expect, no_expect, statuses))
    return stages


def paranoia_levels(rules_dir: Path) -> dict[int, int]:
    """Rule id -> CRS paranoia level, read from the `@lt N` skip markers of the rule files."""
    levels: dict[int, int] = {}
    for path in sorted(rules_dir.glob("*.conf")):
        level = 1
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            marker = re.search(r'DETECTION_PARANOIA_LEVEL\s+"@lt\s+(\d)"', line)
            if marker:
                level = max(1, int(marker.group(1)))
                continue
            for rule_id in re.findall(r"\bid:(\d{6})", line):
                levels.setdefault(int(rule_id), level)
    return levels


@dataclass(frozen=True)
class Outcome:
    stage: Stage
    status: int  # 0 when no HTTP status came back
    error: str = ""

    def blocked(self, statuses: Iterable[int]) -> bool:
        return self.status in set(statuses)


def _target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"--target: expected http://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 80, parts.netloc


def send_raw(host: str, port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, str]:
    """Write `raw` and read the status line of the answer: (status, "") or (0, error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):  # the server may answer (413, 403) before reading everything
                sock.sendall(raw)
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return 0, type(exc).__name__
    match = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", data)
    if not match:
        return 0, "no HTTP status"
    return int(match.group(1)), ""


def replay(stages: list[Stage], target: str, *, concurrency: int = 8, timeout: float = 10.0,
           progress: Callable[[int], None] | None = None) -> list[Outcome]:
    host, port, _ = _target(target)

    def one(stage: Stage) -> Outcome:
        status, error = send_raw(host, port, stage.raw, timeout) if stage.raw else (0, "empty request")
        return Outcome(stage, status, error)

    out: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for outcome in pool.map(one, stages):
            out.append(outcome)
            if progress is not None:
                progress(1)
    return out


@dataclass
class ClassScore:
    attack_class: str
    attacks: int = 0
    blocked: int = 0
    benign: int = 0
    wrongly_blocked: int = 0
    errors: int = 0
    pl1_attacks: int = 0
    pl1_blocked: int = 0

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.attack_class, "attacks": self.attacks, "blocked": self.blocked,
                "detection_rate": self._rate(self.blocked, self.attacks), "benign": self.benign,
                "wrongly_blocked": self.wrongly_blocked,
                "false_positive_rate": self._rate(self.wrongly_blocked, self.benign),
                "pl1_attacks": self.pl1_attacks, "pl1_blocked": self.pl1_blocked,
                "pl1_detection_rate": self._rate(self.pl1_blocked, self.pl1_attacks), "errors": self.errors}


@dataclass
class Report:
    target: str
    stages: int
    classes: list[ClassScore] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "stages": self.stages, "classes": [c.as_dict() for c in self.classes]}


def score(outcomes: list[Outcome], target: str, *, blocked_statuses: Iterable[int] = (403,),
          levels: dict[int, int] | None = None) -> Report:
    statuses = tuple(blocked_statuses)
    by_class: dict[str, ClassScore] = {}
    for outcome in outcomes:
        stage = outcome.stage
        entry = by_class.setdefault(stage.attack_class, ClassScore(stage.attack_class))
        if outcome.status == 0:
            entry.errors += 1
            continue
        blocked = outcome.blocked(statuses)
        if stage.is_attack:
            entry.attacks += 1
            entry.blocked += blocked
            if levels is not None and min((levels.get(i, 1) for i in stage.expect_ids), default=1) <= 1:
                entry.pl1_attacks += 1
                entry.pl1_blocked += blocked
        elif stage.no_expect_ids:
            entry.benign += 1
            entry.wrongly_blocked += blocked
    order = {name: i for i, name in enumerate(HEADLINE)}
    classes = sorted(by_class.values(), key=lambda c: (order.get(c.attack_class, 99), c.attack_class))
    return Report(target, len(outcomes), classes)


def iter_sample(stages: list[Stage], every: int) -> Iterator[Stage]:
    """Every `every`-th stage of each class (deterministic), for quick runs."""
    seen: dict[str, int] = {}
    for stage in stages:
        count = seen.get(stage.attack_class, 0)
        seen[stage.attack_class] = count + 1
        if count % max(1, every) == 0:
            yield stage
