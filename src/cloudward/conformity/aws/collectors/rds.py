"""RDS, per region: DB instances (public, encrypted, backups, Multi-AZ, deletion protection, minor
upgrades, IAM auth, tags copied to snapshots, enhanced monitoring, log exports, engine version past its
end of standard support, whether the parameter group forces TLS, port, tags), manual snapshots (public,
encrypted) and, per region, which event subscriptions alert on instance, parameter group and DB
security group events."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context, tag_map
from cloudward.conformity.aws.model import Resource

# The parameter that makes the server refuse unencrypted connections, per engine family.
TLS_PARAMETER = {"postgres": "rds.force_ssl", "aurora-postgresql": "rds.force_ssl", "sqlserver": "rds.force_ssl",
                 "mysql": "require_secure_transport", "mariadb": "require_secure_transport",
                 "aurora-mysql": "require_secure_transport"}
# Major versions RDS no longer gives standard support (no more security fixes without paid extended
# support), from the RDS engine release calendars. Keyed by engine, compared on the leading version parts.
ENDED = {
    "postgres": ("9.", "10.", "11.", "12."),
    "mysql": ("5.5.", "5.6.", "5.7."),
    "mariadb": ("10.0.", "10.1.", "10.2.", "10.3.", "10.4."),
}


# The port each engine listens on unless told otherwise (what scanners try first).
DEFAULT_PORTS = {"postgres": 5432, "aurora-postgresql": 5432, "mysql": 3306, "mariadb": 3306, "aurora-mysql": 3306,
                 "aurora": 3306, "oracle": 1521, "sqlserver": 1433, "db2": 50000}
# Event categories an instance subscription must carry (an empty list means every category).
INSTANCE_EVENTS = frozenset({"failure", "maintenance", "configuration change"})


def _engine_family(engine: str) -> str:
    if engine.startswith("sqlserver"):
        return "sqlserver"
    return "oracle" if engine.startswith("oracle") else ("db2" if engine.startswith("db2") else engine)


def engine_ended(engine: str, version: str) -> bool | None:
    """True when the engine version is past RDS standard support; None when the engine is not tracked."""
    prefixes = ENDED.get(engine.lower())
    if prefixes is None or not version:
        return None
    return version.startswith(prefixes)


def _tls_required(ctx: Context, rds: Any, db: dict[str, Any], res: Resource) -> None:
    name = TLS_PARAMETER.get(_engine_family(str(db.get("Engine", "")).lower()))
    groups = [g.get("DBParameterGroupName") for g in db.get("DBParameterGroups") or [] if g.get("DBParameterGroupName")]
    if not name or not groups:  # an engine without such a parameter (Oracle: network encryption options)
        return

    def read() -> bool:
        params = ctx.pages(rds, "describe_db_parameters", "Parameters", DBParameterGroupName=groups[0])
        return any(p.get("ParameterName") == name and str(p.get("ParameterValue", "0")).lower() in ("1", "on", "true")
                   for p in params)

    required = ctx.guarded(res.path, read, None)
    if required is not None:
        res.facts["tls_required"] = required
        res.facts["tls_parameter"] = f"{groups[0]}:{name}"


def collect(ctx: Context) -> None:
    rds = ctx.client("rds")
    for db in ctx.pages(rds, "describe_db_instances", "DBInstances"):
        ident = str(db["DBInstanceIdentifier"])
        engine, version = str(db.get("Engine", "")), str(db.get("EngineVersion", ""))
        res = ctx.add("rds_instance", ident, str(db.get("DBInstanceArn") or ctx.arn("rds", f"db:{ident}")),
                      engine=engine, engine_version=version, publicly_accessible=bool(db.get("PubliclyAccessible")),
                      storage_encrypted=bool(db.get("StorageEncrypted")),
                      backup_retention_days=int(db.get("BackupRetentionPeriod", 0) or 0),
                      multi_az=bool(db.get("MultiAZ")), deletion_protection=bool(db.get("DeletionProtection")),
                      auto_minor_version_upgrade=bool(db.get("AutoMinorVersionUpgrade")),
                      iam_auth=bool(db.get("IAMDatabaseAuthenticationEnabled")),
                      cloudwatch_logs_exports=list(db.get("EnabledCloudwatchLogsExports") or []),
                      copy_tags_to_snapshot=bool(db.get("CopyTagsToSnapshot")),
                      monitoring_interval=int(db.get("MonitoringInterval", 0) or 0),
                      tags=tag_map(db.get("TagList")))
        port = int((db.get("Endpoint") or {}).get("Port") or db.get("DbInstancePort") or 0)
        default = DEFAULT_PORTS.get(_engine_family(engine.lower()))
        if port and default:
            res.facts.update(port=port, default_port=port == default)
        ended = engine_ended(engine, version)
        if ended is not None:
            res.facts["engine_version_unsupported"] = ended
        if not db.get("DBClusterIdentifier"):  # a cluster member takes TLS settings from the cluster
            _tls_required(ctx, rds, db, res)
    instances = sum(1 for r in ctx.result.resources if r.type == "rds_instance")
    _event_subscriptions(ctx, rds, instances)
    for snap in ctx.pages(rds, "describe_db_snapshots", "DBSnapshots", SnapshotType="manual"):
        ident = str(snap["DBSnapshotIdentifier"])
        res = ctx.add("rds_snapshot", ident, str(snap.get("DBSnapshotArn") or ctx.arn("rds", f"snapshot:{ident}")),
                      encrypted=bool(snap.get("Encrypted")))

        def attributes(ident: str = ident) -> bool | None:
            answer = ctx.call(rds, "describe_db_snapshot_attributes", DBSnapshotIdentifier=ident) or {}
            attrs = (answer.get("DBSnapshotAttributesResult") or {}).get("DBSnapshotAttributes", [])
            return any(a.get("AttributeName") == "restore" and "all" in (a.get("AttributeValues") or [])
                       for a in attrs)

        public = ctx.guarded(res.path, attributes, None)
        if public is not None:
            res.facts["public"] = public


def _covers(subscription: dict[str, Any], needed: frozenset[str]) -> bool:
    categories = {str(c).lower() for c in subscription.get("EventCategoriesList") or []}
    return not categories or needed <= categories


def _event_subscriptions(ctx: Context, rds: Any, instances: int) -> None:
    """One record per region: do enabled subscriptions alert on instance failures, maintenance and
    configuration changes, on parameter group changes, and on DB security group changes?"""
    subs = [s for s in ctx.pages(rds, "describe_event_subscriptions", "EventSubscriptionsList")
            if s.get("Enabled") and str(s.get("Status", "active")).lower() == "active"]

    def names(source: str, needed: frozenset[str]) -> list[str]:
        return sorted(str(s.get("CustSubscriptionId", "")) for s in subs
                      if s.get("SourceType") == source and _covers(s, needed))

    ctx.add("rds_region", ctx.region, f"arn:{ctx.partition}:rds:{ctx.region}:{ctx.account}:event-subscriptions",
            instance_count=instances, subscription_count=len(subs),
            instance_event_subscriptions=names("db-instance", INSTANCE_EVENTS),
            parameter_group_event_subscriptions=names("db-parameter-group", frozenset({"configuration change"})),
            security_group_event_subscriptions=names("db-security-group",
                                                     frozenset({"failure", "configuration change"})))
