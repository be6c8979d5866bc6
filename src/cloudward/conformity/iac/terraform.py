"""Terraform configurations read from HCL (python-hcl2's Lark grammar) and from `terraform show -json`.

A configuration is a directory. Its variables take their values the way Terraform gives them
(defaults < terraform.tfvars < terraform.tfvars.json < *.auto.tfvars in lexical order < --var-file
< --var), `locals` follow, and expressions over them are evaluated by `tf_expr` (conditionals,
`toset`, `for` expressions, arithmetic ...); references to other resources stay unknown. A resource
or module call with `count` / `for_each` becomes its instances (`aws_instance.web[0]`,
`aws_security_group.sg["a"]`) when the expression resolves, and is judged once as written when it
does not. A `module` block whose source is a relative path is followed; a registry or git module
is read from where `terraform init` put it (`.terraform/modules/modules.json`), never fetched.
Modules are judged with the call's arguments as their variables and reported at their own file
and line, with the call's place in `location.module`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cloudward.conformity.iac import tf_expr
from cloudward.conformity.iac.model import ParseError
from cloudward.conformity.iac.tf_facts import TfResource

MAX_MODULE_DEPTH = 8
MAX_INSTANCES = 1000  # per block: a larger count / for_each is judged once, as written, with a warning
MAX_RESOURCES = 20_000  # per root configuration: past it, further counted blocks are judged once each
_REF = re.compile(r"\$\{(var|local)\.([A-Za-z_][A-Za-z0-9_-]*)\}")
_SIMPLE_INTERPOLATION = re.compile(r"\$\{([^{}\"]*)\}")
_INDEX = re.compile(r"\[([^\[\]\"]+)\]")
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
    def __init__(self, variables: Mapping[str, Any], locals_: Mapping[str, Any],
                 instance: Mapping[str, Any] | None = None) -> None:
        self.variables = dict(variables)
        self.locals = dict(locals_)
        self.instance = dict(instance or {})  # {"count": {"index": 0}} or {"each": {"key": .., "value": ..}}

    def for_instance(self, tables: Mapping[str, Any]) -> Scope:
        scope = Scope({}, {}, tables)
        scope.variables, scope.locals = self.variables, self.locals  # shared, never copied per instance
        return scope

    def lookup(self, kind: str, name: str) -> Any:
        table = self.variables if kind == "var" else self.locals
        return table.get(name, _UNKNOWN)

    def _tables(self, name: str) -> Any:
        if name == "var":
            return self.variables
        if name == "local":
            return self.locals
        if name in self.instance:
            return self.instance[name]
        raise tf_expr.Unknown(f"{name}.* is known only at apply time")

    def value(self, raw: Any) -> Any:
        """`raw` evaluated completely (raises tf_expr.Unknown / ExprError when it cannot be)."""
        if isinstance(raw, str) and "${" in raw:
            return tf_expr.evaluate_template(raw, self._tables)
        return self.resolve(raw)

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
        try:
            return _plain(tf_expr.evaluate_template(value, self._tables))
        except (tf_expr.Unknown, tf_expr.ExprError):
            pass

        def one(match: re.Match[str]) -> str:
            try:
                found = tf_expr.evaluate(match.group(1), self._tables)
            except (tf_expr.Unknown, tf_expr.ExprError):
                # `aws_s3_bucket.b[each.key].id`: the reference stays, its known index is filled in
                return _INDEX.sub(index, match.group(0)) if self.instance else match.group(0)
            if isinstance(found, (str, int, float)) and not isinstance(found, bool) and "${" not in str(found):
                return str(found)
            return match.group(0)

        def index(match: re.Match[str]) -> str:
            try:
                found = tf_expr.evaluate(match.group(1), self._tables)
            except (tf_expr.Unknown, tf_expr.ExprError):
                return match.group(0)
            if isinstance(found, str) or (isinstance(found, int) and not isinstance(found, bool)):
                return f"[{json.dumps(found)}]"
            return match.group(0)

        return _SIMPLE_INTERPOLATION.sub(one, value)


_UNKNOWN = object()


def _plain(value: Any, depth: int = 0) -> Any:
    """Sets (tuples) as lists, the shape python-hcl2 gives every collection."""
    if depth > tf_expr.MAX_DEPTH:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    return value


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


@dataclass
class _Expansion:
    modules: Mapping[str, TfModule]
    manifest: Mapping[str, str]  # module key ("vpc", "vpc.subnets") -> directory, from modules.json
    warnings: list[str]
    noted: set[str] = field(default_factory=set)
    produced: int = 0  # resources yielded so far

    def warn(self, message: str) -> None:
        if message not in self.noted:
            self.noted.add(message)
            self.warnings.append(message)

    def within_budget(self, expanded: list[tuple[str, Mapping[str, Any]]] | None,
                      where: str) -> list[tuple[str, Mapping[str, Any]]] | None:
        """Nested counted modules multiply: past MAX_RESOURCES, blocks are judged once as written."""
        if expanded is not None and len(expanded) > 1 and self.produced + len(expanded) > MAX_RESOURCES:
            self.warn(f"{where}: more than {MAX_RESOURCES:,} resources in this configuration: "
                      "judged once as written")
            return None
        return expanded


def expand(modules: Mapping[str, TfModule], directory: str, inputs: Mapping[str, Any] | None = None,
           *, manifest: Mapping[str, str] | None = None, warnings: list[str] | None = None) -> Iterator[TfResource]:
    """Every resource and data source (each instance of a counted one) of the root module in
    `directory` and of the modules it calls. `warnings` collects "path:line: message" notes."""
    state = _Expansion(modules, manifest or {}, warnings if warnings is not None else [])
    yield from _expand(state, directory, inputs or {}, "", "", "", (), 0)


def instances(body: Mapping[str, Any], scope: Scope, where: str,
              warn: Any = None) -> list[tuple[str, Mapping[str, Any]]] | None:
    """[(address suffix, instance tables)] of a block with `count` or `for_each`: empty when
    there are none (count = 0); None when the block is to be judged once as written (no meta
    argument, an expression that does not resolve, a value Terraform would refuse, too many)."""
    has_count, has_each = "count" in body, "for_each" in body
    if has_count == has_each:  # neither, or both (which Terraform refuses)
        return None
    raw = body["count" if has_count else "for_each"]
    try:
        value = scope.value(raw)
    except (tf_expr.Unknown, tf_expr.ExprError):
        return None
    if has_count:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, (int, float)) or value < 0 or value != int(value):
            return None
        total = int(value)
        if total > MAX_INSTANCES:
            if warn is not None:
                warn(f"{where}: count is {total:,}, more than {MAX_INSTANCES:,} instances: judged once as written")
            return None
        return [(f"[{i}]", {"count": {"index": i}}) for i in range(total)]
    pairs: list[tuple[str, Any]]
    if isinstance(value, dict):
        pairs = sorted(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) and "${" not in v for v in value):
        pairs = [(v, v) for v in sorted(set(value))]  # a set of strings (a list variable typed as a set)
    else:
        return None
    if len(pairs) > MAX_INSTANCES:
        if warn is not None:
            warn(f"{where}: for_each has {len(pairs):,} elements, more than {MAX_INSTANCES:,}: judged once as written")
        return None
    return [(f"[{json.dumps(key)}]", {"each": {"key": key, "value": item}}) for key, item in pairs]


def _expand(state: _Expansion, directory: str, inputs: Mapping[str, Any], prefix: str, key: str, call: str,
            call_sites: tuple[tuple[str, int], ...], depth: int) -> Iterator[TfResource]:
    module = state.modules.get(directory)
    if module is None:
        return
    variables = _variables(module, inputs)
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
                    block_lines = {f"{n}[{i}]": v for (n, i), v in nested.items()}
                    where = f"{file.path}:{line}: {address}"
                    expanded = state.within_budget(instances(body, scope, where, state.warn), where)
                    for suffix, tables in expanded if expanded is not None else [("", {})]:
                        state.produced += 1
                        here = scope.for_instance(tables) if tables else scope
                        yield TfResource(type=rtype, name=name, address=address + suffix, attrs=here.resolve(body),
                                         path=file.path, line=line, mode=mode, module=call,
                                         skip_at=((file.path, line), *call_sites), block_lines=block_lines)
        for name, body in _items(file.data, "module"):
            if not isinstance(body, dict):
                continue
            line = file.lines.get(("module", name), 1)
            child_key = f"{key}.{name}" if key else name
            target = module_source(directory, body.get("source"))
            if target is None or target not in state.modules:
                target = state.manifest.get(child_key)
                if target is None or target not in state.modules:
                    source = str(body.get("source", ""))[:200]
                    if not source.startswith(("./", "../")):  # a local module outside the scan stays silent
                        state.warn(f"{file.path}:{line}: {prefix}module.{name} ({source}): not resolved "
                                   "(run terraform init): its resources are not judged")
                    continue
            if depth >= MAX_MODULE_DEPTH:
                state.warn(f"{file.path}:{line}: module.{name}: modules nested deeper than "
                           f"{MAX_MODULE_DEPTH}: not followed")
                continue
            where = f"{file.path}:{line}: {prefix}module.{name}"
            expanded = state.within_budget(instances(body, scope, where, state.warn), where)
            for suffix, tables in expanded if expanded is not None else [("", {})]:
                here = scope.for_instance(tables) if tables else scope
                args = {k: here.resolve(v) for k, v in body.items() if k not in _META_ARGS}
                call_name = f"{prefix}module.{name}{suffix}"
                where = f"{file.path}:{line} ({call_name})"
                yield from _expand(state, target, args, f"{call_name}.", child_key, where,
                                   (*call_sites, (file.path, line)), depth + 1)


# --- variables files and modules.json ----------------------------------------------------------------

def is_auto_tfvars(name: str) -> bool:
    """Files Terraform loads by itself from a root module's directory."""
    return name in ("terraform.tfvars", "terraform.tfvars.json") or name.endswith((".auto.tfvars",
                                                                                  ".auto.tfvars.json"))


