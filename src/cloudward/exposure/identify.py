"""Phase 2: what listens on an open port, decided by what it answers — never by its number.

Port numbers only *order* the attempts (a probe whose `ports` hint contains the port goes first);
the service is whatever the first probe recognises. The walk is built to be cheap on the common
cases and bounded on the hostile ones:

1. A port hinted for a client-first binary protocol (Redis on 6379, PostgreSQL on 5432, MongoDB on
   27017) gets those probes first: they answer in one round trip, no need to wait for a banner.
2. Otherwise read a server-first banner briefly. A server that speaks first (SSH, FTP, SMTP...) is
   offered to the "banner" probes and, if none claims it, is "unknown" with its banner as a fact:
   none of the client-first probes (Redis, HTTP...) can be a server that talks first.
3. A silent port gets one plain `GET /` (the sniff), whose answer routes everything else:
   - an HTTP response: the "http" probes over plain HTTP, else a generic "http" observation;
     a `400` (Go and nginx answer plain HTTP on a TLS port that way) tries TLS first;
   - a TLS alert (`15 03 ..`), or a close/reset without a byte: TLS is tried (`ctx.http("/",
     tls=True)`); if the handshake completes, the "http" probes over TLS (or, when HTTP does not
     work inside the TLS, the "raw" probes over TLS: Redis and MongoDB speak TLS too);
   - other bytes, or a close: the remaining "raw" probes, else "unknown" with the reply as a fact;
   - silence: the port accepted a connection and said nothing to anything — "unknown", and a scan
     error saying so, since nothing can be concluded about it.
4. The whole walk has one deadline (the per-port budget). Whatever it was doing when the deadline
   passed is named in the error; the port still lands in the inventory as "unknown".

A probe that raises `ProbeError` has identified its service but could not examine it: that is a
scan error (stage "probe") and an inventory entry for the service, but never a rule evaluation on
facts that were not read. A probe that raises anything else has a bug; the error is recorded and
the walk goes on with the next probe, so one broken probe costs one line, not the scan.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cloudward.exposure.net import HttpResponse, Limits, ProbeError
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext

BANNER_WAIT = 0.8
BANNER_MAX = 4096  # what ProbeContext.banner() reads at most
SNIFF_MAX = 8192
SNIPPET_CHARS = 256
MESSAGE_CHARS = 300
HEADER_CHARS = 200
FAMILIES = ("banner", "raw", "http")
GENERIC_SERVICES = frozenset({"unknown", "http", "https"})


class Sniffed(StrEnum):
    HTTP = "http"
    TLS = "tls"
    CLOSED = "closed"
    SILENT = "silent"
    GARBAGE = "garbage"


@dataclass
class SniffResult:
    kind: Sniffed
    data: bytes = b""
    status: int | None = None
    detail: str = ""


@dataclass
class IdentifyError:
    stage: str  # "identify" (the port) or "probe" (a recognised service)
    message: str


@dataclass
class Identification:
    """The outcome for one port: at most one observation, and what went wrong on the way."""

    observation: Observation | None
    examined: bool = True  # False: the service was recognised but its facts could not be read
    errors: list[IdentifyError] = field(default_factory=list)

    @property
    def identified(self) -> bool:
        """A probe recognised a specific service (not just "something" or "some HTTP server")."""
        return self.observation is not None and self.observation.service not in GENERIC_SERVICES


def escape_bytes(data: bytes, limit: int = SNIPPET_CHARS) -> str:
    """Printable ASCII as is, everything else escaped (`\\x1b`, `\\r`), at most `limit` characters:
    banners are attacker-controlled and end up in terminals, JSON and HTML."""
    out: list[str] = []
    size = 0
    for byte in data:
        if byte == 0x5C:
            piece = "\\\\"
        elif 0x20 <= byte < 0x7F:
            piece = chr(byte)
        else:
            piece = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}.get(byte, f"\\x{byte:02x}")
        if size + len(piece) > limit:
            out.append("...")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _clip(value: str, limit: int = HEADER_CHARS) -> str:
    return escape_bytes(value.encode("utf-8", "replace"), limit)


def bounded_message(text: str, limit: int = MESSAGE_CHARS) -> str:
    """An error message fit for a report: one line, printable, bounded (servers choose its text)."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text[:limit])
    return cleaned if len(text) <= limit else cleaned + "..."


def order_probes(probes: Sequence[Probe], port: int, family: str | None = None) -> list[Probe]:
    """Probes hinting `port` first, then the others, each group in registry order."""
    chosen = [p for p in probes if family is None or p.family == family]
    return [p for p in chosen if port in p.ports] + [p for p in chosen if port not in p.ports]


