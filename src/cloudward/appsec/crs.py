"""The OWASP Core Rule Set, evaluated in the process by libmodsecurity (ModSecurity v3) beside
cloudward's own rules, for teams that want CRS semantics: anomaly scoring and paranoia levels.

The rule set is compiled once per process (per folder and settings, `crs_engine`); each request
gets its own ModSecurity Transaction. The verdict becomes one `appsec.crs` Detection whose detail
names every CRS rule that matched (942100, 932160, …) and where, so findings say which CRS rules
fired. Policy exclusions apply to CRS matches by location (`rule: appsec.crs`, or one CRS rule as
`rule: crs:942100`): when one drops a match, the anomaly score is added up again without it.

ModSecurity's parser accepts some broken rules in silence (an unterminated quote, an unknown
operator, a regular expression that does not compile: the rule then never matches), so every file
is read here first (`lint_seclang`) and such a rule is an error naming its file and line, at
start-up; a request never meets a broken rule set.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from cloudward.appsec.engine import Detection, Verdict
from cloudward.appsec.policy import CrsSettings, EffectivePolicy
from cloudward.appsec.request import HttpRequest
from cloudward.core.errors import RuleError, UsageError

if TYPE_CHECKING:
    from libmodsecurity import ModSecurity, RuleMessage, RulesSet

__all__ = ["RULE_ID", "CrsEngine", "CrsMatch", "CrsResult", "crs_engine", "lint_seclang"]

RULE_ID = "appsec.crs"
INSTALL = "pip install 'cloudward[crs]'"
log = logging.getLogger("cloudward.appsec")

# CRS's default anomaly score per ModSecurity severity (critical, error, warning, notice)
SCORES = {2: 5, 3: 4, 4: 3, 5: 2}
ANOMALY_RULES = frozenset({949110, 949111})  # CRS's inbound blocking evaluation
BODY_ERROR = 200002
# What a connector sets before the CRS files (as ModSecurity's recommended configuration does), with
# bodies read up to their end and parsed as JSON or XML by their Content-Type. A body that does not parse
# (rule 200002) scores as critical, so it blocks at the usual threshold (a body CRS cannot read must not
# pass unread) where the recommended configuration denies outright; scored, the CRS rules still judge the
# rest of the request, and a body cloudward cut at `max_body_bytes` can be let off (see CrsEngine.judge).
ENGINE_CONF = r"""
SecRuleEngine On
SecRequestBodyAccess On
SecResponseBodyAccess Off
SecAuditEngine Off
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 13107200
SecRequestBodyLimitAction ProcessPartial
SecRequestBodyJsonDepthLimit 512
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
SecArgumentSeparator &
SecCookieFormat 0
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" \
  "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" \
  "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" \
  "id:200002,phase:2,t:none,log,pass,msg:'Failed to parse request body',severity:'CRITICAL',\
  tag:'paranoia-level/1',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
"""
# The policy's settings, after the setup file so they win (ids in ModSecurity's range for local rules);
# a body without Content-Type is read as a form, as cloudward reads it
SETTINGS_CONF = (
    'SecAction "id:99001,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level={paranoia},'
    'setvar:tx.detection_paranoia_level={detection}"\n'
    'SecAction "id:99002,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold={threshold}"\n'
    'SecAction "id:99003,phase:1,pass,t:none,nolog,setvar:tx.enforce_bodyproc_urlencoded=1"\n'
)
_WITHIN = " found within "  # CRS's logdata: `Matched Data: X found within VARIABLE: VALUE`
_AGAINST = re.compile(r"against variable `(.*?)' \(Value: `", re.DOTALL)  # ModSecurity's own match text
_TOTAL = re.compile(r"Total Score: (\d+)")
_SENSITIVE = re.compile(r"pass|pwd|secret|token|auth|session|cookie|key|credential|sid$", re.IGNORECASE)
_PATH_VARIABLES = frozenset({"REQUEST_FILENAME", "REQUEST_BASENAME", "REQUEST_URI", "REQUEST_URI_RAW",
                             "REQUEST_LINE", "PATH_INFO"})


# --- reading SecLang files (what ModSecurity's parser lets through) ------------------------------------

# ModSecurity v3's operators (lower-cased); `@rx` when a rule names none
OPERATORS = frozenset(name.lower() for name in (
    "beginsWith", "contains", "containsWord", "detectSQLi", "detectXSS", "endsWith", "eq", "fuzzyHash", "ge",
    "geoLookup", "gsbLookup", "gt", "inspectFile", "ipMatch", "ipMatchF", "ipMatchFromFile", "le", "lt", "noMatch",
    "pm", "pmf", "pmFromFile", "rbl", "rsub", "rx", "rxGlobal", "streq", "strmatch", "unconditionalMatch",
    "validateByteRange", "validateDTD", "validateHash", "validateSchema", "validateUrlEncoding",
    "validateUtf8Encoding", "verifyCC", "verifyCPF", "verifySSN", "verifySVNR", "within"))
# Python's complaints about a regex that PCRE rejects as well (others, such as `\x{..}`, are PCRE syntax)
_BROKEN_REGEX = ("missing )", "unbalanced parenthesis", "unterminated character set", "nothing to repeat",
                 "multiple repeat")
MAX_RULE_FILE = 16 * 1024 * 1024


def _directives(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, directive) with continuation lines joined and comment lines left out."""
    parts: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not parts:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        yield start, "".join(parts)
        parts = []
    if parts:
        yield start, "".join(parts)


