"""Shared bits of the routers: error responses for the OpenAPI document, the v1 prefix."""

from __future__ import annotations

from typing import Any

from cloudward.server.schemas import ErrorOut

PREFIX = "/api/v1"

_ERRORS = {
    400: "The request cannot be done as asked (the message says why)",
    401: "Not authenticated",
    403: "Authenticated, but not allowed (role, CSRF, someone else's object)",
    404: "No such object",
    409: "Conflicts with the current state",
    422: "The request does not match the schema",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    chosen = codes or tuple(_ERRORS)
    return {code: {"model": ErrorOut, "description": _ERRORS[code]} for code in chosen}


STANDARD = errors(400, 401, 403, 404, 409, 422)
