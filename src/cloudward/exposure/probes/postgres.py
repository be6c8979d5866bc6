"""PostgreSQL: does it speak TLS, and how does it want a remote `postgres` user to authenticate?

Two short conversations, both ending before any password could be asked for:
  1. SSLRequest (8 bytes): the server answers one byte, `S` (TLS available) or `N`;
  2. on a fresh connection, a protocol 3.0 StartupMessage for user `postgres`, database
     `postgres`; the first Authentication message names the method pg_hba.conf chose for us:
     0 = AuthenticationOk (trust: we are in, no password), 3 = cleartext password, 5 = md5,
     10 = SASL (SCRAM-SHA-256), 7/9 = GSSAPI/SSPI, 2 = Kerberos v5. After trust we read the
     ParameterStatus messages and send Terminate; otherwise we hang up before any password.
If the server rejects plaintext (a `hostssl`-only pg_hba.conf) and offered TLS, the startup is
repeated inside TLS so the method is still learnt. An ErrorResponse (`no pg_hba.conf entry`, too
many clients...) still identifies PostgreSQL: its SQLSTATE and message become facts.

Facts: ssl_supported, auth_method (trust, password, md5, sasl, gss, sspi, kerberos5, rejected,
error), auth_code, sasl_mechanisms, auth_over_tls, error_code, error_message and, after trust,
the ParameterStatus values server_version, is_superuser, session_authorization, server_encoding.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from typing import Any, ClassVar

from cloudward.exposure.net import Connection, ProbeError
from cloudward.exposure.probes.base import Observation, ProbeContext

SSL_REQUEST = struct.pack(">II", 8, 80877103)
PROTOCOL_3_0 = 196608
TERMINATE = b"X" + struct.pack(">I", 4)
MAX_MESSAGE = 16 * 1024  # an Authentication or ErrorResponse message is a few hundred bytes
MAX_MESSAGES = 64  # ParameterStatus x ~15, BackendKeyData, ReadyForQuery, notices
FIRST_REPLY_TIMEOUT = 1.5  # PostgreSQL answers SSLRequest at once; silence means "not PostgreSQL"
AUTH_METHODS = {0: "trust", 2: "kerberos5", 3: "password", 5: "md5", 7: "gss", 9: "sspi", 10: "sasl"}
PARAMETERS = ("server_version", "is_superuser", "session_authorization", "server_encoding")
# ErrorResponse field codes worth keeping (PostgreSQL protocol, "Error and Notice Message Fields").
ERROR_FIELDS = {"S": "severity", "V": "severity", "C": "code", "M": "message"}


def startup_message(user: str = "postgres", database: str = "postgres") -> bytes:
    params = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                      for k, v in (("user", user), ("database", database),
                                   ("application_name", "cloudward-exposure")))
    body = struct.pack(">I", PROTOCOL_3_0) + params + b"\0"
    return struct.pack(">I", len(body) + 4) + body


def postgres_tls_context() -> ssl.SSLContext:
    """No verification, no client certificate (an anonymous client), ALPN "postgresql" because
    PostgreSQL 17 refuses other ALPN protocols."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


class MessageReader:
    """Backend messages: 1 type byte, int32 length (including itself), body; all bounded."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buf = bytearray()

    async def _fill(self, size: int, timeout: float | None = None) -> None:
        while len(self.buf) < size:
            chunk = await self.conn.read_some(timeout=timeout, max_bytes=MAX_MESSAGE)
            if not chunk:
                raise ProbeError("PostgreSQL connection closed or silent mid-message")
            self.buf += chunk

    async def next(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        await self._fill(5, timeout)
        kind = bytes(self.buf[:1])
        (length,) = struct.unpack_from(">I", self.buf, 1)
        if not kind.isalpha() or not 4 <= length <= MAX_MESSAGE:
            raise ProbeError(f"not a PostgreSQL message (type {kind!r}, length {length})")
        await self._fill(1 + length, timeout)
        body = bytes(self.buf[5:1 + length])
        del self.buf[:1 + length]
        return kind, body


def _cstrings(body: bytes) -> list[str]:
    return [part.decode("utf-8", "replace") for part in body.split(b"\0")]


def parse_error(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields: code byte + C string, repeated, then a zero byte."""
    fields: dict[str, str] = {}
    for item in body.split(b"\0"):
        if not item:
            continue
        code, value = chr(item[0]), item[1:].decode("utf-8", "replace")
        name = ERROR_FIELDS.get(code)
        if name:
            fields[name] = value[:256]
    return fields


def _is_postgres_error(fields: dict[str, str]) -> bool:
    """A real ErrorResponse always carries a severity and a five-character SQLSTATE."""
    code = fields.get("code", "")
    return "severity" in fields and len(code) == 5 and code.isalnum()


