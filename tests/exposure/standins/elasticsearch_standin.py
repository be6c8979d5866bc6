"""A stand-in Elasticsearch node (Elasticsearch is not installable here), replaying the REST
answers of 7.17 with security disabled ("open"), and of 8.x with security on ("secured": every
request without credentials gets 401, `WWW-Authenticate: Basic realm="security"` and a
`security_exception` body). "opensearch" replays an OpenSearch 2.x node without the security
plugin.
"""

from __future__ import annotations

from typing import Any, Literal

from tests.exposure.standins import Reply, Request, Route, StandIn

Mode = Literal["open", "secured", "opensearch"]
JSON_UTF8 = ("Content-Type", "application/json; charset=UTF-8")
ELASTIC = ("X-elastic-product", "Elasticsearch")

ROOT_ES = {
    "name": "es-01", "cluster_name": "logs-prod", "cluster_uuid": "q3pOu0yFQ2y3Bk2xT0bL5A",
    "version": {"number": "7.17.15", "build_flavor": "default", "build_type": "docker",
                "build_hash": "0b8ecfb4378335f4689c4223d1f1115f16bef3ba",
                "build_date": "2023-11-10T22:03:46.987399016Z", "build_snapshot": False,
                "lucene_version": "8.11.1", "minimum_wire_compatibility_version": "6.8.0",
                "minimum_index_compatibility_version": "6.0.0-beta1"},
    "tagline": "You Know, for Search",
}
ROOT_OPENSEARCH = {
    "name": "os-node-1", "cluster_name": "search", "cluster_uuid": "Zp1Qf2cTQ0y0Yf6zWv2b3w",
    "version": {"distribution": "opensearch", "number": "2.11.1", "build_type": "tar",
                "build_hash": "6b1986e964d440be9137eba1413015c31c5a7752",
                "build_date": "2023-11-29T21:43:10.135035992Z", "build_snapshot": False,
                "lucene_version": "9.7.0", "minimum_wire_compatibility_version": "7.10.0",
                "minimum_index_compatibility_version": "7.0.0"},
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}
HEALTH = {"cluster_name": "logs-prod", "status": "yellow", "timed_out": False, "number_of_nodes": 1,
          "number_of_data_nodes": 1, "active_primary_shards": 4, "active_shards": 4,
          "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": 3,
          "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
          "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": 57.1}
INDICES = [{"index": ".geoip_databases", "docs.count": "40"}, {"index": "customers", "docs.count": "120000"},
           {"index": "orders-2024.03", "docs.count": "345"}]


def _security_exception(request: Request) -> Reply:
    challenge = 'Basic realm="security" charset="UTF-8"'
    reason = f"missing authentication credentials for REST request [{request.path}]"
    cause: dict[str, Any] = {"type": "security_exception", "reason": reason,
                             "header": {"WWW-Authenticate": [challenge, 'Bearer realm="security"', "ApiKey"]}}
    body = {"error": {"root_cause": [cause], **cause}, "status": 401}
    return Reply(401, body, [("WWW-Authenticate", challenge), ("WWW-Authenticate", 'Bearer realm="security"'),
                             ("WWW-Authenticate", "ApiKey"), JSON_UTF8, ELASTIC])


def elasticsearch(mode: Mode = "open") -> StandIn:
    if mode == "secured":
        return StandIn("elasticsearch-secured", {}, default=_security_exception)
    root = ROOT_OPENSEARCH if mode == "opensearch" else ROOT_ES
    extra = [JSON_UTF8] if mode == "opensearch" else [JSON_UTF8, ELASTIC]
    not_found = {"error": {"root_cause": [{"type": "index_not_found_exception", "reason": "no such index"}],
                           "type": "index_not_found_exception", "reason": "no such index"}, "status": 404}
    routes: dict[str, Route] = {
        "GET /": Reply(200, root, extra),
        "GET /_cluster/health": Reply(200, {**HEALTH, "cluster_name": root["cluster_name"]}, extra),
        "GET /_cat/indices": Reply(200, INDICES, extra),
    }
    return StandIn(f"elasticsearch-{mode}", routes, default=Reply(404, not_found, extra))
