"""Terraform values as `tf_expr` evaluates them: conversions (Terraform turns "2" into a number
and "true" into a bool where an expression needs one), attribute and index access, and the
built-in functions a scan can compute without `apply`. Every result is bounded in size; a value
only `apply` knows raises `Unknown`, a wrong one `ExprError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64  # nesting while parsing and evaluating
MAX_ITEMS = 10_000  # elements of a collection an expression may build
MAX_STRING = 65_536  # characters of a string an expression may build


class Unknown(Exception):
    """The value depends on something only `terraform apply` knows."""


class ExprError(ValueError):
    """Text that is not an expression this evaluator reads, or one that exceeds its bounds."""


class TfSet(tuple):  # type: ignore[type-arg]
    """`toset(...)`: Terraform's sets of strings iterate in lexical order, keys equal to values."""


Lookup = Callable[[str], Any]  # root name (var, local, count, each, a for-variable) -> value or Unknown


def known(value: Any) -> Any:
    """A value from a scope: strings still holding `${` are expressions nobody could resolve."""
    if isinstance(value, str) and "${" in value:
        raise Unknown("an unresolved expression")
    return value


def tidy(value: float) -> float | int:
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("number out of range")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def as_number(value: Any) -> float | int:
    value = known(value)
    if isinstance(value, bool) or value is None:
        raise ExprError("not a number")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ExprError(f"not a number: {value[:40]!r}") from None
        if not math.isfinite(number):
            raise ExprError("number out of range")
        return tidy(number)
    raise ExprError("not a number")


def as_bool(value: Any) -> bool:
    value = known(value)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise ExprError("not a bool")


