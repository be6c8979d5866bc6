"""The `appsec` rule engine: which values each rule looks at, in which decoded and transformed forms,
and what detector judges them; and the Inspector that applies all of it to one request.

The Inspector is shared by every request of a process (read-only after construction) and never
raises on request content: a request it cannot parse is judged on what it could read.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloudward.appsec import detectors
from cloudward.appsec.decode import variants
from cloudward.appsec.multimatch import PatternSet
from cloudward.appsec.policy import EffectivePolicy
from cloudward.appsec.request import HttpRequest, Upload, Value
from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule, RuleSet, load_rules
from cloudward.core.severity import Severity

__all__ = ["ENGINE", "Detection", "Inspector", "UploadScanner", "Verdict", "load_appsec_rules", "validate_rule"]

ENGINE = "appsec"
CODE_DETECTORS = ("sqli", "xss", "ssrf", "jndi", "rfi", "open_redirect", "eicar", "none")
DETECTORS = ("patterns", *CODE_DETECTORS)
GROUPS = ("args", "args_names", "path", "headers", "cookies", "body", "filenames", "files")

# An upload scanner (the content judge, the secret scanner) composed at the edge: it gets the bytes
# and a name for them, and returns findings whose evidence never holds a raw secret.
UploadScanner = Callable[[bytes, str], list[Finding]]

_log = logging.getLogger("cloudward.appsec")
_EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
_CACHE_SIZE = 4096  # values remembered with their verdict (each at most _CACHE_TEXT characters)
_CACHE_TEXT = 512
_SENSITIVE = re.compile(r"pass|pwd|secret|token|auth|session|cookie|key|credential|sid$", re.IGNORECASE)


def _t_lower(text: str) -> str:
    return text.lower()


_SQL_COMMENT = re.compile(r"/\*!?\d*|\*/")
_TAG_SPACE = re.compile(r"<\s+")
_SHELL_NOISE = re.compile(r"[\\'\"^]|\$\{ifs\}|\$ifs\b|\$@|\$\*|\$\{\}|\$\{?[0-9]\}?|\$[a-z]\b")
_SLASHES = re.compile(r"[\\/]+")
_NAME_PARTS = re.compile(r"[a-z0-9_]+")
_SHELL_HINT = re.compile(r"[\\'\"^$]")


def _t_sql_comments(text: str) -> str:
    return _SQL_COMMENT.sub(" ", text) if "/*" in text or "*/" in text else text


def _t_compact_tags(text: str) -> str:
    return _TAG_SPACE.sub("<", text) if "<" in text else text


def _t_shell(text: str) -> str:
    if not _SHELL_HINT.search(text):
        return text
    return _SHELL_NOISE.sub(lambda m: " " if "ifs" in m.group(0) else "", text)


def _t_slashes(text: str) -> str:
    if "\\" not in text and "//" not in text:
        return text
    return _SLASHES.sub("/", text)


TRANSFORMS: dict[str, Callable[[str], str]] = {"lower": _t_lower, "sql_comments": _t_sql_comments,
                                               "compact_tags": _t_compact_tags, "shell": _t_shell,
                                               "slashes": _t_slashes}


def validate_rule(rule: Rule) -> None:
    """Raise ValueError when an `appsec` rule's match block is not valid."""
    match = rule.match
    detector = match.get("detector")
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    targets = match.get("targets", [])
    if not isinstance(targets, list):
        raise ValueError("targets must be a list")
    for target in targets:
        if not isinstance(target, str) or (target not in GROUPS and not target.startswith(("header:", "cookie:"))):
            raise ValueError(f"unknown target {target!r}")
    for name in match.get("transforms", []) or []:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}")
    patterns = match.get("patterns", []) or []
    if detector == "patterns" and not patterns:
        raise ValueError("a patterns rule needs patterns")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad pattern {pattern!r}: {exc}") from None
    unknown = set(match) - {"engine", "detector", "targets", "transforms", "patterns", "names", "classes"}
    if unknown:
        raise ValueError(f"unknown match keys {', '.join(sorted(unknown))}")


def load_appsec_rules(extra_dirs: Iterable[Path] = ()) -> RuleSet:
    """The built-in appsec rules plus the `appsec` rules in the user's folders."""
    return load_rules(["cloudward.appsec"], list(extra_dirs), validators={ENGINE: validate_rule})


