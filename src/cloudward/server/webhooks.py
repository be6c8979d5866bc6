"""Webhook notifications: when a job's scan finds something new at or above a webhook's
severity, POST it as generic JSON or as a Slack-compatible message.

"New" is the store's diff: in this scan and not in the previous completed scan of the same kind
and scope (the first scan of a scope makes everything new); suppressed findings are left out.
Payloads carry what identifies and ranks a finding (rule, title, severity, category, target,
location, ATT&CK ids, fingerprint) and never its evidence: evidence is already redacted by the
capabilities, but leaving it out means no scanner bug can ever push a secret to a chat channel.

Generic JSON may be signed: with a secret set, `X-Cloudward-Signature: sha256=<hex HMAC of the
body>`. URLs must be https, or http to a loopback address unless `allow_http` was given. The API
shows a URL masked (scheme, host and port): a Slack webhook URL is itself a credential.
Delivery is at most three attempts with a short back-off; the outcome is kept on the webhook row
(status code or error class, never the URL) and counted in /metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from cloudward import __version__
from cloudward.core.errors import UsageError
from cloudward.core.severity import Severity
from cloudward.server.audit import Actor, record
from cloudward.server.db import ServerDB
from cloudward.server.errors import NotFound
from cloudward.server.jobs.runner import SUCCEEDED, JobInfo
from cloudward.store.models import WebhookRow

log = logging.getLogger("cloudward.server.webhooks")
KINDS = ("generic", "slack")
TIMEOUT = 10.0
ATTEMPTS = 3
MAX_LISTED = 50  # findings listed in one payload; the count says how many there were
SLACK_LISTED = 10


@dataclass(frozen=True)
class WebhookInfo:
    id: int
    name: str
    kind: str
    url: str  # masked
    signed: bool
    min_severity: str
    enabled: bool
    created_by: str
    created: datetime
    last_delivery: datetime | None
    last_status: str


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/***"


def check_url(url: str, allow_http: bool = False) -> str:
    url = url.strip()
    if len(url) > 2000:
        raise UsageError("webhook URL is longer than 2000 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise UsageError("webhook URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("webhook URL must be http(s)://host/...")
    if parts.username or parts.password:
        raise UsageError("webhook URL must not carry user:password (use a signing secret)")
    if parts.scheme == "http" and not allow_http and not _loopback(parts.hostname):
        raise UsageError("webhook URL must be https (plain http only to a loopback address, or with allow_http)")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _info(row: WebhookRow) -> WebhookInfo:
    return WebhookInfo(row.id, row.name, row.kind, mask_url(row.url), bool(row.secret), row.min_severity, row.enabled,
                       row.created_by, row.created, row.last_delivery, row.last_status or "")


def add_webhook(db: ServerDB, actor: Actor, *, name: str, url: str, kind: str = "generic",
                min_severity: str = "high", secret: str | None = None, allow_http: bool = False) -> WebhookInfo:
    if kind not in KINDS:
        raise UsageError(f"unknown webhook kind {kind[:40]!r} (choose from {', '.join(KINDS)})")
    try:
        severity = Severity.parse(min_severity)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    checked = check_url(url, allow_http)
    name = name.strip()[:200] or "webhook"
    now = db.clock()
    with db.write() as session:
        row = WebhookRow(name=name, kind=kind, url=checked, secret=secret or None, min_severity=severity.value,
                         enabled=True, created_by=actor.name[:200], created=now, last_status="")
        session.add(row)
        session.flush()
        record(session, actor, "webhook.create", f"webhook:{row.id}", now, name=name, kind=kind,
               url=mask_url(checked), min_severity=severity.value, signed=bool(secret))
        return _info(row)


def list_webhooks(db: ServerDB) -> list[WebhookInfo]:
    with db.read() as session:
        return [_info(r) for r in session.scalars(select(WebhookRow).order_by(WebhookRow.id))]


def remove_webhook(db: ServerDB, actor: Actor, webhook_id: int) -> None:
    now = db.clock()
    with db.write() as session:
        row = session.get(WebhookRow, webhook_id)
        if row is None:
            raise NotFound(f"no webhook {webhook_id}")
        record(session, actor, "webhook.delete", f"webhook:{row.id}", now, name=row.name)
        session.delete(row)


# --- payloads ------------------------------------------------------------------------------------


def finding_summary(item: Any) -> dict[str, Any]:
    """A StoredFinding as the webhook shows it: identity and rank, no evidence."""
    f = item.finding
    return {"fingerprint": f.fingerprint, "rule_id": f.rule_id, "title": f.title, "severity": f.severity.value,
            "category": f.category.value, "target": {"kind": f.target.kind, "name": f.target.name},
            "location": f.location, "attack": list(f.attack),
            "first_seen": f.first_seen.isoformat() if f.first_seen else None}


def generic_payload(job: JobInfo, scan: dict[str, Any], findings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"event": "scan.new_findings", "tool": {"name": "cloudward", "version": __version__},
            "job": {"id": job.id, "command": job.command, "schedule_id": job.schedule_id},
            "scan": scan, "count": len(findings), "truncated": len(findings) > MAX_LISTED,
            "findings": list(findings[:MAX_LISTED])}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:300]


def slack_payload(job: JobInfo, scan: dict[str, Any], findings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    worst = max((Severity(f["severity"]) for f in findings), default=Severity.INFO)
    head = (f"cloudward: {len(findings)} new finding{'s' if len(findings) != 1 else ''} "
            f"(worst: {worst.value}) from `{_slack_escape(job.command)}`")
    lines = [f"• *{f['severity'].upper()}* {_slack_escape(f['title'])} — "
             f"`{_slack_escape(f['target']['name'])}` ({_slack_escape(f['rule_id'])})"
             for f in findings[:SLACK_LISTED]]
    if len(findings) > SLACK_LISTED:
        lines.append(f"… and {len(findings) - SLACK_LISTED} more")
    return {"text": head, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"scan {scan.get('id', '')} · job {job.id}"}]},
    ]}


# --- delivery ------------------------------------------------------------------------------------


class Notifier:
    """Called when a job finishes: works out the new findings and delivers them."""

    def __init__(self, db: ServerDB, count: Callable[[str], None] | None = None, timeout: float = TIMEOUT,
                 backoff: float = 0.5) -> None:
        self.db = db
        self.count = count or (lambda result: None)
        self.timeout = timeout
        self.backoff = backoff

    def __call__(self, job: JobInfo) -> None:
        if job.status != SUCCEEDED or not job.scan_id:
            return
        try:
            self.notify(job)
        except Exception:  # a notification problem must never take the runner down
            log.exception("webhook notification for job %s failed", job.id)

    def new_findings(self, scan_id: str) -> tuple[dict[str, Any], list[Any]]:
        from cloudward.store import FindingQuery

        store = self.db.store
        try:
            diff = store.diff(after=scan_id)
            return diff.after.to_dict(), list(diff.new)
        except UsageError:  # no earlier completed scan of this scope: everything it saw is new
            scan = store.get_scan(scan_id)
            return scan.to_dict(), store.list_findings(FindingQuery(scan_id=scan_id, status="all"))

    def notify(self, job: JobInfo) -> int:
        with self.db.read() as session:
            hooks = [(r.id, r.kind, r.url, r.secret, Severity(r.min_severity))
                     for r in session.scalars(select(WebhookRow).where(WebhookRow.enabled.is_(True)))]
        if not hooks or job.scan_id is None:
            return 0
        scan, new = self.new_findings(job.scan_id)
        sent = 0
        for hook_id, kind, url, secret, threshold in hooks:
            chosen = [finding_summary(i) for i in new if i.finding.severity >= threshold]
            if not chosen:
                continue
            payload = (slack_payload if kind == "slack" else generic_payload)(job, scan, chosen)
            status = self.deliver(url, payload, secret if kind == "generic" else None)
            with self.db.write() as session:
                row = session.get(WebhookRow, hook_id)
                if row is not None:
                    row.last_delivery, row.last_status = self.db.clock(), status[:200]
            sent += 1
        return sent

    def deliver(self, url: str, payload: dict[str, Any], secret: str | None) -> str:
        import httpx

        body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"cloudward/{__version__}"}
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Cloudward-Signature"] = f"sha256={digest}"
        status = ""
        for attempt in range(ATTEMPTS):
            try:
                with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                    response = client.post(url, content=body, headers=headers)
                status = f"{response.status_code}"
                if response.status_code < 300:
                    self.count("delivered")
                    return status
                if response.status_code < 500 and response.status_code != 429:
                    break  # the receiver refuses this payload: retrying will not change its mind
            except httpx.HTTPError as exc:
                status = f"error: {type(exc).__name__}"  # the message may quote the URL
            if attempt + 1 < ATTEMPTS:
                time.sleep(self.backoff * (2 ** attempt))
        self.count("failed")
        return status
