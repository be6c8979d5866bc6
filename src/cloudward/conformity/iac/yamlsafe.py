"""YAML with line numbers and limits, built from the parser's event stream without recursion.

PyYAML's constructors expand aliases (a "billion laughs" document is a few hundred bytes that
becomes gigabytes once walked) and recurse once per nesting level. Here the C parser (the pure
Python one where libyaml is missing) only emits events; this module builds the values itself
with an explicit stack, so:

* every mapping and sequence remembers the line it starts on (`Mapping.line`, `Sequence.line`);
* an alias is the already-built value, and the *expanded* size of each anchor is counted, so a
  document whose aliases would expand past `max_nodes` is refused before anything walks it;
* nesting deeper than `max_depth` is refused, never a RecursionError;
* `<<` merge keys (common in compose files) are applied.
Only the YAML 1.1 core types the safe loader knows are built; tags are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

__all__ = ["Mapping", "Sequence", "YamlLimitError", "load_documents"]

MAX_NODES = 500_000
MAX_DEPTH = 200

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER: Any = yaml.resolver.Resolver()


class YamlLimitError(ValueError):
    """The document is too deep, or its aliases expand too far."""


class Mapping(dict[Any, Any]):
    line: int = 0


class Sequence(list[Any]):
    line: int = 0


class _Scalars(yaml.constructor.SafeConstructor):
    def scalar(self, tag: str, value: str) -> Any:
        node = yaml.nodes.ScalarNode(tag, value)
        try:
            return self.construct_object(node, deep=False)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            return value


_SCALARS = _Scalars()
_SCALAR_TAGS = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                "tag:yaml.org,2002:float", "tag:yaml.org,2002:str"}


def _line(event: yaml.Event) -> int:
    """1-based line of an event (0 when the parser gave no mark)."""
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


class _Merge:
    """A plain `<<` key (YAML 1.1 merge); a quoted '<<' is an ordinary key."""


MERGE = _Merge()


def _scalar(event: yaml.ScalarEvent) -> Any:
    plain = bool(event.implicit and event.implicit[0])
    if not plain or event.style:
        return event.value
    if event.value == "<<":
        return MERGE
    tag = _RESOLVER.resolve(yaml.nodes.ScalarNode, event.value, (True, False))
    if tag not in _SCALAR_TAGS or tag == "tag:yaml.org,2002:str":
        return event.value
    return _SCALARS.scalar(tag, event.value)


class _Frame:
    __slots__ = ("anchor", "key", "pending_key", "value", "weight")

    def __init__(self, value: Mapping | Sequence, anchor: str | None) -> None:
        self.value = value
        self.anchor = anchor
        self.weight = 1
        self.pending_key: Any = _NO_KEY
        self.key = False


_NO_KEY = object()


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        return repr(key)[:200]
    return key


def load_documents(text: str, *, max_nodes: int = MAX_NODES,
                   max_depth: int = MAX_DEPTH) -> Iterator[tuple[int, Any]]:
    """(start line, value) of each document; raises yaml.YAMLError or YamlLimitError."""
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    total = 0
    doc_line = 0
    root: Any = None
    have_root = False

    def add(value: Any, weight: int) -> None:
        nonlocal root, have_root, total
        total += weight
        if value is MERGE and not (stack and isinstance(stack[-1].value, Mapping)
                                   and stack[-1].pending_key is _NO_KEY):
            value = "<<"  # only a mapping key merges
        if total > max_nodes:
            raise YamlLimitError(f"document expands to more than {max_nodes:,} nodes (alias bomb or huge file)")
        if not stack:
            root, have_root = value, True
            return
        frame = stack[-1]
        frame.weight += weight
        if isinstance(frame.value, Sequence):
            frame.value.append(value)
            return
        if frame.pending_key is _NO_KEY:
            frame.pending_key = value
            return
        key, frame.pending_key = frame.pending_key, _NO_KEY
        if key is MERGE:
            sources = value if isinstance(value, list) else [value]
            for source in sources:
                if isinstance(source, dict):
                    for k, v in source.items():
                        frame.value.setdefault(k, v)
            return
        frame.value[_hashable(key)] = value

    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.DocumentStartEvent):
            anchors.clear()
            total, root, have_root = 0, None, False
            doc_line = _line(event)
        elif isinstance(event, yaml.DocumentEndEvent):
            yield doc_line, root if have_root else None
        elif isinstance(event, yaml.ScalarEvent):
            value = _scalar(event)
            if event.anchor:
                anchors[event.anchor] = ("<<" if value is MERGE else value, 1)
            add(value, 1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise yaml.YAMLError(f"line {_line(event)}: unknown alias {event.anchor!r}")
            value, weight = anchors[event.anchor]
            add(value, weight)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= max_depth:
                raise YamlLimitError(f"line {_line(event)}: nested deeper than {max_depth} levels")
            container: Mapping | Sequence = Mapping() if isinstance(event, yaml.MappingStartEvent) else Sequence()
            container.line = _line(event)
            stack.append(_Frame(container, event.anchor))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            frame = stack.pop()
            if frame.anchor:
                anchors[frame.anchor] = (frame.value, frame.weight)
            total -= frame.weight - 1  # the children were counted as they came; count the whole once
            add(frame.value, frame.weight)
