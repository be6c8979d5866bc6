"""Docker distribution registries (the OCI / Docker Registry HTTP API v2).

A registry is identified by `GET /v2/` carrying `Docker-Distribution-Api-Version: registry/2.0`
(sent on every answer, 200 or 401). Facts say whether it wants credentials (`auth_required`, the
challenge scheme) and whether its catalog is listable (`GET /v2/_catalog?n=1`, one repository name
at most). An anonymous, readable registry is the normal case for public registries, so no rule
fires on it by itself; the facts are there for the container capability (images pulled from
untrusted registries) and for users' own rules.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext


class RegistryV2Probe:
    name: ClassVar[str] = "registry"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (5000, 443, 5001)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        response = await h.fetch(ctx, "/v2/", tls)
        if response is None:
            return None
        api = response.header("docker-distribution-api-version")
        if not api.startswith("registry/2"):
            return None
        facts: dict[str, Any] = {"tls": tls, "api_version": h.clip(api, 32), "status": response.status}
        facts["auth_required"] = response.status == 401
        if response.status == 401:
            challenge = response.header("www-authenticate")
            h.put(facts, "auth_scheme", h.clip(challenge.split(" ", 1)[0], 16) if challenge else None)
            facts["catalog_readable"] = False
        elif response.status == 200:
            catalog = await h.fetch(ctx, "/v2/_catalog?n=1", tls, facts=facts)
            body = h.json_object(catalog)
            repositories = body.get("repositories") if body is not None else None
            if catalog is not None and catalog.status == 200 and isinstance(repositories, list):
                facts["catalog_readable"] = True
                facts["catalog_sample"] = h.names(repositories, limit=1)
            elif h.denied(catalog):
                facts["catalog_readable"] = False
        return Observation(service="registry", host=ctx.host, port=ctx.port, tls=tls, facts=facts)


PROBES: list[Probe] = [RegistryV2Probe()]
