"""Leaked credentials: the secret scanner's public API.

Other capabilities (image layers, bucket objects) and the secrets sources (files, git history,
archives, environment, stdin) call only these functions:

- `scan_bytes(data, origin)` / `scan_text(text, origin)`: one blob (a file, a layer member, an
  object, an environment variable dump). Bigger than a chunk is fine: it is streamed internally.
- `scan_stream(fileobj, origin)`: a file object of any size (a 2 GB single-line file included);
  reads `chunk_size` bytes at a time, memory stays near chunk size + overlap, yields findings as
  soon as they are certain.
- `StreamScanner(compile_rules(), origin)`: the push form for sources that already receive pieces
  (`feed(piece)` ... `close()`, each returning `SecretMatch`es; `to_finding` turns them into Findings).
- `load_secret_rules(extra_dirs)` and `compile_rules(rules)`: compile once, pass the result as
  `rules=` to every call (a list of Rule objects works too; it is cached by identity).

Every finding has target `{kind: target_kind, name: origin}`, location `{line, column, [end_line],
**location passed in}` and evidence `{masked, length, entropy, ...rule context}`; its `key` is the
secret's HMAC under the installation key (`keys.py`), so the raw secret is never stored or shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

from cloudward.core.finding import Finding
from cloudward.core.rules import Rule
from cloudward.secrets.engine import (
    CHUNK_SIZE,
    CompiledRules,
    Secret,
    SecretMatch,
    StreamScanner,
    compile_rules,
    load_secret_rules,
    scan_buffer,
    validate_rule,
)
from cloudward.secrets.findings import to_finding
from cloudward.secrets.keys import installation_key

__all__ = [
    "CHUNK_SIZE",
    "CompiledRules",
    "Secret",
    "SecretMatch",
    "StreamScanner",
    "compile_rules",
    "installation_key",
    "load_secret_rules",
    "scan_bytes",
    "scan_stream",
    "scan_text",
    "to_finding",
    "validate_rule",
]

Rules = CompiledRules | Iterable[Rule] | None


def _compiled(rules: Rules) -> CompiledRules:
    return rules if isinstance(rules, CompiledRules) else compile_rules(rules)


def scan_bytes(
    data: bytes,
    origin: str,
    rules: Rules = None,
    location: Mapping[str, Any] | None = None,
    *,
    target_kind: str = "path",
    hmac_key: bytes | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> list[Finding]:
    """Findings for the secrets in `data` (any encoding; invalid UTF-8 is fine).

    `origin` names the thing scanned (a path, `image@digest:/etc/x`, `s3://bucket/key`); it is the
    finding's target name and drives the path filters (lock files, minified, test fixtures, rule
    path allowlists). `hmac_key` defaults to the installation key."""
    compiled = _compiled(rules)
    matches = scan_buffer(compiled, bytes(data), origin, chunk_size=chunk_size)
    if not matches:
        return []
    key = installation_key() if hmac_key is None else hmac_key
    return [to_finding(m, origin, key, target_kind=target_kind, location=location) for m in matches]


def scan_text(
    text: str,
    origin: str,
    rules: Rules = None,
    location: Mapping[str, Any] | None = None,
    *,
    target_kind: str = "path",
    hmac_key: bytes | None = None,
) -> list[Finding]:
    """`scan_bytes` for text already decoded (UTF-8 encoded back; surrogate escapes kept)."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return scan_bytes(data, origin, rules, location, target_kind=target_kind, hmac_key=hmac_key)


def scan_stream(
    fileobj: BinaryIO,
    origin: str,
    rules: Rules = None,
    location: Mapping[str, Any] | None = None,
    *,
    target_kind: str = "path",
    hmac_key: bytes | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[Finding]:
    """Findings from a binary file object read `chunk_size` bytes at a time, yielded as they are
    certain (see `StreamScanner` for the overlap contract)."""
    scanner = StreamScanner(_compiled(rules), origin, chunk_size=chunk_size)
    key: bytes | None = hmac_key

    def convert(matches: list[SecretMatch]) -> Iterator[Finding]:
        nonlocal key
        for match in matches:
            if key is None:
                key = installation_key()
            yield to_finding(match, origin, key, target_kind=target_kind, location=location)

    while True:
        piece = fileobj.read(chunk_size)
        if not piece:
            break
        yield from convert(scanner.feed(piece))
    yield from convert(scanner.close())
