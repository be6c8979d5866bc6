"""OCI image layout (directory or tar): oci-layout, index.json, blobs/sha256/<hex>; tag by ref.name annotation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudward.container.image import Image, ImageError, Layer, platform_of, sha256_digest
from cloudward.container.sources._store import BlobStore, verified_opener

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


def open_oci(path: str | Path, tag: str | None = None, *, platform: str = "linux/amd64",
             reference: str | None = None) -> Image:
    """Read one image from a layout; without ``tag`` the layout must hold exactly one top-level manifest."""
    label = reference or (f"oci:{path}:{tag}" if tag else f"oci:{path}")
    store = BlobStore(Path(path), label)
    if not store.has("index.json"):
        raise ImageError(f"{label}: not an OCI layout (no index.json)")
    index = _json(store.read("index.json"), label, "index.json")
    manifests: list[dict[str, Any]] = index.get("manifests") or []
    if tag is not None:
        manifests = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not manifests:
            raise ImageError(f"{label}: tag {tag!r} not found in the layout")
    if not manifests:
        raise ImageError(f"{label}: the layout holds no image")
    if len(manifests) > 1 and tag is None:
        names = sorted({(m.get("annotations") or {}).get(REF_NAME, m.get("digest", "?")) for m in manifests})
        raise ImageError(f"{label}: the layout holds several images, name one: {', '.join(names)}")
    desc = manifests[0]
    tag = tag or (desc.get("annotations") or {}).get(REF_NAME)
    manifest_digest: str = desc["digest"]
    manifest = _blob_json(store, manifest_digest, label)
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        desc = select_platform(manifest.get("manifests") or [], platform, label)
        manifest_digest = desc["digest"]
        manifest = _blob_json(store, manifest_digest, label)
    config_digest: str = manifest["config"]["digest"]
    config = _blob_json(store, config_digest, label)
    diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
    layers = []
    for i, ld in enumerate(manifest.get("layers") or []):
        name = _blob_path(ld["digest"], label)
        layers.append(Layer(digest=ld["digest"], diff_id=diff_ids[i] if i < len(diff_ids) else None,
                            media_type=ld.get("mediaType", ""), size=int(ld.get("size", 0)),
                            opener=verified_opener(store.opener(name), ld["digest"], label)))
    return Image(reference=label, source="oci", manifest_digest=manifest_digest, config_digest=config_digest,
                 config=config, layers=layers, repo_tags=[tag] if tag else [], platform=platform_of(config),
                 identity=list(store.reads))


def select_platform(manifests: list[dict[str, Any]], platform: str, label: str) -> dict[str, Any]:
    """Pick the manifest for ``os/arch[/variant]`` from an index; the error lists what is available."""
    want = platform.split("/")
    available = []
    for m in manifests:
        p = m.get("platform") or {}
        have = [p.get("os", ""), p.get("architecture", "")] + ([p["variant"]] if p.get("variant") else [])
        available.append("/".join(have))
        if have[:2] == want[:2] and (len(want) < 3 or have[2:] == want[2:]):
            return m
    raise ImageError(f"{label}: no manifest for platform {platform} (available: {', '.join(available) or 'none'})")


def _blob_path(digest: str, label: str) -> str:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or not hexd.isalnum():
        raise ImageError(f"{label}: unsupported digest {digest}")
    return f"blobs/{algo}/{hexd}"


def _blob_json(store: BlobStore, digest: str, label: str) -> dict[str, Any]:
    data = store.read(_blob_path(digest, label))
    if sha256_digest(data) != digest:
        raise ImageError(f"{label}: blob {digest} does not match its digest ({sha256_digest(data)})")
    return _json(data, label, digest)


def _json(data: bytes, label: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{label}: {what} is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ImageError(f"{label}: {what} is not a JSON object")
    return value
