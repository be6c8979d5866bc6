"""Hello-world FastAPI app for the throughput benchmark, with or without the middleware
(APPSEC_PROTECT=0 leaves it bare)."""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

inner = FastAPI()


@inner.get("/")
async def hello() -> PlainTextResponse:
    return PlainTextResponse("hello, world")


def build() -> object:
    if os.environ.get("APPSEC_PROTECT", "1") == "0":
        return inner
    from cloudward.appsec import ASGIMiddleware

    return ASGIMiddleware(inner, mode="block")


app = build()
