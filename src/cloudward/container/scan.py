"""An image scan: open the image, stream its layers once, then judge what was seen.

One pass over the layers does everything that needs file bytes: the catalogers' files are captured
(the squashed view they read), and every regular file of every layer is shown to the content
scanners (secrets, malware), deleted later or not, because a secret removed in a later layer is
still in the image for anyone who pulls it. Then, without touching the layers again: packages are
matched against the advisory database, and the image config, its history and the final file tree
are judged by the image rules (`container/rules/*.yaml`, engine `image`).

Content scanners come from other capabilities (the secret scanner, the shared YARA rules); the
caller hands them in, so Container Security does not import its peers.

What reading a layer yields (its changes to the tree, the catalogers' files it brought, the content
findings in it) is cached per layer digest, analyzer version and content-scanner versions, so a
base layer shared by many images is read once, and a re-scan of an unchanged image replays its
layers without decompressing anything. Vulnerabilities are matched afresh each time: the advisory
database changes between scans, the image does not.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudward.container.image import Image, ImageError
from cloudward.container.squash import FileEntry, ImageFS, LayerRecord, Limits, squash
from cloudward.container.versions import ANALYZER_VERSION
from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.engines import subject_rules
from cloudward.engines.catalog import CatalogResult, Distro, Package, catalog, condenser, wanted

__all__ = [
    "ANALYZER_VERSION",
    "SCANNERS",
    "ContentScanner",
    "ImageScanOptions",
    "analyse_layers",
    "image_target",
    "scan_image",
    "scan_images",
]

SCANNERS = ("vuln", "secret", "malware", "config")

# Ports whose service, reachable without authentication, is how crews like TeamTNT get in.
RISKY_PORTS = {2375: "Docker Engine API (plain HTTP)", 2376: "Docker Engine API (TLS)", 6379: "Redis",
               2379: "etcd client API", 2380: "etcd peer API", 10250: "kubelet API", 10255: "kubelet read-only API",
               27017: "MongoDB", 9200: "Elasticsearch", 11211: "memcached", 5984: "CouchDB", 8086: "InfluxDB"}
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/var/run/containerd/containerd.sock",
                  "/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/run/podman/podman.sock")
_SECRET_ENV = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "APIKEY", "PRIVATE_KEY", "ACCESS_KEY",
               "CREDENTIALS", "AUTH")
_PLACEHOLDERS = {"", "changeme", "change-me", "xxx", "none", "null", "false", "true", "example", "placeholder",
                 "secret", "password", "<password>", "todo"}


@dataclass(frozen=True)
class ContentScanner:
    """A judge of file bytes from another capability. `wants` decides from the entry alone (path,
    mode, size) so unwanted files are never read; `scan` gets the bytes, the entry and the image
    target and returns findings located at `{path, layer, layer_digest}`."""

    name: str
    version: str
    wants: Callable[[FileEntry], bool]
    scan: Callable[[bytes, FileEntry, Target], list[Finding]]


@dataclass
class ImageScanOptions:
    scanners: frozenset[str] = frozenset(SCANNERS)
    advisories: Path | None = None
    content: Sequence[ContentScanner] = ()
    rules: Sequence[Rule] = ()
    limits: Limits = field(default_factory=Limits)
    cache_dir: Path | None = None
    insecure: bool = False
    platform: str = "linux/amd64"
    username: str | None = None
    password: str | None = None
    engine_url: str | None = None


def image_target(reference: str) -> Target:
    return Target(kind="image", name=reference)


@dataclass
class LayerYield:
    """What streaming (or replaying) the layers produced."""

    catalog: CatalogResult
    content: list[Finding]
    errors: list[str]
    skipped: list[tuple[str, str]]
    files: list[dict[str, Any]]  # the final tree's entries the image rules look at
    layers: int
    replayed: int = 0


# -- the layer pass ------------------------------------------------------------------------------

_INTERESTING = ("/root/.ssh/authorized_keys", "/etc/sudoers", "/etc/ld.so.preload")


def _file_facts(fs: ImageFS) -> list[dict[str, Any]]:
    """Final-tree files the image rules judge: baked-in SSH keys, preload files, SUID binaries in odd places."""
    out: list[dict[str, Any]] = []
    for path in fs.paths():
        entry = fs.entry(path)
        if entry is None or entry.kind != "file":
            continue
        base = posixpath.basename(path)
        suid_root = bool(entry.mode & 0o4000) and entry.uid == 0
        if not (path in _INTERESTING or base in ("authorized_keys", "authorized_keys2") or suid_root):
            continue
        out.append({"path": path, "name": base, "mode": entry.mode, "uid": entry.uid, "size": entry.size,
                    "suid_root": suid_root, "world_writable": bool(entry.mode & 0o002), "layer": entry.layer_index})
    return out


class _LayerStore:
    """Layer records and the content findings of each layer, by blob digest, analyzer version and
    content-scanner versions, as gzipped JSON files under `<cache>/layers/`. A damaged or foreign
    file is a miss, never an error; an unwritable cache only costs the next scan its speed."""

    def __init__(self, root: Path, versions: str, target: Target, found: dict[int, list[Finding]]) -> None:
        self.root, self.versions, self.target, self.found = root / "layers", versions, target, found

    def _path(self, digest: str) -> Path:
        return self.root / (hashlib.sha256(f"{digest}\x1f{self.versions}".encode()).hexdigest() + ".json.gz")

    def get(self, index: int, digest: str) -> LayerRecord | None:
        path = self._path(digest)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                doc = json.load(handle)
            if doc.get("digest") != digest or doc.get("versions") != self.versions:
                return None
            record = LayerRecord(ops=[tuple(op) for op in doc["ops"]],
                                 content={k: base64.b64decode(v) for k, v in doc["content"].items()},
                                 errors=list(doc["errors"]), skipped=[(a, b) for a, b in doc["skipped"]])
            findings = []
            for data in doc["findings"]:
                data["location"]["layer"] = index
                findings.append(Finding(**data, target=self.target))
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            return None
        self.found[index] = findings
        return record

    def put(self, index: int, digest: str, record: LayerRecord) -> None:
        doc = {"digest": digest, "versions": self.versions, "ops": record.ops,
               "content": {k: base64.b64encode(v).decode() for k, v in record.content.items()},
               "errors": record.errors, "skipped": record.skipped,
               # stored without their target: the same layer belongs to many images
               "findings": [f.model_dump(mode="json", exclude={"target", "fingerprint"})
                            for f in self.found.get(index, [])]}
        _write_json_gz(self._path(digest), doc)


def _write_json_gz(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file); an unwritable cache only costs speed."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as handle:
            json.dump(doc, handle)
        tmp.replace(path)


def _versions(options: ImageScanOptions) -> str:
    active = sorted(f"{c.name}={c.version}" for c in options.content if c.name in options.scanners)
    return "|".join([ANALYZER_VERSION, *active])


def analyse_layers(image: Image, target: Target, options: ImageScanOptions) -> LayerYield:
    """What the image's layers yield: from the image cache when this exact image (config digest,
    which names every layer's content) was analysed before with the same versions; else read or
    replayed layer by layer, then remembered."""
    summary = _image_cache_path(options, image)
    if summary is not None:
        known = _load_summary(summary, target)
        if known is not None:
            return known
    found_layers = _read_layers(image, target, options)
    if summary is not None:
        _save_summary(summary, found_layers)
    return found_layers


def _image_cache_path(options: ImageScanOptions, image: Image) -> Path | None:
    if options.cache_dir is None:
        return None
    key = hashlib.sha256(f"{image.id}\x1f{_versions(options)}".encode()).hexdigest()
    return options.cache_dir / "images" / f"{key}.json.gz"


def _save_summary(path: Path, found: LayerYield) -> None:
    distro = found.catalog.distro
    doc = {"distro": None if distro is None else dataclasses.asdict(distro),
           "packages": [dataclasses.asdict(p) for p in found.catalog.packages], "catalog_errors": found.catalog.errors,
           "content": [f.model_dump(mode="json", exclude={"target", "fingerprint"}) for f in found.content],
           "errors": found.errors, "skipped": found.skipped, "files": found.files, "layers": found.layers}
    _write_json_gz(path, doc)


def _load_summary(path: Path, target: Target) -> LayerYield | None:
    """A remembered analysis; a missing, damaged or foreign file is a miss, never an error."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            doc = json.load(handle)
        distro = Distro(**doc["distro"]) if doc.get("distro") else None
        packages = [Package(**{**p, "locations": tuple(p["locations"]), "licenses": tuple(p["licenses"])})
                    for p in doc["packages"]]
        content = [Finding(**data, target=target) for data in doc["content"]]
        return LayerYield(catalog=CatalogResult(distro=distro, packages=packages, errors=list(doc["catalog_errors"])),
                          content=content, errors=list(doc["errors"]), skipped=[(a, b) for a, b in doc["skipped"]],
                          files=list(doc["files"]), layers=int(doc["layers"]), replayed=int(doc["layers"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _read_layers(image: Image, target: Target, options: ImageScanOptions) -> LayerYield:
    found: dict[int, list[Finding]] = {}  # content findings by layer index
    errors: list[str] = []
    active = [c for c in options.content if c.name in options.scanners]

    def inspect(entry: FileEntry) -> Callable[[bytes], None] | None:
        takers = [c for c in active if c.wants(entry)]
        if not takers:
            return None

        def judge(data: bytes) -> None:
            for scanner in takers:
                try:
                    found.setdefault(entry.layer_index, []).extend(scanner.scan(data, entry, target))
                except Exception as exc:  # one scanner's failure must not cost the layer
                    errors.append(f"{scanner.name}: {entry.path} (layer {entry.layer_index}): "
                                  f"{type(exc).__name__}: {exc}")

        return judge

    cache = _LayerStore(options.cache_dir, _versions(options), target, found) if options.cache_dir else None
    fs = squash(image, wanted, limits=options.limits, inspect=inspect if active else None, cache=cache,
                condense=condenser)
    result = catalog(fs)
    content: list[Finding] = []
    seen: set[str] = set()
    for index in sorted(found):
        for finding in found[index]:
            if finding.fingerprint in seen:
                continue
            seen.add(finding.fingerprint)
            path = finding.location.get("path")
            final = fs.entry(path) if isinstance(path, str) else None
            finding.location["in_final_filesystem"] = final is not None and final.layer_index == index
            content.append(finding)
    return LayerYield(catalog=result, content=content, errors=[*fs.errors, *errors], skipped=list(fs.skipped),
                       files=_file_facts(fs), layers=len(image.layers), replayed=len(fs.replayed))


# -- config, history and file rules --------------------------------------------------------------

def _runs_as_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "root", "0")


def _env_facts(env: Iterable[str]) -> tuple[list[str], list[str]]:
    names, secret_like = [], []
    for item in env:
        name, _, value = item.partition("=")
        names.append(name)
        upper = name.upper()
        named = any(word in upper for word in _SECRET_ENV) and not upper.endswith(("_FILE", "_PATH", "_DIR"))
        if named and value.strip().lower() not in _PLACEHOLDERS and not value.startswith(("$", "/run/secrets/")):
            secret_like.append(name)
    return names, secret_like


def _ports(exposed: Any) -> list[int]:
    out = []
    for spec in (exposed or {}):
        head = str(spec).split("/", 1)[0]
        if head.isdigit():
            out.append(int(head))
    return sorted(set(out))


def config_observations(image: Image) -> list[tuple[str, dict[str, Any], str]]:
    """(subject, facts, key) for the image config and each history step."""
    cfg = image.config.get("config") or image.config.get("Config") or {}
    user = str(cfg.get("User") or "")
    env_names, secret_env = _env_facts(cfg.get("Env") or [])
    ports = _ports(cfg.get("ExposedPorts"))
    volumes = sorted((cfg.get("Volumes") or {}).keys())
    healthcheck = cfg.get("Healthcheck") or {}
    facts = {
        "user": user, "runs_as_root": _runs_as_root(user), "exposed_ports": ports,
        "risky_ports": [p for p in ports if p in RISKY_PORTS],
        "risky_services": [RISKY_PORTS[p] for p in ports if p in RISKY_PORTS],
        "docker_api_port": any(p == 2375 for p in ports),
        "other_risky_ports": [p for p in ports if p in RISKY_PORTS and p != 2375],
        "volumes": volumes, "runtime_socket_volumes": [v for v in volumes if v.rstrip("/") in DOCKER_SOCKETS],
        "env_names": env_names, "secret_env_names": secret_env,
        "healthcheck": bool(healthcheck) and healthcheck.get("Test") not in (None, [], ["NONE"]),
        "entrypoint": cfg.get("Entrypoint") or [], "cmd": cfg.get("Cmd") or [],
    }
    out: list[tuple[str, dict[str, Any], str]] = [("image_config", facts, "config")]
    for index, step in enumerate(image.config.get("history") or []):
        created_by = str(step.get("created_by") or "")[:4000]
        out.append(("history_step", {"created_by": created_by, "index": index,
                                     "empty_layer": bool(step.get("empty_layer"))}, f"{index}:{created_by[:200]}"))
    return out


def _rule_findings(image: Image, files: list[dict[str, Any]], target: Target,
                   rules: dict[str, list[subject_rules.CompiledRule]]) -> list[Finding]:
    findings: list[Finding] = []
    for subject, facts, key in config_observations(image):
        location: dict[str, Any] = {"config": image.config_digest}
        if subject == "history_step":
            location["history_step"] = facts["index"]
        findings.extend(subject_rules.evaluate(subject, facts, rules, target, location=location, key=key))
    for facts in files:
        findings.extend(subject_rules.evaluate("file", facts, rules, target,
                                               location={"path": facts["path"], "layer": facts["layer"]},
                                               key=facts["path"]))
    return findings


# -- the scan ------------------------------------------------------------------------------------

def _vulnerabilities(packages: list[Package], target: Target, options: ImageScanOptions,
                     result: ScanResult, name: str) -> int:
    from cloudward.engines.osv.findings import match_packages

    if options.advisories is None or not options.advisories.is_file():
        where = options.advisories or "the data directory"
        result.add_error(name, f"no advisory database at {where}: vulnerabilities not checked "
                               "(run `cloudward db update`)", stage="vuln")
        return 0
    findings, errors = match_packages(options.advisories, packages, target)
    for message in errors[:50]:
        result.add_error(name, message, stage="vuln")
    result.findings.extend(findings)
    return len(findings)


def _scan_one(reference: str, options: ImageScanOptions, result: ScanResult,
              rules: dict[str, list[subject_rules.CompiledRule]]) -> dict[str, Any]:
    from cloudward.container.sources import open_image

    started = time.perf_counter()
    image = open_image(reference, insecure=options.insecure, platform=options.platform,
                       username=options.username, password=options.password, engine_url=options.engine_url)
    target = image_target(reference)
    found = analyse_layers(image, target, options)
    for message in found.errors:
        result.add_error(reference, message, stage="layers")
    for path, why in found.skipped:
        result.add_error(reference, f"{path}: not read ({why})", stage="layers")
    for message in found.catalog.errors:
        result.add_error(reference, message, stage="packages")
    result.findings.extend(found.content)
    vulns = 0
    if "vuln" in options.scanners:
        vulns = _vulnerabilities(found.catalog.packages, target, options, result, reference)
    if "config" in options.scanners:
        result.findings.extend(_rule_findings(image, found.files, target, rules))
    distro = found.catalog.distro
    return {
        "image": reference,
        "os": None if distro is None else (distro.pretty_name or f"{distro.id} {distro.version_id or ''}".strip()),
        "layers": found.layers, "packages": len(found.catalog.packages), "vulnerabilities": vulns,
        "cached_layers": found.replayed, "seconds": round(time.perf_counter() - started, 3),
        "id": image.id, "digest": image.manifest_digest, "platform": image.platform, "tags": list(image.repo_tags),
    }


def scan_images(references: Sequence[str], options: ImageScanOptions) -> ScanResult:
    """Scan each image; an image that cannot be read is an error naming it, and the others go on."""
    result = ScanResult(kind="image", targets=list(references))
    rules = subject_rules.compile_rules(options.rules, "image")
    try:
        for reference in references:
            try:
                result.inventory.append(_scan_one(reference, options, result, rules))
            except ImageError as exc:
                result.add_error(reference, str(exc), stage="open")
    except KeyboardInterrupt:
        return result.finish(ScanStatus.CANCELLED)
    result.stats = {"images": len(result.inventory),
                    "packages": sum(i["packages"] for i in result.inventory),
                    "cached_layers": sum(i["cached_layers"] for i in result.inventory)}
    if references and not result.inventory:
        return result.finish(ScanStatus.FAILED)
    return result.finish()


def scan_image(reference: str, options: ImageScanOptions) -> ScanResult:
    return scan_images([reference], options)
