"""The docker proxy's findings: rule metadata from `rules/docker-proxy.yaml`, one Finding per refused
request, and the queue that carries them off the request path.

The queue has the same shape as appsec's sink (capabilities do not import each other): the event
loop only ever does `put_nowait`; a full queue drops and counts, one daemon thread hands batches to
the sink, and a sink that raises is counted while the proxy goes on refusing.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule, packaged_engine_rules
from cloudward.network.docker_judge import Violation

__all__ = ["ENGINE", "FindingQueue", "JsonLinesSink", "LoggingSink", "Sink", "docker_rules", "refusal_finding",
           "validate_rule"]

ENGINE = "docker_proxy"
RULES_FILE = "docker-proxy.yaml"
Sink = Callable[[Sequence[Finding]], None]
log = logging.getLogger("cloudward.network.docker_proxy")


def validate_rule(rule: Rule) -> None:
    """A docker_proxy rule's match block is only the HTTP status the client is answered with."""
    status = rule.match.get("status")
    if not isinstance(status, int) or not 400 <= status <= 499:
        raise ValueError("match.status must be a 4xx HTTP status")
    extra = set(rule.match) - {"engine", "status"}
    if extra:
        raise ValueError(f"unknown match keys: {', '.join(sorted(extra))}")


@lru_cache(maxsize=1)
def docker_rules() -> dict[str, Rule]:
    return {rule.id: rule for rule in packaged_engine_rules("cloudward.network", RULES_FILE, ENGINE, validate_rule)}


def refusal_finding(rule_id: str, *, service: str, method: str, path: str, client: str, token: str | None,
                    incident: str, violations: Sequence[Violation] = (), detail: str = "") -> Finding:
    """One refused request. The key is the client's address, so the same attack from the same client
    is one finding in the store however often it is repeated; no body, header value or token leaves."""
    rule = docker_rules()[rule_id]
    evidence: dict[str, object] = {"action": "refused", "status": rule.match["status"], "incident_id": incident,
                                   "client": client, "token": token or ""}
    if violations:
        evidence["reasons"] = [{"reason": v.reason, "field": v.field, "value": v.value[:200]} for v in violations]
    if detail:
        evidence["detail"] = detail[:300]
    return Finding(rule_id=rule.id, title=rule.title, severity=rule.severity, category=rule.category,
                   target=Target(kind="request", name=f"{service}:{method} {path[:200]}"),
                   location={"client": client, "method": method, "path": path[:500]}, evidence=evidence,
                   description=rule.description, remediation=rule.remediation, references=list(rule.references),
                   attack=list(rule.attack), compliance=dict(rule.compliance), tags=list(rule.tags),
                   key=client.rsplit(":", 1)[0])


class JsonLinesSink:
    """Appends each finding as one `cloudward/v1` JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, findings: Sequence[Finding]) -> None:
        lines = "".join(json.dumps(f.to_contract(), sort_keys=True) + "\n" for f in findings)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)


class LoggingSink:
    """The default sink: one warning per finding."""

    def __call__(self, findings: Sequence[Finding]) -> None:
        for f in findings:
            log.warning("finding %s %s %s incident %s", f.rule_id, f.severity.value, f.target.name,
                        f.evidence.get("incident_id", ""))


class FindingQueue:
    def __init__(self, sink: Sink | None = None, *, maxsize: int = 10_000, batch: int = 200) -> None:
        self.sink: Sink = sink or LoggingSink()
        self.batch = batch
        self._queue: queue.Queue[Finding | None] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="cloudward-docker-proxy-findings", daemon=True)
        self._started = False
        self._closed = False
        self._pending = 0
        self.written = self.dropped = self.sink_errors = 0

    def put(self, finding: Finding) -> None:
        """Never blocks."""
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
            if self._closed:
                self.dropped += 1
                return
            try:
                self._queue.put_nowait(finding)
            except queue.Full:
                self.dropped += 1
                return
            self._pending += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[Finding] = []
            while item is not None:
                batch.append(item)
                if len(batch) >= self.batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if item is None:
                return

    def _write(self, batch: list[Finding]) -> None:
        try:
            self.sink(batch)
            failed = False
        except Exception as exc:  # a failing sink must not stop protection
            failed = True
            log.warning("findings sink failed (%s); %d findings lost", type(exc).__name__, len(batch))
        with self._lock:
            if failed:
                self.sink_errors += 1
            else:
                self.written += len(batch)
            self._pending -= len(batch)
            self._idle.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._lock:
            self._closed = True
            started = self._started
        if started:
            self._queue.put(None)
            self._thread.join(timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "sink_errors": self.sink_errors,
                    "pending": self._pending}
