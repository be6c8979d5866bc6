"""Scan a whole registry: every repository and tag, each distinct image once, new images only.

The walk is cheap on purpose. The catalog and tag lists are paged; each tag is resolved to its
manifest digest with a HEAD of the manifest (its `Docker-Content-Digest`; a GET whose bytes are
hashed when the registry does not say), `concurrency` at a time. Tags that point at one digest, in
one repository or several, are one image and one scan. A digest scanned by an earlier run with the
same analyzer (ANALYZER_VERSION, scanner set, content-scanner and image-rule versions, platform) is
not pulled again: no manifest body, no config, no layer.

What an unchanged image reports. The findings store closes, as fixed, every open finding inside a
completed scan's scope that the scan did not report. A registry scan's scope is the registry (or
the repositories/tags it was filtered to), so staying silent about an unchanged image would mark
its findings fixed. Each digest's findings are therefore remembered, target-free, in
`<data dir>/registry/<host>_<port>.json` and reported again under the tags that point at the digest
now: they keep their fingerprints (still open, not new) and their `detected_at` (the earlier scan's
time), and the summary line says how many images were unchanged and how many findings were carried
over from earlier scans. Vulnerabilities of an unchanged image are as of its scan; `--rescan`
judges every image against today's advisory database (cheap: the per-image cache in
`<data dir>/cache/images/` has its packages, so only its manifest and config are fetched). An
image whose scan reported any error (an unreadable layer, no advisory database) is not remembered:
it is scanned again next run.

Targets. A finding's target is the image as users name it, `host:port/repo:tag`: the tag is the one
an earlier run chose if it still points at the digest, else the first in sort order (so adding a tag
does not rename the image's findings). `location.digest` keeps the manifest digest and
`evidence.tags` every tag of that repository that points at it. An image in two repositories is
scanned once and reported under each.

State. `{"version": 1, "images": {digest: {tags, targets, scanned_at, analyzer_version, signature,
findings}}}`, written atomically (a temporary file renamed over the old one) every few seconds while
images are scanned and at the end, so an interrupted walk resumes where it stopped. A complete walk
(no filters, no listing errors) forgets digests that are no longer tagged; a damaged state file only
costs a full scan.

Errors name what failed (`host/repo` for a tag list, `host/repo:tag` for a manifest or a scan) and
the walk goes on; only a registry that cannot be listed at all fails the scan.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudward.container.image import ImageError
from cloudward.container.scan import ANALYZER_VERSION, ImageScanOptions, image_target, scan_images
from cloudward.container.sources.registry import MANIFEST_ACCEPT, RegistryClient
from cloudward.core.finding import Finding, fingerprint
from cloudward.core.scan import ScanResult, ScanStatus

__all__ = ["RegistryScanOptions", "scan_registry", "state_path"]

STATE_VERSION = 1
SAVE_EVERY = 10.0  # seconds between state writes while images are scanned
PAGE_SIZE = 100
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The distribution spec's grammar: a registry that lists other names is not asked about them.
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"\w[\w.-]{0,127}")
_GLOB = re.compile(r"[*?\[]")


@dataclass
class RegistryScanOptions:
    """`image` carries the scanners and the registry credentials (`insecure`, `username`, `password`).
    Repositories given without glob characters are listed directly, without the catalog (which many
    registries do not offer)."""

    image: ImageScanOptions
    state_dir: Path | None = None
    repositories: list[str] = field(default_factory=lambda: ["*"])
    tags: list[str] = field(default_factory=lambda: ["*"])
    concurrency: int = 4
    rescan: bool = False


@dataclass
class _Image:
    """One digest and where it is tagged: repository -> tags."""

    digest: str
    tags: dict[str, list[str]] = field(default_factory=dict)


def state_path(state_dir: Path, host: str) -> Path:
    return state_dir / (re.sub(r"[^A-Za-z0-9.-]", "_", host) + ".json")


def _load_state(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged state file only costs a full scan
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or not isinstance(doc.get("images"), dict):
        return {}
    return {k: v for k, v in doc["images"].items() if isinstance(v, dict)}


def _save_state(path: Path | None, host: str, images: dict[str, dict[str, Any]]) -> None:
    """Atomically: a reader (or the next run after a crash) sees the old file or the new one."""
    if path is None:
        return
    doc = {"version": STATE_VERSION, "registry": host, "images": images}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False) as handle:
            tmp = Path(handle.name)
            json.dump(doc, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # an unwritable state dir only costs the next run its speed


def _signature(options: ImageScanOptions) -> str:
    """Everything besides the image that decides what its scan reports (vulnerabilities aside)."""
    content = sorted(f"{c.name}={c.version}" for c in options.content if c.name in options.scanners)
    rules = ""
    if "config" in options.scanners:
        dumped = sorted(r.model_dump_json(exclude={"source"}) for r in options.rules)
        rules = hashlib.sha256("\n".join(dumped).encode()).hexdigest()[:16]
    return "|".join([ANALYZER_VERSION, ",".join(sorted(options.scanners)), options.platform, rules, *content])


def _matches(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def resolve_digest(client: RegistryClient, repo: str, tag: str, label: str) -> str:
    """The digest a tag points at: HEAD's `Docker-Content-Digest`, else the hash of the manifest's bytes."""
    resp = client.request("HEAD", f"/v2/{repo}/manifests/{tag}", scope=f"repository:{repo}:pull", label=label,
                          headers={"Accept": MANIFEST_ACCEPT})
    resp.close()
    digest = str(resp.headers.get("docker-content-digest", ""))
    if resp.status_code == 200 and _DIGEST.fullmatch(digest):
        return digest
    return client.get_manifest(repo, tag, label)[1]  # hashed from the bytes served


class _Walk:
    """One run: list, resolve, then scan or remember each digest."""

    def __init__(self, host: str, options: RegistryScanOptions, progress: Callable[[str], None] | None) -> None:
        self.host, self.options, self.progress = host, options, progress
        self.result = ScanResult(kind="registry", targets=[host])
        self.stats: dict[str, Any] = {"repositories": 0, "tags": 0, "digests": 0, "scanned": 0, "unchanged": 0,
                                      "errors": 0, "carried_findings": 0}
        self.path = state_path(options.state_dir, host) if options.state_dir is not None else None
        self.state = _load_state(self.path)
        self.signature = _signature(options.image)
        self.filtered = options.repositories != ["*"] or options.tags != ["*"]
        self.walk_errors = 0
        self.started = time.perf_counter()
        self.saved = time.monotonic()

    def error(self, target: str, message: str, stage: str) -> None:
        self.result.add_error(target, message, stage=stage)
        self.stats["errors"] += 1

    # -- listing ---------------------------------------------------------------------------------

    def repositories(self, client: RegistryClient) -> list[str] | None:
        globs = self.options.repositories
        if globs != ["*"] and not any(_GLOB.search(g) for g in globs):
            names = sorted(set(globs))  # named outright: no catalog needed
        else:
            try:
                listed = list(client._paged(f"/v2/_catalog?n={PAGE_SIZE}", "repositories", "registry:catalog:*",
                                            self.host))
            except ImageError as exc:
                self.error(self.host, f"cannot list repositories: {exc}", "catalog")
                return None
            names = sorted({r for r in listed if _matches(r, globs)})
        good = []
        for name in names:
            if _REPOSITORY.fullmatch(name):
                good.append(name)
            else:
                self.error(f"{self.host}/{name}", "not a valid repository name; skipped", "catalog")
                self.walk_errors += 1
        return good

    # `list_repositories`/`list_tags` open a client per call; the walk shares one (its tokens, its
    # connections) across every repository, so it pages through the client directly.

    def list_tags(self, client: RegistryClient, repo: str) -> list[str]:
        return sorted(set(client._paged(f"/v2/{repo}/tags/list?n={PAGE_SIZE}", "tags", f"repository:{repo}:pull",
                                        f"{self.host}/{repo}")))

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> ScanResult:
        image = self.options.image
        try:
            with RegistryClient(self.host, insecure=image.insecure, username=image.username,
                                password=image.password) as client:
                repos = self.repositories(client)
                if repos is None:
                    return self.done(ScanStatus.FAILED)
                self.stats["repositories"] = len(repos)
                images = self.resolve(client, repos)
            if self.result.errors and not images:
                return self.done(ScanStatus.FAILED)  # nothing could be looked at
            self.stats["digests"] = len(images)
            for entry in sorted(images.values(), key=lambda i: (min(i.tags), i.digest)):
                if not self.judge(entry):
                    return self.done(ScanStatus.CANCELLED)
        except KeyboardInterrupt:
            return self.done(ScanStatus.CANCELLED)
        if not self.filtered and not self.walk_errors:
            self.state = {d: v for d, v in self.state.items() if d in images}  # untagged images are forgotten
        return self.done(ScanStatus.COMPLETED)

    def resolve(self, client: RegistryClient, repos: list[str]) -> dict[str, _Image]:
        """List every repository's tags, then resolve every tag to its digest, `concurrency` at a time."""
        def list_one(repo: str) -> tuple[str, list[str], str | None]:
            try:
                return repo, self.list_tags(client, repo), None
            except ImageError as exc:
                return repo, [], f"cannot list tags: {exc}"

        def resolve_one(pair: tuple[str, str]) -> tuple[str, str, str | None, str | None]:
            repo, tag = pair
            try:
                return repo, tag, resolve_digest(client, repo, tag, f"{self.host}/{repo}:{tag}"), None
            except ImageError as exc:
                return repo, tag, None, str(exc)

        pairs: list[tuple[str, str]] = []
        walked: list[str] = []
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.concurrency))
        try:
            for repo, tags, problem in pool.map(list_one, repos):
                if problem is not None:
                    self.error(f"{self.host}/{repo}", problem, "tags")
                    self.walk_errors += 1
                    continue
                for tag in tags:
                    if not _TAG.fullmatch(tag):
                        self.error(f"{self.host}/{repo}:{tag}", "not a valid tag; skipped", "tags")
                        self.walk_errors += 1
                    elif _matches(tag, self.options.tags):
                        pairs.append((repo, tag))
                walked.append(f"{self.host}/{repo}")
            resolved = list(pool.map(resolve_one, pairs))
        finally:  # on Ctrl-C, what has not started is dropped rather than waited for
            pool.shutdown(wait=False, cancel_futures=True)
        self.stats["tags"] = len(pairs)
        if self.filtered:  # the store may only close findings of what this run looked at
            names = walked if self.options.tags == ["*"] else [f"{self.host}/{r}:{t}" for r, t in pairs]
            self.result.targets = names or [f"{self.host}/{g}" for g in self.options.repositories]
        images: dict[str, _Image] = {}
        for repo, tag, digest, problem in resolved:
            if digest is None:
                self.error(f"{self.host}/{repo}:{tag}", problem or "cannot resolve", "manifest")
                self.walk_errors += 1
                self.result.inventory.append({"repository": repo, "tag": tag, "digest": None, "status": "error",
                                              "image": f"{self.host}/{repo}:{tag}"})
                continue
            images.setdefault(digest, _Image(digest)).tags.setdefault(repo, []).append(tag)
        return images

    def judge(self, entry: _Image) -> bool:
        """Remember or scan one digest and report it under each repository; False when interrupted."""
        known = self.state.get(entry.digest)
        previous = (known or {}).get("targets")
        previous = previous if isinstance(previous, dict) else {}
        names = {repo: tag if (tag := previous.get(repo)) in tags else min(tags) for repo, tags in entry.tags.items()}
        base: list[Finding] | None = None
        if known and known.get("signature") == self.signature and not self.options.rescan:
            try:
                base = [Finding(**data, target=image_target("-")) for data in known.get("findings", [])]
            except (TypeError, ValueError):
                base = None  # not understood: scan again
        if base is not None:
            status = "unchanged"
            self.stats["unchanged"] += 1
            self.stats["carried_findings"] += len(base) * len(entry.tags)
            known = {**(known or {}), "tags": _flat(entry.tags), "targets": names}
        else:
            first = min(entry.tags)
            shown = f"{self.host}/{first}:{names[first]}"
            if self.progress is not None:
                self.progress(f"{shown} ({entry.digest[:19]})")
            one = scan_images([f"{self.host}/{first}@{entry.digest}"], self.options.image)
            if one.status is ScanStatus.CANCELLED:
                return False
            for repo, tag in names.items():
                for problem in one.errors:
                    self.error(f"{self.host}/{repo}:{tag}", problem.message, problem.stage)
            if not one.inventory:
                self._rows(entry, names, "error")
                return True
            status = "scanned"
            self.stats["scanned"] += 1
            base = one.findings
            known = None if one.errors else {  # an incomplete scan is not remembered: next run tries again
                "tags": _flat(entry.tags), "targets": names, "scanned_at": datetime.now(UTC).isoformat(),
                "analyzer_version": ANALYZER_VERSION, "signature": self.signature,
                "findings": [f.model_dump(mode="json", exclude={"target", "fingerprint"}) for f in base]}
        if known is not None:
            self.state[entry.digest] = known
        else:
            self.state.pop(entry.digest, None)
        for repo, tags in sorted(entry.tags.items()):
            self.result.findings.extend(_retarget(base, f"{self.host}/{repo}:{names[repo]}", entry.digest,
                                                  [f"{repo}:{t}" for t in sorted(tags)]))
        self._rows(entry, names, status, None if known is None else known.get("scanned_at"))
        if status == "scanned" and time.monotonic() - self.saved > SAVE_EVERY:
            _save_state(self.path, self.host, self.state)
            self.saved = time.monotonic()
        return True

    def _rows(self, entry: _Image, names: dict[str, str], status: str, scanned_at: str | None = None) -> None:
        for repo, tags in sorted(entry.tags.items()):
            for tag in sorted(tags):
                row = {"repository": repo, "tag": tag, "digest": entry.digest, "status": status,
                       "image": f"{self.host}/{repo}:{names[repo]}"}
                if scanned_at and status == "unchanged":
                    row["scanned_at"] = scanned_at
                self.result.inventory.append(row)

    def done(self, status: ScanStatus) -> ScanResult:
        if status is not ScanStatus.FAILED:  # a failed walk learned nothing
            _save_state(self.path, self.host, self.state)
        self.result.stats = {**self.stats, "seconds": round(time.perf_counter() - self.started, 3)}
        return self.result.finish(status)


def _flat(tags: dict[str, list[str]]) -> list[str]:
    return sorted(f"{repo}:{t}" for repo, ts in tags.items() for t in ts)


def _retarget(findings: list[Finding], name: str, digest: str, tags: list[str]) -> list[Finding]:
    target = image_target(name)
    return [f.model_copy(update={"target": target, "fingerprint": fingerprint(f.rule_id, target, f.key),
                                 "location": {**f.location, "digest": digest},
                                 "evidence": {**f.evidence, "tags": tags}})
            for f in findings]


def scan_registry(host: str, options: RegistryScanOptions, *,
                  progress: Callable[[str], None] | None = None) -> ScanResult:
    """Walk `host` (`host[:port]`), scan each digest not scanned before, report everything it tags.
    The registry credentials and `insecure` come from `options.image`."""
    return _Walk(host, options, progress).run()
