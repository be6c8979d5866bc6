"""A stand-in Kubernetes API server (kube-apiserver cannot run here: it needs etcd, certificates
and a release binary we cannot install), replaying its documented answers over TLS:

- "default_rbac": anonymous auth on with the default RBAC — `/version` is readable
  (system:public-info-viewer), `/` and every list are `403` `Status` objects.
- "open": a binding gives `system:anonymous` list rights: namespaces and pods are listable.
- "pods_only": anonymous may list pods but not namespaces.
- "no_anonymous": `--anonymous-auth=false`: everything is a `401` `Status`.
- "locked_down": anonymous auth on but system:public-info-viewer unbound: even `/version` is 403.
"""

from __future__ import annotations

from typing import Any, Literal

from tests.exposure.standins import Reply, Request, Route, StandIn, json_reply
from tests.exposure.standins.kubelet_standin import DEFAULT_PODS

Mode = Literal["default_rbac", "open", "pods_only", "no_anonymous", "locked_down"]

VERSION = {"major": "1", "minor": "28", "gitVersion": "v1.28.4",
           "gitCommit": "bae2c62678db2b5053817bc97181fcc2e8388103", "gitTreeState": "clean",
           "buildDate": "2023-11-15T16:48:54Z", "goVersion": "go1.20.11",
           "compiler": "gc", "platform": "linux/amd64"}
NAMESPACES = ["default", "kube-node-lease", "kube-public", "kube-system", "payments"]


def status(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> Reply:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return json_reply(body, code, ("Cache-Control", "no-cache, private"),
                      ("X-Content-Type-Options", "nosniff"))


UNAUTHORIZED = status(401, "Unauthorized", "Unauthorized")


def forbidden_list(resource: str) -> Reply:
    return status(403, f'{resource} is forbidden: User "system:anonymous" cannot list resource '
                  f'"{resource}" in API group "" at the cluster scope', "Forbidden", {"kind": resource})


def forbidden_path(path: str) -> Reply:
    return status(403, f'forbidden: User "system:anonymous" cannot get path "{path}"', "Forbidden")


def _limited(items: list[dict[str, Any]], kind: str, request: Request) -> dict[str, Any]:
    """A list honouring `?limit=`, with remainingItemCount as the real server reports it."""
    limit = len(items)
    for part in request.path.partition("?")[2].split("&"):
        if part.startswith("limit="):
            limit = int(part[6:])
    metadata: dict[str, Any] = {"resourceVersion": "48213"}
    if limit < len(items):
        metadata["continue"] = "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"
        metadata["remainingItemCount"] = len(items) - limit
    return {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items[:limit]}


def kube_apiserver(mode: Mode) -> StandIn:
    namespaces = [{"metadata": {"name": n, "uid": f"ns-{n}"}, "spec": {"finalizers": ["kubernetes"]},
                   "status": {"phase": "Active"}} for n in NAMESPACES]
    pods = [{**p, "kind": "Pod", "apiVersion": "v1"} for p in DEFAULT_PODS]

    def list_namespaces(request: Request) -> Reply:
        return json_reply(_limited(namespaces, "NamespaceList", request))

    def list_pods(request: Request) -> Reply:
        return json_reply(_limited(pods, "PodList", request))

    if mode == "no_anonymous":
        return StandIn("kube-apiserver-no-anonymous", {}, tls=True, default=UNAUTHORIZED)

    routes: dict[str, Route] = {"GET /version": json_reply(VERSION),
                                "GET /healthz": Reply(200, "ok")}
    if mode == "locked_down":
        routes["GET /version"] = forbidden_path("/version")
    if mode == "open":
        routes["GET /"] = json_reply({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/version"]})
        routes["GET /api/v1/namespaces"] = list_namespaces
        routes["GET /api/v1/pods"] = list_pods
    else:
        routes["GET /"] = forbidden_path("/")
        routes["GET /api/v1/namespaces"] = forbidden_list("namespaces")
        routes["GET /api/v1/pods"] = list_pods if mode == "pods_only" else forbidden_list("pods")

    def fallback(request: Request) -> Reply:
        return forbidden_path(request.route)

    return StandIn(f"kube-apiserver-{mode}", routes, tls=True, default=fallback)