@dataclass(frozen=True)
class Detection:
    rule_id: str
    location: str
    fragment: str  # what matched, cut short; redacted for sensitive locations
    detail: str = ""


@dataclass
class Verdict:
    detections: list[Detection] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # upload scanners' own findings
    block: bool = False
    incident_id: str = ""
    mode: str = "monitor"


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    detector: str
    groups: frozenset[str]
    headers: frozenset[str]
    transforms: tuple[Callable[[str], str], ...]
    patterns: tuple[re.Pattern[str], ...]
    names: frozenset[str]
    classes: frozenset[str]
    chain: tuple[str, ...] = ()  # the transform names: rules sharing a chain share one PatternSet
    pattern_ids: tuple[int, ...] = ()  # each pattern's index in its chain's PatternSet


def _compile(rule: Rule) -> _Compiled:
    match = rule.match
    targets = match.get("targets", [])
    return _Compiled(
        rule=rule, detector=match["detector"],
        groups=frozenset(t for t in targets if t in GROUPS),
        headers=frozenset(t.split(":", 1)[1].lower() for t in targets if t.startswith("header:")),
        transforms=tuple(TRANSFORMS[t] for t in match.get("transforms", []) or []),
        patterns=tuple(re.compile(p, re.DOTALL) for p in match.get("patterns", []) or []),
        names=frozenset(str(n).lower() for n in match.get("names", []) or []),
        classes=frozenset(match.get("classes", []) or []),
        chain=tuple(match.get("transforms", []) or []),
    )


def _number_patterns(compiled: list[_Compiled]) -> tuple[list[_Compiled], PatternSet]:
    """Give every pattern of every rule a global index, and one PatternSet over all of them."""
    out: list[_Compiled] = []
    patterns: list[str] = []
    for item in compiled:
        ids = tuple(range(len(patterns), len(patterns) + len(item.patterns)))
        patterns.extend(p.pattern for p in item.patterns)
        out.append(replace(item, pattern_ids=ids))
    return out, PatternSet(patterns)


def _fragment(location: str, name: str, text: str) -> str:
    """Evidence of what matched: cut short, and never the value of a secret-looking parameter."""
    if _SENSITIVE.search(name) or location.startswith(("header:authorization", "header:cookie",
                                                       "header:proxy-authorization")):
        return f"<redacted: {len(text)} characters>"
    clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:120])
    return clean[:200]