def _arguments(directive: str) -> list[str]:
    """A directive's words: a double-quoted one without its quotes (`\\"` read as `"`, other escapes
    kept for the regex), or a run of non-blank characters. ValueError on an unterminated quote."""
    out: list[str] = []
    index, size = 0, len(directive)
    while index < size:
        char = directive[index]
        if char.isspace():
            index += 1
            continue
        if char != '"':
            end = index
            while end < size and not directive[end].isspace():
                end += 1
            out.append(directive[index:end])
            index = end
            continue
        chars: list[str] = []
        end = index + 1
        while end < size and directive[end] != '"':
            if directive[end] == "\\" and end + 1 < size:
                chars.append('"' if directive[end + 1] == '"' else directive[end:end + 2])
                end += 2
                continue
            chars.append(directive[end])
            end += 1
        if end >= size:
            raise ValueError("unterminated quote")
        out.append("".join(chars))
        index = end + 1
    return out


def _check_operator(operator: str) -> None:
    operator = operator[1:] if operator.startswith("!") else operator
    if operator.startswith("@"):
        name, _, argument = operator[1:].partition(" ")
        if name.lower() not in OPERATORS:
            raise ValueError(f"unknown operator @{name}")
        if name.lower() not in ("rx", "rxglobal"):
            return
    else:
        argument = operator
    pattern = argument.strip()
    if "%{" in pattern:  # a macro, expanded per request
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python's FutureWarnings on PCRE's own syntax ([[:alpha:]])
        try:
            re.compile(pattern)
        except re.error as exc:
            if exc.msg.startswith(_BROKEN_REGEX):
                raise ValueError(f"regular expression does not compile ({exc.msg}): {pattern[:80]!r}") from None
        except (RecursionError, OverflowError):
            raise ValueError(f"regular expression too deeply nested: {pattern[:80]!r}") from None


def lint_seclang(text: str, source: str) -> None:
    """Raise RuleError (naming `source` and the line) for a rule ModSecurity would load in silence and
    never match: an unterminated quote, an unknown operator, an `@rx` that cannot compile."""
    if "\x00" in text:
        raise RuleError(f"CRS: {source}: not a rules file (NUL bytes)")
    for line, directive in _directives(text):
        try:
            words = _arguments(directive)
            if words and words[0].lower() == "secrule":
                if len(words) < 3:
                    raise ValueError("SecRule needs variables and an operator")
                _check_operator(words[2])
        except ValueError as exc:
            raise RuleError(f"CRS: {source}: line {line}: {exc}") from None


# --- the engine -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CrsMatch:
    rule_id: int
    message: str
    location: str  # in cloudward's names: args:q, form:q, json:a.b, header:user-agent, cookie:sid, path, body
    fragment: str  # what matched, cut short; redacted for secret-looking locations
    severity: int  # ModSecurity's 0 (emergency) - 7 (debug)
    paranoia: int  # the rule's paranoia level (its paranoia-level/N tag), 0 for a rule without one

    @property
    def score(self) -> int:
        return SCORES.get(self.severity, 0) if self.paranoia else 0


@dataclass(frozen=True)
class CrsResult:
    """The engine's own verdict on a request, before cloudward's policy."""

    blocked: bool  # ModSecurity intervened: the anomaly threshold was reached, or a rule denied outright
    status: int
    score: int | None  # the inbound anomaly score the blocking evaluation reported, when it did
    by: int | None  # the rule whose action was disruptive
    matches: tuple[CrsMatch, ...]  # the rules that matched and carry a paranoia level, or disrupted


