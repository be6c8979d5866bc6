"""MongoDB reachable without credentials.

MongoDB's wire protocol is binary: a 16-byte header (messageLength, requestID, responseTo, opCode,
little-endian) and BSON documents, which we encode and decode with pymongo's `bson` module. The
probe sends only commands that read:
  1. `hello` as OP_MSG (opCode 2013, MongoDB 3.6+); a server older than 4.4.2 that does not know
     `hello` gets `isMaster` instead, and one that does not know OP_MSG at all (before 3.6) gets
     `isMaster` as a legacy OP_QUERY on `admin.$cmd` (answered with OP_REPLY, opCode 1);
  2. `buildInfo` for the version (MongoDB answers it without authentication);
  3. `listDatabases` with `nameOnly`: answered -> anyone can read the data; error code 13
     (Unauthorized) -> authentication is enforced.
A reply only counts when its header answers our request id, so another binary protocol on the
port is not mistaken for MongoDB.

Facts: max_wire_version, is_primary, set_name, is_mongos, version, auth_required,
database_count, databases (at most 50 names), list_databases_error.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any, ClassVar

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from cloudward.exposure.net import Connection, ProbeError
from cloudward.exposure.probes.base import Observation, ProbeContext

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
HEADER = struct.Struct("<iiii")
MAX_REPLY = 1024 * 1024  # listDatabases with nameOnly for thousands of databases stays far below
MAX_DATABASE_NAMES = 50
UNAUTHORIZED = 13
COMMAND_NOT_FOUND = 59
FIRST_REPLY_TIMEOUT = 1.5  # mongod answers hello at once; silence means "not MongoDB"
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


def _request_id() -> int:
    return secrets.randbelow(2**31 - 1) + 1


def op_msg(request_id: int, command: dict[str, Any]) -> bytes:
    """OP_MSG with flagBits 0 and one body section (kind 0) holding the command."""
    body = struct.pack("<I", 0) + b"\x00" + bson.encode(command)
    return HEADER.pack(HEADER.size + len(body), request_id, 0, OP_MSG) + body


def op_query(request_id: int, command: dict[str, Any]) -> bytes:
    """Legacy OP_QUERY of a command on `admin.$cmd` (numberToReturn -1: one document)."""
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + bson.encode(command)
    return HEADER.pack(HEADER.size + len(body), request_id, 0, OP_QUERY) + body


def _decode(data: bytes) -> dict[str, Any]:
    try:
        return dict(bson.decode(data, _CODEC))
    except (bson.errors.BSONError, ValueError, OverflowError) as exc:
        raise ProbeError(f"malformed BSON in MongoDB reply: {exc}") from None


def parse_reply(op_code: int, body: bytes) -> dict[str, Any]:
    """The command reply document of an OP_MSG or OP_REPLY body (header removed)."""
    if op_code == OP_MSG:
        if len(body) < 5:
            raise ProbeError("OP_MSG reply too short")
        (flags,) = struct.unpack_from("<I", body, 0)
        end = len(body) - (4 if flags & 1 else 0)  # checksumPresent
        offset = 4
        while offset < end:
            kind = body[offset]
            offset += 1
            if offset + 4 > end:
                break
            (size,) = struct.unpack_from("<i", body, offset)
            if size < 5 or offset + size > end:
                raise ProbeError("OP_MSG section overruns the message")
            if kind == 0:
                return _decode(body[offset:offset + size])
            offset += size  # kind 1 (document sequence): not used in replies we ask for
        raise ProbeError("OP_MSG reply without a body section")
    if op_code == OP_REPLY:
        if len(body) < 20 + 5:
            raise ProbeError("OP_REPLY too short")
        (returned,) = struct.unpack_from("<i", body, 16)
        if returned < 1:
            raise ProbeError("OP_REPLY without documents")
        (size,) = struct.unpack_from("<i", body, 20)
        if size < 5 or 20 + size > len(body):
            raise ProbeError("OP_REPLY document overruns the message")
        return _decode(body[20:20 + size])
    raise ProbeError(f"unexpected MongoDB opCode {op_code}")


async def _read_exact(conn: Connection, size: int, timeout: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = await conn.read_some(timeout=timeout, max_bytes=min(size - len(buf), 64 * 1024))
        if not chunk:
            raise ProbeError("MongoDB connection closed or silent mid-reply")
        buf += chunk
    return bytes(buf)


async def command(conn: Connection, doc: dict[str, Any], legacy: bool = False,
                  timeout: float | None = None) -> dict[str, Any]:
    """Send one command and return its reply document; ProbeError when the reply is not MongoDB's."""
    request_id = _request_id()
    if legacy:
        await conn.send(op_query(request_id, doc))
    else:
        await conn.send(op_msg(request_id, {**doc, "$db": "admin"}))
    header = await _read_exact(conn, HEADER.size, timeout)
    length, _, response_to, op_code = HEADER.unpack(header)
    if response_to != request_id or op_code not in (OP_MSG, OP_REPLY):
        raise ProbeError("reply does not answer our MongoDB request")
    if not HEADER.size + 5 <= length <= MAX_REPLY:
        raise ProbeError(f"implausible MongoDB message length {length}")
    body = await _read_exact(conn, length - HEADER.size, timeout)
    return parse_reply(op_code, body)


