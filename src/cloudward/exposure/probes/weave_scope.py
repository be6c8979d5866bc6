"""Weave Scope's app (4040/tcp) reachable without authentication.

Scope maps every host, container and process it sees and, unless its probes run with
`--probe.no-controls`, its UI opens a shell in any container or on the host. It has no
authentication of its own (basic auth arrived late and is off by default), so TeamTNT simply
installed or found it and used it as a remote console (Intezer, Microsoft, September 2020).

Identification: `GET /api` answers `{"id", "version", "hostname", "plugins"...}`. The proof of
exposure is `GET /api/topology`, the list of topologies with node counts — the same call the UI
makes first. A Scope behind basic auth answers 401 to both and cannot be told from any other
password-protected site, so it is not identified (and there is nothing to report).
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext

# Top-level topology names whose node counts are worth keeping as evidence.
COUNTED = {"containers": "container_count", "hosts": "host_count", "pods": "pod_count",
           "processes": "process_count"}


def _is_topology(entry: Any) -> bool:
    url = h.dig(entry, "url")
    return isinstance(url, str) and url.startswith("/api/topology/") and isinstance(h.dig(entry, "name"), str)


def _is_details(data: dict[str, Any]) -> bool:
    """Scope's xfer.Details: id, version and hostname, all strings."""
    return all(isinstance(data.get(k), str) for k in ("id", "version", "hostname"))


class WeaveScopeProbe:
    name: ClassVar[str] = "weave_scope"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (4040,)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        response = await h.fetch(ctx, "/api", tls)
        data = h.json_object(response)
        if response is None or response.status != 200 or data is None or not _is_details(data):
            return None
        facts: dict[str, Any] = {"tls": tls}
        facts["version"] = h.text(data["version"], 64)
        facts["hostname"] = h.text(data["hostname"], 128)
        plugins = data.get("plugins")
        if isinstance(plugins, list):
            facts["plugins"] = h.names(h.dig(p, "id") for p in plugins)

        topology = await h.fetch(ctx, "/api/topology", tls, facts=facts)
        listing = h.json_body(topology)
        if topology is not None and topology.status == 200 and isinstance(listing, list) \
                and listing and all(_is_topology(t) for t in listing):
            facts["topology_readable"] = True
            facts["topologies"] = h.names(t["name"] for t in listing)
            for entry in listing:
                key = COUNTED.get(str(entry["url"]).rsplit("/", 1)[-1])
                if key:
                    h.put(facts, key, h.integer(h.dig(entry, "stats", "node_count")))
        elif h.denied(topology):
            facts["topology_readable"] = False
        return Observation(service="weave_scope", host=ctx.host, port=ctx.port, tls=tls, facts=facts)


PROBES: list[Probe] = [WeaveScopeProbe()]
