"""Elasticsearch / OpenSearch REST API (9200/tcp) readable without credentials.

Before 8.0 Elasticsearch shipped with security off, and an open cluster lets anyone read, write
and delete every index — the source of countless leaks and of ransom-note wipes. 8.x turns
security on at first start, but `xpack.security.enabled: false` is still one line away.

Identification: `GET /` answers `{"name", "cluster_name", "version": {"number"},
"tagline": "You Know, for Search"}` (OpenSearch: its own tagline and `distribution`), or refuses
with `401` and `WWW-Authenticate: Basic realm="security"` (OpenSearch: `realm="OpenSearch
Security"`), which identifies a protected cluster. When `/` answers, the data APIs decide:
`/_cluster/health` and `/_cat/indices?format=json` (index names and document counts only; no
document is read). If either answers without credentials the cluster is open.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudward.exposure.net import HttpResponse
from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext

ES_TAGLINE = "You Know, for Search"
AUTH_REALMS = ('realm="security"', 'realm="opensearch security"')


def _product(data: dict[str, Any], response: HttpResponse) -> str | None:
    tagline = h.text(data.get("tagline")) or ""
    distribution = h.dig(data, "version", "distribution")
    if distribution == "opensearch" or "OpenSearch" in tagline:
        return "opensearch"
    if tagline == ES_TAGLINE or response.header("x-elastic-product") == "Elasticsearch":
        return "elasticsearch"
    if h.has_keys(data, "cluster_name", "cluster_uuid") and isinstance(h.dig(data, "version", "number"), str):
        return "elasticsearch"
    return None


def _auth_challenge(response: HttpResponse) -> str | None:
    """The product behind a 401, judged by its security realm or error type."""
    challenge = response.header("www-authenticate").lower()
    if 'realm="opensearch security"' in challenge:
        return "opensearch"
    if 'realm="security"' in challenge or response.header("x-elastic-product") == "Elasticsearch":
        return "elasticsearch"
    error_type = h.dig(h.json_object(response), "error", "type")
    return "elasticsearch" if error_type == "security_exception" else None


class ElasticsearchProbe:
    name: ClassVar[str] = "elasticsearch"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (9200, 9201)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        root = await h.fetch(ctx, "/", tls)
        if root is None:
            return None
        data = h.json_object(root)
        facts: dict[str, Any] = {"tls": tls}
        if root.status == 200 and data is not None and (product := _product(data, root)):
            facts["product"] = product
            h.put(facts, "version", h.text(h.dig(data, "version", "number"), 32))
            h.put(facts, "build_flavor", h.text(h.dig(data, "version", "build_flavor"), 32))
            h.put(facts, "cluster_name", h.text(data.get("cluster_name"), 128))
            h.put(facts, "node_name", h.text(data.get("name"), 128))
            await self._data_apis(ctx, tls, facts)
        elif root.status == 401 and (product := _auth_challenge(root)):
            facts["product"] = product
            facts["auth_required"] = True
            facts["cluster_health_readable"] = False
            facts["indices_readable"] = False
        else:
            return None
        return Observation(service="elasticsearch", host=ctx.host, port=ctx.port, tls=tls, facts=facts)

    async def _data_apis(self, ctx: ProbeContext, tls: bool, facts: dict[str, Any]) -> None:
        health = await h.fetch(ctx, "/_cluster/health", tls, facts=facts)
        body = h.json_object(health)
        if health is not None and health.status == 200 and body is not None and "status" in body:
            facts["cluster_health_readable"] = True
            h.put(facts, "cluster_status", h.text(body.get("status"), 16))
            h.put(facts, "number_of_nodes", h.integer(body.get("number_of_nodes")))
        elif h.denied(health):
            facts["cluster_health_readable"] = False

        indices = await h.fetch(ctx, "/_cat/indices?format=json&h=index,docs.count", tls, facts=facts)
        rows = h.json_body(indices)
        if indices is not None and indices.status == 200 and isinstance(rows, list):
            facts["indices_readable"] = True
            index_names = [r.get("index") for r in rows if isinstance(r, dict)]
            facts["index_count"] = len(index_names)
            user = [n for n in index_names if isinstance(n, str) and not n.startswith(".")]
            facts["indices"] = h.names(user or index_names)
            counts = (h.integer(r.get("docs.count")) for r in rows if isinstance(r, dict))
            facts["docs_count"] = sum(c or 0 for c in counts)
        elif indices is not None and indices.status == 200 and indices.truncated \
                and indices.body.lstrip().startswith(b"["):
            facts["indices_readable"] = True  # too many indices to count within the byte ceiling
        elif h.denied(indices):
            facts["indices_readable"] = False

        readable = [facts.get("cluster_health_readable"), facts.get("indices_readable")]
        if True in readable:
            facts["auth_required"] = False
        elif readable == [False, False]:
            facts["auth_required"] = True


PROBES: list[Probe] = [ElasticsearchProbe()]
