"""Authentication over HTTP: tokens (hashed at rest, revocable), the dashboard's session cookie
with its CSRF token, disabled users, the audit log, no default credentials, and no route that
hands back a stored secret."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from sqlalchemy import create_engine, select

from cloudward.core.errors import UsageError
from cloudward.server import security
from cloudward.store.models import ApiTokenRow, UserRow
from tests.server._support import TOKEN, ApiServer


def test_token_is_stored_as_its_sha256_only(api: ApiServer) -> None:
    token = api.tokens["analyst"]
    token_id, secret = security.parse_token(token) or ("", "")
    engine = create_engine(api.store_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.id == token_id)).one()
            dump = " ".join(str(v) for v in conn.execute(select(ApiTokenRow)).all())
    finally:
        engine.dispose()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in dump and token not in dump


def test_bad_tokens_are_refused(api: ApiServer) -> None:
    good = api.tokens["read-only"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=api.base, trust_env=False) as client:
        for header in (f"Bearer {forged}", "Bearer nonsense", f"Basic {good}", "Bearer", f"bearer {good}x"):
            response = client.get("/api/v1/findings", headers={"Authorization": header})
            assert response.status_code == 401, header
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/v1/findings", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_token_lifecycle_and_no_value_ever_listed(api: ApiServer) -> None:
    with api.client("read-only") as reader, api.client("admin") as admin:
        made = reader.post("/api/v1/tokens", json={"name": "ci"})
        assert made.status_code == 201
        value, token_id = made.json()["value"], made.json()["token"]["id"]
        assert TOKEN.fullmatch(value)
        listing = reader.get("/api/v1/tokens")
        assert value not in listing.text and token_id in listing.text
        assert all(t["user"] == "readonly" for t in listing.json())  # only one's own
        assert reader.post("/api/v1/tokens", json={"user": "admin"}).status_code == 403
        own_admin_token = admin.get("/api/v1/tokens").json()[0]["id"]
        assert reader.delete(f"/api/v1/tokens/{own_admin_token}").status_code == 403
        with httpx.Client(base_url=api.base, headers={"Authorization": f"Bearer {value}"}, trust_env=False) as new:
            assert new.get("/api/v1/auth/me").json() == {"name": "readonly", "role": "read-only", "via": "token"}
            assert reader.delete(f"/api/v1/tokens/{token_id}").status_code == 204
            assert new.get("/api/v1/auth/me").status_code == 401
        actions = [(e["action"], e["actor"]) for e in admin.get("/api/v1/audit", params={"limit": 50}).json()]
        assert ("token.create", "readonly") in actions and ("token.revoke", "readonly") in actions


def test_login_session_cookie_and_csrf(api: ApiServer) -> None:
    password = "correct horse battery"
    with api.client("admin") as admin:
        assert admin.post("/api/v1/users", json={"name": f"dash-{api.backend}", "role": "analyst",
                                                 "password": password}).status_code == 201
    name = f"dash-{api.backend}"
    with httpx.Client(base_url=api.base, trust_env=False) as browser:
        assert browser.post("/api/v1/auth/login", json={"name": name, "password": "wrong password"}).status_code == 401
        assert browser.post("/api/v1/auth/login", json={"name": "ghost", "password": password}).status_code == 401
        login = browser.post("/api/v1/auth/login", json={"name": name, "password": password})
        assert login.status_code == 200, login.text
        cookie = login.headers.get_list("set-cookie")
        session = next(c for c in cookie if c.startswith("cloudward_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session.replace("Strict", "strict")
        assert password not in login.text
        csrf = login.json()["csrf_token"]
        assert browser.get("/api/v1/auth/me").json() == {"name": name, "role": "analyst", "via": "session"}
        schedule = {"command": "exposure scan 127.0.0.1 -p 1", "cron": "0 0 1 1 *"}
        # a state change with the cookie alone (what a forged cross-site form would send) is refused
        assert browser.post("/api/v1/schedules", json=schedule).status_code == 403
        assert browser.post("/api/v1/schedules", json=schedule, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
        assert browser.post("/api/v1/schedules", json=schedule,
                            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}).status_code == 403
        made = browser.post("/api/v1/schedules", json=schedule, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        removed = browser.delete(f"/api/v1/schedules/{made.json()['id']}", headers={"X-CSRF-Token": csrf})
        assert removed.status_code == 204
        assert browser.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        browser.cookies.set("cloudward_session", session.split(";")[0].split("=", 1)[1])
        assert browser.get("/api/v1/auth/me").status_code == 401  # the session row is revoked server-side


def test_form_login_redirects_and_forged_cookie_is_refused(api: ApiServer) -> None:
    with api.client("admin") as admin:
        admin.post("/api/v1/users", json={"name": f"form-{api.backend}", "role": "read-only",
                                          "password": "a long enough password"})
    with httpx.Client(base_url=api.base, trust_env=False) as browser:
        response = browser.post("/api/v1/auth/login", data={"name": f"form-{api.backend}",
                                                            "password": "a long enough password", "next": "/dash"})
        assert response.status_code == 303 and response.headers["location"] == "/dash"
        offsite = browser.post("/api/v1/auth/login", data={"name": f"form-{api.backend}",
                                                           "password": "a long enough password",
                                                           "next": "//evil.example/"})
        assert offsite.status_code == 200  # never an open redirect
    with httpx.Client(base_url=api.base, trust_env=False) as forger:
        forger.cookies.set("cloudward_session", f"{'a' * 12}.{'b' * 43}.{'c' * 43}")
        assert forger.get("/api/v1/auth/me").status_code == 401


def test_disabled_user_loses_access_and_last_admin_is_kept(api: ApiServer) -> None:
    with api.client("admin") as admin:
        name = f"temp-{api.backend}"
        assert admin.post("/api/v1/users", json={"name": name, "role": "analyst"}).status_code == 201
        value = admin.post("/api/v1/tokens", json={"user": name}).json()["value"]
        with httpx.Client(base_url=api.base, headers={"Authorization": f"Bearer {value}"}, trust_env=False) as user:
            assert user.get("/api/v1/auth/me").status_code == 200
            assert admin.patch(f"/api/v1/users/{name}", json={"disabled": True}).status_code == 200
            assert user.get("/api/v1/auth/me").status_code == 401
        assert admin.patch("/api/v1/users/admin", json={"role": "analyst"}).status_code == 409
        assert admin.patch("/api/v1/users/admin", json={"disabled": True}).status_code == 409
        assert admin.post("/api/v1/users", json={"name": name, "role": "analyst"}).status_code == 409
        entries = admin.get("/api/v1/audit", params={"action": "user.update"}).json()
        assert any(e["target"] == f"user:{name}" and e["details"] == {"disabled": True} for e in entries)


def test_webhook_url_and_secret_never_come_back(api: ApiServer) -> None:
    secret_url = "https://hooks.example.test/services/T000/B000/XXXXsecretpathXXXX"
    with api.client("admin") as admin:
        made = admin.post("/api/v1/webhooks", json={"url": secret_url, "kind": "slack",
                                                    "secret": "s3cr3t-signing-key-0123"})
        assert made.status_code == 201
        listing = admin.get("/api/v1/webhooks").text
        audit = admin.get("/api/v1/audit").text
        for text in (made.text, listing, audit):
            assert "secretpath" not in text and "s3cr3t" not in text
        assert made.json()["url"] == "https://hooks.example.test/***"
        assert admin.post("/api/v1/webhooks", json={"url": "http://hooks.example.test/x"}).status_code == 400
        assert admin.post("/api/v1/webhooks", json={"url": "https://u:p@hooks.example.test/x"}).status_code == 400
        assert admin.delete(f"/api/v1/webhooks/{made.json()['id']}").status_code == 204


def _cloudward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> Result:
    """The CLI in-process (typer's runner): the same commands, without a Python start-up each."""
    from typer.testing import CliRunner

    from cloudward.cli.app import app

    monkeypatch.setenv("CLOUDWARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLOUDWARD_DB_URL", f"sqlite:///{tmp_path}/c.db")
    return CliRunner().invoke(app, list(args), input=stdin)


def test_server_refuses_to_start_without_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cloudward(tmp_path, monkeypatch, "server", "--port", "1")
    assert isinstance(result.exception, UsageError)
    assert "--init-admin" in str(result.exception) and "no default credentials" in str(result.exception)


def test_cli_users_and_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cloudward(*args: str, stdin: str = "") -> Result:
        return _cloudward(tmp_path, monkeypatch, *args, stdin=stdin)

    assert cloudward("user", "add", "alice", "--role", "analyst").exit_code == 0
    assert isinstance(cloudward("user", "add", "bob", "--role", "boss").exception, UsageError)
    made = cloudward("token", "create", "alice", "--name", "laptop")
    assert made.exit_code == 0, made.output
    value = TOKEN.search(made.stdout)
    assert value is not None
    listed = cloudward("token", "list")
    assert "laptop" in listed.stdout and value.group(0) not in listed.stdout
    assert isinstance(cloudward("user", "passwd", "alice", "--password-stdin", stdin="short\n").exception, UsageError)
    assert cloudward("user", "passwd", "alice", "--password-stdin", stdin="long enough pass\n").exit_code == 0
    assert cloudward("user", "disable", "alice").exit_code == 0
    users = cloudward("user", "list").stdout
    assert "alice" in users and "disabled" in users
    made = cloudward("schedule", "add", "exposure scan 10.0.0.0/16 -p teamtnt", "--cron", "0 * * * *")
    assert made.exit_code == 0 and "schedule 1" in made.stdout, made.output
    assert "exposure scan 10.0.0.0/16 -p teamtnt" in cloudward("schedule", "list").stdout
    assert cloudward("schedule", "remove", "1").exit_code == 0
    engine = create_engine(f"sqlite:///{tmp_path}/c.db")
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(UserRow.password_hash)).scalar_one()
    finally:
        engine.dispose()
    assert stored.startswith("scrypt$16384$8$1$") and "long enough" not in stored


@pytest.mark.parametrize("password", ["long enough pass", "ünïcødé pässwörd", "x" * 1024])
def test_password_hash_round_trip(password: str) -> None:
    stored = security.hash_password(password)
    assert security.password_matches(password, stored)
    assert not security.password_matches(password + "!", stored)
    assert stored != security.hash_password(password)  # a fresh salt each time
    assert not security.password_matches(password, None) and not security.password_matches(password, "garbage")
