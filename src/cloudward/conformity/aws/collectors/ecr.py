"""ECR, per region: the registry's scanning type (basic or enhanced), scan on push (per repository or
registry-wide), tag immutability, encryption, repository policy and lifecycle policy."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context, policy_document, public_statements


def _registry_scans_on_push(config: dict[str, Any]) -> bool:
    scanning = config.get("scanningConfiguration") or {}
    for rule in scanning.get("rules", []) or []:
        filters = [f.get("filter") for f in rule.get("repositoryFilters", [])]
        if rule.get("scanFrequency") in ("SCAN_ON_PUSH", "CONTINUOUS_SCAN") and "*" in filters:
            return True
    return False


def collect(ctx: Context) -> None:
    ecr = ctx.client("ecr")
    registry = ctx.call(ecr, "get_registry_scanning_configuration") or {}
    registry_scan = _registry_scans_on_push(registry)
    repos = ctx.pages(ecr, "describe_repositories", "repositories")
    scanning = registry.get("scanningConfiguration") or {}
    ctx.add("ecr_registry", str(registry.get("registryId") or ctx.account),
            f"arn:{ctx.partition}:ecr:{ctx.region}:{ctx.account}:registry",
            scan_type=str(scanning.get("scanType") or "BASIC"), scan_rule_count=len(scanning.get("rules") or []),
            repository_count=len(repos))
    for repo in repos:
        name = str(repo["repositoryName"])
        arn = str(repo.get("repositoryArn") or ctx.arn("ecr", f"repository/{name}"))
        on_push = bool((repo.get("imageScanningConfiguration") or {}).get("scanOnPush"))
        res = ctx.add("ecr_repository", name, arn, scan_on_push=on_push or registry_scan,
                      repository_scan_on_push=on_push, registry_scan_on_push=registry_scan,
                      tag_immutable=str(repo.get("imageTagMutability", "MUTABLE")).startswith("IMMUTABLE"),
                      kms_encrypted=(repo.get("encryptionConfiguration") or {}).get("encryptionType") == "KMS")

        def policies(name: str = name) -> dict[str, Any]:
            policy = ctx.call(ecr, "get_repository_policy", repositoryName=name)
            lifecycle = ctx.call(ecr, "get_lifecycle_policy", repositoryName=name)
            public = public_statements(policy_document((policy or {}).get("policyText")))
            return {"policy_public": bool(public), "lifecycle_policy": lifecycle is not None}

        res.facts.update(ctx.guarded(res.path, policies, {}))
