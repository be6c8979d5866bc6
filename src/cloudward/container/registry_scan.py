"""Scan a whole registry: every repository and tag, each distinct image once, new images only.

The walk is cheap on purpose: the catalog and tag lists are paged, and each tag is resolved to its
manifest digest with one GET of the manifest (a few KB), several at a time. Tags that share a
digest are one image and one scan. A digest already scanned by an earlier run (same analyzer
version and scanner set) is not pulled again: what that scan found is remembered in
`<data dir>/registry/<host>.json` and reported again under the tags that point at it now, so a
nightly run over an unchanged registry costs a catalog walk, and the findings store keeps those
findings open instead of taking their silence for a fix. Vulnerabilities of remembered images are
as of their scan; `--rescan` judges everything against today's advisory database.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudward.container.image import ImageError
from cloudward.container.scan import ANALYZER_VERSION, ImageScanOptions, image_target, scan_images
from cloudward.container.sources.registry import RegistryClient
from cloudward.core.finding import Finding
from cloudward.core.scan import ScanResult, ScanStatus

__all__ = ["RegistryScanOptions", "scan_registry"]


@dataclass
class RegistryScanOptions:
    image: ImageScanOptions
    state_dir: Path | None = None
    repositories: list[str] = field(default_factory=lambda: ["*"])
    tags: list[str] = field(default_factory=lambda: ["*"])
    concurrency: int = 4
    rescan: bool = False


def _state_path(options: RegistryScanOptions, host: str) -> Path | None:
    if options.state_dir is None:
        return None
    return options.state_dir / (host.replace(":", "_").replace("/", "_") + ".json")


def _load_state(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged state file only costs a full scan
    return data if isinstance(data, dict) else {}


def _save_state(path: Path | None, state: dict[str, Any]) -> None:
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(path)


def _signature(options: ImageScanOptions) -> str:
    content = sorted(f"{c.name}={c.version}" for c in options.content if c.name in options.scanners)
    return "|".join([ANALYZER_VERSION, ",".join(sorted(options.scanners)), *content])


def _manifest_digest(client: RegistryClient, repo: str, tag: str, label: str) -> str:
    """The digest a tag points at, from the manifest itself (verified by hashing its bytes)."""
    _, digest = client.get_manifest(repo, tag, label)
    return digest


def scan_registry(host: str, options: RegistryScanOptions, *, insecure: bool = False, username: str | None = None,
                  password: str | None = None, progress: Callable[[str], None] | None = None) -> ScanResult:
    result = ScanResult(kind="registry", targets=[host])
    started = time.perf_counter()
    state_path = _state_path(options, host)
    state = _load_state(state_path)
    signature = _signature(options.image)
    stats = {"repositories": 0, "tags": 0, "digests": 0, "scanned": 0, "unchanged": 0, "errors": 0}
    with RegistryClient(host, insecure=insecure, username=username, password=password) as client:
        try:
            repos = [r for r in client._paged("/v2/_catalog?n=100", "repositories", "registry:catalog:*", host)
                     if any(fnmatch.fnmatchcase(r, g) for g in options.repositories)]
        except ImageError as exc:
            result.add_error(host, f"cannot list repositories: {exc}", stage="catalog")
            result.stats = stats
            return result.finish(ScanStatus.FAILED)
        stats["repositories"] = len(repos)
        pairs: list[tuple[str, str]] = []
        for repo in repos:
            try:
                tags = list(client._paged(f"/v2/{repo}/tags/list?n=100", "tags", f"repository:{repo}:pull",
                                          f"{host}/{repo}"))
            except ImageError as exc:
                result.add_error(f"{host}/{repo}", f"cannot list tags: {exc}", stage="tags")
                stats["errors"] += 1
                continue
            pairs.extend((repo, t) for t in sorted(tags) if any(fnmatch.fnmatchcase(t, g) for g in options.tags))
        stats["tags"] = len(pairs)

        def resolve(pair: tuple[str, str]) -> tuple[str, str, str | None, str | None]:
            repo, tag = pair
            try:
                return repo, tag, _manifest_digest(client, repo, tag, f"{host}/{repo}:{tag}"), None
            except ImageError as exc:
                return repo, tag, None, str(exc)

        with ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool:
            resolved = list(pool.map(resolve, pairs))
    images: dict[tuple[str, str], list[str]] = {}
    for repo, tag, digest, error in resolved:
        if digest is None:
            result.add_error(f"{host}/{repo}:{tag}", error or "cannot resolve", stage="manifest")
            stats["errors"] += 1
            result.inventory.append({"repository": repo, "tags": [tag], "digest": None, "status": "error"})
            continue
        images.setdefault((repo, digest), []).append(tag)
    stats["digests"] = len(images)
    for (repo, digest), tags in sorted(images.items()):
        name = f"{host}/{repo}:{sorted(tags)[0]}"
        target = image_target(name)
        key = f"{repo}@{digest}"
        known = state.get(key)
        entry = {"repository": repo, "tags": sorted(tags), "digest": digest}
        if known and known.get("signature") == signature and not options.rescan:
            try:
                remembered = [Finding(**data, target=target) for data in known.get("findings", [])]
            except (TypeError, ValueError):
                remembered = None
            if remembered is not None:
                result.findings.extend(remembered)
                stats["unchanged"] += 1
                result.inventory.append({**entry, "status": "unchanged", "scanned_at": known.get("scanned_at")})
                continue
        if progress is not None:
            progress(name)
        one = scan_images([f"{host}/{repo}@{digest}"], _with_registry(options.image, insecure, username, password))
        for problem in one.errors:
            result.add_error(name, problem.message, stage=problem.stage)
        if one.status is ScanStatus.CANCELLED:
            result.stats = {**stats, "seconds": round(time.perf_counter() - started, 3)}
            _save_state(state_path, state)
            return result.finish(ScanStatus.CANCELLED)
        if not one.inventory:
            stats["errors"] += 1
            result.inventory.append({**entry, "status": "error"})
            continue
        findings = [f.retargeted(target, f.key) for f in one.findings]
        for f in findings:
            f.location.setdefault("digest", digest)
        result.findings.extend(findings)
        stats["scanned"] += 1
        result.inventory.append({**entry, "status": "scanned", "packages": one.inventory[0].get("packages")})
        state[key] = {"signature": signature, "tags": sorted(tags), "scanned_at": datetime.now(UTC).isoformat(),
                      "findings": [f.model_dump(mode="json", exclude={"target", "fingerprint"}) for f in findings]}
        _save_state(state_path, state)  # after each image: an interrupted walk resumes where it stopped
    result.stats = {**stats, "seconds": round(time.perf_counter() - started, 3)}
    return result.finish()


def _with_registry(options: ImageScanOptions, insecure: bool, username: str | None,
                   password: str | None) -> ImageScanOptions:
    from dataclasses import replace

    return replace(options, insecure=insecure, username=username, password=password)

