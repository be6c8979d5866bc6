"""The FastAPI app the appsec tests run under uvicorn: a catch-all echo, a streaming response and a
body counter, wrapped in cloudward's ASGI middleware as configured by the environment:
APPSEC_PROTECT (0 = unprotected), APPSEC_MODE, APPSEC_POLICY, APPSEC_FINDINGS (a JSON-lines
file), APPSEC_CALLS (a file the handlers append one line to per call), APPSEC_UPLOADS (1 = the
content judge and the secret scanner judge uploads)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

inner = FastAPI()
CALLS = os.environ.get("APPSEC_CALLS")


def _called(request: Request) -> None:
    if CALLS:
        with open(CALLS, "a") as handle:
            handle.write(f"{request.method} {request.url.path}\n")


@inner.get("/hello")
async def hello() -> PlainTextResponse:
    return PlainTextResponse("hello")


@inner.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    _called(request)

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(50):
            yield f"chunk {index}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain", headers={"x-app": "yes"})


@inner.post("/count")
async def count(request: Request) -> JSONResponse:
    """Streams the body without holding it: the size and digest of what the app received."""
    _called(request)
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


@inner.get("/guarded/run")
def guarded_run(host: str) -> JSONResponse:
    """A command built from a request value through a shell: what the runtime guards are for."""
    import subprocess

    command = f"echo pinging {host}"  # a request value in a shell command: unsafe on purpose
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    return JSONResponse({"output": done.stdout})


@inner.get("/guarded/read")
def guarded_read(name: str) -> JSONResponse:
    base = os.environ.get("APPSEC_FILES", "/tmp")
    try:
        with open(os.path.join(base, name)) as handle:  # the unsafe join under test
            return JSONResponse({"content": handle.read(200)})
    except FileNotFoundError:
        return JSONResponse({"content": None}, status_code=404)


@inner.get("/guarded/fetch")
def guarded_fetch(url: str) -> JSONResponse:
    import socket
    from urllib.parse import urlsplit

    from cloudward.appsec.detectors import parse_ip

    host = urlsplit(url).hostname or ""
    address = parse_ip(host)  # as a lenient resolver would read 2852039166 or 0xa9fea9fe
    with socket.socket() as sock:
        sock.settimeout(0.2)
        try:
            sock.connect((str(address) if address else host, urlsplit(url).port or 80))
        except OSError as exc:
            if type(exc).__name__ == "GuardViolation":
                raise
            return JSONResponse({"connected": False})
    return JSONResponse({"connected": True})


@inner.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
async def echo(request: Request, path: str) -> JSONResponse:
    _called(request)
    body = await request.body()
    return JSONResponse({"method": request.method, "path": "/" + path, "query": request.url.query,
                         "body_sha256": hashlib.sha256(body).hexdigest(), "body_size": len(body),
                         "x_test": request.headers.get("x-test", "")}, headers={"x-app": "yes"})


def build() -> object:
    if os.environ.get("APPSEC_PROTECT", "1") == "0":
        return inner
    from cloudward.appsec import ASGIMiddleware, JsonLinesSink

    options: dict[str, object] = {}
    if os.environ.get("APPSEC_FINDINGS"):
        options["sink"] = JsonLinesSink(os.environ["APPSEC_FINDINGS"])
    if os.environ.get("APPSEC_UPLOADS") == "1":
        import cloudward.secrets
        from cloudward.appsec.uploads import content_scanner, secret_scanner

        options["upload_scanners"] = [content_scanner(), secret_scanner(cloudward.secrets.scan_bytes)]
    if os.environ.get("APPSEC_GUARDS") == "1":
        options["guards"] = True
    return ASGIMiddleware(inner, mode=os.environ.get("APPSEC_MODE") or None,
                          policy=os.environ.get("APPSEC_POLICY") or None, **options)


app = build()
