"""A bounded evaluator for the Terraform expressions a scan can know without applying anything.

`count`, `for_each` and attribute values are often small expressions over variables and locals
(`var.enabled ? 1 : 0`, `toset(["a", "b"])`, `each.value.cidr`, `"web-${count.index}"`). This
module parses such text (the body of a `${...}` as python-hcl2 leaves it) with its own scannerless
recursive-descent parser and evaluates it over the values a scope knows. Anything only `apply` knows
(other resources, data sources, `path.*`, unsupported functions) raises `Unknown`; malformed text
raises `ExprError`. Both are ordinary outcomes: callers keep the value as written. Parsing and
evaluation are bounded in length, nesting, steps and result size, so hostile text costs little.
Conversions and built-in functions live in `tf_values`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cloudward.conformity.iac import tf_values as values
from cloudward.conformity.iac.tf_values import MAX_DEPTH, MAX_ITEMS, MAX_STRING, ExprError, Lookup, TfSet, Unknown

__all__ = ["MAX_DEPTH", "ExprError", "Lookup", "TfSet", "Unknown", "evaluate", "evaluate_template", "lookup_in",
           "parse", "parse_template"]

MAX_TEXT = 8192  # characters of one expression
MAX_STEPS = 50_000  # evaluation steps per expression

# --- parsing ---------------------------------------------------------------------------------------

_BINARY = (("||",), ("&&",), ("==", "!="), ("<=", ">=", "<", ">"), ("+", "-"), ("*", "/", "%"))
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT = _IDENT_START | frozenset("0123456789-")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, message: str) -> ExprError:
        return ExprError(f"{message} at character {self.pos + 1}")

    def ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text):
            char = text[pos]
            if char in " \t\r\n":
                pos += 1
            elif text.startswith("#", pos) or text.startswith("//", pos):
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", pos):
                end = text.find("*/", pos + 2)
                pos = len(text) if end < 0 else end + 2
            else:
                break
        self.pos = pos

    def peek(self, token: str) -> bool:
        self.ws()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise self.fail(f"expected {token!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("nested too deeply")

    def expression(self) -> tuple[Any, ...]:
        self.enter()
        condition = self.binary(0)
        if self.take("?"):
            yes = self.expression()
            self.expect(":")
            no = self.expression()
            condition = ("cond", condition, yes, no)
        self.depth -= 1
        return condition

    def binary(self, level: int) -> tuple[Any, ...]:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            self.ws()
            op = next((o for o in _BINARY[level] if self.text.startswith(o, self.pos)), None)
            # `=>` and `==` are not `=`-led comparisons; `<`/`>` never start another operator here
            if op is None or (op in ("<", ">") and self.text.startswith(op + "=", self.pos)):
                return left
            self.pos += len(op)
            left = ("bin", op, left, self.binary(level + 1))

    def unary(self) -> tuple[Any, ...]:
        self.enter()
        if self.take("!"):
            node: tuple[Any, ...] = ("not", self.unary())
        elif self.peek("-") and not self.text.startswith("->", self.pos):
            self.pos += 1
            node = ("neg", self.unary())
        else:
            node = self.postfix(self.primary())
        self.depth -= 1
        return node

    def postfix(self, node: tuple[Any, ...]) -> tuple[Any, ...]:
        while True:
            if self.peek("[*]") or self.peek(".*"):
                raise Unknown("splat expressions are not evaluated")
            if self.peek(".") and not self.peek(".."):
                self.pos += 1
                self.ws()
                if self.pos < len(self.text) and self.text[self.pos].isdigit():
                    node = ("index", node, ("lit", self.index_digits()))
                else:
                    node = ("attr", node, self.identifier())
            elif self.take("["):
                index = self.expression()
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def identifier(self) -> str:
        self.ws()
        start = self.pos
        if start >= len(self.text) or self.text[start] not in _IDENT_START:
            raise self.fail("expected a name")
        end = start + 1
        while end < len(self.text) and self.text[end] in _IDENT:
            end += 1
        self.pos = end
        return self.text[start:end]

    def index_digits(self) -> int:
        """The digits of a legacy `.0` index (`list.0.name`): only digits, so `x.1e3` is not an index 1000."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isdigit():
            self.pos += 1
        if self.pos - start > 18:
            raise Unknown("index too large to evaluate")
        return int(self.text[start:self.pos])

    def number_text(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text) and (text[self.pos].isdigit() or text[self.pos] == "."):
            if text[self.pos] == "." and not (self.pos + 1 < len(text) and text[self.pos + 1].isdigit()):
                break
            self.pos += 1
        if self.pos < len(text) and text[self.pos] in "eE":
            self.pos += 1
            if self.pos < len(text) and text[self.pos] in "+-":
                self.pos += 1
            while self.pos < len(text) and text[self.pos].isdigit():
                self.pos += 1
        return text[start:self.pos]

    def primary(self) -> tuple[Any, ...]:
        self.ws()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end")
        char = self.text[self.pos]
        if char.isdigit():
            raw = self.number_text()
            try:
                value: float = float(raw)
            except ValueError:
                raise self.fail(f"bad number {raw!r}") from None
            if not math.isfinite(value):
                raise self.fail(f"number out of range {raw[:20]!r}")
            return ("lit", int(raw) if raw.isdigit() else value)
        if char == '"':
            self.pos += 1
            return self.template('"')
        if char == "(":
            self.pos += 1
            inner = self.expression()
            self.expect(")")
            return inner
        if char == "[":
            self.pos += 1
            return self.tuple_or_for()
        if char == "{":
            self.pos += 1
            return self.object_or_for()
        if char == "<" and self.text.startswith("<<", self.pos):
            raise Unknown("heredocs inside expressions are not evaluated")
        name = self.identifier()
        if name in ("true", "false"):
            return ("lit", name == "true")
        if name == "null":
            return ("lit", None)
        if self.peek("(") or self.peek("::"):
            if self.take("::"):
                raise Unknown("provider functions are not evaluated")
            self.pos += 1
            args: list[tuple[Any, ...]] = []
            while not self.take(")"):
                if args:
                    self.expect(",")
                    if self.take(")"):
                        break
                if self.take("..."):
                    raise Unknown("expanded arguments are not evaluated")
                args.append(self.expression())
                if len(args) > 256:
                    raise self.fail("too many arguments")
            return ("call", name, tuple(args))
        return ("ref", name)

    def template(self, end: str) -> tuple[Any, ...]:
        """A quoted string's body up to `end` (or the whole text when `end` is empty)."""
        parts: list[Any] = []
        literal: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                if end:
                    raise self.fail("unterminated string")
                break
            char = text[self.pos]
            if end and char == end:
                self.pos += 1
                break
            if char == "\\" and end:
                nxt = text[self.pos + 1:self.pos + 2]
                if nxt in _ESCAPES:
                    literal.append(_ESCAPES[nxt])
                    self.pos += 2
                    continue
                if nxt in ("u", "U"):
                    width = 4 if nxt == "u" else 8
                    digits = text[self.pos + 2:self.pos + 2 + width]
                    try:
                        literal.append(chr(int(digits, 16)))
                    except ValueError:
                        raise self.fail("bad unicode escape") from None
                    self.pos += 2 + width
                    continue
                raise self.fail("bad escape")
            if text.startswith("$${", self.pos) or text.startswith("%%{", self.pos):
                literal.append(text[self.pos + 1:self.pos + 3])
                self.pos += 3
                continue
            if text.startswith("%{", self.pos):
                raise Unknown("template directives are not evaluated")
            if text.startswith("${", self.pos):
                self.pos += 2
                self.take("~")
                if literal:
                    parts.append("".join(literal))
                    literal = []
                self.enter()
                parts.append(self.expression())
                self.depth -= 1
                self.take("~")
                self.expect("}")
                continue
            literal.append(char)
            self.pos += 1
        if literal:
            parts.append("".join(literal))
        return ("template", tuple(parts))

    def for_intro(self) -> tuple[str | None, str, tuple[Any, ...]]:
        first = self.identifier()
        second = self.identifier() if self.take(",") else None
        if self.identifier() != "in":
            raise self.fail("expected 'in'")
        collection = self.expression()
        self.expect(":")
        return (first, second, collection) if second else (None, first, collection)

    def is_for(self) -> bool:
        self.ws()
        text = self.text
        return text.startswith("for", self.pos) and text[self.pos + 3:self.pos + 4] in (" ", "\t", "\n")

    def tuple_or_for(self) -> tuple[Any, ...]:
        self.enter()
        if self.is_for():
            self.pos += 3
            key, value, collection = self.for_intro()
            body = self.expression()
            condition = self.expression() if self.take_word("if") else None
            self.expect("]")
            self.depth -= 1
            return ("for_list", key, value, collection, body, condition)
        items: list[tuple[Any, ...]] = []
        while not self.take("]"):
            if items:
                self.expect(",")
                if self.take("]"):
                    break
            items.append(self.expression())
            if len(items) > MAX_ITEMS:
                raise self.fail("too many elements")
        self.depth -= 1
        return ("tuple", tuple(items))

    def take_word(self, word: str) -> bool:
        self.ws()
        text = self.text
        if text.startswith(word, self.pos) and text[self.pos + len(word):self.pos + len(word) + 1] not in _IDENT:
            self.pos += len(word)
            return True
        return False

    def object_or_for(self) -> tuple[Any, ...]:
        self.enter()
        if self.is_for():
            self.pos += 3
            key, value, collection = self.for_intro()
            key_expr = self.expression()
            self.expect("=>")
            value_expr = self.expression()
            if self.take("..."):
                raise Unknown("grouping for expressions are not evaluated")
            condition = self.expression() if self.take_word("if") else None
            self.expect("}")
            self.depth -= 1
            return ("for_map", key, value, collection, key_expr, value_expr, condition)
        items: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        while not self.take("}"):
            if items:
                self.take(",")
                if self.take("}"):
                    break
            self.ws()
            start = self.pos
            item_key: tuple[Any, ...] | None = None
            if self.pos < len(self.text) and self.text[self.pos] in _IDENT_START:
                name = self.identifier()
                # a bare name is the key itself, unless an expression goes on (`local.k = ...`)
                if self.peek("=") or self.peek(":"):
                    item_key = ("lit", name)
                else:
                    self.pos = start
            if item_key is None:
                item_key = self.expression()
            if not (self.take("=") or self.take(":")):
                raise self.fail("expected '=' in an object")
            items.append((item_key, self.expression()))
            if len(items) > MAX_ITEMS:
                raise self.fail("too many elements")
        self.depth -= 1
        return ("object", tuple(items))


