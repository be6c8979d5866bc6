"""Helpers for the dashboard tests: users with passwords, a browser-like client logged in through
the login form, and reading what a page shows."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.server._support import ApiServer

PASSWORD = "a long dashboard password"
FINGERPRINT_ROW = re.compile(r'data-fingerprint="([0-9a-f]+)"')
_USERS = itertools.count(1)


def make_user(api: ApiServer, role: str) -> str:
    """A new user with a password (names are unique within the test run)."""
    name = f"dash{role.replace('-', '')}{next(_USERS)}{api.backend[:2]}"
    with api.client("admin") as admin:
        made = admin.post("/api/v1/users", json={"name": name, "role": role, "password": PASSWORD})
        assert made.status_code == 201, made.text
    return name


@contextmanager
def logged_in(api: ApiServer, role: str) -> Iterator[tuple[httpx.Client, str]]:
    """(client holding the session cookie, CSRF token) after a form login, like a browser."""
    name = make_user(api, role)
    with httpx.Client(base_url=api.base, trust_env=False, timeout=30) as browser:
        answer = browser.post("/login", data={"name": name, "password": PASSWORD, "next": "/"})
        assert answer.status_code == 303, answer.text
        csrf = browser.cookies.get("cloudward_csrf")
        assert csrf
        yield browser, csrf


def shown_fingerprints(html: str) -> list[str]:
    """The findings a table page shows, in order."""
    return FINGERPRINT_ROW.findall(html)
