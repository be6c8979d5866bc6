"""Terraform configurations read from HCL (python-hcl2's Lark grammar) and from `terraform show -json`.

A configuration is a directory. Its `variable` defaults and `locals` are substituted where an
attribute is exactly `var.x` / `local.x` (or a string that interpolates only such values), and a
`module` block whose source is a relative path is followed: the module directory's resources are
judged with the call's arguments as their variables and reported at their own file and line, with
the call's place in `location.module`. Registry and git modules are not fetched (offline).
Nothing is evaluated: functions, conditionals and references to other resources stay unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cloudward.conformity.iac.model import ParseError
from cloudward.conformity.iac.tf_facts import TfResource

MAX_MODULE_DEPTH = 8
_REF = re.compile(r"\$\{(var|local)\.([A-Za-z_][A-Za-z0-9_-]*)\}")
_JSONENCODE = re.compile(r"^\$\{jsonencode\((.*)\)\}$", re.DOTALL)
_META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}


@dataclass
class TfFile:
    path: str  # relative to the scanned root, posix
    data: dict[str, Any]
    lines: dict[tuple[str, ...], int]


@dataclass
class TfModule:
    directory: str  # relative posix path of the directory ("." for the root)
    files: list[TfFile] = field(default_factory=list)


# --- parsing ---------------------------------------------------------------------------------------

def _label(node: Any) -> str:
    from lark import Token, Tree

    if isinstance(node, Token):
        return str(node)
    if isinstance(node, Tree):
        return "".join(_label(child) for child in node.children if not (isinstance(child, Token)
                                                                         and child.type == "DBLQUOTE"))
    return ""


def _block_lines(tree: Any) -> dict[tuple[str, ...], int]:
    """(block type, labels...) -> first line for the top-level blocks of a file, and
    (block type, labels..., nested block name, index) -> first line for the blocks directly inside
    them (a security group's `ingress`, an instance's `metadata_options`), so findings about one
    nested block point at it."""
    from lark import Tree

    out: dict[tuple[str, ...], int] = {}
    body = tree.children[0] if tree.children else None
    if not isinstance(body, Tree):
        return out
    for block in body.children:
        labels = _labels(block)
        if not labels or block.meta.empty:
            continue
        out.setdefault(labels, block.meta.line)
        inner = next((c for c in block.children if isinstance(c, Tree) and c.data == "body"), None)
        counts: dict[str, int] = {}
        for nested in inner.children if inner is not None else ():
            name = _labels(nested)
            if len(name) != 1 or nested.meta.empty:
                continue
            index = counts.get(name[0], 0)
            counts[name[0]] = index + 1
            out[(*labels, name[0], str(index))] = nested.meta.line
    return out


def _labels(block: Any) -> tuple[str, ...]:
    from lark import Tree

    if not isinstance(block, Tree) or block.data != "block":
        return ()
    labels: list[str] = []
    for child in block.children:
        if isinstance(child, Tree) and child.data in ("identifier", "string"):
            labels.append(_label(child))
        else:
            break
    return tuple(labels)


def parse_hcl(text: str, path: str) -> TfFile:
    import hcl2
    from hcl2.utils import SerializationOptions

    if "\x00" in text:
        raise ParseError("binary content (NUL bytes): not HCL")
    try:
        tree = hcl2.api.parses_to_tree(text)
        lines = _block_lines(tree)
        options = SerializationOptions(with_comments=False, strip_string_quotes=True, explicit_blocks=False,
                                       preserve_heredocs=False)
        data = hcl2.api.serialize(hcl2.api.transform(tree, discard_comments=True), serialization_options=options)
    except RecursionError:
        raise ParseError("nested too deeply to parse") from None
    except Exception as exc:  # lark raises many exception types; each is "not valid HCL"
        message = str(exc).strip().splitlines()
        raise ParseError(f"not valid HCL: {type(exc).__name__}: {message[0][:300] if message else ''}") from None
    if not isinstance(data, dict):
        raise ParseError("not valid HCL: no top-level body")
    return TfFile(path, data, lines)


def _expression(text: str) -> Any:
    """An HCL expression (e.g. the object inside `jsonencode(...)`) as a value, or None."""
    import hcl2
    from hcl2.utils import SerializationOptions

    try:
        options = SerializationOptions(with_comments=False, strip_string_quotes=True, explicit_blocks=False)
        return hcl2.loads(f"__value = {text}\n", serialization_options=options).get("__value")
    except Exception:  # an expression python-hcl2 cannot re-read stays unknown
        return None


# --- values ------------------------------------------------------------------------------------------

class Scope:
    def __init__(self, variables: Mapping[str, Any], locals_: Mapping[str, Any]) -> None:
        self.variables = dict(variables)
        self.locals = dict(locals_)

    def lookup(self, kind: str, name: str) -> Any:
        table = self.variables if kind == "var" else self.locals
        return table.get(name, _UNKNOWN)

    def resolve(self, value: Any, depth: int = 0) -> Any:
        if depth > 40:
            return value
        if isinstance(value, dict):
            return {k: self.resolve(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, depth + 1) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole:
            found = self.lookup(whole.group(1), whole.group(2))
            return value if found is _UNKNOWN else self.resolve(found, depth + 1)
        encoded = _JSONENCODE.match(value)
        if encoded:
            inner = _expression(encoded.group(1))
            return self.resolve(inner, depth + 1) if isinstance(inner, (dict, list)) else value

        def one(match: re.Match[str]) -> str:
            found = self.lookup(match.group(1), match.group(2))
            if isinstance(found, (str, int, float)) and not isinstance(found, bool) and "${" not in str(found):
                return str(found)
            return match.group(0)

        return _REF.sub(one, value)


_UNKNOWN = object()


def _items(data: Mapping[str, Any], kind: str) -> Iterator[tuple[str, Any]]:
    entries = data.get(kind)
    for entry in entries if isinstance(entries, list) else [entries] if isinstance(entries, dict) else []:
        if isinstance(entry, dict):
            yield from entry.items()


def _variables(module: TfModule, inputs: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for file in module.files:
        for name, body in _items(file.data, "variable"):
            if isinstance(body, dict) and "default" in body:
                values[name] = body["default"]
    values.update(inputs)
    return values


def _locals(module: TfModule, variables: Mapping[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for file in module.files:
        for entry in file.data.get("locals") or []:
            if isinstance(entry, dict):
                raw.update(entry)
    scope = Scope(variables, {})
    for _ in range(4):  # locals may name other locals: a few rounds settle the usual chains
        scope.locals = {k: scope.resolve(v) for k, v in raw.items()}
        raw = scope.locals
    return scope.locals


# --- modules -----------------------------------------------------------------------------------------

def module_source(directory: str, source: Any) -> str | None:
    """The scanned-root-relative directory of a local module source, None for remote ones."""
    if not isinstance(source, str) or not source.startswith(("./", "../")):
        return None
    joined = PurePosixPath(directory) / source
    parts: list[str] = []
    for part in joined.parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None  # outside the scanned root: not followed
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."


def called_directories(modules: Mapping[str, TfModule]) -> set[str]:
    called = set()
    for module in modules.values():
        for file in module.files:
            for _, body in _items(file.data, "module"):
                if isinstance(body, dict):
                    target = module_source(module.directory, body.get("source"))
                    if target is not None and target != module.directory:
                        called.add(target)
    return called


def expand(modules: Mapping[str, TfModule], directory: str, inputs: Mapping[str, Any] | None = None,
           prefix: str = "", call: str = "", call_sites: tuple[tuple[str, int], ...] = (), depth: int = 0,
           warnings: list[str] | None = None) -> Iterator[TfResource]:
    """Every resource and data source of the module in `directory` and the local modules it calls."""
    module = modules.get(directory)
    if module is None:
        return
    variables = _variables(module, inputs or {})
    scope = Scope(variables, _locals(module, variables))
    for file in module.files:
        for mode, kind in (("managed", "resource"), ("data", "data")):
            for rtype, named in _items(file.data, kind):
                if not isinstance(named, dict):
                    continue
                for name, body in named.items():
                    if not isinstance(body, dict):
                        continue
                    line = file.lines.get((kind, rtype, name), 1)
                    address = f"{prefix}{'data.' if mode == 'data' else ''}{rtype}.{name}"
                    nested = {k[3:]: v for k, v in file.lines.items() if len(k) == 5 and k[:3] == (kind, rtype, name)}
                    yield TfResource(type=rtype, name=name, address=address, attrs=scope.resolve(body),
                                     path=file.path, line=line, mode=mode, module=call,
                                     skip_at=((file.path, line), *call_sites),
                                     block_lines={f"{n}[{i}]": v for (n, i), v in nested.items()})
        for name, body in _items(file.data, "module"):
            if not isinstance(body, dict):
                continue
            target = module_source(directory, body.get("source"))
            if target is None or target not in modules:
                continue
            line = file.lines.get(("module", name), 1)
            if depth >= MAX_MODULE_DEPTH:
                if warnings is not None:
                    warnings.append(f"{file.path}:{line}: module.{name}: modules nested deeper than "
                                    f"{MAX_MODULE_DEPTH}: not followed")
                continue
            args = {k: scope.resolve(v) for k, v in body.items() if k not in _META_ARGS}
            where = f"{file.path}:{line} ({prefix}module.{name})"
            yield from expand(modules, target, args, f"{prefix}module.{name}.", where,
                              (*call_sites, (file.path, line)), depth + 1, warnings)


# --- plans -------------------------------------------------------------------------------------------

def is_plan(data: Any) -> bool:
    return isinstance(data, dict) and ("planned_values" in data or "resource_changes" in data)


def plan_resources(text: str, path: str) -> list[TfResource]:
    """Resources of a `terraform show -json` plan: planned values (every module), else the
    `after` side of resource_changes. Each is placed at the line its address appears on."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not valid JSON: {exc}") from None
    if not is_plan(data):
        raise ParseError("JSON without planned_values or resource_changes: not a Terraform plan")
    found: list[tuple[str, str, str, str, Any]] = []  # (address, mode, type, name, values)

    def walk(module: Any, depth: int = 0) -> None:
        if not isinstance(module, dict) or depth > 50:
            return
        for resource in module.get("resources") or []:
            if isinstance(resource, dict):
                found.append((str(resource.get("address", "")), str(resource.get("mode", "managed")),
                              str(resource.get("type", "")), str(resource.get("name", "")),
                              resource.get("values")))
        for child in module.get("child_modules") or []:
            walk(child, depth + 1)

    planned = data.get("planned_values")
    if isinstance(planned, dict):
        walk(planned.get("root_module"))
    if not found:
        for change in data.get("resource_changes") or []:
            if not isinstance(change, dict):
                continue
            after = (change.get("change") or {}).get("after") if isinstance(change.get("change"), dict) else None
            if isinstance(after, dict):
                found.append((str(change.get("address", "")), str(change.get("mode", "managed")),
                              str(change.get("type", "")), str(change.get("name", "")), after))
    lines = _address_lines(text)
    out = []
    for address, mode, rtype, name, values in found:
        if not rtype or not isinstance(values, dict):
            continue
        line = lines.get(address, 1)
        out.append(TfResource(type=rtype, name=name, address=address, attrs=_plan_values(values), path=path,
                              line=line, mode="data" if mode == "data" else "managed", skip_at=((path, line),)))
    return out


def _plan_values(values: dict[str, Any]) -> dict[str, Any]:
    """Plans give policies as JSON strings and absent optionals as null: drop the nulls so the
    provider defaults apply exactly as they do for HCL."""
    return {k: v for k, v in values.items() if v is not None}


def _address_lines(text: str) -> dict[str, int]:
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if '"address"' in line:
            match = re.search(r'"address"\s*:\s*"((?:[^"\\]|\\.)*)"', line)
            if match:
                lines.setdefault(json.loads(f'"{match.group(1)}"'), number)
    return lines


def relative_dir(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return parent if parent else "."


def as_posix(path: Path) -> str:
    return path.as_posix()
