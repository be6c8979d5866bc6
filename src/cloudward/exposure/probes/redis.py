"""Redis (and protocol-compatible servers: Valkey, KeyDB, Dragonfly) reachable without a password.

An open Redis was TeamTNT's second door: `CONFIG SET dir /root/.ssh` + `dbfilename
authorized_keys` + `SAVE` writes the attacker's key, `SLAVEOF` a rogue master loads a module. The
probe only *reads*: an inline `PING` tells open (`+PONG`), password-protected (`-NOAUTH`) and
protected mode refusing a remote client (`-DENIED`) apart; on an open server it asks `INFO server`,
`INFO replication` and `CONFIG GET` of a few settings (a renamed or forbidden command simply
leaves its facts out). Every reply is parsed with a byte ceiling and a deadline.

`CONFIG GET dir` and `dbfilename` are read because their values are also evidence of a past
break-in: a Redis whose dump goes to `/root/.ssh/authorized_keys` or a cron directory was
already used that way.

Facts: auth_required (false on +PONG or -NOPERM, true on -NOAUTH), ping_reply, denied and
protected_mode (true on -DENIED), ping_allowed, loading; from INFO: software (redis, valkey,
dragonfly), version (redis_version), valkey_version, mode, os, arch_bits, executable, config_file,
role, connected_slaves, master_host, master_port, master_link_status, info_allowed; from CONFIG
GET: protected_mode, bind, dir, dbfilename, config_get_allowed; probe_errors.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudward.exposure.net import Connection, ProbeError
from cloudward.exposure.probes.base import Observation, ProbeContext

MAX_REPLY_BYTES = 64 * 1024  # INFO server/replication are ~1-2 KiB; anything near this is hostile
MAX_ARRAY_ITEMS = 256
MAX_FACT_CHARS = 256
FIRST_LINE_LIMIT = 4096  # -DENIED, the longest first reply Redis sends, is about 900 bytes
CONFIG_KEYS = ("protected-mode", "bind", "dir", "dbfilename")


class RedisError(str):
    """An error reply (`-ERR ...`), kept apart from simple strings by its type."""


RespValue = str | RedisError | int | bytes | list[Any] | None


class RespReader:
    """Reads RESP2/RESP3 replies from a connection, refusing anything larger than `cap` bytes."""

    def __init__(self, conn: Connection, cap: int = MAX_REPLY_BYTES) -> None:
        self.conn = conn
        self.cap = cap
        self.buf = bytearray()
        self.consumed = 0

    async def _more(self) -> None:
        if self.consumed + len(self.buf) > self.cap:
            raise ProbeError(f"Redis reply larger than {self.cap} bytes")
        chunk = await self.conn.read_some(max_bytes=16 * 1024)
        if not chunk:
            raise ProbeError("connection closed or silent in the middle of a Redis reply")
        self.buf += chunk

    async def line(self, limit: int | None = None) -> bytes:
        """One CRLF-terminated line; `limit` caps its length (the first reply of an unknown
        service should not cost us the whole reply budget)."""
        while (end := self.buf.find(b"\r\n")) < 0:
            if limit is not None and len(self.buf) > limit:
                raise ProbeError(f"no line end within {limit} bytes")
            await self._more()
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        self.consumed += end + 2
        return line

    async def exactly(self, size: int) -> bytes:
        if self.consumed + size > self.cap:
            raise ProbeError(f"Redis reply larger than {self.cap} bytes")
        while len(self.buf) < size + 2:
            await self._more()
        data = bytes(self.buf[:size])
        del self.buf[:size + 2]
        self.consumed += size + 2
        return data

    async def reply(self, depth: int = 0) -> RespValue:
        if depth > 4:
            raise ProbeError("Redis reply nested too deeply")
        line = await self.line()
        if not line:
            raise ProbeError("empty Redis reply line")
        kind, rest = line[:1], line[1:].decode("utf-8", "replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest)
        if kind == b":":
            return _int(rest)
        if kind in (b"$", b"="):  # bulk string, RESP3 verbatim string
            size = _int(rest)
            return None if size < 0 else await self.exactly(size)
        if kind in (b"*", b"~", b">"):  # array, RESP3 set and push
            count = _int(rest)
            if count < 0:
                return None
            if count > MAX_ARRAY_ITEMS:
                raise ProbeError(f"Redis array of {count} items is implausibly long")
            return [await self.reply(depth + 1) for _ in range(count)]
        if kind == b"%":  # RESP3 map: flattened like RESP2's CONFIG GET reply
            count = _int(rest)
            if not 0 <= count <= MAX_ARRAY_ITEMS:
                raise ProbeError(f"Redis map of {count} entries is implausible")
            return [await self.reply(depth + 1) for _ in range(2 * count)]
        if kind == b"_":
            return None
        raise ProbeError(f"not a RESP reply: {line[:32]!r}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProbeError(f"not a RESP integer: {text[:32]!r}") from None


def encode_command(*args: str) -> bytes:
    """A command as a RESP array of bulk strings (what every client library sends)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


def parse_info(text: str) -> dict[str, str]:
    """`INFO` output: `# Section` headers and `key:value` lines."""
    fields: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key] = value[:MAX_FACT_CHARS]
    return fields


