"""Stratum, the miners' JSON-RPC over TCP: one JSON object per line.

Both dialects are read: the Bitcoin-style `mining.subscribe` / `mining.authorize` /
`mining.submit`, and the Monero (XMRig) style `login` / `getjob` / `submit` / `keepalived`. A line
that is not JSON still becomes a message (its raw bytes), only without buffers.
"""

from __future__ import annotations

import json

from cloudward.network.protocols.base import LineParser, Sink, strip_eol

MINING_METHODS = frozenset({
    "login", "getjob", "submit", "keepalived", "job",  # XMRig / Monero pools
})
_MAX_JSON = 64 * 1024


def probe(data: bytes) -> int:
    """2: a JSON-RPC line naming a mining method (or a pool's reply); 1: undecided; 0: not stratum."""
    text = data.lstrip()
    if not text:
        return 1
    if text[:1] != b"{":
        return 0
    nl = text.find(b"\n")
    if nl < 0:
        return 1 if len(text) < 8192 else 0
    document = _load(strip_eol(text[:nl + 1]))
    if document is None:
        return 0
    method = document.get("method")
    if isinstance(method, str) and (method.startswith("mining.") or method in MINING_METHODS):
        return 2
    # a pool's reply to a subscribe/login: id plus result/error, JSON-RPC style
    if "id" in document and ("result" in document or "error" in document):
        result = document.get("result")
        if isinstance(result, dict) and ("job" in result or "status" in result):
            return 2
        if isinstance(result, list) and result and isinstance(result[0], list):  # subscribe reply
            return 2
    return 0


def _load(line: bytes) -> dict[str, object] | None:
    if len(line) > _MAX_JSON or not line.startswith(b"{"):
        return None
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _text(value: object) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return None


class StratumParser(LineParser):
    proto = "stratum"

    def line(self, raw: bytes, sink: Sink, truncated: bool) -> None:
        text = strip_eol(raw).strip()
        if not text:
            sink.passthrough(raw)
            return
        buffers: dict[str, bytes] = {}
        extra: dict[str, object] = {}
        document = None if truncated else _load(text)
        if document is not None:
            method = _text(document.get("method"))
            if method is not None:
                buffers["stratum.method"] = method
            params = document.get("params")
            user = agent = None
            if isinstance(params, dict):  # login {"login": wallet, "pass": ..., "agent": "XMRig/6.x"}
                user, agent = _text(params.get("login")), _text(params.get("agent"))
            elif isinstance(params, list) and params:
                if method == b"mining.authorize":
                    user = _text(params[0])
                elif method == b"mining.subscribe":
                    agent = _text(params[0])
            if user is not None:
                buffers["stratum.user"] = user
            if agent is not None:
                buffers["stratum.agent"] = agent
            if "id" in document:
                extra["stratum.id"] = document["id"]
        if truncated:
            extra["truncated"] = True
        sink.message(raw, buffers, extra)
