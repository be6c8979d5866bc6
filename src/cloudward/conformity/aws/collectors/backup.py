"""AWS Backup, per region: every backup plan's selections (the resource ARNs and wildcards they name,
the ones they exclude, the tags they select by). Which volumes and DB instances a selection really
covers is decided in `scan.link`, where those resources are known."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context, as_list


def _tag_conditions(selection: dict[str, Any]) -> list[dict[str, str]]:
    """Tag tests a selection ORs together (ListOfTags) and ANDs (Conditions), as key/value/op."""
    out = []
    for cond in selection.get("ListOfTags") or []:
        out.append({"key": _tag_key(cond.get("ConditionKey")), "value": str(cond.get("ConditionValue", "")),
                    "op": "equals", "join": "any"})
    for op, items in (selection.get("Conditions") or {}).items():
        for cond in items or []:
            out.append({"key": _tag_key(cond.get("ConditionKey")), "value": str(cond.get("ConditionValue", "")),
                        "op": {"StringEquals": "equals", "StringNotEquals": "not_equals", "StringLike": "like",
                               "StringNotLike": "not_like"}.get(str(op), "equals"), "join": "all"})
    return out


def _tag_key(value: Any) -> str:
    return str(value or "").removeprefix("aws:ResourceTag/")


def collect(ctx: Context) -> None:
    backup = ctx.client("backup")
    selections: list[dict[str, Any]] = []
    plans = ctx.pages(backup, "list_backup_plans", "BackupPlansList")
    for plan in plans:
        plan_id = str(plan.get("BackupPlanId", ""))
        for item in ctx.pages(backup, "list_backup_selections", "BackupSelectionsList", BackupPlanId=plan_id):
            answer = ctx.call(backup, "get_backup_selection", BackupPlanId=plan_id,
                              SelectionId=str(item.get("SelectionId", ""))) or {}
            selection = answer.get("BackupSelection") or {}
            selections.append({"plan": str(plan.get("BackupPlanName", plan_id)),
                               "selection": str(selection.get("SelectionName", item.get("SelectionName", ""))),
                               "resources": [str(r) for r in as_list(selection.get("Resources"))],
                               "not_resources": [str(r) for r in as_list(selection.get("NotResources"))],
                               "tags": _tag_conditions(selection)})
    ctx.add("backup_region", ctx.region, f"arn:{ctx.partition}:backup:{ctx.region}:{ctx.account}:backup-plans",
            plan_count=len(plans), selections=selections)
