"""Which signatures an inspection uses: the built-in ones, the IOC list's, and the user's files.

Built-in signatures are data beside their prose: `rules/signatures/*.rules` (Suricata syntax; the
rule itself carries title, severity, ATT&CK ids and references) and a YAML file of the same name
(`description` and `remediation` per `cloudward_id`: what Suricata's syntax has no place for, so
nothing in it can contradict the rule). They live in a subfolder so core's YAML rule loader, which
reads `network/rules/*.yaml` (the proxies' rules), never sees them.

The IOC list shared with the workload capability (`cloudward/data/iocs.yaml`, plus `--iocs`
files) becomes signatures at load time: each actor domain a DNS / TLS SNI / HTTP Host rule (the
name and its subdomains), each actor address an `ip <>` rule, each pool domain a DNS and SNI rule,
and the pool ports one rule. Generated rules go through the same parser and prefilter as written
ones, so `network rules check --builtin` shows them and a finding can name its indicator's source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudward.core.errors import RuleError
from cloudward.core.rules import Rule
from cloudward.core.severity import Category
from cloudward.engines.iocs import Indicator, Iocs
from cloudward.network.suricata import ParsedRules, RuleParser, RuleProblem, Signature

__all__ = ["ENGINE", "GENERATED_SID_BASE", "LoadedRules", "RuleNotes", "as_rules", "builtin_rules", "builtin_sources",
           "ioc_rules", "load_signatures"]

BUILTIN_FOLDER = "signatures"
GENERATED_SID_BASE = 1_901_000
GENERATED_SID_LIMIT = 1_999_999
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")


class RuleNotes(BaseModel):
    """The prose of one built-in `cloudward_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=20)
    remediation: str = Field(min_length=20)
    references: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


@dataclass
class LoadedRules:
    signatures: list[Signature] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)
    notes: dict[str, RuleNotes] = field(default_factory=dict)
    indicators: dict[int, Indicator] = field(default_factory=dict)  # generated sid -> its indicator
    builtin_count: int = 0
    user_count: int = 0


def builtin_sources() -> list[tuple[str, str, str | None]]:
    """(source name, rules text, notes YAML text or None) for each built-in rules file."""
    folder = resources.files("cloudward.network").joinpath("rules").joinpath(BUILTIN_FOLDER)
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".rules"):
            notes = folder.joinpath(entry.name[:-len(".rules")] + ".yaml")
            out.append((f"builtin:{BUILTIN_FOLDER}/{entry.name}", entry.read_text("utf-8"),
                        notes.read_text("utf-8") if notes.is_file() else None))
    return out


def parse_notes(text: str, source: str) -> dict[str, RuleNotes]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("rules"), Mapping):
        raise RuleError(f"{source}: expected a mapping with a `rules` mapping of cloudward_id -> notes")
    notes: dict[str, RuleNotes] = {}
    for rule_id, body in data["rules"].items():
        try:
            notes[str(rule_id)] = RuleNotes.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'notes'}: {e['msg']}" for e in exc.errors())
            raise RuleError(f"{source}: {rule_id}: {problems}") from None
    return notes


# --------------------------------------------------------------------------- IOC -> signatures

_DOMAIN_RULES = (
    ("dns", "DNS query for", "dns.query", ""),
    ("tls", "TLS connection to", "tls.sni", "flow:to_server; "),
    ("http", "HTTP request to", "http.host", "flow:to_server; "),
)


def ioc_rules(iocs: Iocs) -> tuple[str, dict[int, Indicator], list[str]]:
    """Suricata text for the IOC list, the indicator behind each generated sid, and the indicators
    that cannot become a signature (with why)."""
    lines: list[str] = []
    by_sid: dict[int, Indicator] = {}
    skipped: list[str] = []
    sid = GENERATED_SID_BASE

    def add(rule: str, indicator: Indicator | None) -> None:
        nonlocal sid
        if sid > GENERATED_SID_LIMIT:
            return
        lines.append(rule.replace("{sid}", str(sid)))
        if indicator is not None:
            by_sid[sid] = indicator
        sid += 1

    ports = sorted({int(i.value) for i in iocs.indicators if i.kind == "pool_port"})
    if ports:
        add(f'alert tcp any any -> any [{",".join(map(str, ports))}] (msg:"Connection to a mining-pool port"; '
            "flow:to_server,established; classtype:coin-mining; metadata: cloudward_id network.sig.pool_port, "
            "mitre_technique_id T1496.001, threat_map impact, signature_severity Low; sid:{sid}; rev:1;)", None)
    for indicator in sorted(iocs.indicators, key=lambda i: (i.kind, i.value)):
        value = indicator.value.strip().lower().rstrip(".")
        if indicator.kind in ("domain", "pool_domain"):
            if not _DOMAIN.match(value):
                skipped.append(f"{indicator.kind} {indicator.value!r} is not a DNS name a signature can match")
                continue
            pool = indicator.kind == "pool_domain"
            for proto, verb, buffer, flow in _DOMAIN_RULES:
                if pool and proto == "http":
                    continue  # pools speak stratum, not HTTP; a Host header naming one is not a miner
                what = "a mining pool" if pool else "an actor indicator domain"
                meta = ("cloudward_id network.sig.pool_domain, mitre_technique_id T1496.001, threat_map impact"
                        if pool else "cloudward_id network.sig.ioc_domain, mitre_technique_id T1071, "
                        "threat_map command_and_control")
                add(f'alert {proto} any any -> any any (msg:"{verb} {value}, {what}"; {flow}{buffer}; dotprefix; '
                    f'content:".{value}"; endswith; nocase; classtype:{"coin-mining" if pool else "domain-c2"}; '
                    f"metadata: {meta}, ioc_kind {indicator.kind}, ioc_value {value}, signature_severity Major; "
                    "sid:{sid}; rev:1;)", indicator)
        elif indicator.kind == "ip":
            add(f'alert ip any any <> {value} any (msg:"Traffic with {value}, an actor indicator address"; '
                "classtype:trojan-activity; metadata: cloudward_id network.sig.ioc_address, mitre_technique_id T1071, "
                f"threat_map command_and_control, ioc_kind ip, ioc_value {value}, signature_severity Major; "
                "sid:{sid}; rev:1;)", indicator)
    if sid > GENERATED_SID_LIMIT:
        skipped.append(f"more indicators than generated sids ({GENERATED_SID_LIMIT - GENERATED_SID_BASE + 1}); "
                       "the rest have no signature")
    return "\n".join(lines) + "\n", by_sid, skipped


# --------------------------------------------------------------------------- loading


def load_signatures(parser: RuleParser, *, builtin: bool = True, iocs: Iocs | None = None,
                    rule_files: Iterable[Path] = ()) -> LoadedRules:
    """Built-in signatures (with `builtin`), the IOC list's (with `iocs`), then the user's files.

    A broken user rule, or one that reuses a sid already taken (a user rule never silently
    replaces one of ours), is a problem in the result and the rest load; a broken built-in file is
    a RuleError."""
    loaded = LoadedRules()
    parsed = ParsedRules()
    for source, text, notes_text in builtin_sources():
        if notes_text is not None:
            loaded.notes.update(parse_notes(notes_text, source[:-len(".rules")] + ".yaml"))
        if builtin:
            result = parser.parse_text(text, source)
            if result.problems:
                raise RuleError("built-in signatures do not load: " + "; ".join(map(str, result.problems)))
            parsed.extend(result)
    if iocs is not None:
        text, by_sid, skipped = ioc_rules(iocs)
        result = parser.parse_text(text, "builtin:iocs")
        if result.problems:
            raise RuleError("IOC signatures do not load: " + "; ".join(map(str, result.problems[:5])))
        parsed.extend(result)
        loaded.indicators.update(by_sid)
        parsed.problems.extend(RuleProblem("iocs", 0, reason, True) for reason in skipped)
    missing = sorted({s.rule_id for s in parsed.signatures} - set(loaded.notes))
    if missing:
        raise RuleError(f"built-in signatures without notes (description, remediation): {', '.join(missing)}")
    loaded.builtin_count = len(parsed.signatures)
    taken = {(s.gid, s.sid): s for s in parsed.signatures}
    user = parser.parse_files(list(rule_files))
    for signature in user.signatures:
        earlier = taken.get((signature.gid, signature.sid))
        if earlier is not None:
            parsed.problems.append(RuleProblem(
                signature.source, signature.line, f"sid {signature.sid} is already used by the built-in rule at "
                f"{earlier.source}:{earlier.line}; this rule is skipped (give it another sid)", False,
                signature.sid, "sid"))
            continue
        parsed.signatures.append(signature)
        loaded.user_count += 1
    parsed.problems.extend(user.problems)
    loaded.signatures = parsed.signatures
    loaded.problems = parsed.problems
    return loaded


# --------------------------------------------------------------------------- signatures as core rules

ENGINE = "suricata"  # `match.engine` of the rules below; there is no YAML rule of this engine
# Generated rules are one per indicator and protocol; their own msg names one indicator, not the rule.
_GENERATED_TITLES = {
    "network.sig.ioc_domain": "DNS, TLS or HTTP traffic naming an actor domain of the IOC list",
    "network.sig.ioc_address": "Traffic with an actor address of the IOC list",
    "network.sig.pool_domain": "DNS or TLS traffic naming a mining-pool domain of the IOC list",
}


def as_rules(loaded: LoadedRules) -> list[Rule]:
    """One core `Rule` per built-in `cloudward_id`, so `rules list|show`, the server's catalogue and
    the threat map see the ids signature findings carry. Several signatures may share an id (SLAVEOF
    and REPLICAOF, one per IOC): the rule takes the most severe, every ATT&CK id, and their texts as
    its `match`. A signature without a `reference` cites its ATT&CK techniques' pages."""
    by_id: dict[str, list[Signature]] = {}
    for signature in loaded.signatures:
        if signature.rule_id in loaded.notes:  # built-in or generated (a user rule has no notes)
            by_id.setdefault(signature.rule_id, []).append(signature)
    rules = []
    for rule_id, signatures in sorted(by_id.items()):
        first, notes = signatures[0], loaded.notes[rule_id]
        attack = list(dict.fromkeys(t for s in signatures for t in s.attack))
        references = list(dict.fromkeys([*(r for s in signatures for r in s.references), *notes.references]))
        threat_map = dict.fromkeys(v for s in signatures for v in s.meta("threat_map"))
        title = _GENERATED_TITLES.get(rule_id) or first.msg
        if rule_id not in _GENERATED_TITLES and len(signatures) > 1:
            more = len(signatures) - 1
            title += f" (and {more} more signature{'s' if more > 1 else ''})"
        generated = first.sid >= GENERATED_SID_BASE
        rules.append(Rule(
            id=rule_id, title=title, severity=max(s.severity for s in signatures), category=Category.NETWORK,
            description=notes.description, remediation=notes.remediation,
            references=references or [f"https://attack.mitre.org/techniques/{t.replace('.', '/')}/" for t in attack],
            attack=attack, tags=["signature", *notes.tags, *(f"threat_map:{t}" for t in threat_map)],
            match={"engine": ENGINE, "sids": [s.sid for s in signatures], "signatures": [s.text for s in signatures]},
            source="builtin:cloudward.data/iocs.yaml (generated signatures)" if generated
            else f"builtin:cloudward.network/rules/{first.source.removeprefix('builtin:')}:{first.line}",
        ))
    return rules


@cache
def builtin_rules() -> tuple[Rule, ...]:
    """The built-in signatures and those generated from the shipped IOC list, as core rules (package
    data only, so parsed once per process)."""
    from cloudward.engines.iocs import load_iocs

    return tuple(as_rules(load_signatures(RuleParser(), iocs=load_iocs())))
