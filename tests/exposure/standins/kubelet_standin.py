"""A stand-in kubelet API: the kubelet cannot run here (it needs a node, a container runtime and an
API server), so this replays what pkg/kubelet/server sends.

- "anonymous": 10250 over TLS with `--anonymous-auth=true --authorization-mode=AlwaysAllow`
  (the TeamTNT case): `/pods` answers a PodList, `/healthz` "ok".
- "forbidden": anonymous authentication on, Webhook authorization: every route answers
  `403 Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=proxy)`.
- "unauthorized": `--anonymous-auth=false`: every route answers `401 Unauthorized`.
- "read_only": the read-only port 10255, plain HTTP, no auth: `/pods`, `/healthz`, `/spec/`.

In every mode `/` is Go's plain 404: no route is registered there, so the auth filter never runs.
"""

from __future__ import annotations

from typing import Any, Literal

from tests.exposure.standins import Reply, Route, StandIn, json_reply

Mode = Literal["anonymous", "forbidden", "unauthorized", "read_only"]
ROUTES = ("/pods", "/healthz", "/spec/", "/stats/summary", "/metrics", "/runningpods/", "/configz")


def pod(name: str, namespace: str, image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod as the kubelet encodes it (items of a kubelet PodList carry no kind/apiVersion)."""
    container: dict[str, Any] = {"name": name.split("-")[0], "image": image, "resources": {},
                                 "terminationMessagePath": "/dev/termination-log",
                                 "imagePullPolicy": "IfNotPresent"}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "creationTimestamp": "2024-03-01T10:00:00Z"},
        "spec": {"containers": [container], "restartPolicy": "Always", "nodeName": "node-1",
                 "dnsPolicy": "ClusterFirst"},
        "status": {"phase": "Running", "hostIP": "10.0.0.11", "podIP": "10.244.0.12"},
    }


DEFAULT_PODS = [
    pod("kube-proxy-x2k9f", "kube-system", "registry.k8s.io/kube-proxy:v1.28.4"),
    pod("coredns-5dd5756b68-abcde", "kube-system", "registry.k8s.io/coredns/coredns:v1.10.1"),
    pod("web-7c9d8f6b5-q8zlm", "default", "nginx:1.25", env={"DB_PASSWORD": "not-a-real-secret"}),
]

MACHINE_INFO = {"num_cores": 4, "cpu_frequency_khz": 2400000, "memory_capacity": 16776183808,
                "machine_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "system_uuid": "ec2-node-1",
                "boot_id": "b9c0a1d2", "filesystems": [], "disk_map": {}, "network_devices": [],
                "topology": [], "cloud_provider": "AWS", "instance_type": "m5.xlarge"}


def pod_list(pods: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}


def kubelet(mode: Mode, pods: list[dict[str, Any]] | None = None) -> StandIn:
    pods = DEFAULT_PODS if pods is None else pods
    routes: dict[str, Route] = {}
    if mode in ("anonymous", "read_only"):
        routes["GET /pods"] = json_reply(pod_list(pods))
        routes["GET /healthz"] = Reply(200, "ok")
        routes["GET /runningpods/"] = json_reply(pod_list(pods))
        if mode == "read_only":
            routes["GET /spec/"] = json_reply(MACHINE_INFO)
    else:
        if mode == "forbidden":
            denial = Reply(403, "Forbidden (user=system:anonymous, verb=get, resource=nodes, "
                                "subresource=proxy)")
        else:
            denial = Reply(401, "Unauthorized")
        for path in ROUTES:
            routes[f"GET {path}"] = denial
    return StandIn(f"kubelet-{mode}", routes, tls=mode != "read_only")
