"""A small condition language over facts, so detection logic can live in YAML rules.

A condition is a mapping with exactly one of:
  all: [conditions]   any: [conditions]   not: condition
or a leaf naming a fact by dotted path and one operator:
  {fact: auth_required, equals: false}
  {fact: version, version: ">=8.5,<9.8p1"}
Operators: equals, not_equals, in, not_in, exists, truthy, matches (regex), contains, gt, ge, lt,
le, version. A missing fact makes every operator false except `exists: false` — so a rule never
fires on what a probe could not see.

Conditions are compiled once at load time (`compile_condition`), which is also their validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from cloudward.engines.versions import check_range, in_range

Predicate = Callable[[Mapping[str, Any]], bool]
MISSING = object()


def lookup(facts: Mapping[str, Any], path: str) -> Any:
    current: Any = facts
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return MISSING
    return current


def _compare(op: str, expected: Any) -> Callable[[Any], bool]:
    if op == "equals":
        return lambda v: bool(v == expected)
    if op == "not_equals":
        return lambda v: bool(v != expected)
    if op in ("in", "not_in"):
        if not isinstance(expected, list):
            raise ValueError(f"{op} needs a list")
        options = list(expected)
        return (lambda v: v in options) if op == "in" else (lambda v: v not in options)
    if op == "truthy":
        return lambda v: bool(v) is bool(expected)
    if op == "matches":
        pattern = re.compile(str(expected))
        return lambda v: isinstance(v, str) and pattern.search(v) is not None
    if op == "contains":
        return lambda v: isinstance(v, (list, tuple, set, str, dict)) and expected in v
    if op in ("gt", "ge", "lt", "le"):
        if not isinstance(expected, (int, float)):
            raise ValueError(f"{op} needs a number")
        limit = float(expected)
        tests: dict[str, Callable[[float], bool]] = {
            "gt": lambda v: v > limit,
            "ge": lambda v: v >= limit,
            "lt": lambda v: v < limit,
            "le": lambda v: v <= limit,
        }
        check = tests[op]
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and check(float(v))
    if op == "version":
        spec = str(expected)
        check_range(spec)
        return lambda v: isinstance(v, str) and in_range(v, spec)
    raise ValueError(f"unknown operator {op!r}")


OPERATORS = ("equals", "not_equals", "in", "not_in", "exists", "truthy", "matches", "contains",
             "gt", "ge", "lt", "le", "version")


def compile_condition(node: Any) -> Predicate:
    if not isinstance(node, Mapping):
        raise ValueError(f"a condition must be a mapping, got {node!r}")
    keys = set(node)
    if keys == {"all"} or keys == {"any"}:
        (kind,) = keys
        children = node[kind]
        if not isinstance(children, list) or not children:
            raise ValueError(f"{kind} needs a non-empty list")
        compiled = [compile_condition(c) for c in children]
        if kind == "all":
            return lambda facts: all(p(facts) for p in compiled)
        return lambda facts: any(p(facts) for p in compiled)
    if keys == {"not"}:
        inner = compile_condition(node["not"])
        return lambda facts: not inner(facts)
    if "fact" in keys:
        path = node["fact"]
        ops = keys - {"fact"}
        if not isinstance(path, str) or not path:
            raise ValueError("fact must be a dotted name")
        if len(ops) != 1:
            raise ValueError(f"condition on {path!r} needs exactly one operator of {', '.join(OPERATORS)}")
        (op,) = ops
        if op == "exists":
            want = bool(node[op])
            return lambda facts: (lookup(facts, path) is not MISSING) is want
        check = _compare(op, node[op])

        def leaf(facts: Mapping[str, Any]) -> bool:
            value = lookup(facts, path)
            return value is not MISSING and check(value)

        return leaf
    raise ValueError(f"not a condition: {dict(node)!r}")
