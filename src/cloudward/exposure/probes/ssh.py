"""SSH: what the server says it is, what it negotiates, and how it lets a stranger try to log in.

TeamTNT's SSH entry is password guessing (T1110) followed by logins with stolen keys (T1021.004),
so the fact that matters most is whether the server offers `password` or `keyboard-interactive`
to anyone who asks. We learn it the way nmap's `ssh-auth-methods` does: complete the key exchange,
send `userauth none` for a random user name that cannot exist, and read the list of methods in the
server's refusal. No password is ever sent.

Three read-only looks, each bounded:
  1. the banner (`SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u7`), shared with every banner probe;
  2. the server's KEXINIT, read on a connection of our own: its algorithm lists decide whether
     Terrapin (CVE-2023-48795) applies, independently of any version string;
  3. paramiko in a worker thread for the auth-method list and the host key type.
Steps 2 and 3 are best effort: once the banner has identified SSH, their failures are recorded in
the `probe_errors` fact instead of discarding what the banner already told us.

Facts: banner, protocol, software, version, comment, distro, distro_revision; kex_algorithms,
host_key_algorithms, ciphers, macs, compression (both directions merged); auth_methods,
password_auth, keyboard_interactive, publickey_auth, none_auth_accepted (only when true),
host_key_type, host_key_fingerprint; probe_errors.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import struct
from typing import Any, ClassVar

from cloudward.exposure.net import Connection, Limits, ProbeError
from cloudward.exposure.probes.base import Observation, ProbeContext

MAX_BANNER_CHARS = 255  # RFC 4253 4.2: the identification line is at most 255 characters
MAX_KEXINIT_PACKET = 35000  # RFC 4253 6.1: implementations must accept at least this; more is hostile
MAX_PRE_BANNER = 8 * 1024  # text lines a server may send before its identification line
MSG_KEXINIT = 20
CLIENT_IDENT = b"SSH-2.0-cloudward_exposure\r\n"
KEXINIT_LISTS = (
    "kex_algorithms", "host_key_algorithms", "ciphers_c2s", "ciphers_s2c", "macs_c2s", "macs_s2c",
    "compression_c2s", "compression_s2c", "languages_c2s", "languages_s2c",
)

# paramiko logs every failed handshake at ERROR with a traceback; with no logging configured
# Python prints that to stderr. Failures come back to the scan as `probe_errors` instead.
PARAMIKO_LOG = "cloudward.exposure.ssh.paramiko"
_paramiko_log = logging.getLogger(PARAMIKO_LOG)
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False

_SOFTWARE = re.compile(r"^(?P<software>.+?)[_-](?P<version>\d[0-9A-Za-z.+~-]*)$")
_DISTRO = re.compile(r"^(?P<distro>[A-Za-z][A-Za-z ]*?)[-_](?P<revision>\d\S*)$")


def parse_banner(raw: bytes) -> dict[str, Any] | None:
    """Facts from an SSH identification line, or None when `raw` is not one.

    `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u7` gives software OpenSSH, version 9.2p1, comment
    `Debian-2+deb12u7`, distro Debian and distro_revision `2+deb12u7` (the Debian package revision,
    which is what tells a patched 9.2p1 from a vulnerable one).
    """
    line = raw.split(b"\n", 1)[0].rstrip(b"\r")
    if not line.startswith(b"SSH-"):
        return None
    text = line[:MAX_BANNER_CHARS].decode("ascii", "replace")
    parts = text.split("-", 2)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    protocol, rest = parts[1], parts[2]
    software_version, _, comment = rest.partition(" ")
    facts: dict[str, Any] = {"banner": text, "protocol": protocol}
    match = _SOFTWARE.match(software_version)
    if match:
        facts["software"] = match["software"]
        facts["version"] = match["version"]
    else:
        facts["software"] = software_version
    comment = comment.strip()
    if comment:
        facts["comment"] = comment
        distro = _DISTRO.match(comment)
        if distro:
            facts["distro"] = distro["distro"]
            facts["distro_revision"] = distro["revision"]
    return facts


def _name_list(payload: bytes, offset: int) -> tuple[list[str], int]:
    if offset + 4 > len(payload):
        raise ProbeError("KEXINIT truncated")
    (length,) = struct.unpack_from(">I", payload, offset)
    offset += 4
    if offset + length > len(payload):
        raise ProbeError("KEXINIT name-list overruns the packet")
    text = payload[offset:offset + length].decode("ascii", "replace")
    return [name for name in text.split(",") if name], offset + length


def parse_kexinit(payload: bytes) -> dict[str, list[str]]:
    """The ten algorithm name-lists of an SSH_MSG_KEXINIT payload (RFC 4253 7.1)."""
    if not payload or payload[0] != MSG_KEXINIT:
        raise ProbeError("first SSH packet is not KEXINIT")
    offset = 1 + 16  # message number, cookie
    lists: dict[str, list[str]] = {}
    for name in KEXINIT_LISTS:
        lists[name], offset = _name_list(payload, offset)
    return lists


def _merge(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys(first + second))


def kexinit_facts(lists: dict[str, list[str]]) -> dict[str, Any]:
    """Directions merged: a server offers the same sets both ways in practice, and the rules ask
    "is this algorithm negotiable at all"."""
    return {
        "kex_algorithms": lists["kex_algorithms"],
        "host_key_algorithms": lists["host_key_algorithms"],
        "ciphers": _merge(lists["ciphers_c2s"], lists["ciphers_s2c"]),
        "macs": _merge(lists["macs_c2s"], lists["macs_s2c"]),
        "compression": _merge(lists["compression_c2s"], lists["compression_s2c"]),
    }


async def _fill(conn: Connection, buf: bytearray, need: int, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while len(buf) < need:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise ProbeError("timed out waiting for the server's KEXINIT")
        chunk = await conn.read_some(timeout=remaining, max_bytes=max(need - len(buf), 4096))
        if not chunk:
            raise ProbeError("connection closed before the server's KEXINIT")
        buf += chunk


async def read_kexinit(ctx: ProbeContext) -> dict[str, list[str]]:
    """Send our identification line, skip the server's, and parse its first binary packet."""
    conn = await ctx.connect()
    try:
        await conn.send(CLIENT_IDENT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.limits.io_timeout
        buf = bytearray()
        skipped = 0
        # The identification line may be preceded by other text lines (RFC 4253 4.2).
        while True:
            newline = buf.find(b"\n")
            if skipped + (len(buf) if newline < 0 else newline) > MAX_PRE_BANNER:
                raise ProbeError(f"no SSH identification line in the first {MAX_PRE_BANNER} bytes")
            if newline < 0:
                await _fill(conn, buf, len(buf) + 1, deadline)
                continue
            line, buf = bytes(buf[:newline]), buf[newline + 1:]
            skipped += newline + 1
            if line.startswith(b"SSH-"):
                break
        await _fill(conn, buf, 5, deadline)
        (length,) = struct.unpack_from(">I", buf, 0)
        if not 12 <= length <= MAX_KEXINIT_PACKET:
            raise ProbeError(f"implausible SSH packet length {length}")
        await _fill(conn, buf, 4 + length, deadline)
        padding = buf[4]
        payload = bytes(buf[5:4 + length - padding])
        return parse_kexinit(payload)
    finally:
        await conn.close()


class _TransportHolder:
    """Lets the event loop close paramiko's transport if the worker thread overruns its budget."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.sock is not None:
            self.sock.close()


def _auth_methods_blocking(host: str, port: int, user: str, limits: Limits,
                           holder: _TransportHolder) -> dict[str, Any]:
    """Key exchange + `userauth none` with paramiko; runs in a worker thread."""
    import paramiko  # imported here: paramiko is slow to import and only SSH needs it

    sock = socket.create_connection((host, port), timeout=limits.connect_timeout)
    sock.settimeout(limits.io_timeout)
    holder.sock = sock
    transport = paramiko.Transport(sock)
    transport.set_log_channel(PARAMIKO_LOG)
    holder.transport = transport
    transport.banner_timeout = limits.io_timeout
    transport.handshake_timeout = limits.io_timeout
    transport.auth_timeout = limits.io_timeout
    try:
        transport.start_client(timeout=limits.io_timeout)
        key = transport.get_remote_server_key()
        facts: dict[str, Any] = {"host_key_type": key.get_name(),
                                 "host_key_fingerprint": key.fingerprint}
        try:
            transport.auth_none(user)
        except paramiko.BadAuthenticationType as refusal:
            methods = [str(m) for m in refusal.allowed_types][:16]
        else:
            # The server let an unknown user in with no credentials at all.
            methods = ["none"]
            facts["none_auth_accepted"] = True
        facts["auth_methods"] = methods
        facts["password_auth"] = "password" in methods
        facts["keyboard_interactive"] = "keyboard-interactive" in methods
        facts["publickey_auth"] = "publickey" in methods
        return facts
    finally:
        holder.close()


async def auth_methods(ctx: ProbeContext) -> dict[str, Any]:
    """The methods offered to a user name that cannot exist, bounded in time even if paramiko hangs."""
    user = f"cloudward-probe-{secrets.token_hex(4)}"
    holder = _TransportHolder()
    budget = ctx.limits.connect_timeout + 3 * ctx.limits.io_timeout
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_auth_methods_blocking, ctx.host, ctx.port, user, ctx.limits, holder),
            timeout=budget,
        )
    except TimeoutError:
        holder.close()
        raise ProbeError(f"SSH authentication query took longer than {budget:.0f}s") from None
    except asyncio.CancelledError:
        holder.close()  # cancelled from outside (the per-port deadline): free the worker thread too
        raise
    except ProbeError:
        raise
    except Exception as exc:  # paramiko raises many types (SSHException, EOFError, OSError...)
        raise ProbeError(f"SSH authentication query failed: {type(exc).__name__}: {exc}") from None


class SshProbe:
    name: ClassVar[str] = "ssh"
    family: ClassVar[str] = "banner"
    ports: ClassVar[tuple[int, ...]] = (22, 2222, 22222)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        if tls:
            return None  # SSH is never wrapped in TLS
        try:
            raw = await ctx.banner()
        except ProbeError:
            return None
        facts = parse_banner(raw)
        if facts is None:
            return None
        errors: list[str] = []
        if facts["protocol"] in ("2.0", "1.99"):
            try:
                facts.update(kexinit_facts(await read_kexinit(ctx)))
            except ProbeError as exc:
                errors.append(f"kexinit: {exc}")
            try:
                facts.update(await auth_methods(ctx))
            except ProbeError as exc:
                errors.append(f"auth methods: {exc}")
        if errors:
            facts["probe_errors"] = errors
        return Observation(service="ssh", host=ctx.host, port=ctx.port, facts=facts)


PROBES = [SshProbe()]
