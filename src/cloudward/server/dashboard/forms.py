"""The dashboard's forms: urlencoded bodies read with a size bound, and safe redirect targets.

Parsed with the standard library (no python-multipart): the forms are a few short fields. The
auth dependency has already read the body to find the CSRF field; Starlette keeps it, so reading
it again here costs nothing.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request

from cloudward.core.errors import UsageError

MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


async def read_form(request: Request) -> dict[str, str]:
    """The first value of each field; {} for a body that is not a form (a JSON API client)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise UsageError(f"form too large (at most {MAX_FORM_BYTES // 1024} KiB)")
    try:
        fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise UsageError("form has too many fields") from None
    return {name: values[0] for name, values in fields.items() if values and name != "csrf_token"}


def safe_next(target: str | None, default: str = "/") -> str:
    """A path on this server to go back to after logging in; anything else (another host, `//x`,
    a backslash trick, control characters) becomes `default`: never an open redirect."""
    if not target or len(target) > 2000:
        return default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    return target
