"""Rules are data: YAML documents whose metadata sits beside their detection logic.

The loader validates every document at load time, so a broken rule fails loudly with the file
named, and refuses a second rule with an id already taken (built-in or user) naming both files.
Each capability ships its rules as package data in `cloudward/<capability>/rules/`; the engine
that evaluates a rule's `match` block may check it further through `match_validator`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloudward.core.errors import RuleError
from cloudward.core.severity import Category, Severity

RULE_ID = re.compile(r"^[a-z0-9]+(?:[._][a-z0-9]+)*$")
ATTACK_ID = re.compile(r"^T\d{4}(?:\.\d{3})?$")
MAX_RULE_FILE_BYTES = 2 * 1024 * 1024


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str = Field(min_length=3)
    severity: Severity
    category: Category
    description: str = Field(min_length=10)
    remediation: str = Field(min_length=10)
    references: list[str] = Field(default_factory=list)
    attack: list[str] = Field(default_factory=list)
    compliance: dict[str, list[str]] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    match: dict[str, Any]
    # Where the rule came from: "builtin:<package path>" or a user file path. Not part of the YAML.
    source: str = ""

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if "." not in value or not RULE_ID.match(value):
            raise ValueError("rule id must be dotted snake_case, e.g. redis.unauthenticated")
        return value

    @field_validator("attack")
    @classmethod
    def _attack_shape(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not ATTACK_ID.match(v)]
        if bad:
            raise ValueError(f"not ATT&CK technique ids: {', '.join(bad)}")
        return value

    @property
    def engine_name(self) -> str:
        """The engine that evaluates this rule (`match.engine`)."""
        return str(self.match.get("engine", ""))


MatchValidator = Callable[[Rule], None]


@dataclass
class RuleSet:
    rules: dict[str, Rule] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Rule]:
        return iter(sorted(self.rules.values(), key=lambda r: r.id))

    def __len__(self) -> int:
        return len(self.rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self.rules

    def get(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise RuleError(f"no rule with id {rule_id!r}") from None

    def engine(self, name: str) -> list[Rule]:
        return [r for r in self if r.match.get("engine") == name]

    def add(self, rule: Rule) -> None:
        existing = self.rules.get(rule.id)
        if existing is not None:
            raise RuleError(
                f"duplicate rule id {rule.id!r}: defined in {existing.source} and in {rule.source}"
            )
        self.rules[rule.id] = rule


def parse_rule_documents(text: str, source: str) -> list[Rule]:
    """Parse one rule file (one or more YAML documents) into validated rules."""
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader when libyaml is there
        documents = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}: not valid YAML: {exc}") from None
    rules = []
    for index, doc in enumerate(documents):
        where = source if len(documents) == 1 else f"{source} (document {index + 1})"
        if not isinstance(doc, dict):
            raise RuleError(f"{where}: a rule must be a mapping, got {type(doc).__name__}")
        try:
            rules.append(Rule.model_validate({**doc, "source": where}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors()
            )
            raise RuleError(f"{where}: invalid rule {doc.get('id', '?')!r}: {problems}") from None
    return rules


def packaged_engine_rules(package: str, filename: str, engine: str,
                          validate: Callable[[Rule], None]) -> tuple[Rule, ...]:
    """The rules of one engine from a file shipped in `package`'s `rules/` folder, each checked by
    the engine's `validate` (ValueError); any problem is a RuleError naming the file and rule."""
    source = f"builtin:{package}/rules/{filename}"
    text = resources.files(package).joinpath("rules", filename).read_text(encoding="utf-8")
    rules = parse_rule_documents(text, source)
    for rule in rules:
        if rule.engine_name != engine:
            raise RuleError(f"{source}: rule {rule.id!r} is not a {engine} rule")
        try:
            validate(rule)
        except ValueError as exc:
            raise RuleError(f"{source}: rule {rule.id!r}: {exc}") from None
    return tuple(rules)


def _read_rule_file(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_RULE_FILE_BYTES:
        raise RuleError(f"{path}: rule file too large ({size} bytes)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RuleError(f"{path}: rule file is not UTF-8 text") from None


def builtin_rule_files(packages: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Yield (source, text) for every YAML file in `<package>/rules/`."""
    for package in packages:
        folder = resources.files(package).joinpath("rules")
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith((".yaml", ".yml")):
                yield f"builtin:{package}/rules/{entry.name}", entry.read_text(encoding="utf-8")


def user_rule_files(directory: Path) -> Iterator[tuple[str, str]]:
    if not directory.is_dir():
        raise RuleError(f"{directory}: rules directory does not exist")
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            yield str(path), _read_rule_file(path)


def load_rules(
    packages: Iterable[str],
    extra_dirs: Iterable[Path] = (),
    validators: dict[str, MatchValidator] | None = None,
) -> RuleSet:
    """Load built-in rules of the given capability packages, then the user's rule folders.

    `validators` maps an engine name (the rule's `match.engine`) to a function that raises
    ValueError when the match block is not valid for that engine.
    """
    ruleset = RuleSet()
    sources = list(builtin_rule_files(packages))
    for directory in extra_dirs:
        sources.extend(user_rule_files(Path(directory)))
    for source, text in sources:
        for rule in parse_rule_documents(text, source):
            check = (validators or {}).get(rule.engine_name)
            if validators is not None and check is None:
                raise RuleError(f"{rule.source}: rule {rule.id!r} names unknown engine {rule.engine_name!r}")
            if check is not None:
                try:
                    check(rule)
                except ValueError as exc:
                    raise RuleError(f"{rule.source}: rule {rule.id!r}: {exc}") from None
            ruleset.add(rule)
    return ruleset
