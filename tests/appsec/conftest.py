"""Shared fixtures of the appsec tests: one Inspector (rules compiled once) and a request builder."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest

from cloudward.appsec import Inspector
from cloudward.appsec.policy import Policy
from cloudward.appsec.request import HttpRequest


@pytest.fixture(scope="session")
def inspector() -> Inspector:
    return Inspector()


Judge = Callable[..., list[tuple[str, str]]]


@pytest.fixture(scope="session")
def judge(inspector: Inspector) -> Judge:
    """judge(query="q=..", body=b"", content_type="", headers=[...], path="/x") -> [(rule_id, location)]"""
    policy = Policy(mode="block").for_request("GET", "/")

    def run(query: str = "", *, body: bytes = b"", content_type: str = "", headers: list[tuple[str, str]] | None = None,
            path: str = "/x", method: str = "GET") -> list[tuple[str, str]]:
        all_headers = [("host", "shop.example"), ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")]
        all_headers += headers or []
        if content_type:
            all_headers.append(("content-type", content_type))
        request = HttpRequest(method, path, query, all_headers, body)
        return [(d.rule_id, d.location) for d in inspector.inspect(request, policy).detections]

    return run


def rules_of(found: list[tuple[str, str]]) -> set[str]:
    return {rule for rule, _ in found}


def q(value: str, name: str = "q") -> str:
    """`name=value` as a query string, every reserved character escaped."""
    return f"{name}={quote(value, safe='')}"


def catches_and_passes(judge: Judge, rule: str, attack: str, benign: str) -> None:
    """The rule fires on the attack in parameter `q`, and nothing fires on its benign look-alike."""
    assert rule in rules_of(judge(q(attack)))
    assert judge(q(benign)) == []