def _binding() -> Any:
    try:
        import libmodsecurity
    except ImportError:
        raise UsageError(f"policy: the CRS engine needs libmodsecurity: {INSTALL}") from None
    return libmodsecurity


def _wire(text: str) -> bytes:
    """A request string as the bytes it came in: adapters decode the wire as latin-1."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _redacted(location: str, text: str) -> str:
    name = location.split(":", 1)[-1]
    if _SENSITIVE.search(name) or location.startswith(("header:authorization", "header:cookie",
                                                       "header:proxy-authorization")):
        return f"<redacted: {len(text)} characters>"
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:120])[:200]


def _variable(data: str, match: str) -> str | None:
    """The variable a CRS match names, or None when it cannot be told for sure. Around the name stand
    the matched text and the value (the attacker's), and names may hold `: `: a name is taken only
    when its markers occur once, so a request cannot pose as another location (and slip through that
    location's exclusion)."""
    if data.startswith("Matched Data: ") and data.count(_WITHIN) == 1:
        rest = data.split(_WITHIN, 1)[1]
        if rest.count(": ") == 1:
            return rest.split(": ", 1)[0]
        return None if ": " in rest else rest.strip() or None
    if match.count("against variable `") == 1 and match.count("' (Value: `") == 1:
        found = _AGAINST.search(match)
        return found.group(1) if found else None
    return None


class _Names:
    """The argument names of a request's query and form body (read when first asked), to tell where
    ModSecurity's ARGS:q came from."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        kind = request.content_type
        self.json = kind == "application/json" or kind.endswith("+json")
        self.multipart = kind.startswith("multipart/")

    @functools.cached_property
    def query(self) -> frozenset[str]:
        return frozenset(name for name, _ in parse_qsl(self.request.query, keep_blank_values=True))

    @functools.cached_property
    def form(self) -> frozenset[str] | None:
        """The body's names when it is a form (or has no Content-Type), else None: not known here."""
        body = self.request.body
        if not body:
            return frozenset()
        if self.request.content_type not in ("", "application/x-www-form-urlencoded"):
            return None
        return frozenset(name for name, _ in parse_qsl(body.decode("latin-1"), keep_blank_values=True))


def _location(variable: str, names: _Names) -> str:
    """ModSecurity's variable (ARGS:q, REQUEST_HEADERS:User-Agent, …) in cloudward's location names;
    `request` when an argument's name is both in the query and possibly in the body."""
    collection, _, name = variable.partition(":")
    collection = collection.upper()
    if collection in ("ARGS", "ARGS_GET", "ARGS_POST"):
        in_query = collection != "ARGS_POST" and name in names.query
        if names.json and name.startswith("json."):
            in_body, where = collection != "ARGS_GET", f"json:{name[5:]}"
        else:
            in_body = collection != "ARGS_GET" and (names.form is None or name in names.form)
            where = f"{'multipart' if names.multipart else 'form'}:{name}"
        if in_query and in_body:
            return "request"
        return f"args:{name}" if in_query else where if in_body else "request"
    if collection in ("ARGS_NAMES", "ARGS_GET_NAMES", "ARGS_POST_NAMES"):
        return f"args_name:{name}"
    if collection in ("REQUEST_HEADERS", "REQUEST_HEADERS_NAMES"):
        return f"header:{name.lower()}"
    if collection == "REQUEST_COOKIES":
        return f"cookie:{name}"
    if collection == "REQUEST_COOKIES_NAMES":
        return f"cookie_name:{name}"
    if collection in _PATH_VARIABLES:
        return "path"
    if collection in ("REQUEST_BODY", "XML", "REQBODY_ERROR", "MULTIPART_STRICT_ERROR"):
        return "body"
    if collection in ("FILES", "FILES_NAMES"):
        return f"filename:{name}"
    if collection == "QUERY_STRING":
        return "query"
    return collection.lower() + (f":{name}" if name else "")


def _paranoia(tags: list[str]) -> int:
    for tag in tags:
        if tag.startswith("paranoia-level/") and tag[15:].isdigit():
            return int(tag[15:])
    return 0


class CrsEngine:
    """One compiled Core Rule Set: `evaluate` a request, or `apply` the verdict to cloudward's."""

    def __init__(self, settings: CrsSettings) -> None:
        self.settings = settings
        self.paranoia = settings.paranoia
        self.detection_paranoia = settings.detection_paranoia or settings.paranoia
        self.threshold = settings.threshold
        self.errors = 0  # requests the engine failed on (passed on with cloudward's own verdict)
        binding = _binding()
        self._transaction = binding.Transaction
        self.modsecurity: ModSecurity = binding.ModSecurity()
        self.modsecurity.set_connector_information("cloudward.appsec")
        # matches are read per transaction (get_rule_messages); without a callback every one goes to stderr
        self.modsecurity.set_rule_message_callback(_ignore)
        self.rules: RulesSet = binding.RulesSet()
        self.files = self._load(settings.rules)

    def _load(self, folder: Path) -> list[Path]:
        """Compile the engine settings, the setup file, the policy's settings and every rules/*.conf, each
        file read by `lint_seclang` first; a problem is an error naming the file."""
        if not folder.is_dir():
            raise UsageError(f"policy: crs.rules: {folder} is not a folder (the Core Rule Set: crs-setup.conf, "
                             "rules/*.conf)")
        rules_dir = folder / "rules" if (folder / "rules").is_dir() else folder
        home = folder if rules_dir != folder else folder.parent
        setup = next((p for p in (home / "crs-setup.conf", home / "crs-setup.conf.example") if p.is_file()), None)
        if setup is None:
            raise UsageError(f"policy: crs.rules: no crs-setup.conf or crs-setup.conf.example in {home}")
        files = sorted(p for p in rules_dir.glob("*.conf") if p.is_file())
        if not files:
            raise UsageError(f"policy: crs.rules: no rules/*.conf in {folder}")
        self._text(ENGINE_CONF, "the engine settings")
        self._file(setup)
        self._text(SETTINGS_CONF.format(paranoia=self.paranoia, detection=self.detection_paranoia,
                                        threshold=self.threshold), "the policy's crs settings")
        for path in files:
            self._file(path)
        return [setup, *files]

    def _text(self, text: str, what: str) -> None:
        if self.rules.load(text) < 0:
            raise RuleError(f"CRS: {what}: {self.rules.get_parser_error().strip()}")

    def _file(self, path: Path) -> None:
        try:
            if path.stat().st_size > MAX_RULE_FILE:
                raise RuleError(f"CRS: {path}: larger than {MAX_RULE_FILE // (1024 * 1024)} MiB")
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError as exc:
            raise RuleError(f"CRS: cannot read {path}: {exc.strerror}") from None
        lint_seclang(text, str(path))
        if self.rules.load_from_uri(str(path)) < 0:
            error = self.rules.get_parser_error().strip()
            raise RuleError(f"CRS: {path}: {error}" if str(path) not in error else f"CRS: {error}")

    def evaluate(self, request: HttpRequest) -> CrsResult:
        """The engine's verdict on one request (its own transaction, phases 1 and 2)."""
        tx = self._transaction(self.modsecurity, self.rules)
        client = request.client or "0.0.0.0"  # noqa: S104 - the address of a client not known, not a bind
        tx.process_connection(client, 0, "127.0.0.1", 0)
        uri = request.raw_path + (f"?{request.query}" if request.query else "")
        tx.process_uri(_wire(uri), _wire(request.method), "1.1")
        for name, value in request.headers:
            tx.add_request_header(_wire(name), _wire(value))
        tx.process_request_headers()
        status = _intervened(tx)
        if not status:
            if request.body:
                tx.append_request_body(request.body)
            tx.process_request_body()
            status = _intervened(tx)
        return self._result(tx.get_rule_messages(), status, request)

    def _result(self, messages: list[RuleMessage], status: int, request: HttpRequest) -> CrsResult:
        score: int | None = None
        by: int | None = None
        matches: list[CrsMatch] = []
        names = _Names(request)
        for message in messages:
            text = _field(message, "message")
            if message.rule_id in ANOMALY_RULES:
                found = _TOTAL.search(text)
                score = int(found.group(1)) if found else score
                by = message.rule_id if message.disruptive else by
                continue
            level = _paranoia(message.tags)
            if not level and not message.disruptive:
                continue  # bookkeeping (initialisation, correlation)
            if message.disruptive:
                by = message.rule_id
            data = _field(message, "data")
            variable = _variable(data, _field(message, "match"))
            location = "request" if variable is None else _location(variable, names)
            matched = data[14:].split(_WITHIN, 1)[0] if data.startswith("Matched Data: ") else ""
            matches.append(CrsMatch(message.rule_id, text, location, _redacted(location, matched),
                                    message.severity, level))
        if by is not None and not status:  # the intervention could not be read (see _intervened)
            status = 403
        return CrsResult(bool(status), status or 200, score, by, tuple(matches))

    def apply(self, verdict: Verdict, request: HttpRequest, policy: EffectivePolicy) -> None:
        """Add the CRS verdict to cloudward's (one `appsec.crs` Detection; `block` in block mode). Never
        raises: a failure is logged and counted, and cloudward's own verdict stands."""
        if policy.mode == "off" or RULE_ID in policy.disabled_rules:
            return
        try:
            result = self.evaluate(request)
            detection, blocking = self.judge(result, policy, truncated=request.body_truncated)
        except Exception:
            self.errors += 1
            log.exception("appsec: the CRS engine failed on a request; cloudward's own verdict stands")
            return
        if detection is None:
            return
        verdict.detections.append(detection)
        if not verdict.incident_id:
            verdict.incident_id = uuid.uuid4().hex[:20]
        if blocking and policy.mode == "block":
            verdict.block = True

    def judge(self, result: CrsResult, policy: EffectivePolicy, *,
              truncated: bool = False) -> tuple[Detection | None, bool]:
        """The Detection to report (or None) and whether it blocks, after the policy's exclusions. A body
        cloudward cut at the policy's limit (`oversize: inspect_prefix`) is judged by its prefix, which
        need not parse: then the body error (200002) does not count."""
        kept = [m for m in result.matches
                if not (policy.excluded(RULE_ID, m.location) or policy.excluded(f"crs:{m.rule_id}", m.location)
                        or (truncated and m.rule_id == BODY_ERROR))]
        if len(kept) == len(result.matches):
            blocked, score = result.blocked, result.score
        else:  # the engine's sum included what the policy excludes: add up what is left
            score = sum(m.score for m in kept if m.paranoia <= self.paranoia)
            blocked = score >= self.threshold or any(m.rule_id == result.by for m in kept if not m.paranoia)
        if score is None:
            score = sum(m.score for m in kept if m.paranoia <= self.paranoia)
        if blocked:
            head = f"CRS PL{self.paranoia} blocked (inbound anomaly score {score}, threshold {self.threshold})"
        elif self.detection_paranoia > self.paranoia:
            reported = sum(m.score for m in kept if m.paranoia <= self.detection_paranoia)
            if reported < self.threshold:
                return None, False
            head = (f"CRS PL{self.detection_paranoia} would block (anomaly score {reported}, threshold "
                    f"{self.threshold}); not blocking at PL{self.paranoia}")
        else:
            return None, False
        shown = [m for m in kept if m.paranoia <= self.detection_paranoia or not m.paranoia]
        first = max(shown, key=lambda m: (not m.paranoia, m.score), default=None)  # the one that weighed most
        listed = "; ".join(f"{m.rule_id} {m.message} at {m.location}" + (f" (PL{m.paranoia})" if m.paranoia else "")
                           for m in shown[:20])
        if len(shown) > 20:
            listed += f"; and {len(shown) - 20} more"
        detail = f"{head}: {listed}" if listed else head
        return Detection(RULE_ID, first.location if first else "request", first.fragment if first else "",
                         detail[:2000]), blocked


def _intervened(tx: Any) -> int:
    """The status of the engine's disruptive intervention, or 0 for none (or one that cannot be read: its
    log quotes request bytes that are not UTF-8, which the binding cannot decode; then the disruptive
    rule message decides, see _result)."""
    try:
        found = tx.intervention()
    except UnicodeDecodeError:
        return 0
    return int(found.status or 403) if found is not None and found.disruptive else 0


def _field(message: RuleMessage, name: str) -> str:
    """A text field of a rule message; empty when it quotes request bytes that are not UTF-8 (the binding
    cannot decode them), so the match is kept without its location (only `*` exclusions cover it)."""
    try:
        return str(getattr(message, name))
    except UnicodeDecodeError:
        return ""


def _ignore(_message: object) -> None:
    return None


_engines: dict[CrsSettings, CrsEngine] = {}
_lock = threading.Lock()


def crs_engine(settings: CrsSettings) -> CrsEngine:
    """The engine for these settings, compiled once per process (a second middleware shares it)."""
    key = CrsSettings(settings.rules.resolve(), settings.paranoia, settings.threshold,
                      settings.detection_paranoia or settings.paranoia)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = CrsEngine(key)
        return engine
