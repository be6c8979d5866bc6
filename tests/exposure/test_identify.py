"""Identification decides by what a port answers: banner, raw, plain HTTP, TLS — cheaply and bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudward.exposure.identify import (
    Identifier,
    Sniffed,
    bounded_message,
    classify_reply,
    escape_bytes,
    order_probes,
)
from cloudward.exposure.net import Limits, ProbeError
from cloudward.exposure.probes.base import Observation, ProbeContext
from tests.exposure.hostile_servers import HostileServers, ToyProbe

LIMITS = Limits(connect_timeout=0.5, io_timeout=0.6, max_bytes=64 * 1024)
BUDGET = 4.0


# --- servers and probes of the tests' own ------------------------------------------------------


def _http_handler(extra_headers: bytes, connections: list[int] | None = None):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connections is not None:
            connections.append(1)
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            body = b"hello"
            writer.write(b"HTTP/1.1 200 OK\r\nServer: toyhttpd/1.0\r\n" + extra_headers
                         + b"Content-Length: 5\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return handler


async def _banner_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 toy ftp ready\r\n")
    try:
        await writer.drain()
        await asyncio.wait_for(reader.read(100), 3)
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _tls_toy_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        first = await asyncio.wait_for(reader.read(4096), 3)
        writer.write(b"TOY 2.0 open\r\n" if first.strip() == b"HELLO" else b"ERR\r\n")
        await writer.drain()
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()


class HeaderProbe:
    """An "http" probe: the service is whatever answers `/x` with `X-Toy: yes`."""

    name: ClassVar[str] = "toyweb"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = ()

    def __init__(self) -> None:
        self.calls: list[bool] = []

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        self.calls.append(tls)
        try:
            response = await ctx.http("/x", tls=tls)
        except ProbeError:
            return None
        if response.header("x-toy") != "yes":
            return None
        return Observation("toyweb", ctx.host, ctx.port, tls=tls, facts={"status": response.status})


class TlsToyProbe(ToyProbe):
    """The toy protocol, over TLS too."""

    name: ClassVar[str] = "tlstoy"

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        self.calls.append((ctx.port, tls))
        try:
            reply = await ctx.exchange(b"HELLO\r\n", tls=tls, until=b"\n", max_bytes=256)
        except ProbeError:
            return None
        if not reply.startswith(b"TOY "):
            return None
        return Observation("tlstoy", ctx.host, ctx.port, tls=tls, facts={"open": True})


class RecordingBannerProbe:
    name: ClassVar[str] = "bannerrec"
    family: ClassVar[str] = "banner"
    ports: ClassVar[tuple[int, ...]] = ()

    def __init__(self) -> None:
        self.banners: list[bytes] = []

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        self.banners.append(await ctx.banner())
        return None


def hinted(probe_class: type, port: int, **attrs: Any) -> Any:
    """An instance of `probe_class` whose port hint is `port`."""
    return type(f"Hinted{probe_class.__name__}", (probe_class,), {"ports": (port,), **attrs})()


def identify(probes, host: str, port: int, budget: float = BUDGET):
    return asyncio.run(Identifier(probes, LIMITS, budget, banner_wait=0.3).identify(host, port))


@pytest.fixture(scope="module")
def servers() -> Iterator[HostileServers]:
    with HostileServers() as hs:
        yield hs


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


# --- pure helpers ------------------------------------------------------------------------------


@given(st.binary(max_size=2000), st.integers(min_value=4, max_value=400))
def test_escape_bytes_is_printable_and_bounded(data, limit):
    text = escape_bytes(data, limit)
    assert text.isprintable() and text.isascii()
    assert len(text) <= limit + 3


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\"),
               max_size=100))
def test_escape_bytes_keeps_printable_ascii(text):
    assert escape_bytes(text.encode(), 200) == text


def test_bounded_message():
    assert bounded_message("a\x1bb\nc") == "a b c"
    assert len(bounded_message("x" * 10_000)) == 303


@pytest.mark.parametrize(("reply", "closed", "kind", "status"), [
    (b"", False, Sniffed.SILENT, None),
    (b"", True, Sniffed.CLOSED, None),
    (b"\x15\x03\x01\x00\x02\x02\x46", True, Sniffed.TLS, None),
    (b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n", True,
     Sniffed.HTTP, 400),
    (b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", False, Sniffed.HTTP, 200),
    (b"HTTP/1.1 OK\r\n", False, Sniffed.GARBAGE, None),
    (b"-ERR wrong\r\n", True, Sniffed.GARBAGE, None),
])
def test_classify_reply(reply, closed, kind, status):
    result = classify_reply(reply, closed)
    assert (result.kind, result.status) == (kind, status)


def test_order_probes_puts_hints_first_and_keeps_registry_order():
    first, second, third = ToyProbe(), hinted(ToyProbe, 6379), HeaderProbe()
    assert order_probes([first, second, third], 6379) == [second, first, third]
    assert order_probes([first, second, third], 6379, family="http") == [third]


# --- the walk against real sockets -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_plain_http_service_is_identified_and_tls_is_not_tried(servers):
    host, port = servers.serve(_http_handler(b"X-Toy: yes\r\n"))
    probe = HeaderProbe()
    outcome = identify([ToyProbe(), probe], host, port)
    assert outcome.observation.service == "toyweb" and not outcome.observation.tls
    assert outcome.identified and outcome.errors == []
    assert probe.calls == [False]


@pytest.mark.timeout(60)
def test_unrecognised_http_is_generic_inventory(servers):
    host, port = servers.serve(_http_handler(b""))
    probe = HeaderProbe()
    outcome = identify([probe], host, port)
    observation = outcome.observation
    assert observation.service == "http" and not outcome.identified
    assert observation.facts["status"] == 200 and observation.facts["server"] == "toyhttpd/1.0"
    assert True not in probe.calls  # a valid plain HTTP answer: no TLS attempt


@pytest.mark.timeout(60)
def test_tls_port_is_tried_as_tls(servers, tls_context):
    host, port = servers.serve(_http_handler(b"X-Toy: yes\r\n"), tls=tls_context)
    outcome = identify([HeaderProbe()], host, port)
    assert outcome.observation.service == "toyweb" and outcome.observation.tls
    assert outcome.errors == []


@pytest.mark.timeout(60)
def test_unrecognised_https_is_generic_inventory(servers, tls_context):
    host, port = servers.serve(_http_handler(b""), tls=tls_context)
    outcome = identify([HeaderProbe()], host, port)
    assert outcome.observation.service == "https" and outcome.observation.tls
    assert outcome.observation.facts["status"] == 200


@pytest.mark.timeout(60)
def test_raw_protocol_inside_tls(servers, tls_context):
    host, port = servers.serve(_tls_toy_handler, tls=tls_context)
    probe = TlsToyProbe()
    outcome = identify([HeaderProbe(), probe], host, port)
    assert outcome.observation.service == "tlstoy" and outcome.observation.tls
    assert (port, True) in probe.calls


@pytest.mark.timeout(60)
def test_server_first_banner_goes_to_banner_probes_only(servers):
    host, port = servers.serve(_banner_handler)
    banner_probe, raw_probe, http_probe = RecordingBannerProbe(), ToyProbe(), HeaderProbe()
    outcome = identify([banner_probe, raw_probe, http_probe], host, port)
    assert banner_probe.banners == [b"220 toy ftp ready\r\n"]
    assert raw_probe.calls == [] and http_probe.calls == []
    assert outcome.observation.service == "unknown"
    assert outcome.observation.facts["banner"] == "220 toy ftp ready\\r\\n"
    assert outcome.errors == []


@pytest.mark.timeout(60)
def test_a_hinted_raw_probe_goes_first_without_a_banner_wait(servers):
    connections: list[int] = []
    # Count the server's connections: the hinted probe alone should need one (no banner, no sniff).
    host, port = servers.serve(_counting_toy(connections))
    probe = hinted(ToyProbe, port)
    outcome = identify([HeaderProbe(), probe], host, port)
    assert outcome.observation.service == "toy"
    assert probe.calls == [(port, False)]
    assert len(connections) == 1


def _counting_toy(connections: list[int]):
    from tests.exposure.hostile_servers import toy

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await toy(reader, writer)

    return handler


@pytest.mark.timeout(60)
def test_unhinted_raw_service_is_found_after_the_sniff(servers):
    host, port = servers.start("toy")
    outcome = identify([HeaderProbe(), ToyProbe()], host, port)
    assert outcome.observation.service == "toy"
    assert outcome.observation.facts == {"version": "1.0", "open": True}


class SleepyProbe:
    name: ClassVar[str] = "sleepy"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = ()

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        await asyncio.sleep(3600)
        return None


class BrokenProbe:
    name: ClassVar[str] = "broken"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = ()

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        raise KeyError("a bug")


class HalfProbe:
    """Recognises the toy service, then fails to examine it."""

    name: ClassVar[str] = "half"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = ()

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        raise ProbeError("toy recognised but INFO timed out")


@pytest.mark.timeout(60)
def test_the_per_port_budget_bounds_a_stuck_probe(servers):
    host, port = servers.start("toy")
    outcome = identify([hinted(SleepyProbe, port)], host, port, budget=1.0)
    assert outcome.observation.service == "unknown"
    [error] = outcome.errors
    assert error.stage == "identify"
    assert "did not finish within 1s" in error.message and "sleepy probe" in error.message


@pytest.mark.timeout(60)
def test_a_probe_bug_costs_one_error_not_the_port(servers):
    host, port = servers.start("toy")
    outcome = identify([BrokenProbe(), ToyProbe()], host, port)
    assert outcome.observation.service == "toy"
    assert [e.stage for e in outcome.errors] == ["probe"]
    assert "broken probe failed" in outcome.errors[0].message and "KeyError" in outcome.errors[0].message


@pytest.mark.timeout(60)
def test_probe_error_after_identification_is_reported_and_not_examined(servers):
    host, port = servers.start("toy")
    outcome = identify([HalfProbe(), ToyProbe()], host, port)
    assert outcome.observation.service == "half" and not outcome.examined
    assert outcome.errors[0].stage == "probe"
    assert "could not be examined: toy recognised but INFO timed out" in outcome.errors[0].message


@pytest.mark.timeout(60)
def test_a_port_that_closed_meanwhile(servers):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    outcome = identify([ToyProbe()], "127.0.0.1", port)
    assert outcome.observation is None
    assert "stopped accepting connections" in outcome.errors[0].message
