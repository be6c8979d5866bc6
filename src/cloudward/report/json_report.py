"""The `cloudward/v1` JSON document: the public contract scripts and CI parse.

The shape belongs to `ScanResult.contract()`; this writer only orders findings and errors (so two
reports of one scan are identical) and serialises. It adds nothing: evidence reaches it already
redacted, and adding fields here would fork the contract.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from cloudward.core.scan import ScanResult
from cloudward.report._common import ordered, tool_version


def build_json(result: ScanResult) -> dict[str, Any]:
    return ordered(result).contract(tool_version())


def render_json(result: ScanResult) -> str:
    # ASCII-only output: hostile evidence may hold lone surrogates or exotic characters, and
    # `\uXXXX` escapes survive any stream encoding and any downstream parser.
    return json.dumps(build_json(result), indent=2, ensure_ascii=True, default=str) + "\n"


def write_json(result: ScanResult, stream: TextIO) -> None:
    stream.write(render_json(result))