def _sniff_request(host: str) -> bytes:
    authority = f"[{host}]" if ":" in host else host
    return (f"GET / HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: cloudward-exposure\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n").encode("ascii", "replace")


def classify_reply(data: bytes, closed: bool) -> SniffResult:
    """What a reply to our plain `GET /` says about the port (see the module docstring)."""
    if not data:
        return SniffResult(Sniffed.CLOSED if closed else Sniffed.SILENT)
    if data[0] == 0x15 and data[1:2] == b"\x03":
        return SniffResult(Sniffed.TLS, data, detail="answered with a TLS alert")
    if data.startswith(b"HTTP/"):
        parts = data.split(b"\r\n", 1)[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() and len(parts[1]) == 3 else None
        if status is not None:
            return SniffResult(Sniffed.HTTP, data, status=status)
    return SniffResult(Sniffed.GARBAGE, data)


class _Walk:
    """One port's identification: the context, what was tried, what went wrong, what is known."""

    def __init__(self, ctx: ProbeContext, probes: Sequence[Probe], banner_wait: float) -> None:
        self.ctx = ctx
        self.probes = probes
        self.banner_wait = banner_wait
        self.tried: set[tuple[str, bool]] = set()
        self.errors: list[IdentifyError] = []
        self.facts: dict[str, Any] = {}  # for the "unknown" observation, if it comes to that
        self.tls = False
        self.doing = "connecting"
        self.examined = True

    # -- helpers -----------------------------------------------------------------------------

    def error(self, stage: str, message: str) -> None:
        self.errors.append(IdentifyError(stage, bounded_message(message)))

    def observation(self, service: str, facts: dict[str, Any], tls: bool = False) -> Observation:
        return Observation(service=service, host=self.ctx.host, port=self.ctx.port, tls=tls, facts=facts)

    def unknown(self) -> Observation:
        return self.observation("unknown", dict(self.facts), self.tls)

    def ordered(self, family: str) -> list[Probe]:
        return order_probes(self.probes, self.ctx.port, family)

    async def attempt(self, probes: Sequence[Probe], tls: bool) -> Observation | None:
        """Offer the port to `probes` in order; the first Observation wins."""
        for probe in probes:
            key = (probe.name, tls)
            if key in self.tried:
                continue
            self.tried.add(key)
            self.doing = f"running the {probe.name} probe{' over TLS' if tls else ''}"
            try:
                found = await probe.identify(self.ctx, tls)
            except ProbeError as exc:
                message = f"{probe.name} service found but could not be examined: {exc}"
                self.error("probe", message)
                self.examined = False
                return self.observation(probe.name, {"probe_error": _clip(str(exc))}, tls)
            except Exception as exc:  # a probe bug: record it, try the next probe
                self.error("probe", f"the {probe.name} probe failed on this endpoint: "
                                    f"{type(exc).__name__}: {_clip(str(exc))}")
                continue
            if found is not None:
                return found
        return None

    # -- stages ------------------------------------------------------------------------------

    async def banner(self) -> bytes:
        self.doing = "waiting for a banner"
        return await self.ctx.banner(wait=self.banner_wait)

    async def sniff(self) -> SniffResult:
        """Send `GET /` and read what comes back (bounded), telling silence from a close."""
        self.doing = "sending an HTTP request"
        limits = self.ctx.limits
        try:
            conn = await self.ctx.connect()
        except ProbeError as exc:
            return SniffResult(Sniffed.CLOSED, detail=str(exc))
        data = bytearray()
        closed = False
        try:
            await conn.send(_sniff_request(self.ctx.host))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limits.io_timeout
            while len(data) < SNIFF_MAX:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if b"\r\n\r\n" in data:
                    remaining = min(remaining, 0.25)  # the start of the body, for TLS hints
                chunk = await conn.read_some(timeout=remaining, max_bytes=SNIFF_MAX - len(data))
                if not chunk:
                    closed = conn.reader.at_eof()
                    break
                data += chunk
                if b"\r\n\r\n" in data and len(data) > 512:
                    break
        except ProbeError as exc:  # reset: as good as a close for routing
            closed = True
            if not data:
                return SniffResult(Sniffed.CLOSED, detail=str(exc))
        finally:
            await conn.close()
        return classify_reply(bytes(data), closed)

    async def tls_stage(self) -> Observation | None:
        """The port over TLS; None when it does not complete a TLS handshake."""
        self.doing = "trying TLS"
        response: HttpResponse | None = None
        failure = ""
        try:
            response = await self.ctx.http("/", tls=True)
        except ProbeError as exc:
            failure = str(exc)
        if self.ctx.tls_works is not True:
            return None
        self.tls = True
        self.facts["tls"] = True
        if response is not None:
            found = await self.attempt(self.ordered("http"), tls=True)
            return found or self.generic_http(response, tls=True)
        found = await self.attempt(self.ordered("raw"), tls=True)
        if found is not None:
            return found
        self.facts["tls_note"] = _clip("the TLS handshake completed but nothing we speak answered inside "
                                       f"it (a client certificate may be required): {failure}")
        return self.unknown()

    def generic_http(self, response: HttpResponse, tls: bool) -> Observation:
        facts: dict[str, Any] = {"status": response.status, "reason": _clip(response.reason, 80)}
        for name in ("server", "content-type", "www-authenticate", "location", "x-powered-by"):
            value = response.header(name)
            if value:
                facts[name.replace("-", "_")] = _clip(value)
        if response.truncated:
            facts["truncated"] = True
        return self.observation("https" if tls else "http", facts, tls)

    async def plain_http(self) -> Observation:
        found = await self.attempt(self.ordered("http"), tls=False)
        if found is not None:
            return found
        self.doing = "fetching / over HTTP"
        try:
            response = await self.ctx.http("/", tls=False)
        except ProbeError as exc:
            self.error("identify", f"answers like an HTTP server but its response is malformed or cut "
                                   f"off: {exc}")
            return self.unknown()
        return self.generic_http(response, tls=False)

    # -- the walk ----------------------------------------------------------------------------

    async def run(self) -> Observation | None:
        port = self.ctx.port
        hinted = [p for p in self.probes if port in p.ports]
        if not any(p.family == "banner" for p in hinted):
            found = await self.attempt([p for p in hinted if p.family == "raw"], tls=False)
            if found is not None:
                return found

        try:
            banner = await self.banner()
        except ProbeError as exc:
            self.error("identify", f"the port stopped accepting connections before it could be "
                                   f"identified: {exc}")
            return None
        if banner:
            self.facts["banner"] = escape_bytes(banner)
            self.facts["banner_bytes"] = len(banner)
            found = await self.attempt(self.ordered("banner"), tls=False)
            if found is not None:
                return found
            if len(banner) >= BANNER_MAX and b"\n" not in banner:
                self.error("identify", f"sends {BANNER_MAX}+ bytes without a line break as soon as it "
                                       "is connected to (an endless banner); kept the first "
                                       f"{SNIPPET_CHARS} characters")
            return self.unknown()

        sniffed = await self.sniff()
        if sniffed.data:
            self.facts["reply"] = escape_bytes(sniffed.data)
        if sniffed.kind is Sniffed.HTTP:
            if sniffed.status == 400:
                found = await self.tls_stage()
                if found is not None:
                    return found
            return await self.plain_http()
        if sniffed.kind is Sniffed.TLS:
            found = await self.tls_stage()
            if found is not None:
                return found
        if sniffed.kind is Sniffed.SILENT:
            self.facts["silent"] = True
            self.error("identify", "accepts connections but stays silent: no banner, and no answer to "
                                   f"an HTTP request within {self.ctx.limits.io_timeout:g}s")
            return self.unknown()
        found = await self.attempt(self.ordered("raw"), tls=False)
        if found is not None:
            return found
        if sniffed.kind is Sniffed.CLOSED:
            found = await self.tls_stage()
            if found is not None:
                return found
            self.facts["closes_without_reply"] = True
        return self.unknown()


class Identifier:
    """Identifies open ports with a probe set, a per-read `Limits` and a per-port time budget."""

    def __init__(self, probes: Sequence[Probe], limits: Limits, budget: float,
                 banner_wait: float = BANNER_WAIT) -> None:
        unknown = [p.name for p in probes if p.family not in FAMILIES]
        if unknown:
            raise ValueError(f"probes with an unknown family: {', '.join(unknown)}")
        self.probes = tuple(probes)
        self.limits = limits
        self.budget = budget
        self.banner_wait = min(banner_wait, limits.io_timeout)

    async def identify(self, host: str, port: int) -> Identification:
        walk = _Walk(ProbeContext(host, port, self.limits), self.probes, self.banner_wait)
        deadline = asyncio.timeout(self.budget)
        try:
            async with deadline:
                observation = await walk.run()
        except TimeoutError:
            if not deadline.expired():
                raise
            walk.error("identify", f"identification did not finish within {self.budget:g}s "
                                   f"(gave up while {walk.doing})")
            observation = walk.unknown()
            walk.examined = True
        return Identification(observation, walk.examined, walk.errors)
