"""Errors the API maps to HTTP statuses (see app.py's handlers); all are cloudward UsageErrors so
the CLI shows them the same way."""

from __future__ import annotations

from cloudward.core.errors import UsageError


class NotFound(UsageError):
    """404: no such user, token, job, schedule, webhook, finding or scan."""


class Conflict(UsageError):
    """409: the change would break an invariant (a duplicate name, the last admin disabled)."""


class Forbidden(UsageError):
    """403: authenticated, but this object is not yours to touch."""
