"""Every route x every role, over HTTP against a real server. The table below is the policy; a
route the app serves that is missing from it (or an entry for a route that is gone) fails the
test, so nobody adds a route without deciding who may call it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from tests.server._support import ApiServer

PUBLIC, READ, ANALYST, ADMIN = "public", "read-only", "analyst", "admin"
RANK = {READ: 0, ANALYST: 1, ADMIN: 2}

POLICY: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/metrics"): READ,
    ("GET", "/openapi.json"): READ,
    ("GET", "/docs"): READ,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): READ,
    ("GET", "/api/v1/auth/me"): READ,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("GET", "/api/v1/users/{name}"): ADMIN,
    ("PATCH", "/api/v1/users/{name}"): ADMIN,
    ("GET", "/api/v1/tokens"): READ,
    ("POST", "/api/v1/tokens"): READ,
    ("DELETE", "/api/v1/tokens/{token_id}"): READ,
    ("GET", "/api/v1/audit"): ADMIN,
    ("GET", "/api/v1/scans"): READ,
    ("GET", "/api/v1/scans/{scan_id}"): READ,
    ("GET", "/api/v1/diff"): READ,
    ("GET", "/api/v1/findings"): READ,
    ("GET", "/api/v1/findings/{fingerprint}"): READ,
    ("GET", "/api/v1/findings/{fingerprint}/history"): READ,
    ("PUT", "/api/v1/findings/{fingerprint}/suppression"): ANALYST,
    ("DELETE", "/api/v1/findings/{fingerprint}/suppression"): ANALYST,
    ("GET", "/api/v1/suppressions"): READ,
    ("POST", "/api/v1/suppressions"): ANALYST,
    ("DELETE", "/api/v1/suppressions/{suppression_id}"): ANALYST,
    ("GET", "/api/v1/rules"): READ,
    ("GET", "/api/v1/rules/{rule_id}"): READ,
    ("GET", "/api/v1/targets"): READ,
    ("POST", "/api/v1/jobs"): ANALYST,
    ("GET", "/api/v1/jobs"): READ,
    ("GET", "/api/v1/jobs/{job_id}"): READ,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): ANALYST,
    ("GET", "/api/v1/schedules"): READ,
    ("POST", "/api/v1/schedules"): ANALYST,
    ("GET", "/api/v1/schedules/{schedule_id}"): READ,
    ("PATCH", "/api/v1/schedules/{schedule_id}"): ANALYST,
    ("DELETE", "/api/v1/schedules/{schedule_id}"): ANALYST,
    ("GET", "/api/v1/webhooks"): ADMIN,
    ("POST", "/api/v1/webhooks"): ADMIN,
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): ADMIN,
}

# The dashboard's pages (server/dashboard): a caller who is not logged in is sent to the login
# page (303) where an API route answers 401.
DASHBOARD: dict[tuple[str, str], str] = {
    ("GET", "/static/{asset}"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): READ,
    ("GET", "/"): READ,
    ("GET", "/findings"): READ,
    ("GET", "/findings/{fingerprint}"): READ,
    ("POST", "/findings/{fingerprint}/suppress"): ANALYST,
    ("POST", "/findings/{fingerprint}/unsuppress"): ANALYST,
    ("GET", "/scans"): READ,
    ("GET", "/scans/diff"): READ,
    ("GET", "/jobs"): READ,
    ("GET", "/jobs/live"): READ,
    ("POST", "/jobs"): ANALYST,
    ("POST", "/jobs/{job_id}/cancel"): ANALYST,
    ("GET", "/rules"): READ,
    ("GET", "/rules/{rule_id}"): READ,
    ("GET", "/schedules"): READ,
    ("POST", "/schedules"): ANALYST,
    ("POST", "/schedules/{schedule_id}/toggle"): ANALYST,
    ("POST", "/schedules/{schedule_id}/delete"): ANALYST,
}
POLICY.update(DASHBOARD)

# Path parameters that name nothing: an allowed caller gets 404 (or 422), never a change.
PLACEHOLDERS = {"name": "nobody", "token_id": "000000000000", "scan_id": "0" * 32, "fingerprint": "0" * 32,
                "suppression_id": "999999", "rule_id": "no.such_rule", "job_id": "0" * 32, "schedule_id": "999999",
                "webhook_id": "999999", "asset": "dashboard.css"}


def _served_routes(tmp_path: Path) -> set[tuple[str, str]]:
    from cloudward.server.app import create_app
    from cloudward.server.config import ServerConfig

    app = create_app(ServerConfig(store_url=f"sqlite:///{tmp_path}/c.db", data_dir=tmp_path, secret_key=b"k" * 32),
                     background=False)
    from cloudward.server.auth import iter_routes

    served = set()
    for path, route in iter_routes(app.routes):
        assert isinstance(route, APIRoute | Route), f"unexpected kind of route {route!r}: give it a policy"
        for method in route.methods or ():
            if method != "HEAD":
                served.add((method, path))
    return served


def test_policy_table_covers_every_route(tmp_path: Path) -> None:
    served = _served_routes(tmp_path)
    assert served - POLICY.keys() == set(), "routes without an authorization entry"
    assert POLICY.keys() - served == set(), "policy entries for routes that do not exist"


def _expected(needed: str, role: str | None) -> str:
    if needed == PUBLIC:
        return "allowed"
    if role is None:
        return "401"
    return "allowed" if RANK[role] >= RANK[needed] else "403"


@pytest.mark.parametrize("role", ["admin", "analyst", "read-only", None])
def test_every_route_enforces_its_role(quiet_api: ApiServer, role: str | None) -> None:
    problems = []
    with quiet_api.client(role) as client:
        for (method, path), needed in sorted(POLICY.items()):
            url = path.format(**PLACEHOLDERS)
            body = {} if method in ("POST", "PUT", "PATCH") else None
            if path == "/api/v1/auth/logout":
                continue  # checked below: an allowed logout would end the session under test
            response = client.request(method, url, json=body)
            expected = _expected(needed, role)
            got = response.status_code
            ok = got not in (401, 403) if expected == "allowed" else got == int(expected)
            if expected == "401" and (method, path) in DASHBOARD:
                ok = got == 303 and response.headers["location"].startswith("/login")
            if not ok or got >= 500:
                problems.append(f"{method} {path} as {role}: {got} (expected {expected}) {response.text[:120]}")
    assert problems == []


def test_logout_needs_authentication(quiet_api: ApiServer) -> None:
    with quiet_api.client(None) as anonymous:
        assert anonymous.post("/api/v1/auth/logout").status_code == 401
    with quiet_api.client("read-only") as reader:  # a token caller: nothing to end, token still valid
        assert reader.post("/api/v1/auth/logout").status_code == 204
        assert reader.get("/api/v1/auth/me").status_code == 200


def test_app_refuses_a_route_without_an_access_rule(tmp_path: Path) -> None:
    from fastapi import APIRouter

    from cloudward.server.app import create_app
    from cloudward.server.config import ServerConfig

    careless = APIRouter()

    @careless.get("/dashboard/oops")
    def oops() -> dict[str, str]:
        return {}

    config = ServerConfig(store_url=f"sqlite:///{tmp_path}/c.db", data_dir=tmp_path, secret_key=b"k" * 32)
    with pytest.raises(RuntimeError, match="without exactly one access rule"):
        create_app(config, extra_routers=[careless], background=False)