class Inspector:
    """Judges requests with the appsec rules (and the upload scanners handed in)."""

    def __init__(self, rules: RuleSet | Sequence[Rule] | None = None, *,
                 upload_scanners: Sequence[UploadScanner] = ()) -> None:
        ruleset = load_appsec_rules() if rules is None else rules
        self.rules = [r for r in ruleset if r.engine_name == ENGINE]
        self.compiled, self._patternset = _number_patterns(
            [_compile(r) for r in self.rules if r.match.get("detector") != "none"])
        self.by_id = {r.id: r for r in self.rules}
        self.upload_scanners = list(upload_scanners)
        self._by_target: dict[tuple[str, str], list[_Compiled]] = {}
        # verdicts on values, which repeat from request to request (User-Agent, Accept, session cookies,
        # parameter names, paging and sort values): (group, name, text[, host]) -> rules fired, fragments
        self._cache: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}

    def _wanted(self, group: str, name: str) -> list[_Compiled]:
        """The rules that look at values of `group` (and, for headers, of this header), memoised."""
        key = (group, name if group == "headers" else "")
        found = self._by_target.get(key)
        if found is None:
            found = [c for c in self.compiled if group in c.groups or (group == "headers" and name in c.headers)]
            if len(self._by_target) < 10_000:
                self._by_target[key] = found
        return found

    def rule(self, rule_id: str) -> Rule | None:
        return self.by_id.get(rule_id)

    def inspect(self, request: HttpRequest, policy: EffectivePolicy) -> Verdict:
        detections: list[Detection] = []
        disabled = policy.disabled_rules
        host = request.header("host")
        cache = self._cache
        for value in request.values():
            if not value.text:
                continue
            marked = bool(policy.base64) and policy.base64_marked(value.location)
            cacheable = not marked and len(value.text) <= _CACHE_TEXT
            # all a cached verdict depends on: (group, name, text), and the Host for open redirects
            key = value[1:] if value.group != "args" else (*value[1:], host)
            hits = cache.get(key) if cacheable else None
            if hits is None:
                wanted = self._wanted(value.group, value.name)
                if not wanted:
                    continue
                hits = self._judge_value(wanted, value, variants(value.text, base64_marked=marked), host)
                if cacheable:
                    self._remember(key, hits)
            for rule_id, hit in hits:
                if disabled and rule_id in disabled:
                    continue
                if policy.exclusions and policy.excluded(rule_id, value.location):
                    continue
                detections.append(Detection(rule_id, value.location, _fragment(value.location, value.name, hit)))
        findings: list[Finding] = []
        uploads = request.uploads()
        active = [c for c in self.compiled if c.rule.id not in disabled] if uploads and disabled else self.compiled
        for upload in uploads:
            detections.extend(self._judge_upload(upload, active, policy))
            if self.upload_scanners and not policy.excluded("upload", f"file:{upload.field}"):
                findings.extend(self._scan_upload(upload))
        verdict = Verdict(detections=detections, findings=findings, mode=policy.mode)
        if detections or findings:
            verdict.incident_id = uuid.uuid4().hex[:20]
            if policy.mode == "block":
                verdict.block = any(self._severity(d.rule_id) >= policy.block_at for d in detections) or any(
                    f.severity >= policy.block_at for f in findings)
        return verdict

    def _severity(self, rule_id: str) -> Severity:
        rule = self.by_id.get(rule_id)
        return rule.severity if rule is not None else Severity.HIGH

    def _remember(self, key: tuple[str, ...], hits: tuple[tuple[str, str], ...]) -> None:
        if len(self._cache) >= _CACHE_SIZE:
            # oldest first (dicts keep insertion order); another thread may have removed it
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del self._cache[next(iter(self._cache))]
        self._cache[key] = hits

    def _judge_value(self, wanted: list[_Compiled], value: Value, forms: list[str],
                     host: str) -> tuple[tuple[str, str], ...]:
        """Every wanted rule that fires on the value, with what matched (before policy filtering)."""
        texts: dict[tuple[str, ...], list[str]] = {}
        done: dict[tuple[Callable[[str], str], str], str] = {}  # chains share steps (`lower` above all)
        for compiled in wanted:
            if compiled.chain not in texts:
                chained = forms
                if compiled.transforms:
                    chained = []
                    for form in forms:
                        for transform in compiled.transforms:
                            step = (transform, form)
                            form = done[step] if step in done else done.setdefault(step, transform(form))
                        chained.append(form)
                texts[compiled.chain] = chained
        # one Hyperscan pass per distinct text; the union says which patterns can match at all, so a
        # rule that is nothing but patterns, none of them among these, is settled without a call
        scans: dict[str, frozenset[int] | None] = {}
        matched: set[int] | None = set()
        for chained in texts.values():
            for text in chained:
                if text not in scans:
                    found = scans[text] = self._patternset.hits(text)
                    if found is None:
                        matched = None
                    elif matched is not None:
                        matched.update(found)
        out: list[tuple[str, str]] = []
        for compiled in wanted:
            if compiled.detector == "patterns" and matched is not None and matched.isdisjoint(compiled.pattern_ids):
                continue
            hit = self._judge(compiled, value, forms, texts[compiled.chain], scans, host)
            if hit is not None:
                out.append((compiled.rule.id, hit))
        return tuple(out)

    def _patterns(self, compiled: _Compiled, texts: list[str], scans: dict[str, frozenset[int] | None]) -> str | None:
        """The first match of the rule's patterns in its transformed texts. One Hyperscan pass per distinct
        text says which patterns (of all rules) match at all; `re` runs only for those."""
        if not compiled.patterns:
            return None
        patternset = self._patternset
        for text in texts:
            if text in scans:
                found_ids = scans[text]
            else:
                found_ids = scans[text] = patternset.hits(text)
            if found_ids is not None and found_ids.isdisjoint(compiled.pattern_ids):
                continue
            for index, pattern in zip(compiled.pattern_ids, compiled.patterns, strict=True):
                if found_ids is not None and index not in found_ids:
                    continue
                found = pattern.search(text)
                if found:
                    return found.group(0) or text
        return None

    def _judge(self, compiled: _Compiled, value: Value, forms: list[str], texts: list[str],
               scans: dict[str, frozenset[int] | None], host: str) -> str | None:
        detector = compiled.detector
        matched = self._patterns(compiled, texts, scans)
        if matched is not None:
            return matched
        if detector == "sqli":
            for form in forms:
                fingerprint = detectors.is_sqli(form)
                if fingerprint:
                    return form
        elif detector == "xss":
            for form in forms:
                if detectors.is_xss(form):
                    return form
        elif detector == "ssrf":
            url_param = value.name.lower().rsplit(".", 1)[-1] in compiled.names
            for form in forms:
                for hit in detectors.ssrf_hits(form, url_param=url_param):
                    if hit.kind in compiled.classes:
                        return hit.fragment
        elif detector == "jndi":
            return detectors.find_jndi(forms)
        elif detector == "rfi":
            name = value.name.lower()  # `_CONF[path]` names `path` too
            listed = name in compiled.names or any(part in compiled.names for part in _NAME_PARTS.findall(name))
            for form in forms:
                found_rfi = detectors.rfi_hit(form, listed)
                if found_rfi:
                    return found_rfi
        elif detector == "open_redirect" and value.name.lower() in compiled.names:
            for form in forms:
                found_redirect = detectors.open_redirect_hit(form, host)
                if found_redirect:
                    return found_redirect
        return None

    def _judge_upload(self, upload: Upload, active: list[_Compiled], policy: EffectivePolicy) -> list[Detection]:
        out = []
        location = f"file:{upload.field}"
        for compiled in active:
            if "files" not in compiled.groups or policy.excluded(compiled.rule.id, location):
                continue
            if compiled.detector == "eicar":
                head = upload.data[:128]
                if head.startswith(_EICAR) and not head[len(_EICAR):].strip(b" \t\r\n\x1a"):
                    out.append(Detection(compiled.rule.id, location, upload.filename[:120] or "(unnamed)"))
        return out

    def _scan_upload(self, upload: Upload) -> list[Finding]:
        name = upload.filename or upload.field or "upload"
        out: list[Finding] = []
        for scanner in self.upload_scanners:
            try:
                out.extend(scanner(upload.data, name))
            except Exception as exc:  # a scanner failing must not fail the request
                _log.warning("appsec: upload scanner failed (%s)", type(exc).__name__)
        for finding in out:
            finding.location.setdefault("location", f"file:{upload.field}")
        return out

    def findings(self, verdict: Verdict, request: HttpRequest, service: str, *, action: str) -> list[Finding]:
        """The findings of a verdict: one per detection, plus the upload scanners' (retargeted)."""
        target = Target(kind="request", name=f"{service}:{request.method} {request.path[:200]}")
        out: list[Finding] = []
        for detection in verdict.detections:
            rule = self.by_id.get(detection.rule_id)
            if rule is None:
                continue
            out.append(Finding(
                rule_id=rule.id, title=rule.title, severity=rule.severity, category=rule.category, target=target,
                location={"location": detection.location, "method": request.method, "path": request.path[:500],
                          "client": request.client},
                evidence={"incident_id": verdict.incident_id, "action": action, "mode": verdict.mode,
                          "fragment": detection.fragment, **({"detail": detection.detail} if detection.detail else {})},
                description=rule.description, remediation=rule.remediation, references=list(rule.references),
                attack=list(rule.attack), compliance=dict(rule.compliance), tags=list(rule.tags),
                key=detection.location))
        for finding in verdict.findings:
            where = str(finding.location.get("location", "file"))
            moved = finding.retargeted(target, f"{where}:{finding.key}")
            moved.evidence = {**moved.evidence, "incident_id": verdict.incident_id, "action": action,
                              "mode": verdict.mode}
            moved.location = {**moved.location, "method": request.method, "path": request.path[:500],
                              "client": request.client}
            out.append(moved)
        return out


def describe(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, "title": rule.title, "severity": str(rule.severity)}
