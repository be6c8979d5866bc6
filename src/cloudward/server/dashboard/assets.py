"""The stylesheet, the script and the icon, served from the package (no CDN: the dashboard works
offline). Only the files named here can be fetched; each URL carries a hash of the content, so a
browser may cache it for a year and still sees a new version at once."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import Depends, Path
from fastapi.responses import Response

from cloudward.server.auth import PUBLIC_ROUTE
from cloudward.server.dashboard.routing import new_router
from cloudward.server.errors import NotFound

TYPES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

router = new_router()


@cache
def _content(name: str) -> bytes:
    return resources.files("cloudward.server.dashboard").joinpath("static", name).read_bytes()


def asset_url(name: str) -> str:
    return f"/static/{name}?v={hashlib.sha256(_content(name)).hexdigest()[:12]}"


@router.get("/static/{asset}", dependencies=[Depends(PUBLIC_ROUTE)])
def static_asset(asset: str = Path(max_length=64)) -> Response:
    if asset not in TYPES:
        raise NotFound(f"no file {asset[:64]!r}")
    return Response(_content(asset), media_type=TYPES[asset],
                    headers={"cache-control": "public, max-age=31536000, immutable"})
