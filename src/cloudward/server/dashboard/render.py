"""Turning a template and its data into a response: one Jinja2 environment, its filters, and the
headers every page carries.

Autoescaping is on for every template and nothing is marked safe: a finding's evidence, a target
name or a rule title may hold markup written by an attacker, and it must reach the browser as
text. The Content-Security-Policy backs that up (scripts and styles only from this server, no
inline ones, no frames, forms only to this server), so even a missed escape could not run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from cloudward import __version__
from cloudward.core.severity import Severity
from cloudward.server import security
from cloudward.server.accounts import Principal
from cloudward.server.auth import context
from cloudward.server.roles import Role

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
MAX_SHOWN_CHARS = 20_000
SEVERITIES = [s.value for s in reversed(list(Severity))]  # critical first
_ATTACK = re.compile(r"^T(\d{4})(?:\.(\d{3}))?$")
NAV = [("overview", "/", "Overview"), ("findings", "/findings", "Findings"), ("scans", "/scans", "Scans"),
       ("jobs", "/jobs", "Jobs"), ("rules", "/rules", "Rules"), ("schedules", "/schedules", "Schedules")]


def severity_class(value: object) -> str:
    text = str(getattr(value, "value", value))
    return f"sev-{text}" if text in SEVERITIES else "sev-unknown"


def as_utc(value: datetime | None) -> str:
    if value is None:
        return "—"
    moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def ago(value: datetime | None, now: datetime) -> str:
    """'5 min ago', '3 h ago', '12 d ago' (or 'in 2 h' for a future time such as a next run)."""
    if value is None:
        return "never"
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    seconds = (now - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        text = "just now" if not future else "in under a minute"
        return text
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = int(seconds // size)
            return f"in {amount} {unit}" if future else f"{amount} {unit} ago"
    return "just now"


def shown(value: Any) -> str:
    """A value for a <pre>: text as it is, anything else as indented JSON; bounded in length."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str,
                                                           sort_keys=True)
    if len(text) > MAX_SHOWN_CHARS:
        return text[:MAX_SHOWN_CHARS] + f"\n… ({len(text) - MAX_SHOWN_CHARS:,} more characters not shown)"
    return text


def web_link(value: object) -> bool:
    """Only http(s) references become links: a `javascript:` or `data:` one stays text."""
    return isinstance(value, str) and value.strip().lower().startswith(("https://", "http://"))


def attack_url(technique: str) -> str | None:
    match = _ATTACK.match(technique)
    if not match:
        return None
    sub = f"/{match.group(2)}" if match.group(2) else ""
    return f"https://attack.mitre.org/techniques/T{match.group(1)}{sub}/"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def number(value: int | float | None) -> str:
    return "0" if value is None else f"{value:,}"


def query(params: Mapping[str, Any], **changes: Any) -> str:
    """`?a=1&b=2` from the current parameters with some changed; empty values are dropped, a
    list becomes a repeated parameter. Returned as text: the template escapes it into the href."""
    merged: dict[str, Any] = {**params, **changes}
    pairs: list[tuple[str, str]] = []
    for key, value in merged.items():
        values: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is not None and item != "":
                pairs.append((key, str(item)))
    return "?" + urlencode(pairs) if pairs else "?"


def short(value: str | None, size: int = 12) -> str:
    return (value or "")[:size]


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("cloudward.server.dashboard", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(sev=severity_class, utc=as_utc, shown=shown, num=number, short=short, duration=duration)
    env.globals.update(web_link=web_link, attack_url=attack_url, query=query, SEVERITIES=SEVERITIES, NAV=NAV,
                       version=__version__)
    return env


def csrf_for(request: Request, principal: Principal | None) -> str:
    if principal is None:
        return ""
    return security.csrf_token(context(request).config.secret_key, principal.credential_id)


def render(request: Request, template: str, *, status: int = 200, principal: Principal | None = None,
           section: str = "", **data: Any) -> HTMLResponse:
    from cloudward.server.dashboard.assets import asset_url

    who = principal if principal is not None else getattr(request.state, "principal", None)
    now = context(request).db.clock()
    page = environment().get_template(template).render(
        principal=who, csrf=csrf_for(request, who), section=section, now=now,
        ago=lambda value: ago(value, now), asset=asset_url,
        can_triage=bool(who and who.role.allows(Role.ANALYST)),
        is_admin=bool(who and who.role.allows(Role.ADMIN)), **data)
    return HTMLResponse(page, status_code=status, headers={"content-security-policy": CSP})
