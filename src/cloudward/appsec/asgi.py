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

from cloudward.appsec.memo import Memo
from cloudward.appsec.protect import PolicySource, Protector, block_payload
from cloudward.appsec.request import HttpRequest

__all__ = ["ASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_HEAD_BYTES = 4096  # header lists up to this size (names and values) are remembered with what was read of them


class _Head:
    """What the adapter needs of a header list, worked out once per distinct list."""

    __slots__ = ("bodiless", "has_body", "headers", "host", "quiet", "size")

    def __init__(self, raw_headers: Any) -> None:
        # names lower-cased here: a server that does not lower them must not slip by
        self.headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw_headers]
        self.bodiless = True  # neither Content-Length nor Transfer-Encoding: the request has no body at all
        self.has_body = False  # a body is to be read (Content-Length not 0, or Transfer-Encoding)
        self.size = 0  # bytes of the names and values
        self.host = ""
        for name, value in self.headers:
            self.size += len(name) + len(value)
            if name == "content-length":
                self.bodiless = False
                self.has_body = self.has_body or value.strip() not in ("", "0")
            elif name == "transfer-encoding":
                self.bodiless, self.has_body = False, True
            elif name == "host" and not self.host:
                self.host = value
        # allowed methods -> the count Protector.quiet_head gave for this list (only counts: a list that was
        # not judged yet, or not clean, is asked again)
        self.quiet: dict[frozenset[str], int] = {}


class ASGIMiddleware:
    """`app = ASGIMiddleware(app, mode="block", policy="appsec.yaml")`."""

    def __init__(self, app: ASGIApp, mode: str | None = None, policy: PolicySource = None, **options: Any) -> None:
        self.app = app
        self.protector = Protector(mode, policy, **options)
        # header lists as received -> read: a client sends the same headers request after request, and
        # the same str objects (their hashes computed once) make the inspector's own memory cheap to ask
        self._heads: Memo[_Head] = Memo(256)

    def _head(self, raw_headers: Any) -> _Head:
        heads = self._heads
        try:
            key: tuple[Any, ...] = tuple(raw_headers)  # pairs as tuples (uvicorn, hypercorn)
            try:
                head = heads[key]
            except TypeError:  # pairs as lists (the ASGI spec allows any iterable)
                key = tuple(map(tuple, raw_headers))
                head = heads[key]
        except TypeError:  # not bytes pairs: read every time
            return _Head(raw_headers)
        if head is None:
            head = _Head(raw_headers)
            if head.size <= _HEAD_BYTES:
                heads.put(key, head)
        return head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        protector = self.protector
        head = self._head(scope.get("headers", ()))
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else quote(scope.get("path", "/"), safe="/%:@!$&'()*+,;=~")
        if "?" in raw_path:
            raw_path = raw_path.split("?", 1)[0]
        policy = protector.route(method, scope.get("path", raw_path))
        if policy.mode == "off":
            await self.app(scope, receive, send)
            return
        query_string = scope.get("query_string", b"")
        query = query_string.decode("latin-1")
        clean_key = None
        if head.bodiless and protector.quick(policy):
            # a bodiless request with nothing in its path, query or headers that any rule fires on: the
            # verdict `judge` would give (clean), without building the request and the verdict. The header
            # list's half of the answer is remembered with the list
            count = head.quiet.get(policy.allowed_methods)
            if count is None:
                count = protector.quiet_head(head.headers, policy)
                if count >= 0:
                    head.quiet[policy.allowed_methods] = count
            if count >= 0 and protector.quiet_target(raw_path, query, head.host, policy, count):
                await self.app(scope, receive, send)
                return
        elif head.bodiless and not protector.guards and head.size + len(raw or b"") + len(query) <= _HEAD_BYTES:
            # what the quiet path may not pass (the CRS engine must see it, a base64 mark): a request with
            # exactly a head judged clean before is clean again. The _Head in the key is the remembered one
            # (compared by identity, and kept alive by the key)
            clean_key = (method, raw, scope.get("path"), query_string, head)
            try:
                if protector.known_clean(clean_key):
                    await self.app(scope, receive, send)
                    return
            except TypeError:  # an unhashable part of the scope
                clean_key = None
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
