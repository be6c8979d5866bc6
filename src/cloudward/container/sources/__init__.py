"""Image sources: docker-archive, OCI layout (dir or tar), registry, local engine — all into one ``Image``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudward.container.image import Image, ImageError
from cloudward.container.sources._store import BlobStore
from cloudward.container.sources.archive import open_archive
from cloudward.container.sources.oci import open_oci

if TYPE_CHECKING:
    from cloudward.container.sources.engine import open_engine
    from cloudward.container.sources.registry import list_repositories, list_tags, open_registry

__all__ = [
    "list_repositories",
    "list_tags",
    "open_archive",
    "open_engine",
    "open_image",
    "open_oci",
    "open_registry",
]


_NETWORKED = {"open_engine": "engine", "list_repositories": "registry", "list_tags": "registry",
              "open_registry": "registry"}


def __getattr__(name: str) -> Any:
    """The engine and registry sources load httpx (50 ms): only when a reference needs the network."""
    if name in _NETWORKED:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_NETWORKED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_image(reference: str, *, insecure: bool = False, platform: str = "linux/amd64",
               username: str | None = None, password: str | None = None, engine_url: str | None = None) -> Image:
    """Dispatch on the reference's form; a local path is checked before anything goes on the network."""
    if reference.startswith("docker-archive:"):
        return open_archive(reference.removeprefix("docker-archive:"), reference)
    if reference.startswith("oci-archive:"):
        path, tag = _split_tag(reference.removeprefix("oci-archive:"))
        return open_oci(path, tag, platform=platform, reference=reference)
    if reference.startswith("oci:"):
        path, tag = _split_tag(reference.removeprefix("oci:"))
        return open_oci(path, tag, platform=platform, reference=reference)
    if reference.startswith("docker://"):
        from cloudward.container.sources.engine import open_engine

        return open_engine(reference.removeprefix("docker://"), engine_url=engine_url)
    if os.path.isfile(reference):
        return _open_tar(reference, platform)
    if os.path.isdir(reference):
        if not os.path.isfile(os.path.join(reference, "index.json")):
            raise ImageError(f"{reference}: a directory but not an OCI layout (no index.json)")
        return open_oci(reference, platform=platform, reference=reference)
    if reference.endswith(".tar") or (os.path.sep in reference and os.path.exists(reference)):
        raise ImageError(f"{reference}: no such file")
    from cloudward.container.sources.registry import open_registry

    return open_registry(reference, insecure=insecure, platform=platform, username=username, password=password)


def _split_tag(spec: str) -> tuple[str, str | None]:
    """``PATH[:TAG]``: a trailing ``:x`` is a tag only when PATH alone exists (paths may contain ':')."""
    if os.path.exists(spec):
        return spec, None
    path, sep, tag = spec.rpartition(":")
    if sep and os.path.exists(path):
        return path, tag
    raise ImageError(f"{spec}: no such OCI layout")


def _open_tar(path: str, platform: str) -> Image:
    """A .tar is a docker-archive or an OCI archive; decide by content, not by name."""
    store = BlobStore(Path(path), path)
    if store.has("manifest.json"):
        return open_archive(path, path, store=store)
    if store.has("index.json"):
        return open_oci(path, platform=platform, reference=path)
    raise ImageError(f"{path}: not a docker-archive or OCI archive (no manifest.json or index.json)")