def _auth_facts(body: bytes) -> dict[str, Any]:
    if len(body) < 4:
        raise ProbeError("Authentication message too short")
    (code,) = struct.unpack_from(">I", body, 0)
    facts: dict[str, Any] = {"auth_code": code, "auth_method": AUTH_METHODS.get(code, f"code-{code}")}
    if code == 10:
        facts["sasl_mechanisms"] = [m for m in _cstrings(body[4:]) if m][:8]
    return facts


async def _after_trust(reader: MessageReader, facts: dict[str, Any]) -> None:
    """Collect ParameterStatus values until ReadyForQuery (or an error, e.g. unknown role)."""
    for _ in range(MAX_MESSAGES):
        kind, body = await reader.next()
        if kind == b"S":
            parts = _cstrings(body)
            if len(parts) >= 2 and parts[0] in PARAMETERS:
                facts[parts[0]] = parts[1][:128]
        elif kind == b"E":
            error = parse_error(body)
            facts["login_error_code"] = error.get("code", "")
            facts["login_error_message"] = error.get("message", "")
            return
        elif kind == b"Z":
            return


async def _startup(conn: Connection, first_timeout: float) -> dict[str, Any] | None:
    """Run the StartupMessage exchange; None when the answer is not PostgreSQL's."""
    await conn.send(startup_message())
    reader = MessageReader(conn)
    try:
        for _ in range(MAX_MESSAGES):
            kind, body = await reader.next(timeout=first_timeout)
            if kind == b"N":  # NoticeResponse may precede the real answer
                continue
            if kind == b"v":  # NegotiateProtocolVersion: fine, the answer follows
                continue
            break
        else:
            return None
    except ProbeError:
        return None
    if kind == b"R":
        facts = _auth_facts(body)
        if facts["auth_code"] == 0:
            try:
                await _after_trust(reader, facts)
                await conn.send(TERMINATE)
            except ProbeError as exc:
                facts["probe_errors"] = [f"after trust: {exc}"]
        # Otherwise we just hang up: PostgreSQL treats EOF during authentication as a client
        # that went away and logs nothing, where a Terminate would log a protocol error.
        return facts
    if kind == b"E":
        error = parse_error(body)
        if not _is_postgres_error(error):
            return None
        code = error["code"]
        return {"auth_method": "rejected" if code.startswith("28") else "error",
                "error_code": code, "error_message": error.get("message", "")}
    return None


async def _ssl_supported(ctx: ProbeContext) -> bool | None:
    """True/False for S/N; None when the answer is anything else (not PostgreSQL)."""
    conn = await ctx.connect()
    try:
        await conn.send(SSL_REQUEST)
        answer = await conn.read_until(None, max_bytes=1, timeout=FIRST_REPLY_TIMEOUT)
    finally:
        await conn.close()
    return {b"S": True, b"N": False}.get(answer)


async def _startup_over_tls(ctx: ProbeContext) -> dict[str, Any] | None:
    conn = await ctx.connect()
    try:
        await conn.send(SSL_REQUEST)
        if await conn.read_until(None, max_bytes=1, timeout=FIRST_REPLY_TIMEOUT) != b"S":
            return None
        try:
            await asyncio.wait_for(
                conn.writer.start_tls(postgres_tls_context(), server_hostname=ctx.host),
                timeout=ctx.limits.io_timeout,
            )
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            raise ProbeError(f"TLS handshake after SSLRequest failed: {exc}") from None
        return await _startup(conn, ctx.limits.io_timeout)
    finally:
        await conn.close()


class PostgresProbe:
    name: ClassVar[str] = "postgres"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = (5432, 5433, 6432, 26257)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        if tls:
            return None  # TLS is negotiated in-band with SSLRequest, never spoken first
        try:
            ssl_supported = await _ssl_supported(ctx)
        except ProbeError:
            return None
        if ssl_supported is None:
            return None
        try:
            conn = await ctx.connect()
        except ProbeError:
            return None
        try:
            facts = await _startup(conn, FIRST_REPLY_TIMEOUT)
        finally:
            await conn.close()
        if facts is None:
            return None
        facts["ssl_supported"] = ssl_supported
        facts["auth_over_tls"] = False
        if facts["auth_method"] == "rejected" and ssl_supported:
            # pg_hba.conf may admit us over TLS only (hostssl): ask again inside TLS.
            try:
                over_tls = await _startup_over_tls(ctx)
            except ProbeError as exc:
                facts.setdefault("probe_errors", []).append(f"startup over TLS: {exc}")
                over_tls = None
            if over_tls is not None and over_tls["auth_method"] != "rejected":
                facts.update(over_tls)
                facts["auth_over_tls"] = True
                for key in ("error_code", "error_message"):
                    if key not in over_tls:
                        facts.pop(key, None)
        return Observation(service="postgres", host=ctx.host, port=ctx.port, facts=facts)


PROBES = [PostgresProbe()]
