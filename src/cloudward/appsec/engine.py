"""The `appsec` rule engine: which values each rule looks at, in which decoded and transformed forms,
and what detector judges them; and the Inspector that applies all of it to one request.

The Inspector is shared by every request of a process (read-only after construction) and never
raises on request content: a request it cannot parse is judged on what it could read.
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloudward.appsec import detectors, protocol
from cloudward.appsec.decode import variants
from cloudward.appsec.memo import Memo
from cloudward.appsec.multimatch import PLAIN, PatternSet
from cloudward.appsec.policy import DEFAULT_METHODS, EffectivePolicy
from cloudward.appsec.request import MAX_VALUES, HttpRequest, Upload, Value, header_values, piece_values, query_pieces
from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule, RuleSet, load_rules
from cloudward.core.severity import Severity

__all__ = ["ENGINE", "Detection", "Inspector", "UploadScanner", "Verdict", "load_appsec_rules", "validate_rule"]

ENGINE = "appsec"
CODE_DETECTORS = ("sqli", "xss", "ssrf", "jndi", "rfi", "open_redirect", "eicar", "protocol", "none")
DETECTORS = ("patterns", *CODE_DETECTORS)
GROUPS = ("args", "args_names", "path", "headers", "cookies", "body", "filenames", "files")

# An upload scanner (the content judge, the secret scanner) composed at the edge: it gets the bytes
# and a name for them, and returns findings whose evidence never holds a raw secret.
UploadScanner = Callable[[bytes, str], list[Finding]]

_log = logging.getLogger("cloudward.appsec")
_EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
_CACHE_SIZE = 2048  # values remembered with their verdict, per generation (each at most _CACHE_TEXT characters)
_CACHE_TEXT = 512
# verdicts on parts of requests: per generation, and the most characters of a part that is remembered
_PARTS = {"path": (512, 2048), "query": (512, 4096), "headers": (512, 4096), "piece": (1024, 1024),
          "header": (1024, 1024)}
_SENSITIVE = re.compile(r"pass|pwd|secret|token|auth|session|cookie|key|credential|sid$", re.IGNORECASE)


def _t_lower(text: str) -> str:
    return text.lower()


_SQL_COMMENT = re.compile(r"/\*!?\d*|\*/")
_TAG_SPACE = re.compile(r"<\s+")
# quoting and empty or unset expansions that split a command word without changing it (`c'a't`,
# `c$@at`, `sh$XX`: a variable glued to a word is most likely unset)
_SHELL_NOISE = re.compile(r"[\\'\"^]|\$\{ifs\}|\$ifs\b|\$@|\$\*|\$\{\}|\$\{?[0-9]\}?|\$[a-z]\b|(?<=[a-z])\$[a-z_]\w*")
_SLASHES = re.compile(r"[\\/]+")
_NAME_PARTS = re.compile(r"[a-z0-9_]+")
_SHELL_HINT = re.compile(r"[\\'\"^$]")


_BLOCK_COMMENT = re.compile(r"/\*(!\d*)?(.*?)\*/", re.DOTALL)


def _t_sql_comments(text: str) -> str:
    """Comments out: an ordinary `/* ... */` becomes a blank, a MySQL versioned `/*!50000 ... */`
    gives up its content (MySQL runs it), and a lone opener or closer becomes a blank."""
    if "/*" not in text and "*/" not in text:
        return text
    text = _BLOCK_COMMENT.sub(lambda m: f" {m.group(2)} " if m.group(1) is not None else " ", text)
    return _SQL_COMMENT.sub(" ", text)


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
# the characters without which a transform (but `lower`) returns its text as it is: its own first test
STILL_WITHOUT = {"sql_comments": "/", "compact_tags": "<", "shell": "\\'\"^$", "slashes": "\\/"}
_MOVES = re.compile("[" + re.escape("".join(sorted(set("".join(STILL_WITHOUT.values()))))) + "]")
# plain texts hold no character a transform (but `lower`), a decoder or `+` changes: Inspector._plain_piece
_PLAIN_PIECES = PLAIN.isdisjoint({*"".join(STILL_WITHOUT.values()), *"%&\\+"})
_PLAIN_TEXT = re.compile("[" + re.escape("".join(sorted(PLAIN))) + "]*")


def _lower_first(chain: tuple[str, ...]) -> bool:
    """A chain that, on a text without _MOVES characters, gives the text lower-cased (or as it is, when
    empty): `lower` first and then only transforms that leave such a text alone."""
    return not chain or (chain[0] == "lower" and all(step in STILL_WITHOUT for step in chain[1:]))


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
    if detector == "protocol":  # whole-request checks (cloudward.appsec.protocol)
        protocol.validate(match)
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


Hits = tuple[tuple[str, str], ...]  # (rule id, what matched) for one value, before the policy
Section = tuple[int, tuple[tuple[Value, Hits], ...]]  # values a section yielded, and those with hits
_CLEAN_PIECE: Section = (2, ())  # a query piece (its name and its value) on which nothing fires


@dataclass(frozen=True)
class _Plan:
    """What judging the values of one target (a group and a parameter, header or cookie name) takes.

    Each wanted rule comes with its gate: the PatternSet ids (its patterns, and its code detector's hint)
    of which one must match one of the value's texts for the rule to be able to fire, or None when the
    rule is judged whatever the texts hold. `watch` is the union of the gates."""
    wanted: tuple[_Compiled, ...]
    gates: tuple[tuple[_Compiled, frozenset[int] | None], ...]
    chains: tuple[tuple[str, ...], ...]  # the distinct transform chains (by name) of the wanted rules
    steps: tuple[tuple[tuple[str, ...], tuple[str, ...], Callable[[str], str]], ...]  # see _steps
    watch: frozenset[int]
    always: bool  # some gate is None
    forms_scanned: bool  # some rule looks at the decoded forms themselves (its chain is empty)
    lower_first: bool  # every chain is empty or `lower` first (see _lower_first)


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


def _number_patterns(compiled: list[_Compiled]) -> tuple[list[_Compiled], dict[str, int], PatternSet]:
    """Give every pattern of every rule a global index, and each code detector's hint one after them
    (detectors.HINTS: case-insensitive), and one PatternSet over all of them."""
    out: list[_Compiled] = []
    patterns: list[str] = []
    for item in compiled:
        ids = tuple(range(len(patterns), len(patterns) + len(item.patterns)))
        patterns.extend(p.pattern for p in item.patterns)
        out.append(replace(item, pattern_ids=ids))
    hint_ids: dict[str, int] = {}
    for detector, hint in detectors.HINTS.items():
        hint_ids[detector] = len(patterns)
        patterns.append(f"(?i:{hint})")
    return out, hint_ids, PatternSet(patterns)


def _steps(chains: Iterable[tuple[str, ...]]) -> tuple[tuple[tuple[str, ...], tuple[str, ...], Callable[[str], str]],
                                                        ...]:
    """The transform chains as steps sharing their prefixes: (chain prefix, the prefix one shorter, the
    transform that leads from that one to this one), every prefix once, each after its parent."""
    steps: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...], Callable[[str], str]]] = {}
    for chain in chains:
        for end in range(1, len(chain) + 1):
            prefix = chain[:end]
            if prefix not in steps:
                steps[prefix] = (prefix, chain[:end - 1], TRANSFORMS[chain[end - 1]])
    return tuple(steps.values())


def _key_size(key: tuple[Any, ...]) -> int:
    size = 0
    for part in key:
        size += len(part[0]) + len(part[1]) if isinstance(part, tuple) else len(part)
    return size


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
        self.compiled, self._hint_ids, self._patternset = _number_patterns(
            [_compile(r) for r in self.rules if r.match.get("detector") not in ("none", "protocol")])
        # whole-request protocol checks, and the Referer gates of value rules (cloudward.appsec.protocol)
        self._protocol = protocol.RequestChecks(self.rules)
        self.by_id = {r.id: r for r in self.rules}
        self.upload_scanners = list(upload_scanners)
        self._plans: dict[tuple[str, str], _Plan] = {}
        # verdicts on values, which repeat from request to request (User-Agent, Accept, session cookies,
        # parameter names, paging and sort values): (group, name, text[, host]) -> rules fired, fragments
        self._cache: Memo[Hits] = Memo(_CACHE_SIZE)
        # verdicts on parts of a request, each a function of that part alone: the raw path, the query
        # string and each of its pieces (with the Host), the header list and each header. A browser sends
        # the same headers request after request, and most of a query repeats too: only what changes (a
        # query value) is judged afresh
        self._parts: dict[str, Memo[Section]] = {kind: Memo(size) for kind, (size, _) in _PARTS.items()}

    def _plan(self, group: str, name: str) -> _Plan:
        """The rules that look at values of `group` (and, for headers, of this header) and the hints that
        say which texts their code detectors can fire on (see detectors.HINTS), memoised."""
        key = (group, name)
        plan = self._plans.get(key)
        if plan is None:
            wanted = tuple(c for c in self.compiled if group in c.groups or (group == "headers" and name in c.headers))
            low = name.lower()
            gates: list[tuple[_Compiled, frozenset[int] | None]] = []
            for compiled in wanted:
                detector = compiled.detector
                gate: frozenset[int] | None = frozenset(compiled.pattern_ids)
                if detector == "patterns" or (detector == "open_redirect" and low not in compiled.names):
                    pass  # patterns only (open redirects are judged only on parameters named for them)
                elif detector == "ssrf" and low.rsplit(".", 1)[-1] in compiled.names:
                    gate = None  # a URL-named parameter: a bare host or number is judged
                elif detector in self._hint_ids:
                    gate = frozenset((*compiled.pattern_ids, self._hint_ids[detector]))
                else:
                    gate = None
                gates.append((compiled, gate))
            chains = tuple(dict.fromkeys(c.chain for c in wanted))
            plan = _Plan(wanted=wanted, gates=tuple(gates), chains=chains, steps=_steps(chains),
                         watch=frozenset(i for _, gate in gates for i in gate or ()),
                         always=any(gate is None for _, gate in gates), forms_scanned=() in chains,
                         lower_first=all(_lower_first(chain) for chain in chains))
            if len(self._plans) < 10_000:
                self._plans[key] = plan
        return plan

    def rule(self, rule_id: str) -> Rule | None:
        return self.by_id.get(rule_id)

    def inspect(self, request: HttpRequest, policy: EffectivePolicy) -> Verdict:
        disabled = policy.disabled_rules
        host = request.header("host")
        # a base64-marked location is judged in one more form: then no verdict is taken from memory
        marked = policy.base64_marked if policy.base64 else None
        query, headers = request.query, request.headers
        # request.values() in its order, section by section: the path, the query (piece by piece) and the
        # header list (header by header), each remembered by what it is a function of; then the body
        sections: tuple[tuple[tuple[Any, ...] | None, Callable[[int], Section]], ...] = (
            (("path", request.raw_path), lambda budget: self._section(request.path_values(), budget, host, marked)),
            (("query", query, host) if query else None,
             lambda budget: self._pieces("piece", query_pieces(query), budget, host, marked)),
            (("headers", *headers) if headers else None,
             lambda budget: self._pieces("header", headers, budget, host, marked)),
            (None, lambda budget: self._section(request.body_values(), budget, host, marked)))
        detections: list[Detection] = []
        budget = MAX_VALUES  # values judged at most, as request.values() yields them
        for key, judge in sections:
            if budget <= 0:
                break
            count, found = self._remembered(key if marked is None else None, judge, budget)
            budget -= count
            for value, hits in found:
                for rule_id, hit in hits:
                    if disabled and rule_id in disabled:
                        continue
                    if policy.exclusions and policy.excluded(rule_id, value.location):
                        continue
                    detections.append(Detection(rule_id, value.location, _fragment(value.location, value.name, hit)))
        if self._protocol:
            detections = [d for d in detections if self._protocol.keeps(d.rule_id, request)]
            for rule_id, location, fragment in self._protocol.judge(request, policy):
                if rule_id not in disabled and not (policy.exclusions and policy.excluded(rule_id, location)):
                    detections.append(Detection(rule_id, location, fragment))
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

    def quiet(self, raw_path: str, query: str, headers: list[tuple[str, str]],
              policy: EffectivePolicy | None = None) -> bool:
        """True when `inspect` would find nothing at all, before any policy, in a bodiless request with this
        raw path, query string and header list: its path and header list were judged clean before, and its
        query is (its pieces known, or judged now and remembered). False when anything fires, or when it
        cannot be told this way: `inspect` then judges the request (and remembers its parts). `policy` is the
        route's, looked up for the request's method: without it the method is taken as allowed."""
        count = self.head_quiet(headers, policy.allowed_methods if policy is not None else DEFAULT_METHODS)
        host = next((value for name, value in headers if name == "host"), "")
        return count >= 0 and self.target_quiet(raw_path, query, host, policy, count)

    def head_quiet(self, headers: list[tuple[str, str]], allowed: frozenset[str]) -> int:
        """The header list's half of `quiet`: how many values the list yields when nothing fires on it (its
        values judged clean before, no protocol check firing on it), else -1. A function of the list and the
        allowed methods alone, so an adapter remembers a count for a list it sees again."""
        if self._protocol and not self._protocol.head_quiet(headers, allowed):
            return -1
        if not headers:
            return 0
        try:
            known = self._parts["headers"][("headers", *headers)]
        except TypeError:
            return -1
        return -1 if known is None or known[1] else known[0]

    def target_quiet(self, raw_path: str, query: str, host: str, policy: EffectivePolicy | None,
                     count: int = 0) -> bool:
        """The method, path and query's half of `quiet`, given the Host and the count `head_quiet` gave."""
        if self._protocol and not self._protocol.target_quiet(raw_path, query, policy):
            return False
        known = self._parts["path"][("path", raw_path)]
        if known is None or known[1]:
            return False
        count += known[0]
        if query:
            count = self._quiet_pieces(query, host, count)
        return 0 <= count < MAX_VALUES  # and no section was cut short by the budget

    def _quiet_pieces(self, query: str, host: str, count: int) -> int:
        """`count` plus the values of the query's pieces when nothing fires on any of them (each known, or
        judged now and remembered), else -1. The pieces alone are remembered, not the whole query: in a
        stream of searches or pages the query as a whole is new each time, its pieces mostly are not."""
        memory = self._parts["piece"]
        limit = _PARTS["piece"][1]
        for piece in query.split("&"):
            if not piece:
                continue
            left = MAX_VALUES - count
            if left <= 0:
                return -1
            key = (piece, host)  # a query value's verdict depends on the Host (redirects)
            known = memory[key]
            if known is None or known[0] > left:
                known = _CLEAN_PIECE if left > 2 and self._plain_piece(piece, host) else \
                    self._piece_section(piece, left, host)
                if known[0] < left and len(piece) <= limit:
                    memory.put(key, known)
            if known[1]:
                return -1
            count += known[0]
        return count

    def _plain_piece(self, piece: str, host: str) -> bool:
        """True when nothing can fire on a query piece of plain text (multimatch.PLAIN, `+` for spaces) whose
        name was judged clean before: the verdict `_piece_section` gives, the short way. Decoding leaves a
        plain value as it is and every chain of transforms gives it or its lower case (`_judge_value`'s common
        case), so a scan or two of the plain database settles every rule. False means only "cannot tell"."""
        name, _, text = piece.partition("=")
        if "+" in text:
            text = text.replace("+", " ")
        if not _PLAIN_PIECES or len(text) > _CACHE_TEXT or not _PLAIN_TEXT.fullmatch(name) or \
                not _PLAIN_TEXT.fullmatch(text):
            return False
        if name and self._cache.get(("args_names", name, name)) != ():  # not known, or not clean
            return False
        if not text:
            return True
        plan = self._plans.get(("args", name))
        if plan is None or plan.always or not plan.lower_first:
            return False
        if not plan.wanted:
            return True
        patternset = self._patternset
        found = patternset.hits(text)
        if found is None or not found.isdisjoint(plan.watch):
            return False
        low = text.lower()
        if low != text:
            found = patternset.hits(low)
            if found is None or not found.isdisjoint(plan.watch):
                return False
        return True

    def _piece_section(self, piece: str, budget: int, host: str) -> Section:
        """`_section` of one query piece's two values, the name's verdict remembered as any value's, the
        value's only with the piece (by the caller): a query value that changes on every request would
        otherwise push what does repeat out of the values' memory."""
        values = piece_values(piece)
        if budget < 2:
            return self._section(values, budget, host, None)
        name, value = values
        named = self._value_hits(name, host, None)
        valued = self._value_hits(value, host, None, remember=False)
        if not named and not valued:
            return _CLEAN_PIECE
        return 2, ((name, named),) * bool(named) + ((value, valued),) * bool(valued)

    def _remembered(self, key: tuple[Any, ...] | None, judge: Callable[[int], Section], budget: int) -> Section:
        """`judge(budget)`, the verdict on one section of a request, remembered by `key` (what the section
        is a function of, its kind first) unless the budget cut it short or the key is too long to keep."""
        if key is None:
            return judge(budget)
        memory = self._parts[key[0]]
        try:
            known = memory[key]
        except TypeError:  # a header list of lists, not tuples: judged every time
            return judge(budget)
        if known is not None and known[0] <= budget:
            return known
        section = judge(budget)
        if section[0] < budget and _key_size(key) <= _PARTS[key[0]][1]:
            memory.put(key, section)
        return section

    def _pieces(self, kind: str, items: Iterable[Any], budget: int, host: str,
                marked: Callable[[str], bool] | None) -> Section:
        """A section made of query pieces (`kind` piece: `name=value` as received) or headers (header:
        (name, value)), each judged and remembered on its own, in order."""
        memory: Memo[Section] | None = self._parts[kind] if marked is None else None
        limit = _PARTS[kind][1]
        piece = kind == "piece"
        count = 0
        found: list[tuple[Value, Hits]] = []
        for item in items:
            left = budget - count
            if left <= 0:
                break
            key = (item, host) if piece else item  # a query value's verdict depends on the Host (redirects)
            known = None
            if memory is not None:
                try:
                    known = memory[key]
                except TypeError:  # a header as a list: judged every time
                    memory = None
            if known is None or known[0] > left:
                values = piece_values(item) if piece else header_values(item[0], item[1])
                known = self._section(values, left, host, marked)
                if memory is not None and known[0] < left and \
                        (len(item) if piece else len(item[0]) + len(item[1])) <= limit:
                    memory.put(key, known)
            count += known[0]
            if known[1]:
                found.extend(known[1])
        return count, tuple(found)

    def _section(self, values: Iterable[Value], budget: int, host: str,
                 marked: Callable[[str], bool] | None) -> Section:
        """The values (at most `budget` of them) that rules fire on, with what fired."""
        count = 0
        found: list[tuple[Value, Hits]] = []
        for value in itertools.islice(values, budget):
            count += 1
            hits = self._value_hits(value, host, marked)
            if hits:
                found.append((value, hits))
        return count, tuple(found)

    def _value_hits(self, value: Value, host: str, marked: Callable[[str], bool] | None, remember: bool = True) -> Hits:
        """The rules that fire on one value, with what matched (before the policy), memoised (looked up, and
        kept when `remember`)."""
        text = value.text
        if not text:
            return ()
        is_marked = marked is not None and marked(value.location)
        cacheable = not is_marked and len(text) <= _CACHE_TEXT
        # all a cached verdict depends on: (group, name, text), and the Host for open redirects
        key = value[1:] if value.group != "args" else (*value[1:], host)
        hits = self._cache[key] if cacheable else None
        if hits is None:
            plan = self._plan(value.group, value.name)
            if not plan.wanted:
                return ()
            hits = self._judge_value(plan, value, variants(text, base64_marked=is_marked), host)
            if cacheable and remember:
                self._cache.put(key, hits)
        return hits

    def _judge_value(self, plan: _Plan, value: Value, forms: list[str], host: str) -> Hits:
        """Every wanted rule that fires on the value, with what matched (before policy filtering)."""
        texts: dict[tuple[str, ...], list[str]] | None = None
        low = forms[0].lower() if len(forms) == 1 and plan.lower_first else None
        if low is not None and not _MOVES.search(low):
            # the common case: one form, and no character any transform but `lower` acts on, so every
            # chain gives the form lower-cased (or as it is, when empty)
            distinct: Sequence[str] = forms if low == forms[0] else (forms[0], low)
        else:
            low = None
            texts = {chain: [] for chain in plan.chains}
            for form in forms:
                done: dict[tuple[str, ...], str] = {(): form}  # each prefix of each chain transformed once
                for prefix, parent, transform in plan.steps:
                    done[prefix] = transform(done[parent])
                for chain, chained in texts.items():
                    chained.append(done[chain])
            seen = dict.fromkeys(text for chained in texts.values() for text in chained)
            if not plan.forms_scanned:
                seen.update(dict.fromkeys(forms))
            distinct = list(seen)
        # one Hyperscan pass per distinct text (the decoded forms always among them, for the detectors'
        # hints); the union says which patterns and hints match at all, so a rule none of whose gate
        # matches is settled without a call, and a value matching no gate at all without any
        patternset = self._patternset
        scans: dict[str, frozenset[int] | None] = {}
        matched: frozenset[int] | set[int] | None
        if len(distinct) == 1:
            matched = scans[distinct[0]] = patternset.hits(distinct[0])
        else:
            matched = set()
            for text in distinct:
                found = scans[text] = patternset.hits(text)
                if found is None:
                    matched = None
                elif matched is not None:
                    matched.update(found)
        if matched is not None and not plan.always and matched.isdisjoint(plan.watch):
            return ()
        if texts is None:
            assert low is not None
            texts = {chain: [low] if chain else forms for chain in plan.chains}
        out: list[tuple[str, str]] = []
        for compiled, gate in plan.gates:
            # Hyperscan cannot tell (matched is None): every rule is judged with `re` and its detector
            if matched is not None and gate is not None and matched.isdisjoint(gate):
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
