"""ASGI middleware (FastAPI, Starlette, Django ASGI, any ASGI 3 app).

The body is read before the application sees it, at most `max_body_bytes` of it (plus the chunk
that crossed the limit), judged, and then re-played to the application unchanged: the buffered
messages first, then the rest of the stream straight from the server, so a large upload passed
under `oversize: inspect_prefix` costs one bounded buffer, not its size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from cloudward.appsec.protect import PolicySource, Protector, block_payload
from cloudward.appsec.request import HttpRequest

__all__ = ["ASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_BODY_HEADERS = (b"content-length", b"transfer-encoding")
_CLEAN_KEY_BYTES = 4096


def _clean_key(scope: Scope, raw: bytes | None) -> tuple[Any, ...] | None:
    """What a bodiless request's verdict depends on (method, target, every header), as a hashable key;
    None for a request with a body or too large a head to remember."""
    query = scope.get("query_string", b"")
    size = len(raw or b"") + len(query)
    headers = scope.get("headers", ())
    for name, value in headers:
        if name in _BODY_HEADERS:
            return None
        size += len(value) + len(name)
    if size > _CLEAN_KEY_BYTES:
        return None
    try:
        key = (scope["method"], raw, scope.get("path"), query, tuple(map(tuple, headers)))
        hash(key)
    except TypeError:
        return None
    return key


class ASGIMiddleware:
    """`app = ASGIMiddleware(app, mode="block", policy="appsec.yaml")`."""

    def __init__(self, app: ASGIApp, mode: str | None = None, policy: PolicySource = None, **options: Any) -> None:
        self.app = app
        self.protector = Protector(mode, policy, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        raw = scope.get("raw_path")
        protector = self.protector
        clean_key = None if protector.guards else _clean_key(scope, raw)  # guards need each request's values
        if clean_key is not None and protector.known_clean(clean_key):
            await self.app(scope, receive, send)  # this very request was judged clean before
            return
        raw_path = raw.decode("latin-1") if raw else quote(scope.get("path", "/"), safe="/%:@!$&'()*+,;=~")
        raw_path = raw_path.split("?", 1)[0]
        policy = self.protector.route(method, scope.get("path", raw_path))
        if policy.mode == "off":
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        has_body = False
        for name, value in headers:
            if (name == "content-length" and value.strip() not in ("", "0")) or name == "transfer-encoding":
                has_body = True
                break
        buffered: list[bytes] = []
        size = 0
        more = has_body
        ended: Message | None = None
        truncated = False
        while more:
            message = await receive()
            if message["type"] != "http.request":
                ended = message  # the client went away: judge what came, hand the app the disconnect
                more = False
                break
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            buffered.append(chunk)
            size += len(chunk)
            if size > policy.max_body_bytes:
                truncated = True
                break
        body = b"".join(buffered)
        client = scope.get("client") or ("", 0)
        request = HttpRequest(method=method, raw_path=raw_path, query=scope.get("query_string", b"").decode("latin-1"),
                              headers=headers, body=body[: policy.max_body_bytes], body_truncated=truncated,
                              client=str(client[0]))
        verdict = self.protector.judge(request, policy)
        if clean_key is not None and not verdict.detections and not verdict.findings:
            protector.remember_clean(clean_key)
        status = self.protector.refusal(verdict, request, policy)
        if status:
            payload = block_payload(verdict.incident_id, status)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode()),
                                    (b"x-cloudward-incident", verdict.incident_id.encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": payload})
            return
        if not has_body:
            with protector.guard(request, policy):
                await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, ended
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            if ended is not None:
                message, ended = ended, None
                return message
            return await receive()

        with protector.guard(request, policy):
            await self.app(scope, replay, send)
