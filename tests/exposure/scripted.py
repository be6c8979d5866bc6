"""Run one probe against an in-process server whose behaviour a test scripts (hostile peers,
look-alike protocols, replies cut short) — shared by the probe tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cloudward.exposure.net import Limits
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run_scripted(probe: Probe, handler: Handler, limits: Limits, tls: bool = False) -> Observation | None:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A script still lingering when the probe is done is cancelled at shutdown: end quietly.
        try:
            await handler(reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            writer.close()

    async def run() -> Observation | None:
        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await probe.identify(ProbeContext("127.0.0.1", port, limits), tls)

    return asyncio.run(run())
