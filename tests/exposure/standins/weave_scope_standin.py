"""A stand-in Weave Scope app (Scope is unmaintained and not installable here), replaying
app/router.go: `GET /api` answers `xfer.Details` ({"id", "version", "hostname", "plugins"}) and
`GET /api/topology` the list of `APITopologyDesc` with per-topology stats. Scope has no
authentication unless started with basic auth, in which case every path answers 401 (mode
"basic_auth").
"""

from __future__ import annotations

from typing import Any, Literal

from tests.exposure.standins import Reply, Route, StandIn, json_reply

Mode = Literal["open", "basic_auth"]


def _topology(topology_id: str, name: str, rank: int, nodes: int,
              subs: list[Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name, "rank": rank, "hide_if_empty": topology_id == "pods", "options": [],
        "url": f"/api/topology/{topology_id}",
        "stats": {"node_count": nodes, "nonpseudo_node_count": nodes, "edge_count": nodes // 2,
                  "filtered_nodes": 0},
    }
    if subs:
        entry["sub_topologies"] = subs
    return entry


TOPOLOGIES = [
    _topology("containers", "Containers", 2, 37,
              [_topology("containers-by-image", "by image", 0, 12)]),
    _topology("hosts", "Hosts", 4, 3),
    _topology("pods", "Pods", 3, 21),
    _topology("processes", "Processes", 1, 180),
]
DETAILS = {"id": "3e9a5f2b7c1d4e60", "version": "1.13.2", "hostname": "weave-scope-app-5d8f9c7b6-xk2lp",
           "plugins": [{"id": "iowait", "label": "iowait", "description": "Adds a graph of CPU IO Wait",
                        "interfaces": ["reporter"], "api_version": "1"}]}


def weave_scope(mode: Mode = "open") -> StandIn:
    if mode == "basic_auth":
        denied = Reply(401, "Unauthorized\n", [("Www-Authenticate", 'Basic realm="Restricted"')])
        return StandIn("weave-scope-basic-auth", {}, default=denied)
    routes: dict[str, Route] = {"GET /api": json_reply(DETAILS), "GET /api/topology": json_reply(TOPOLOGIES)}
    return StandIn("weave-scope", routes)