@lru_cache(maxsize=4096)
def parse(text: str) -> tuple[Any, ...]:
    """The syntax tree of an expression (raises ExprError, or Unknown for forms never evaluated)."""
    if len(text) > MAX_TEXT:
        raise ExprError(f"expression longer than {MAX_TEXT} characters")
    parser = _Parser(text)
    try:
        node = parser.expression()
        parser.ws()
    except RecursionError:
        raise ExprError("nested too deeply") from None
    if parser.pos != len(text):
        raise parser.fail("unexpected text")
    return node


@lru_cache(maxsize=4096)
def parse_template(text: str) -> tuple[Any, ...]:
    """A string value as python-hcl2 leaves it (`web-${count.index}`) as a template tree."""
    if len(text) > MAX_TEXT:
        raise ExprError(f"template longer than {MAX_TEXT} characters")
    parser = _Parser(text)
    try:
        return parser.template("")
    except RecursionError:
        raise ExprError("nested too deeply") from None


# --- evaluation ------------------------------------------------------------------------------------

class _Eval:
    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.steps = 0
        self.frames: list[dict[str, Any]] = []

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise ExprError(f"more than {MAX_STEPS} evaluation steps")

    def run(self, node: tuple[Any, ...]) -> Any:
        self.step()
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "template":
            return self.template(node[1])
        if kind == "ref":
            for frame in reversed(self.frames):
                if node[1] in frame:
                    return frame[node[1]]
            return self.lookup(node[1])
        if kind == "attr":
            return values.get_attr(self.run(node[1]), node[2])
        if kind == "index":
            return values.get_index(self.run(node[1]), self.run(node[2]))
        if kind == "cond":
            return self.run(node[2]) if values.as_bool(self.run(node[1])) else self.run(node[3])
        if kind == "not":
            return not values.as_bool(self.run(node[1]))
        if kind == "neg":
            return -values.as_number(self.run(node[1]))
        if kind == "bin":
            return self.binary(node[1], node[2], node[3])
        if kind == "tuple":
            return [self.run(item) for item in node[1]]
        if kind == "object":
            out: dict[str, Any] = {}
            for key, value in node[1]:
                out[values.as_key(self.run(key))] = self.run(value)
            return out
        if kind == "call":
            return values.call(node[1], [self.run(arg) for arg in node[2]])
        if kind in ("for_list", "for_map"):
            return self.for_expr(node)
        raise ExprError(f"unknown node {kind}")

    def template(self, parts: tuple[Any, ...]) -> Any:
        if len(parts) == 1 and isinstance(parts[0], tuple):
            return self.run(parts[0])  # "${x}" alone is x itself, whatever its type
        out: list[str] = []
        for part in parts:
            out.append(part if isinstance(part, str) else values.as_string(self.run(part)))
        joined = "".join(out)
        if len(joined) > MAX_STRING:
            raise ExprError(f"string longer than {MAX_STRING} characters")
        return joined

    def binary(self, op: str, left_node: tuple[Any, ...], right_node: tuple[Any, ...]) -> Any:
        left = self.run(left_node)
        if op == "&&":
            return values.as_bool(left) and values.as_bool(self.run(right_node))
        if op == "||":
            return values.as_bool(left) or values.as_bool(self.run(right_node))
        right = self.run(right_node)
        if op == "==":
            return values.equal(left, right)
        if op == "!=":
            return not values.equal(left, right)
        a, b = values.as_number(left), values.as_number(right)
        if op == "<":
            return a < b
        if op == ">":
            return a > b
        if op == "<=":
            return a <= b
        if op == ">=":
            return a >= b
        if op == "+":
            return values.tidy(a + b)
        if op == "-":
            return values.tidy(a - b)
        if op == "*":
            return values.tidy(a * b)
        if b == 0:
            raise ExprError("division by zero")
        return values.tidy(a / b) if op == "/" else values.tidy(math.fmod(a, b))

    def for_expr(self, node: tuple[Any, ...]) -> Any:
        key_name, value_name, collection = node[1], node[2], self.run(node[3])
        if isinstance(collection, dict):
            pairs: list[tuple[Any, Any]] = sorted(collection.items())
        elif isinstance(collection, (list, tuple)):
            pairs = list(enumerate(collection))
        else:
            raise ExprError("a for expression needs a collection")
        if len(pairs) > MAX_ITEMS:
            raise ExprError(f"more than {MAX_ITEMS} elements")
        items: list[Any] = []
        mapped: dict[str, Any] = {}
        for key, value in pairs:
            frame = {value_name: value}
            if key_name is not None:
                frame[key_name] = key
            self.frames.append(frame)
            try:
                condition = node[-1]
                if condition is not None and not values.as_bool(self.run(condition)):
                    continue
                if node[0] == "for_list":
                    items.append(self.run(node[4]))
                else:
                    made = values.as_key(self.run(node[4]))
                    if made in mapped:
                        raise ExprError(f"duplicate key {made[:40]!r} in a for expression")
                    mapped[made] = self.run(node[5])
            finally:
                self.frames.pop()
        return items if node[0] == "for_list" else mapped


def evaluate(text: str, lookup: Lookup) -> Any:
    """The value of expression `text`; raises Unknown or ExprError."""
    return _run(parse(text), lookup)


def evaluate_template(text: str, lookup: Lookup) -> Any:
    """The value of a string attribute as python-hcl2 leaves it; raises Unknown or ExprError."""
    return _run(parse_template(text), lookup)


def _run(node: tuple[Any, ...], lookup: Lookup) -> Any:
    try:
        return _Eval(lookup).run(node)
    except RecursionError:
        raise ExprError("nested too deeply") from None
    except (TypeError, OverflowError, ValueError) as exc:
        if isinstance(exc, ExprError):
            raise
        raise ExprError(f"cannot evaluate: {exc}") from None


def lookup_in(tables: Mapping[str, Any]) -> Lookup:
    """A lookup over root names (`var`, `local`, `count`, `each`): anything else is unknown."""
    def lookup(name: str) -> Any:
        if name in tables:
            return tables[name]
        raise Unknown(f"{name}.* is known only at apply time")
    return lookup
