"""API Gateway Lambda handlers: REST API (payload format 1.0) and HTTP API (2.0) events.

    @protect_lambda
    def handler(event, context): ...

    @protect_lambda(mode="block", policy="appsec.yaml")
    def handler(event, context): ...

Events that are not API Gateway proxy events (SQS, schedules) go to the handler untouched. A
Lambda environment freezes between invocations, so an invocation that produced findings waits up
to `flush_seconds` for the queue to hand them to the sink before returning.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload
from urllib.parse import quote, urlencode

from cloudward.appsec.protect import Protector, block_payload
from cloudward.appsec.request import HttpRequest

__all__ = ["protect_lambda", "request_from_event"]

Handler = Callable[[Any, Any], Any]
H = TypeVar("H", bound=Handler)


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(str(body), validate=False)
        except (binascii.Error, ValueError):
            return str(body).encode("utf-8", "replace")
    return str(body).encode("utf-8", "replace")


def request_from_event(event: Any) -> HttpRequest | None:
    """The request in an API Gateway proxy event (v1 REST or v2 HTTP API), else None."""
    if not isinstance(event, dict):
        return None
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0" and isinstance(context.get("http"), dict):
        http = context["http"]
        headers = [(str(k).lower(), str(v)) for k, v in (event.get("headers") or {}).items()]
        cookies = event.get("cookies") or []
        if cookies:
            headers.append(("cookie", "; ".join(str(c) for c in cookies)))
        raw_path = quote(str(event.get("rawPath") or http.get("path") or "/"), safe="/%:@!$&'()*+,;=~")
        return HttpRequest(method=str(http.get("method", "GET")).upper(), raw_path=raw_path,
                           query=str(event.get("rawQueryString") or ""), headers=headers, body=_body(event),
                           client=str(http.get("sourceIp", "")))
    if "httpMethod" in event:
        multi_headers = event.get("multiValueHeaders") or {}
        headers = []
        if multi_headers:
            for k, values in multi_headers.items():
                headers.extend((str(k).lower(), str(v)) for v in (values or []))
        else:
            headers = [(str(k).lower(), str(v)) for k, v in (event.get("headers") or {}).items()]
        multi_query = event.get("multiValueQueryStringParameters") or {}
        if multi_query:
            query = urlencode([(k, v) for k, vs in multi_query.items() for v in (vs or [])])
        else:
            query = urlencode(list((event.get("queryStringParameters") or {}).items()))
        identity = context.get("identity") or {}
        raw_path = quote(str(event.get("path") or "/"), safe="/:@!$&'()*+,;=~")
        return HttpRequest(method=str(event["httpMethod"]).upper(), raw_path=raw_path, query=query,
                           headers=headers, body=_body(event), client=str(identity.get("sourceIp", "")))
    return None


@overload
def protect_lambda(handler: H) -> H: ...


@overload
def protect_lambda(handler: None = None, *, mode: str | None = None, policy: Any = None,
                   flush_seconds: float = 2.0, **options: Any) -> Callable[[H], H]: ...


def protect_lambda(handler: H | None = None, *, mode: str | None = None, policy: Any = None,
                   flush_seconds: float = 2.0, **options: Any) -> H | Callable[[H], H]:
    def wrap(fn: H) -> H:
        protector = Protector(mode, policy, **options)

        @functools.wraps(fn)
        def protected(event: Any, context: Any) -> Any:
            request = request_from_event(event)
            if request is None:
                return fn(event, context)
            rule_policy = protector.route(request.method, request.path)
            if rule_policy.mode == "off":
                return fn(event, context)
            if len(request.body) > rule_policy.max_body_bytes:
                request.body = request.body[: rule_policy.max_body_bytes]
                request.body_truncated = True
            verdict = protector.judge(request, rule_policy)
            if verdict.incident_id:
                protector.queue.flush(flush_seconds)
            status = protector.refusal(verdict, request, rule_policy)
            if status:
                return {"statusCode": status, "isBase64Encoded": False,
                        "headers": {"content-type": "application/json", "x-cloudward-incident": verdict.incident_id},
                        "body": block_payload(verdict.incident_id, status).decode()}
            try:
                with protector.guard(request, rule_policy):
                    return fn(event, context)
            finally:
                if protector.guards:
                    protector.queue.flush(flush_seconds)  # a guard's finding, before the function freezes

        protected.protector = protector  # type: ignore[attr-defined]
        return protected  # type: ignore[return-value]

    if handler is not None:
        return wrap(handler)
    return wrap