def _number(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def info_facts(fields: dict[str, str]) -> dict[str, Any]:
    """The INFO fields a rule or a reader of the finding cares about."""
    facts: dict[str, Any] = {}
    software = "redis"
    if "valkey_version" in fields or fields.get("server_name") == "valkey":
        software = "valkey"
    elif "dragonfly_version" in fields:
        software = "dragonfly"
    facts["software"] = software
    names = {"redis_version": "version", "valkey_version": "valkey_version", "redis_mode": "mode",
             "os": "os", "role": "role", "master_host": "master_host",
             "master_link_status": "master_link_status", "executable": "executable",
             "config_file": "config_file"}
    for key, fact in names.items():
        if fields.get(key):
            facts[fact] = fields[key]
    for key, fact in (("connected_slaves", "connected_slaves"), ("master_port", "master_port"),
                      ("arch_bits", "arch_bits")):
        number = _number(fields.get(key))
        if number is not None:
            facts[fact] = number
    return facts


def _text(value: RespValue) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str) and not isinstance(value, RedisError):
        return value
    return None


async def _ask(conn: Connection, reader: RespReader, *args: str) -> RespValue:
    await conn.send(encode_command(*args))
    return await reader.reply()


async def _read_config(conn: Connection, reader: RespReader, facts: dict[str, Any]) -> None:
    """`CONFIG GET` one key at a time (multi-key GET needs Redis 7); errors just leave facts out."""
    allowed = False
    for key in CONFIG_KEYS:
        reply = await _ask(conn, reader, "CONFIG", "GET", key)
        if not isinstance(reply, list) or len(reply) < 2:
            continue
        allowed = True
        value = _text(reply[1])
        if value is None:
            continue
        value = value[:MAX_FACT_CHARS]
        if key == "protected-mode":
            facts["protected_mode"] = value.lower() == "yes"
        else:
            facts[key] = value
    facts["config_get_allowed"] = allowed


async def _examine(conn: Connection, reader: RespReader, facts: dict[str, Any]) -> None:
    """Read-only look at a server that answered without a password."""
    for section in ("server", "replication"):
        reply = await _ask(conn, reader, "INFO", section)
        text = _text(reply)
        if text is not None:
            facts.update(info_facts(parse_info(text)))
            facts["info_allowed"] = True
    facts.setdefault("info_allowed", False)
    await _read_config(conn, reader, facts)


def _first_reply_facts(first: RespValue) -> dict[str, Any] | None:
    """What the answer to PING says about access, or None when it is not Redis talking."""
    if first == "PONG":
        return {"auth_required": False}
    if not isinstance(first, RedisError):
        return None
    code = first.split(" ", 1)[0]
    if code == "NOAUTH":
        return {"auth_required": True}
    if code == "DENIED":
        # Protected mode: no password set, and we are not a loopback client. Nothing is readable.
        return {"protected_mode": True, "denied": True}
    if code == "NOPERM":
        # The default user needs no password but may not PING: still unauthenticated access.
        return {"auth_required": False, "ping_allowed": False}
    if code == "LOADING":
        return {"loading": True}
    if code == "ERR" and "unknown command" in first.lower():
        return {"ping_renamed": True}  # confirmed (or not) by INFO below
    return None


class RedisProbe:
    name: ClassVar[str] = "redis"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = (6379, 6380, 7000, 16379, 26379)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        try:
            conn = await ctx.connect(tls=tls)
        except ProbeError:
            return None
        try:
            return await self._identify(ctx, conn, tls)
        finally:
            await conn.close()

    async def _identify(self, ctx: ProbeContext, conn: Connection, tls: bool) -> Observation | None:
        reader = RespReader(conn)
        try:
            await conn.send(b"PING\r\n")  # inline command: works even before RESP framing is known
            first_line = await reader.line(limit=FIRST_LINE_LIMIT)
        except ProbeError:
            return None  # silent, closed, or not line-oriented: not Redis
        if first_line[:1] not in (b"+", b"-"):
            return None
        # Re-parse the line we consumed as a full reply (simple strings and errors are one line).
        kind, rest = first_line[:1], first_line[1:].decode("utf-8", "replace")
        first: RespValue = rest if kind == b"+" else RedisError(rest)
        facts = _first_reply_facts(first)
        if facts is None:
            return None
        facts["ping_reply"] = str(first)[:MAX_FACT_CHARS]
        if facts.pop("ping_renamed", False):
            # PING renamed away: INFO decides whether this is Redis at all.
            try:
                info = _text(await _ask(conn, reader, "INFO", "server"))
            except ProbeError:
                return None
            if info is None or "redis_version:" not in info:
                return None
            facts["auth_required"] = False
            facts.update(info_facts(parse_info(info)))
        observation = Observation(service="redis", host=ctx.host, port=ctx.port, tls=tls, facts=facts)
        if facts.get("auth_required") is False:
            try:
                await _examine(conn, reader, facts)
            except ProbeError as exc:
                # Identified and open: keep what was learnt, say what could not be read.
                facts["probe_errors"] = [f"examine: {exc}"]
        return observation


PROBES = [RedisProbe()]