def tfvars_order(names: list[str]) -> list[str]:
    """terraform.tfvars, terraform.tfvars.json, then *.auto.tfvars(.json) in lexical order."""
    fixed = [n for n in ("terraform.tfvars", "terraform.tfvars.json") if n in names]
    return fixed + sorted(n for n in names if n not in fixed)


def parse_tfvars(text: str, path: str) -> dict[str, Any]:
    """Variable values from a `.tfvars` (HCL attributes) or `.tfvars.json` (an object) file."""
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"not a valid variables file: not JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict):
            raise ParseError("not a valid variables file: JSON that is not an object")
        return data
    parsed = parse_hcl(text, path)
    blocks = sorted({k[0] for k in parsed.lines})
    if blocks:
        raise ParseError(f"not a valid variables file: blocks are not allowed ({', '.join(blocks)[:100]})")
    return dict(parsed.data)


def cli_value(text: str) -> Any:
    """A `--var NAME=VALUE` value: a list or object when it reads as an HCL literal, else the string
    (Terraform converts strings to numbers and bools where a variable's type asks for them)."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return tf_expr.evaluate(stripped, tf_expr.lookup_in({}))
        except (tf_expr.Unknown, tf_expr.ExprError):
            return text
    return text


def read_manifest(text: str, directory: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """`.terraform/modules/modules.json` of the root module in `directory`: module key ->
    (scanned-root-relative directory, source), and the entries refused, each with its reason
    (a directory outside the scanned root, an absolute one, a malformed entry)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not valid JSON: {str(exc)[:200]}") from None
    entries = data.get("Modules") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ParseError("no Modules list: not a modules.json written by terraform init")
    found: dict[str, tuple[str, str]] = {}
    refused: list[str] = []
    for entry in entries[:10_000]:
        if not isinstance(entry, dict):
            refused.append("an entry that is not an object")
            continue
        key, where, source = entry.get("Key"), entry.get("Dir"), entry.get("Source", "")
        if not isinstance(key, str) or not isinstance(where, str) or not key:
            if key != "":
                refused.append(f"entry {str(key)[:80]!r}: no Key or Dir")
            continue
        target = _inside(directory, where)
        if target is None:
            refused.append(f"module {key[:80]}: Dir {where[:200]!r} leaves the scanned root: not read")
            continue
        found[key] = (target, str(source)[:300])
    return found, refused


def _inside(directory: str, relative: str) -> str | None:
    """`relative` joined to `directory` as a scanned-root-relative path, None when it escapes."""
    if not relative or relative.startswith(("/", "\\")) or "\x00" in relative or re.match(r"^[A-Za-z]:", relative):
        return None
    parts: list[str] = [] if directory in ("", ".") else directory.split("/")
    for part in relative.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."


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
