"""A local engine (Docker, or podman's compatible service) over its API: ``/images/{name}/get`` is a docker-archive.

The exported archive is spooled to one private temporary file (removed when the image is garbage
collected) because layers are re-read by offset; nothing in it is extracted.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from pathlib import Path
from urllib.parse import quote

import httpx

from cloudward.container.image import Image, ImageError
from cloudward.container.sources._store import BlobStore
from cloudward.container.sources.archive import open_archive

DEFAULT_ENGINE = "unix:///var/run/docker.sock"


def engine_client(engine_url: str | None, timeout: float = 120.0) -> tuple[httpx.Client, str]:
    """An httpx client and base URL for ``unix:///path``, ``tcp://host:port`` or ``http(s)://...``."""
    url = engine_url or os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE
    if url.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=url.removeprefix("unix://"))
        return httpx.Client(transport=transport, timeout=timeout, trust_env=False), "http://localhost"
    if url.startswith("tcp://"):
        url = "http://" + url.removeprefix("tcp://")
    return httpx.Client(timeout=timeout, trust_env=False), url.rstrip("/")


def open_engine(name: str, *, engine_url: str | None = None) -> Image:
    """Export ``name`` from the engine and read it as a docker-archive."""
    label = f"docker://{name}"
    client, base = engine_client(engine_url)
    quoted = quote(name, safe="")
    with client:
        try:
            info = client.get(f"{base}/images/{quoted}/json")
            if info.status_code == 404:
                raise ImageError(f"{label}: no such image in the engine")
            if info.status_code != 200:
                raise ImageError(f"{label}: engine answered HTTP {info.status_code}")
            fd, tmp = tempfile.mkstemp(prefix="cloudward-image-", suffix=".tar")
            try:
                with os.fdopen(fd, "wb") as out, client.stream("GET", f"{base}/images/{quoted}/get") as resp:
                    if resp.status_code != 200:
                        raise ImageError(f"{label}: export failed with HTTP {resp.status_code}")
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
                image = open_archive(tmp, label, store=BlobStore(Path(tmp), label), source="engine")
            except BaseException:
                os.unlink(tmp)
                raise
        except httpx.HTTPError as exc:
            raise ImageError(f"{label}: cannot reach the engine ({exc})") from exc
    weakref.finalize(image, _unlink, tmp)
    repo_digests = info.json().get("RepoTags") or []
    if not image.repo_tags:
        image.repo_tags = [str(t) for t in repo_digests]
    return image


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
