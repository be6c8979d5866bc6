"""etcd's client port (2379) answering without authentication.

etcd holds a Kubernetes cluster's whole state, Secrets included, in plain protobuf. It ships with
neither client-certificate checking nor RBAC turned on, so an etcd reachable by an attacker usually
hands out every service-account token and cloud credential in the cluster.

Identification is `GET /version` returning `{"etcdserver": ..., "etcdcluster": ...}`. The proof of
exposure is one read through the v3 JSON gateway: a range over the whole keyspace (key and
range_end both "\\0") with `count_only`, so the server answers with a key count and never a key or
value. etcd 3.3 serves the gateway under `/v3beta`, 3.4 under both, 3.5+ only under `/v3`.
With auth enabled the gateway refuses (`user name is empty`, `invalid auth token`, `permission
denied`); that is identified and reported as `auth_required: true`. With `--client-cert-auth` the TLS
handshake fails without a certificate, nothing answers, and `identify` returns None.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from cloudward.exposure.net import HttpResponse
from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext

GATEWAYS = ("/v3", "/v3beta")
# base64("\0") for key and range_end: every key. count_only: the answer carries no keys or values.
RANGE_QUERY = json.dumps(
    {"key": "AA==", "range_end": "AA==", "keys_only": True, "count_only": True}
).encode()
AUTH_ERRORS = ("user name is empty", "invalid auth token", "permission denied",
               "authentication failed", "user name not found", "auth: revision")
# gRPC status codes as the gateway reports them: 7 PermissionDenied, 16 Unauthenticated.
AUTH_CODES = (7, 16)


def _auth_refusal(response: HttpResponse, body: Any) -> bool:
    if response.status in (401, 403):
        return True
    if not isinstance(body, dict):
        return False
    message = " ".join(str(body.get(k, "")) for k in ("error", "message")).lower()
    return h.integer(body.get("code")) in AUTH_CODES or any(e in message for e in AUTH_ERRORS)


class EtcdProbe:
    name: ClassVar[str] = "etcd"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (2379, 4001)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        response = await h.fetch(ctx, "/version", tls)
        data = h.json_object(response)
        if response is None or response.status != 200 or data is None:
            return None
        server_version = h.text(data.get("etcdserver"), 32)
        if server_version is None:
            return None
        facts: dict[str, Any] = {"tls": tls, "server_version": server_version}
        h.put(facts, "cluster_version", h.text(data.get("etcdcluster"), 32))
        await self._range_count(ctx, tls, facts)
        return Observation(service="etcd", host=ctx.host, port=ctx.port, tls=tls, facts=facts)

    async def _range_count(self, ctx: ProbeContext, tls: bool, facts: dict[str, Any]) -> None:
        """Count the keys without reading one; sets auth_required, key_count, gateway."""
        headers = {"Content-Type": "application/json"}
        for prefix in GATEWAYS:
            response = await h.fetch(ctx, f"{prefix}/kv/range", tls, method="POST", body=RANGE_QUERY,
                                     headers=headers, facts=facts)
            if response is None:
                return
            if response.status == 404:
                continue  # this etcd serves the gateway under another prefix
            body = h.json_body(response)
            facts["gateway"] = prefix
            if response.status == 200 and isinstance(body, dict) and isinstance(body.get("header"), dict):
                facts["auth_required"] = False
                # proto3 JSON omits zero values: no "count" means an empty keyspace.
                facts["key_count"] = h.integer(body.get("count", "0")) or 0
                h.put(facts, "revision", h.integer(h.dig(body, "header", "revision")))
            elif _auth_refusal(response, body):
                facts["auth_required"] = True
                h.put(facts, "auth_error", h.text(h.dig(body, "error")) if isinstance(body, dict) else None)
            else:
                facts["range_status"] = response.status
            return
        facts["gateway"] = None  # no v3 JSON gateway answered (etcd 2.x, or the gateway is disabled)


PROBES: list[Probe] = [EtcdProbe()]
