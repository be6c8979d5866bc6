"""ASGI middleware (FastAPI, Starlette, Django ASGI, any ASGI 3 app).

The body is read before the application sees it, at most `max_body_bytes` of it (plus the chunk
that crossed the limit), judged, and then re-played to the application unchanged: the buffered
messages first, then the rest of the stream straight from the server, so a large upload passed
under `oversize: inspect_prefix` costs one bounded buffer, not its size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import quote

from cloudward.appsec.memo import Memo
from cloudward.appsec.protect import PolicySource, Protector, block_payload
from cloudward.appsec.request import HttpRequest

__all__ = ["ASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_CLEAN_KEY_BYTES = 4096


class _Head(NamedTuple):
    """What the adapter needs of a header list, worked out once per distinct list."""
    headers: list[tuple[str, str]]  # decoded, names lower-cased
    bodiless: bool  # neither Content-Length nor Transfer-Encoding: the request has no body at all
    has_body: bool  # a body is to be read (Content-Length not 0, or Transfer-Encoding)
    size: int  # bytes of the names and values


def _read_head(raw_headers: Any) -> _Head:
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers]
    bodiless, has_body, size = True, False, 0
    for name, value in headers:  # names lower-cased here: a server that does not lower them must not slip by
        size += len(name) + len(value)
        if name == "content-length":
            bodiless = False
            has_body = has_body or value.strip() not in ("", "0")
        elif name == "transfer-encoding":
            bodiless, has_body = False, True
    return _Head(headers, bodiless, has_body, size)


class ASGIMiddleware:
    """`app = ASGIMiddleware(app, mode="block", policy="appsec.yaml")`."""

    def __init__(self, app: ASGIApp, mode: str | None = None, policy: PolicySource = None, **options: Any) -> None:
        self.app = app
        self.protector = Protector(mode, policy, **options)
        # header lists as received -> read: a client sends the same headers request after request, and
        # the same str objects (their hashes computed once) make the inspector's own memory cheap to ask
        self._heads: Memo[_Head] = Memo(256)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        raw = scope.get("raw_path")
        protector = self.protector
        raw_headers = scope.get("headers", ())
        head = None
        try:
            head_key: tuple[Any, ...] | None = tuple(map(tuple, raw_headers))
            head = self._heads[head_key]
        except TypeError:  # not bytes pairs: read every time
            head_key = None
        if head is None:
            head = _read_head(raw_headers)
            if head_key is not None and head.size <= _CLEAN_KEY_BYTES:
                self._heads.put(head_key, head)
        # a bodiless request's verdict depends on its method, target and headers alone: a request with
        # exactly a head judged clean before is clean again (guards need each request's values, though)
        clean_key = None
        if head.bodiless and head_key is not None and not protector.guards:
            query_string = scope.get("query_string", b"")
            if head.size + len(raw or b"") + len(query_string) <= _CLEAN_KEY_BYTES:
                clean_key = (method, raw, scope.get("path"), query_string, head_key)
                try:
                    if protector.known_clean(clean_key):
                        await self.app(scope, receive, send)  # this very request was judged clean before
                        return
                except TypeError:
                    clean_key = None
        raw_path = raw.decode("latin-1") if raw else quote(scope.get("path", "/"), safe="/%:@!$&'()*+,;=~")
        raw_path = raw_path.split("?", 1)[0]
        policy = self.protector.route(method, scope.get("path", raw_path))
        if policy.mode == "off":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if clean_key is not None and protector.quiet(raw_path, query, head.headers, policy):
            # a bodiless request with nothing in its path, query or headers that any rule fires on: the
            # verdict `judge` would give (clean), without building the request and the verdict
            protector.remember_clean(clean_key)
            await self.app(scope, receive, send)
            return
        headers = list(head.headers)
        has_body = head.has_body
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
        request = HttpRequest(method=method, raw_path=raw_path, query=query, headers=headers,
                              body=body[: policy.max_body_bytes], body_truncated=truncated, client=str(client[0]))
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
            if not protector.guards:
                await self.app(scope, receive, send)
                return
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
