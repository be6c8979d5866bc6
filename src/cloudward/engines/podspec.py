"""Kubernetes pod specs, read the same way by the admission webhook (a live AdmissionReview) and by
`iac scan` (manifests in a repository), so both agree on what is privileged and what is dangerous.

Here: where each workload kind keeps its pod spec, its containers of every sort, host paths
normalised the way the kubelet resolves them, which mounts hand over a denied path, and which
added capabilities amount to privilege. Judging stays with each caller (a policy there, rules here).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["DEFAULT_HOST_PATHS", "PRIVILEGED_CAPABILITIES", "RUNTIME_SOCKETS", "WORKLOAD_TEMPLATES", "containers",
           "covers", "host_path", "items", "pod_specs", "strong_capabilities"]

RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                   "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/run/crio/crio.sock",
                   "/run/podman/podman.sock", "/var/run/podman/podman.sock")
# a trailing "/**" also denies everything below (/proc/1/root is the host's root)
DEFAULT_HOST_PATHS = ["/", "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                      "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock", "/proc/**", "/etc"]
PRIVILEGED_CAPABILITIES = frozenset({"ALL", "SYS_ADMIN", "CAP_SYS_ADMIN"})

WORKLOAD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_specs(obj: Mapping[str, Any], kind: str | None = None) -> Iterator[Mapping[str, Any]]:
    """The pod spec of a Pod, or the pod template's spec of a workload (none for other kinds)."""
    path = WORKLOAD_TEMPLATES.get(str(obj.get("kind") or kind))
    if path is None:
        return
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        yield node


def items(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field, container) for initContainers, containers and ephemeralContainers."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in items(spec.get(key)):
            yield key, container


def host_path(path: str) -> str:
    """`/var/run/../run/docker.sock` -> `/run/docker.sock`; `//etc/` -> `/etc`."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def covers(mounted: str, denied: str) -> bool:
    """Mounting `mounted` hands over `denied`: the path itself or a directory above it (mounting
    /var/run hands over /var/run/docker.sock); with a trailing `/**`, also anything below."""
    subtree = denied.endswith("/**")
    denied = host_path(denied[:-3] if subtree else denied)
    if mounted == denied or mounted == "/" or denied.startswith(mounted + "/"):
        return True
    return subtree and (denied == "/" or mounted.startswith(denied + "/"))


def strong_capabilities(security_context: Mapping[str, Any]) -> list[str]:
    """The added capabilities that amount to privilege (SYS_ADMIN, ALL), upper-cased and sorted."""
    capabilities = security_context.get("capabilities")
    added = capabilities.get("add") if isinstance(capabilities, Mapping) else None
    if not isinstance(added, list):
        return []
    return sorted({str(c).upper() for c in added if str(c).upper() in PRIVILEGED_CAPABILITIES})