def _ok(reply: dict[str, Any]) -> bool:
    try:
        return float(reply.get("ok", 0)) == 1.0
    except (TypeError, ValueError):
        return False


def hello_facts(reply: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    wire = reply.get("maxWireVersion")
    if isinstance(wire, int) and not isinstance(wire, bool):
        facts["max_wire_version"] = wire
    primary = reply.get("isWritablePrimary", reply.get("ismaster"))
    if isinstance(primary, bool):
        facts["is_primary"] = primary
    if isinstance(reply.get("setName"), str):
        facts["set_name"] = reply["setName"][:128]
    facts["is_mongos"] = reply.get("msg") == "isdbgrid"
    return facts


def databases_facts(reply: dict[str, Any]) -> dict[str, Any]:
    """Facts from a listDatabases reply: answered means open, code 13 means auth enforced."""
    if _ok(reply):
        entries = reply.get("databases")
        names = [str(d.get("name"))[:128] for d in entries if isinstance(d, dict)] \
            if isinstance(entries, list) else []
        return {"auth_required": False, "database_count": len(names),
                "databases": names[:MAX_DATABASE_NAMES]}
    code = reply.get("code")
    facts: dict[str, Any] = {"list_databases_error": str(reply.get("errmsg", ""))[:256]}
    if code == UNAUTHORIZED or reply.get("codeName") == "Unauthorized":
        facts["auth_required"] = True
    return facts


async def _handshake(ctx: ProbeContext, tls: bool) -> tuple[Connection, dict[str, Any], bool] | None:
    """Open a connection that has answered hello/isMaster; None when this is not MongoDB.

    Returns the connection, the handshake reply and whether the server needs legacy OP_QUERY.
    """
    for legacy in (False, True):
        try:
            conn = await ctx.connect(tls=tls)
        except ProbeError:
            return None
        try:
            reply = await command(conn, {"isMaster": 1} if legacy else {"hello": 1}, legacy=legacy,
                                  timeout=FIRST_REPLY_TIMEOUT)
            if not legacy and not _ok(reply) and reply.get("code") == COMMAND_NOT_FOUND:
                reply = await command(conn, {"isMaster": 1}, timeout=FIRST_REPLY_TIMEOUT)
        except ProbeError:
            closed = conn.reader.at_eof()
            await conn.close()
            if closed and not legacy:
                continue  # MongoDB before 3.6 drops the connection on OP_MSG: try OP_QUERY
            return None  # silent, garbage, or not answering our request: not MongoDB
        if _ok(reply) and ("maxWireVersion" in reply or "ismaster" in reply
                           or "isWritablePrimary" in reply):
            return conn, reply, legacy
        await conn.close()
        return None
    return None


class MongoDbProbe:
    name: ClassVar[str] = "mongodb"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = (27017, 27018, 27019)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        found = await _handshake(ctx, tls)
        if found is None:
            return None
        conn, hello, legacy = found
        facts = hello_facts(hello)
        try:
            build = await command(conn, {"buildInfo": 1}, legacy=legacy)
            if _ok(build) and isinstance(build.get("version"), str):
                facts["version"] = build["version"][:64]
            facts.update(databases_facts(
                await command(conn, {"listDatabases": 1, "nameOnly": True}, legacy=legacy)))
        except ProbeError as exc:
            raise ProbeError(f"MongoDB identified but could not be examined: {exc}") from None
        finally:
            await conn.close()
        return Observation(service="mongodb", host=ctx.host, port=ctx.port, tls=tls, facts=facts)


PROBES = [MongoDbProbe()]
