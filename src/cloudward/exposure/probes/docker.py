"""Docker Engine API (and podman's Docker-compatible API) reachable over TCP.

Whoever can talk to this API owns the host: TeamTNT's first and favourite door was `2375/tcp`
answering `/version`, followed by `POST /containers/create` with the host's `/` bind-mounted. The
only authentication the engine offers is TLS with client certificates (`--tlsverify`), so an API
that answers our certificate-less requests is unauthenticated, whether over plain HTTP or TLS.

Identification: `/version` with Docker's JSON shape, or any answer carrying Docker's `Api-Version`
header (an authorization plugin may deny `/version` but the router still stamps the header). Only
read-only GETs are sent: `/version`, then `/info` for counts. When a daemon demands a client
certificate the TLS handshake (or the first read after it) fails; we then cannot tell it from any
other mutual-TLS service, so `identify` returns None — and there is nothing to report anyway.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext


def _product(version: dict[str, Any] | None, server_header: str) -> str:
    """podman when its API says so (Server `Libpod/...` or a `Podman Engine` component)."""
    if server_header.lower().startswith("libpod/"):
        return "podman"
    components = (version or {}).get("Components")
    if isinstance(components, list):
        for component in components:
            name = h.text(h.dig(component, "Name")) or ""
            if "podman" in name.lower():
                return "podman"
    return "docker"


def _version_facts(facts: dict[str, Any], data: dict[str, Any]) -> None:
    h.put(facts, "version", h.text(data.get("Version"), 64))
    h.put(facts, "api_version", h.text(data.get("ApiVersion"), 16))
    h.put(facts, "min_api_version", h.text(data.get("MinAPIVersion"), 16))
    h.put(facts, "os", h.text(data.get("Os"), 32))
    h.put(facts, "arch", h.text(data.get("Arch"), 32))
    h.put(facts, "kernel_version", h.text(data.get("KernelVersion"), 96))
    h.put(facts, "go_version", h.text(data.get("GoVersion"), 32))


def _info_facts(facts: dict[str, Any], info: dict[str, Any]) -> None:
    h.put(facts, "containers", h.integer(info.get("Containers")))
    h.put(facts, "containers_running", h.integer(info.get("ContainersRunning")))
    h.put(facts, "images", h.integer(info.get("Images")))
    h.put(facts, "hostname", h.text(info.get("Name"), 128))
    h.put(facts, "operating_system", h.text(info.get("OperatingSystem"), 96))
    h.put(facts, "swarm_state", h.text(h.dig(info, "Swarm", "LocalNodeState"), 32))
    options = info.get("SecurityOptions")
    if isinstance(options, list):
        facts["security_options"] = h.names(options)
    plugins = h.dig(info, "Plugins", "Authorization")
    facts["authorization_plugins"] = h.names(plugins) if isinstance(plugins, list) else []


class DockerApiProbe:
    name: ClassVar[str] = "docker"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (2375, 2376, 4243)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        response = await h.fetch(ctx, "/version", tls)
        if response is None:
            return None
        data = h.json_object(response)
        readable = response.status == 200 and h.has_keys(data, "ApiVersion", "Version")
        api_header = response.header("api-version")
        if not readable and not api_header:
            return None  # not Docker: the engine stamps Api-Version on every API answer

        facts: dict[str, Any] = {"tls": tls, "api_readable": readable, "status": response.status}
        facts["product"] = _product(data, response.header("server"))
        h.put(facts, "api_version", h.text(api_header, 16) if api_header else None)
        if readable and data is not None:
            _version_facts(facts, data)
            info = h.json_object(await h.fetch(ctx, "/info", tls, facts=facts))
            if info is not None:
                _info_facts(facts, info)
        return Observation(service="docker", host=ctx.host, port=ctx.port, tls=tls, facts=facts)


PROBES: list[Probe] = [DockerApiProbe()]
