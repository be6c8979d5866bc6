"""The kubelet API and the Kubernetes API server, asked what they tell an anonymous client.

kubelet (10250/tcp, always HTTPS): anonymous authentication is on by default and, with
`--authorization-mode=AlwaysAllow`, `/pods` lists every pod spec and `/run`, `/exec` run commands
in any container — TeamTNT's Kubernetes entry point. With Webhook authorization the kubelet still
authenticates the anonymous user but answers `403 Forbidden (user=system:anonymous, verb=get,
resource=nodes, subresource=proxy)`, which identifies it without exposing anything. With
`--anonymous-auth=false` it answers a bare `401 Unauthorized`, which any Go server could send:
that kubelet is not identified (returning None), and there is nothing to report on it.
The read-only port (10255/tcp, plain HTTP, no auth at all) serves `/pods` and `/spec/`.

API server (6443/tcp): `/version` is readable anonymously by default (RBAC role
system:public-info-viewer) and only leaks the version; a binding that lets `system:anonymous` or
`system:unauthenticated` list namespaces or pods hands the cluster to anyone.

Only GETs are sent; listings ask for `limit=` a few items and only names and counts are kept.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from cloudward.exposure.net import HttpResponse
from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext

# The kubelet's own authorization failure (pkg/kubelet/server): resource is always "nodes".
KUBELET_FORBIDDEN = re.compile(r"Forbidden \(user=[^,()]*, verb=\w+, resource=nodes, subresource=\w+\)")
PODLIST_PREFIX = re.compile(rb'^\s*\{\s*"kind"\s*:\s*"PodList"')


def _items(data: Any) -> list[Any] | None:
    items = data.get("items") if isinstance(data, dict) else None
    if isinstance(data, dict) and "items" in data and items is None:
        return []  # Kubernetes encodes an empty list as null
    return items if isinstance(items, list) else None


def _pod_facts(facts: dict[str, Any], response: HttpResponse) -> bool:
    """Facts from a PodList answer; False when the answer is not a PodList.

    A busy node's PodList can outgrow the byte ceiling: the prefix still proves what it is, only
    the counts are then unknown (`pods_truncated`).
    """
    if response.status != 200:
        return False
    data = h.json_body(response)
    items = _items(data)
    if isinstance(data, dict) and data.get("kind") == "PodList" and items is not None:
        facts["pod_count"] = len(items)
        facts["namespaces"] = h.names(h.dig(item, "metadata", "namespace") for item in items)
        return True
    if response.truncated and PODLIST_PREFIX.match(response.body):
        facts["pods_truncated"] = True
        return True
    return False


class KubeletProbe:
    name: ClassVar[str] = "kubelet"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (10250, 10255)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        # Cheap gate shared with other probes: the kubelet serves nothing at "/" (Go's 404),
        # so a port that answers "/" with content is not worth a /pods request.
        root = await h.fetch(ctx, "/", tls)
        if root is None or root.status not in (401, 403, 404):
            return None
        pods = await h.fetch(ctx, "/pods", tls)
        if pods is None:
            return None
        facts: dict[str, Any] = {"tls": tls}
        if _pod_facts(facts, pods):
            facts["pods_readable"] = True
            facts["auth"] = "none" if not tls else "anonymous"
            facts["read_only_port"] = not tls
            if not tls:
                await self._spec(ctx, facts)
        elif pods.status == 403 and KUBELET_FORBIDDEN.search(h.body_text(pods, 1024)):
            facts["pods_readable"] = False
            facts["auth"] = "forbidden"
            facts["read_only_port"] = False
            facts["denial"] = h.clip(h.body_text(pods, 200).strip())
        else:
            return None
        return Observation(service="kubelet", host=ctx.host, port=ctx.port, tls=tls, facts=facts)

    async def _spec(self, ctx: ProbeContext, facts: dict[str, Any]) -> None:
        """The read-only port's machine info (cAdvisor MachineInfo), when it is served."""
        spec = h.json_object(await h.fetch(ctx, "/spec/", False, facts=facts))
        facts["spec_readable"] = spec is not None and "num_cores" in spec
        if spec is not None:
            h.put(facts, "num_cores", h.integer(spec.get("num_cores")))
            h.put(facts, "memory_capacity", h.integer(spec.get("memory_capacity")))


def _is_version_info(data: dict[str, Any]) -> bool:
    """k8s.io/apimachinery version.Info: major, minor and gitVersion, all strings."""
    return all(isinstance(data.get(k), str) for k in ("major", "minor", "gitVersion"))


def _is_status(data: Any) -> bool:
    """A Kubernetes `Status` object: how the API server words every refusal."""
    return isinstance(data, dict) and data.get("kind") == "Status" and "code" in data


class KubeApiServerProbe:
    name: ClassVar[str] = "kubernetes"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (6443, 443, 8443, 8080)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        response = await h.fetch(ctx, "/version", tls)
        data = h.json_object(response)
        if response is None or data is None:
            return None
        facts: dict[str, Any] = {"tls": tls}
        if response.status == 200 and _is_version_info(data):
            facts["version_anonymous"] = True
            facts["anonymous_auth"] = True
            facts["git_version"] = h.text(data["gitVersion"], 64)
            facts["major"] = h.text(data["major"], 8)
            facts["minor"] = h.text(data["minor"], 8)
            h.put(facts, "platform", h.text(data.get("platform"), 32))
            await self._listing(ctx, tls, facts)
        elif response.status in (401, 403) and _is_status(data):
            facts["version_anonymous"] = False
            # 401: anonymous authentication is off, nothing can be listed. 403: it is on but
            # RBAC hides the version; a binding could still allow a listing, so ask.
            facts["anonymous_auth"] = response.status == 403
            if response.status == 403:
                await self._listing(ctx, tls, facts)
            else:
                facts["resource_listing_anonymous"] = False
        else:
            return None
        return Observation(service="kubernetes", host=ctx.host, port=ctx.port, tls=tls, facts=facts)

    async def _listing(self, ctx: ProbeContext, tls: bool, facts: dict[str, Any]) -> None:
        """Can the anonymous user list namespaces, or failing that pods? Sets the listing facts."""
        refused = 0
        attempts = (("namespaces", "/api/v1/namespaces?limit=10"), ("pods", "/api/v1/pods?limit=1"))
        for resource, path in attempts:
            response = await h.fetch(ctx, path, tls, facts=facts)
            if response is None:
                return
            data = h.json_body(response)
            items = _items(data)
            if response.status == 200 and items is not None:
                facts["resource_listing_anonymous"] = True
                facts["listable_resource"] = resource
                if resource == "namespaces":
                    facts["namespaces"] = h.names(h.dig(i, "metadata", "name") for i in items)
                remaining = h.integer(h.dig(data, "metadata", "remainingItemCount")) or 0
                facts[f"{resource}_count"] = len(items) + remaining
                return
            if h.denied(response):
                refused += 1
                facts["listing_status"] = response.status
        if refused == len(attempts):
            facts["resource_listing_anonymous"] = False


PROBES: list[Probe] = [KubeApiServerProbe(), KubeletProbe()]
