"""Hostile input is the normal case: every probe, fed arbitrary bytes by a server on loopback,
either identifies something, declines (None), or raises ProbeError — never anything else, and its
facts stay JSON-safe and bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.exposure.net import Limits, ProbeError
from cloudward.exposure.probes.base import ProbeContext
from cloudward.exposure.probes.registry import all_probes

LIMITS = Limits(connect_timeout=1.0, io_timeout=0.3, max_bytes=64 * 1024)

# Replies that look almost right are the interesting ones: protocol prefixes plus noise.
PREFIXES = [b"", b"SSH-2.0-", b"+PONG\r\n", b"-NOAUTH", b"$", b"*", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 401 X\r\n",
            b"R\x00\x00\x00\x08\x00\x00\x00\x00", b"E\x00\x00\x00", b"N", b"S", b"\x15\x03\x01\x00\x02"]
replies = st.builds(lambda p, tail: p + tail, st.sampled_from(PREFIXES), st.binary(max_size=600))
http_bodies = st.builds(
    lambda status, headers, body: (f"HTTP/1.1 {status} X\r\n".encode() + headers
                                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body),
    st.sampled_from([200, 401, 403, 404, 500]),
    st.sampled_from([b"", b"Api-Version: 1.41\r\n", b"Content-Type: application/json\r\n",
                     b"Docker-Distribution-Api-Version: registry/2.0\r\n", b"Server: TornadoServer/6\r\n"]),
    st.one_of(st.binary(max_size=400), st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20).map(lambda v: json.dumps(v).encode())),
)


async def _probe_all(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(4096), 0.05)
        writer.write(reply)
        try:
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for probe in all_probes():
            ctx = ProbeContext("127.0.0.1", port, LIMITS)
            try:
                observation = await asyncio.wait_for(probe.identify(ctx, False), 20)
            except ProbeError:
                continue
            if observation is not None:
                encoded = json.dumps(observation.facts)  # JSON-safe
                assert len(encoded) < 200_000, f"{probe.name} facts unbounded"
    finally:
        server.close()
        await server.wait_closed()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies)
def test_probes_survive_arbitrary_replies(reply):
    asyncio.run(_probe_all(reply))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(http_bodies)
def test_probes_survive_arbitrary_http(reply):
    asyncio.run(_probe_all(reply))
