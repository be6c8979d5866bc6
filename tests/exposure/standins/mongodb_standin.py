"""A MongoDB stand-in that replays the documented wire-protocol replies.

MongoDB cannot be installed on this machine (it is in neither Debian's archive nor PyPI), so the
MongoDB probe is tested against this small server instead. It speaks the real framing — the
16-byte header, OP_MSG (2013) with a kind-0 body section, legacy OP_QUERY (2004) answered with
OP_REPLY (1), BSON via pymongo's `bson` — and answers `hello`, `isMaster`, `buildInfo` and
`listDatabases` with the documents MongoDB's manual shows for them. Modes:

- "open":       MongoDB 7.0 without access control: listDatabases is answered.
- "auth":       MongoDB 7.0 with `security.authorization: enabled`: listDatabases fails with
                code 13 (Unauthorized), as mongod answers an unauthenticated client.
- "no_hello":   MongoDB 4.2 (before `hello`): hello fails with code 59 (CommandNotFound).
- "legacy":     MongoDB 3.4 (before OP_MSG): an OP_MSG closes the connection; OP_QUERY works.
- "garbage", "silent", "huge_length", "wrong_response_to": hostile or broken servers.

It runs its own event loop in a thread so synchronous tests can use it with `with`, and records
every command name it received so tests can prove the probe sent only read-only commands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Literal

import bson

Mode = Literal["open", "auth", "no_hello", "legacy", "garbage", "silent", "huge_length",
               "wrong_response_to"]
HEADER = struct.Struct("<iiii")
OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013


def _hello(mode: Mode, legacy_name: bool) -> dict[str, Any]:
    wire = {"legacy": 5, "no_hello": 8}.get(mode, 21)
    primary_key = "ismaster" if legacy_name else "isWritablePrimary"
    doc: dict[str, Any] = {
        primary_key: True,
        "topologyVersion": {"processId": bson.ObjectId(), "counter": 0},
        "maxBsonObjectSize": 16777216,
        "maxMessageSizeBytes": 48000000,
        "maxWriteBatchSize": 100000,
        "localTime": dt.datetime.now(dt.UTC),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": 7,
        "minWireVersion": 0,
        "maxWireVersion": wire,
        "readOnly": False,
        "ok": 1.0,
    }
    return doc


def _build_info(mode: Mode) -> dict[str, Any]:
    version = {"legacy": "3.4.24", "no_hello": "4.2.25"}.get(mode, "7.0.14")
    parts = [int(p) for p in version.split(".")] + [0]
    return {"version": version, "gitVersion": "0" * 40, "modules": [], "allocator": "tcmalloc",
            "javascriptEngine": "mozjs", "sysInfo": "deprecated", "versionArray": parts, "bits": 64,
            "debug": False, "maxBsonObjectSize": 16777216, "storageEngines": ["wiredTiger"], "ok": 1.0}


def _list_databases(mode: Mode) -> dict[str, Any]:
    if mode == "auth":
        return {"ok": 0.0, "errmsg": "command listDatabases requires authentication", "code": 13,
                "codeName": "Unauthorized"}
    names = ["admin", "config", "local", "shop"]
    return {"databases": [{"name": n} for n in names], "ok": 1.0}


def _error(name: str, code: int, code_name: str) -> dict[str, Any]:
    return {"ok": 0.0, "errmsg": f"no such command: '{name}'", "code": code, "codeName": code_name}


class MongoStandin:
    def __init__(self, mode: Mode = "open", host: str = "127.0.0.1") -> None:
        self.mode = mode
        self.host = host
        self.port = 0
        self.commands: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> MongoStandin:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0, family=socket.AF_INET)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ protocol
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                length, request_id, _, op_code = HEADER.unpack(header)
                body = await reader.readexactly(length - HEADER.size)
                reply = self._answer(op_code, body)
                if reply is None:
                    break
                writer.write(self._frame(op_code, request_id, reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, op_code: int, body: bytes) -> dict[str, Any] | bytes | None:
        if self.mode == "silent":
            return b""
        if self.mode == "garbage":
            return b"\x00\x01 definitely not mongodb \xff" * 8
        if op_code == OP_MSG:
            if self.mode == "legacy":
                return None  # MongoDB < 3.6 drops connections that send an unknown opCode
            doc = bson.decode(body[5:])
        elif op_code == OP_QUERY:
            end = body.index(b"\x00", 4)
            doc = bson.decode(body[end + 1 + 8:])
        else:
            return None
        name = next(iter(doc))
        self.commands.append(name)
        return self._command(name, legacy=op_code == OP_QUERY)

    def _command(self, name: str, legacy: bool) -> dict[str, Any]:
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "hello": lambda: (_error("hello", 59, "CommandNotFound") if self.mode in ("no_hello", "legacy")
                              else _hello(self.mode, legacy_name=False)),
            "isMaster": lambda: _hello(self.mode, legacy_name=True),
            "ismaster": lambda: _hello(self.mode, legacy_name=True),
            "buildInfo": lambda: _build_info(self.mode),
            "buildinfo": lambda: _build_info(self.mode),
            "listDatabases": lambda: _list_databases(self.mode),
        }
        handler = handlers.get(name)
        return handler() if handler else _error(name, 59, "CommandNotFound")

    def _frame(self, op_code: int, request_id: int, reply: dict[str, Any] | bytes) -> bytes:
        if isinstance(reply, bytes):
            return reply
        doc = bson.encode(reply)
        response_to = request_id + 1 if self.mode == "wrong_response_to" else request_id
        if op_code == OP_QUERY:
            body = struct.pack("<iqii", 8, 0, 0, 1) + doc  # AwaitCapable, cursor 0, from 0, one doc
            return HEADER.pack(HEADER.size + len(body), 1, response_to, OP_REPLY) + body
        body = struct.pack("<I", 0) + b"\x00" + doc
        length = HEADER.size + len(body)
        if self.mode == "huge_length":
            length = 200 * 1024 * 1024
        return HEADER.pack(length, 1, response_to, OP_MSG) + body
