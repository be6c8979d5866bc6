"""Small helpers shared by the HTTP-speaking service probes.

Probes read answers from servers they do not trust, and their facts end up in findings, JSON
reports and the store. So every value copied into facts goes through one of these helpers: strings
are clipped, numbers are checked to be numbers, lists are capped, and a value a probe could not
see is left out (never guessed) so a rule cannot fire on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cloudward.exposure.net import HttpResponse, ProbeError
from cloudward.exposure.probes.base import ProbeContext

MAX_TEXT = 200
MAX_ITEMS = 10
MAX_ERRORS = 4


async def fetch(ctx: ProbeContext, path: str, tls: bool, *, method: str = "GET", body: bytes = b"",
                headers: dict[str, str] | None = None, facts: dict[str, Any] | None = None
                ) -> HttpResponse | None:
    """`ctx.http()` that returns None instead of raising.

    Before identification a ProbeError only means "not HTTP here" and the probe must return None;
    after it, the failure is worth keeping, so pass `facts` and it is recorded under `errors`.
    """
    if tls and ctx.tls_works is False:
        # The TLS handshake already failed on this port: every TLS request would fail the same
        # way, after the same timeout (a plain-HTTP server may sit on our ClientHello for seconds).
        return None
    try:
        return await ctx.http(path, tls=tls, method=method, body=body, headers=headers)
    except ProbeError as exc:
        if facts is not None:
            errors = facts.setdefault("errors", [])
            if len(errors) < MAX_ERRORS:
                errors.append(clip(f"{method} {path}: {exc}"))
        return None


def json_body(response: HttpResponse | None) -> Any:
    """The parsed JSON body, or None when absent, truncated or not JSON.

    Unlike `HttpResponse.json()` this also survives hostile nesting (`[[[[...`), which makes the
    json module raise RecursionError rather than ValueError.
    """
    if response is None or response.truncated or not response.body:
        return None
    try:
        return json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def json_object(response: HttpResponse | None) -> dict[str, Any] | None:
    data = json_body(response)
    return data if isinstance(data, dict) else None


def body_text(response: HttpResponse | None, limit: int = 4096) -> str:
    """The start of the body as text (for sniffing plain-text error messages)."""
    if response is None:
        return ""
    return response.body[:limit].decode("utf-8", "replace")


def clip(value: str, limit: int = MAX_TEXT) -> str:
    """Bound a string and drop control characters, so a banner cannot flood a report or a terminal."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in value[:limit])
    return cleaned if len(value) <= limit else cleaned + "..."


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A clipped string, or None when the server sent something that is not a string."""
    return clip(value, limit) if isinstance(value, str) else None


def integer(value: Any) -> int | None:
    """An int from a JSON number or a decimal string (proto3 JSON sends int64 as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        return int(value)
    return None


def names(values: Iterable[Any], limit: int = MAX_ITEMS) -> list[str]:
    """Sorted, de-duplicated, clipped string sample of at most `limit` items."""
    unique = sorted({clip(v, 120) for v in values if isinstance(v, str) and v})
    return unique[:limit]


def put(facts: dict[str, Any], key: str, value: Any) -> None:
    """Set a fact only when the value was actually seen (None means "not seen")."""
    if value is not None:
        facts[key] = value


def dig(data: Any, *path: str) -> Any:
    """Walk nested mappings; None as soon as a step is missing or not a mapping."""
    current = data
    for part in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def has_keys(data: Any, *keys: str) -> bool:
    return isinstance(data, Mapping) and all(k in data for k in keys)


def denied(response: HttpResponse | None) -> bool:
    """401/403: the server wants credentials we (deliberately) do not have."""
    return response is not None and response.status in (401, 403)
