"""`--expires` values: an ISO date or datetime, or a duration from now such as 30d, 12h, 2w.

A bare date means midnight UTC at the start of that day; a datetime without a zone is UTC. The
result is always an aware UTC datetime, and must lie in the future: a suppression that expires
before it is created is almost certainly a typo.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from cloudward.core.errors import UsageError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_expiry(text: str, now: datetime) -> datetime:
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2).lower()]
        if amount == 0:
            raise UsageError(f"--expires: {text!r} is already over")
        try:
            return now + timedelta(**{unit: amount})
        except OverflowError:
            raise UsageError(f"--expires: {text!r} is too far in the future") from None
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--expires: {text!r} is neither an ISO date/datetime (2025-12-31, 2025-12-31T18:00+01:00) "
            "nor a duration (30d, 12h, 2w, 90m, 45s)"
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment <= now:
        raise UsageError(f"--expires: {text!r} is in the past")
    return moment