def as_string(value: Any) -> str:
    value = known(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(tidy(value))
    if isinstance(value, str):
        return value
    raise ExprError("not a string")


def as_key(value: Any) -> str:
    return as_string(value)


def equal(left: Any, right: Any) -> bool:
    left, right = known(left), known(right)
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right or (isinstance(left, bool) and isinstance(right, bool) and left == right)
    return bool(left == right)


def get_attr(value: Any, name: str) -> Any:
    value = known(value)
    if isinstance(value, dict):
        if name not in value:
            raise Unknown(f"no attribute {name}")
        return value[name]
    if value is None:
        raise ExprError("attribute of null")
    raise Unknown(f"attribute {name} of a non-object")


def get_index(value: Any, index: Any) -> Any:
    value, index = known(value), known(index)
    if isinstance(value, dict):
        key = as_key(index)
        if key not in value:
            raise Unknown(f"no key {key[:40]!r}")
        return value[key]
    if isinstance(value, (list, tuple)) and not isinstance(value, TfSet):
        number = as_number(index)
        if not isinstance(number, int) or not 0 <= number < len(value):
            raise ExprError("index out of range")
        return value[number]
    raise Unknown("index of a non-collection")


def as_list(value: Any) -> list[Any]:
    value = known(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ExprError("not a list")


def _to_set(value: Any) -> TfSet:
    items = as_list(value)
    strings = {as_string(item) for item in items}
    return TfSet(sorted(strings))


def _range(args: list[Any]) -> list[Any]:
    numbers = [as_number(a) for a in args]
    if len(numbers) == 1:
        start, stop, step = 0.0, numbers[0], 1.0
    elif len(numbers) in (2, 3):
        start, stop = numbers[0], numbers[1]
        step = numbers[2] if len(numbers) == 3 else (1.0 if stop >= start else -1.0)
    else:
        raise ExprError("range takes 1 to 3 arguments")
    if step == 0 or abs((stop - start) / step) > MAX_ITEMS:
        raise ExprError(f"range of more than {MAX_ITEMS} elements")
    out: list[Any] = []
    current = start
    while (step > 0 and current < stop) or (step < 0 and current > stop):
        out.append(tidy(current))
        current += step
    return out


def _merge(args: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arg in args:
        arg = known(arg)
        if arg is None:
            continue
        if not isinstance(arg, dict):
            raise ExprError("merge takes maps")
        out.update(arg)
    return out


def _lookup(args: list[Any]) -> Any:
    if len(args) not in (2, 3):
        raise ExprError("lookup takes 2 or 3 arguments")
    table = known(args[0])
    if not isinstance(table, dict):
        raise ExprError("lookup takes a map")
    key = as_key(args[1])
    if key in table:
        return table[key]
    if len(args) == 3:
        return args[2]
    raise ExprError(f"no key {key[:40]!r}")


def _length(value: Any) -> int:
    value = known(value)
    if isinstance(value, (list, tuple, dict, str)):
        return len(value)
    raise ExprError("length of a value without one")


def _coalesce(args: list[Any]) -> Any:
    for arg in args:
        arg = known(arg)
        if arg is not None and arg != "":
            return arg
    raise ExprError("coalesce found no value")


def _flatten(value: Any, depth: int = 0) -> list[Any]:
    if depth > MAX_DEPTH:
        raise ExprError("nested too deeply")
    out: list[Any] = []
    for item in as_list(value):
        if isinstance(known(item), (list, tuple)):
            out.extend(_flatten(item, depth + 1))
        else:
            out.append(item)
    return out


def _concat(args: list[Any]) -> list[Any]:
    out: list[Any] = []
    for arg in args:
        out.extend(as_list(arg))
    return out


def _one(args: list[Any], name: str) -> Any:
    if len(args) != 1:
        raise ExprError(f"{name} takes one argument")
    return args[0]


_FUNCTIONS: dict[str, Callable[[list[Any]], Any]] = {
    "toset": lambda a: _to_set(_one(a, "toset")),
    "tolist": lambda a: list(as_list(_one(a, "tolist"))),
    "tomap": lambda a: _merge([_one(a, "tomap")]),
    "tostring": lambda a: as_string(_one(a, "tostring")),
    "tonumber": lambda a: as_number(_one(a, "tonumber")),
    "tobool": lambda a: as_bool(_one(a, "tobool")),
    "length": lambda a: _length(_one(a, "length")),
    "keys": lambda a: sorted(_merge([_one(a, "keys")])),
    "values": lambda a: [v for _, v in sorted(_merge([_one(a, "values")]).items())],
    "lookup": _lookup,
    "merge": _merge,
    "concat": _concat,
    "flatten": lambda a: _flatten(_one(a, "flatten")),
    "distinct": lambda a: _distinct(_one(a, "distinct")),
    "range": _range,
    "min": lambda a: tidy(min(as_number(v) for v in a)) if a else _fail("min of nothing"),
    "max": lambda a: tidy(max(as_number(v) for v in a)) if a else _fail("max of nothing"),
    "abs": lambda a: abs(as_number(_one(a, "abs"))),
    "ceil": lambda a: math.ceil(as_number(_one(a, "ceil"))),
    "floor": lambda a: math.floor(as_number(_one(a, "floor"))),
    "contains": lambda a: any(equal(v, a[1]) for v in as_list(_two(a, "contains")[0])),
    "lower": lambda a: as_string(_one(a, "lower")).lower(),
    "upper": lambda a: as_string(_one(a, "upper")).upper(),
    "coalesce": _coalesce,
    "compact": lambda a: [v for v in as_list(_one(a, "compact")) if known(v) not in (None, "")],
    "join": lambda a: as_string(_two(a, "join")[0]).join(as_string(v) for v in as_list(a[1])),
    "split": lambda a: as_string(a[1]).split(as_string(_two(a, "split")[0]) or _fail("split: empty separator")),
    "element": lambda a: _element(a),
    "zipmap": lambda a: dict(zip((as_key(k) for k in as_list(a[0])), as_list(a[1]), strict=True))
    if len(a) == 2 and len(as_list(a[0])) == len(as_list(a[1])) else _fail("zipmap takes two lists of one length"),
}


def _two(args: list[Any], name: str) -> list[Any]:
    if len(args) != 2:
        raise ExprError(f"{name} takes 2 arguments")
    return args


def _fail(message: str) -> Any:
    raise ExprError(message)


def _distinct(value: Any) -> list[Any]:
    seen: dict[str, Any] = {}
    for item in as_list(value):
        seen.setdefault(json.dumps(known(item), sort_keys=True, default=str), item)
    return list(seen.values())


def _element(args: list[Any]) -> Any:
    if len(args) != 2:
        raise ExprError("element takes 2 arguments")
    items = as_list(args[0])
    index = as_number(args[1])
    if not items or not isinstance(index, int):
        raise ExprError("element of an empty list")
    return items[index % len(items)]


def call(name: str, args: list[Any]) -> Any:
    function = _FUNCTIONS.get(name)
    if function is None:
        raise Unknown(f"function {name} is not evaluated")
    if len(args) > 256:
        raise ExprError("too many arguments")
    try:
        result = function(args)
    except IndexError:
        raise ExprError(f"{name}: wrong number of arguments") from None
    if isinstance(result, (list, tuple, dict)) and len(result) > MAX_ITEMS:
        raise ExprError(f"more than {MAX_ITEMS} elements")
    if isinstance(result, str) and len(result) > MAX_STRING:
        raise ExprError(f"string longer than {MAX_STRING} characters")
    return result
