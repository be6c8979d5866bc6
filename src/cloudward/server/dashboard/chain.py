"""The TeamTNT attack chain (`data/threat-map.yaml`) as the overview shows it.

Each link of the map names rule-id globs; a finding belongs to every link one of whose globs its
rule id matches (a rule may watch two links). Links are grouped into the stages of the chain by
the words before the colon in their name ("Initial access: unauthenticated Redis"), in the order
an intrusion runs (ATT&CK's tactic order); a stage the map has no link for is not shown, and links
without one of those stages (supply chain, posture, integrity
monitoring) sit "around the chain".

The counts are folded in Python from a GROUP BY on rule id: a few hundred rows, whatever the
number of findings, and every link's globs compiled once into one regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from functools import cache
from importlib import resources

from sqlalchemy import or_
from sqlalchemy.sql import ColumnElement

from cloudward.core.severity import Severity
from cloudward.server.globs import glob_predicate
from cloudward.store.models import FindingRow

STAGES = ("Initial access", "Privilege", "Execution and persistence", "Defense evasion", "Credential access",
          "Command and control", "Impact")
AROUND = "Around the chain"
_RANKED = list(Severity)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    stage: str
    title: str
    attack: tuple[str, ...]
    globs: tuple[str, ...]
    pattern: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, rule_id: str) -> bool:
        return self.pattern.match(rule_id) is not None


def slug(stage: str) -> str:
    return re.sub(r"[^a-z]+", "-", stage.lower()).strip("-")


@cache
def links() -> tuple[Link, ...]:
    import yaml

    text = resources.files("cloudward.data").joinpath("threat-map.yaml").read_text("utf-8")
    out = []
    for index, item in enumerate(yaml.safe_load(text) or []):
        name = str(item["link"])
        head, sep, tail = name.partition(":")
        stage = head.strip() if sep and head.strip() in STAGES else AROUND
        globs = tuple(str(g) for g in item.get("rules") or [])
        pattern = re.compile("|".join(f"(?:{translate(g)})" for g in globs) or "(?!)")
        out.append(Link(index, name, stage, tail.strip() if stage != AROUND else name,
                        tuple(str(a) for a in item.get("attack") or []), globs, pattern))
    return tuple(out)


def stage_names() -> list[str]:
    present = {link.stage for link in links()}
    return [s for s in (*STAGES, AROUND) if s in present]


def by_slug(value: str) -> str | None:
    return next((s for s in stage_names() if slug(s) == value), None)


def globs_of(link_index: int | None = None, stage: str | None = None) -> tuple[str, ...]:
    chosen = [lk for lk in links() if (link_index is None or lk.index == link_index)
              and (stage is None or lk.stage == stage)]
    return tuple(dict.fromkeys(g for lk in chosen for g in lk.globs))


def clause(globs: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """Findings whose rule id matches any of the globs (the map has no `[` sets; one would fail
    closed, see globs.py)."""
    return or_(*[glob_predicate(FindingRow.rule_id, g, dialect) for g in globs])


@dataclass
class Tally:
    """Findings of one link or stage: per severity (critical first) and the worst present."""

    by_severity: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in reversed(_RANKED)})

    def add(self, rank: int, count: int) -> None:
        self.by_severity[_RANKED[rank].value] += count

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())

    @property
    def worst(self) -> str | None:
        return next((s for s, n in self.by_severity.items() if n), None)


@dataclass
class StageView:
    name: str
    slug: str
    tally: Tally
    links: list[tuple[Link, Tally]]


@dataclass
class ChainView:
    stages: list[StageView]
    off_chain: Tally
    off_chain_rules: list[str]


def fold(counts: Iterable[tuple[str, int, int]]) -> ChainView:
    """(rule id, severity rank, count) rows -> tallies per link and per stage. A finding counts
    once per link its rule is on, and once per stage however many of the stage's links match."""
    every = links()
    per_link = {lk.index: Tally() for lk in every}
    per_stage = {s: Tally() for s in stage_names()}
    off = Tally()
    off_rules: set[str] = set()
    memo: dict[str, list[Link]] = {}
    for rule_id, rank, count in counts:
        matched = memo.get(rule_id)
        if matched is None:
            matched = memo[rule_id] = [lk for lk in every if lk.matches(rule_id)]
        if not matched:
            off.add(rank, count)
            off_rules.add(rule_id)
        for lk in matched:
            per_link[lk.index].add(rank, count)
        for stage in {lk.stage for lk in matched}:
            per_stage[stage].add(rank, count)
    stages = [StageView(s, slug(s), per_stage[s], [(lk, per_link[lk.index]) for lk in every if lk.stage == s])
              for s in stage_names()]
    return ChainView(stages, off, sorted(off_rules))
