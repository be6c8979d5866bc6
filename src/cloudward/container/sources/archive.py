"""docker-archive (the ``docker save`` tar): manifest.json -> config JSON + layer tars in order."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cloudward.container.image import Image, ImageError, Layer, platform_of, sha256_digest
from cloudward.container.sources._store import BlobStore

_HEX = re.compile(r"[0-9a-f]{64}")


def open_archive(path: str | Path, reference: str | None = None, *, store: BlobStore | None = None,
                 source: str = "archive") -> Image:
    """Read a docker-archive; ``store`` lets the engine source reuse an already-indexed tar."""
    label = str(path)
    store = store or BlobStore(Path(path), label)
    if not store.has("manifest.json"):
        raise ImageError(f"{label}: not a docker-archive (no manifest.json)")
    try:
        manifest = json.loads(store.read("manifest.json"))
        entry: dict[str, Any] = manifest[0]
        config_name: str = entry["Config"]
        layer_names: list[str] = list(entry["Layers"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ImageError(f"{label}: malformed manifest.json ({exc})") from exc
    config_bytes = store.read(config_name)
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise ImageError(f"{label}: config {config_name} is not JSON") from exc
    diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
    if diff_ids and len(diff_ids) != len(layer_names):
        raise ImageError(f"{label}: {len(layer_names)} layers but {len(diff_ids)} diff_ids in the config")
    layers = []
    for i, name in enumerate(layer_names):
        opener = store.opener(name)
        diff_id = diff_ids[i] if diff_ids else None
        layers.append(Layer(digest=_blob_digest(name, opener, diff_id), diff_id=diff_id,
                            media_type="application/vnd.docker.image.rootfs.diff.tar",
                            size=store.size(name), opener=opener))
    tags = [str(t) for t in entry.get("RepoTags") or []]
    return Image(reference=reference or label, source=source, manifest_digest=None,
                 config_digest=sha256_digest(config_bytes), config=config, layers=layers,
                 repo_tags=tags, platform=platform_of(config), identity=list(store.reads))


def _blob_digest(name: str, opener: Any, diff_id: str | None) -> str:
    """The layer's identity: the digest in a ``blobs/sha256/<hex>`` name; else the config's diff_id
    (`docker save` writes uncompressed ``<id>/layer.tar`` files, whose sha256 is their diff_id, and the
    config digest - the image id - covers the diff_ids); hashed only when neither exists. Hashing
    every layer on open would read a 600 MB image twice per scan, cached or not."""
    parts = name.split("/")
    if len(parts) >= 2 and parts[-2] == "sha256" and _HEX.fullmatch(parts[-1]):
        return "sha256:" + parts[-1]
    if diff_id and diff_id.startswith("sha256:") and _HEX.fullmatch(diff_id[7:]):
        return diff_id
    h = hashlib.sha256()
    with opener() as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
