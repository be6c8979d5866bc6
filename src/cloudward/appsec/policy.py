"""The protection policy: a mode, body limits, and per-route rules off, exclusions and base64 marks.

False positives are tuned locally, next to the route that has them (the lesson of years of CRS
exclusion files)::

    mode: block                  # or monitor
    max_body_bytes: 1048576      # bytes of a body that are read and judged
    oversize: reject             # reject (413 in block mode) or inspect_prefix (judge the prefix, pass the rest)
    block_at: medium             # the least severity that blocks in block mode
    service: shop-api            # the finding target's name prefix
    disabled_rules: [appsec.scanner]
    allowed_methods: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS]   # the default; others are refused
    routes:
      - path: /search            # exact, or a glob (/api/*); methods optional
        methods: [GET]
        exclusions:
          - rule: appsec.sqli    # a rule id, or "*" for every rule
            locations: ["args:q"]   # globs over locations (args:q, json:user.*, header:user-agent)
      - path: /import
        base64: ["form:payload"]    # judge the base64-decoded value too
        max_body_bytes: 10485760
      - path: /healthz
        mode: off                # not inspected at all
      - path: /dav/*
        allowed_methods: [GET, PUT, PROPFIND, MKCOL, LOCK, UNLOCK]   # this route's own list
      - path: /upload
        disabled_rules: [appsec.crs]   # the CRS engine off for this route
    crs:                         # the optional OWASP CRS engine (cloudward.appsec.crs; pip install 'cloudward[crs]')
      rules: /etc/crs            # the CRS folder: crs-setup.conf (or .example) and rules/*.conf; relative to this file
      paranoia: 1                # blocking paranoia level, 1-4
      threshold: 5               # inbound anomaly score threshold
      detection_paranoia: 2      # optional: report (not block) what rules up to this level would block

Loaded from YAML (`.yaml`/`.yml`) or TOML (`.toml`, the same keys) by `load_policy`.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from cloudward.core.errors import UsageError
from cloudward.core.severity import Severity

__all__ = ["MODES", "CrsSettings", "EffectivePolicy", "Exclusion", "Policy", "RoutePolicy", "load_policy"]

MODES = ("monitor", "block", "off")
OVERSIZE = ("reject", "inspect_prefix")
DEFAULT_MAX_BODY = 1024 * 1024
# the request methods an application takes unless the policy says otherwise (appsec.method_not_allowed)
DEFAULT_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Exclusion:
    rule: str  # rule id or "*"
    locations: tuple[str, ...] = ("*",)

    def covers(self, rule_id: str, location: str) -> bool:
        if self.rule not in ("*", rule_id):
            return False
        return any(fnmatch.fnmatchcase(location, pattern) for pattern in self.locations)


@dataclass(frozen=True)
class CrsSettings:
    """The optional Core Rule Set engine (cloudward.appsec.crs): where the rules are and how paranoid it is."""

    rules: Path
    paranoia: int = 1
    threshold: int = 5
    detection_paranoia: int | None = None  # None: the same as `paranoia`


@dataclass(frozen=True)
class RoutePolicy:
    path: str
    methods: frozenset[str] | None = None
    mode: str | None = None
    disabled_rules: frozenset[str] = frozenset()
    exclusions: tuple[Exclusion, ...] = ()
    base64: tuple[str, ...] = ()
    max_body_bytes: int | None = None
    oversize: str | None = None
    allowed_methods: frozenset[str] | None = None  # None: the policy's

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        if any(c in self.path for c in "*?["):
            return fnmatch.fnmatchcase(path, self.path)
        return path == self.path or path.rstrip("/") == self.path.rstrip("/")


@dataclass(frozen=True)
class EffectivePolicy:
    """What applies to one request: the policy merged with the first matching route."""

    mode: str
    max_body_bytes: int
    oversize: str
    block_at: Severity
    disabled_rules: frozenset[str]
    exclusions: tuple[Exclusion, ...]
    base64: tuple[str, ...]
    allowed_methods: frozenset[str] = DEFAULT_METHODS
    method_allowed: bool = True  # the method this policy was looked up for is in allowed_methods

    def excluded(self, rule_id: str, location: str) -> bool:
        return any(e.covers(rule_id, location) for e in self.exclusions)

    def base64_marked(self, location: str) -> bool:
        return any(fnmatch.fnmatchcase(location, pattern) for pattern in self.base64)


@dataclass
class Policy:
    mode: str = "monitor"
    max_body_bytes: int = DEFAULT_MAX_BODY
    oversize: str = "reject"
    block_at: Severity = Severity.MEDIUM
    service: str = "app"
    disabled_rules: frozenset[str] = frozenset()
    exclusions: tuple[Exclusion, ...] = ()
    base64: tuple[str, ...] = ()
    routes: list[RoutePolicy] = field(default_factory=list)
    crs: CrsSettings | None = None
    allowed_methods: frozenset[str] = DEFAULT_METHODS
    _cache: dict[tuple[str, str], EffectivePolicy] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_mode(self.mode, "mode")
        if self.oversize not in OVERSIZE:
            raise UsageError(f"policy: oversize must be one of {', '.join(OVERSIZE)}, not {self.oversize!r}")
        if self.max_body_bytes < 0:
            raise UsageError("policy: max_body_bytes must be >= 0")

    def with_mode(self, mode: str) -> Policy:
        _check_mode(mode, "mode")
        return Policy(mode=mode, max_body_bytes=self.max_body_bytes, oversize=self.oversize, block_at=self.block_at,
                      service=self.service, disabled_rules=self.disabled_rules, exclusions=self.exclusions,
                      base64=self.base64, routes=list(self.routes), crs=self.crs,
                      allowed_methods=self.allowed_methods)

    def for_request(self, method: str, path: str) -> EffectivePolicy:
        key = (method, path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        route = next((r for r in self.routes if r.matches(method, path)), None)
        if route is None:
            effective = EffectivePolicy(self.mode, self.max_body_bytes, self.oversize, self.block_at,
                                        self.disabled_rules, self.exclusions, self.base64)
        else:
            effective = EffectivePolicy(
                mode=route.mode or self.mode,
                max_body_bytes=route.max_body_bytes if route.max_body_bytes is not None else self.max_body_bytes,
                oversize=route.oversize or self.oversize,
                block_at=self.block_at,
                disabled_rules=self.disabled_rules | route.disabled_rules,
                exclusions=self.exclusions + route.exclusions,
                base64=self.base64 + route.base64,
            )
        allowed = route.allowed_methods if route is not None and route.allowed_methods is not None \
            else self.allowed_methods
        if allowed is not DEFAULT_METHODS or method not in allowed:  # methods are case-sensitive (RFC 9110)
            effective = replace(effective, allowed_methods=allowed, method_allowed=method in allowed)
        if len(self._cache) < 4096:  # paths with ids in them must not grow this without bound
            self._cache[key] = effective
        return effective


def _check_mode(mode: str, where: str) -> None:
    if mode not in MODES:
        raise UsageError(f"policy: {where} must be one of {', '.join(MODES)}, not {mode!r}")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"policy: {where} must be a list of strings")
    return tuple(value)


def _exclusions(value: Any, where: str) -> tuple[Exclusion, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UsageError(f"policy: {where} must be a list")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or "rule" not in item:
            raise UsageError(f"policy: {where}[{index}] needs a rule")
        locations = _strings(item.get("locations", ["*"]), f"{where}[{index}].locations") or ("*",)
        out.append(Exclusion(str(item["rule"]), locations))
    return tuple(out)


_TOP = {"mode", "max_body_bytes", "oversize", "block_at", "service", "disabled_rules", "exclusions", "base64",
        "routes", "crs", "allowed_methods"}
_ROUTE = {"path", "methods", "mode", "disabled_rules", "exclusions", "base64", "max_body_bytes", "oversize",
          "allowed_methods"}


def _crs(value: Any, base: Path | None) -> CrsSettings | None:
    """`crs:` of a policy (None or false: off); a relative `rules` path is taken from `base`."""
    if value is None or value is False:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("rules"), str) or not value["rules"]:
        raise UsageError("policy: crs needs rules: the folder of the Core Rule Set (crs-setup.conf, rules/)")
    unknown = set(value) - {"rules", "paranoia", "threshold", "detection_paranoia"}
    if unknown:
        raise UsageError(f"policy: crs: unknown keys {', '.join(sorted(unknown))}")

    def number(key: str, default: int, top: int) -> int:
        found = value.get(key, default)
        if isinstance(found, bool) or not isinstance(found, int) or not 1 <= found <= top:
            raise UsageError(f"policy: crs.{key} must be a whole number from 1 to {top}, not {found!r}")
        return found

    paranoia, threshold = number("paranoia", 1, 4), number("threshold", 5, 10_000)
    detection = None if value.get("detection_paranoia") is None else number("detection_paranoia", 1, 4)
    if detection is not None and detection < paranoia:
        raise UsageError("policy: crs.detection_paranoia must not be below crs.paranoia")
    rules = Path(value["rules"]).expanduser()
    if not rules.is_absolute() and base is not None:
        rules = base / rules
    return CrsSettings(rules=rules, paranoia=paranoia, threshold=threshold, detection_paranoia=detection)


def policy_from_dict(data: dict[str, Any], base: Path | None = None) -> Policy:
    unknown = set(data) - _TOP
    if unknown:
        raise UsageError(f"policy: unknown keys {', '.join(sorted(unknown))}")
    routes = []
    for index, item in enumerate(data.get("routes") or []):
        where = f"routes[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise UsageError(f"policy: {where} needs a path")
        bad = set(item) - _ROUTE
        if bad:
            raise UsageError(f"policy: {where}: unknown keys {', '.join(sorted(bad))}")
        mode = item.get("mode")
        if mode is False:  # YAML reads a bare `off` as false
            mode = "off"
        if mode is not None:
            _check_mode(str(mode), f"{where}.mode")
        oversize = item.get("oversize")
        if oversize is not None and oversize not in OVERSIZE:
            raise UsageError(f"policy: {where}.oversize must be one of {', '.join(OVERSIZE)}")
        methods = _strings(item.get("methods"), f"{where}.methods")
        routes.append(RoutePolicy(
            path=item["path"], methods=frozenset(m.upper() for m in methods) if methods else None,
            mode=None if mode is None else str(mode),
            disabled_rules=frozenset(_strings(item.get("disabled_rules"), f"{where}.disabled_rules")),
            exclusions=_exclusions(item.get("exclusions"), f"{where}.exclusions"),
            base64=_strings(item.get("base64"), f"{where}.base64"),
            max_body_bytes=None if item.get("max_body_bytes") is None else int(item["max_body_bytes"]),
            oversize=oversize, allowed_methods=_methods(item.get("allowed_methods"), f"{where}.allowed_methods"),
        ))
    mode = data.get("mode", "monitor")
    if mode is False:
        mode = "off"
    try:
        block_at = Severity.parse(str(data.get("block_at", "medium")))
    except ValueError as exc:
        raise UsageError(f"policy: block_at: {exc}") from None
    return Policy(
        mode=str(mode), max_body_bytes=int(data.get("max_body_bytes", DEFAULT_MAX_BODY)),
        oversize=str(data.get("oversize", "reject")), block_at=block_at, service=str(data.get("service", "app")),
        disabled_rules=frozenset(_strings(data.get("disabled_rules"), "disabled_rules")),
        exclusions=_exclusions(data.get("exclusions"), "exclusions"),
        base64=_strings(data.get("base64"), "base64"), routes=routes, crs=_crs(data.get("crs"), base),
        allowed_methods=_methods(data.get("allowed_methods"), "allowed_methods") or DEFAULT_METHODS,
    )


def _methods(value: Any, where: str) -> frozenset[str] | None:
    """An `allowed_methods` list, upper-cased (None when not given); an empty list is refused."""
    if value is None:
        return None
    methods = _strings(value, where)
    if not methods or not all(m.strip() and m.strip().isascii() and " " not in m.strip() for m in methods):
        raise UsageError(f"policy: {where} must list HTTP methods (GET, POST, ...)")
    return frozenset(m.strip().upper() for m in methods)


def load_policy(source: str | Path | dict[str, Any] | Policy | None) -> Policy:
    """A Policy from a file path (YAML or TOML), a mapping, a Policy (returned as is) or None."""
    if source is None:
        return Policy()
    if isinstance(source, Policy):
        return source
    if isinstance(source, dict):
        return policy_from_dict(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"policy: cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"policy: {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"policy: {path}: expected a mapping")
    return policy_from_dict(data, base=path.parent)
