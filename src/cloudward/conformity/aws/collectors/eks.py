"""EKS, per region: API endpoint exposure, control plane logging, secrets encryption, version."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context
from cloudward.conformity.aws.model import Resource

ALL_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")


def collect(ctx: Context) -> None:
    eks = ctx.client("eks")
    for name in ctx.pages(eks, "list_clusters", "clusters"):
        name = str(name)
        res = ctx.add("eks_cluster", name, ctx.arn("eks", f"cluster/{name}"))

        def describe(name: str = name, res: Resource = res) -> dict[str, Any]:
            cluster = (ctx.call(eks, "describe_cluster", name=name) or {}).get("cluster") or {}
            vpc = cluster.get("resourcesVpcConfig") or {}
            public = bool(vpc.get("endpointPublicAccess", True))
            cidrs = list(vpc.get("publicAccessCidrs") or ["0.0.0.0/0"])
            enabled = sorted({t for entry in (cluster.get("logging") or {}).get("clusterLogging", []) or []
                              if entry.get("enabled") for t in entry.get("types", [])})
            if cluster.get("arn"):
                res.arn = str(cluster["arn"])
            return {"endpoint_public": public, "public_access_cidrs": cidrs if public else [],
                    "endpoint_open_to_world": public and "0.0.0.0/0" in cidrs,
                    "endpoint_private": bool(vpc.get("endpointPrivateAccess")),
                    "enabled_log_types": enabled, "audit_logging": "audit" in enabled,
                    "missing_log_types": [t for t in ALL_LOG_TYPES if t not in enabled],
                    "secrets_encrypted": any("secrets" in (c.get("resources") or [])
                                             for c in cluster.get("encryptionConfig", []) or []),
                    "version": str(cluster.get("version", ""))}

        res.facts.update(ctx.guarded(res.path, describe, {}))
