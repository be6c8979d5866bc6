"""RDS, per region: DB instances (public, encrypted, backups, Multi-AZ, deletion protection, minor
upgrades, IAM auth, tags copied to snapshots, enhanced monitoring, log exports, engine version past its
end of standard support, whether the parameter group forces TLS) and manual snapshots (public, encrypted)."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context
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


def _engine_family(engine: str) -> str:
    return "sqlserver" if engine.startswith("sqlserver") else engine


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
                      monitoring_interval=int(db.get("MonitoringInterval", 0) or 0))
        ended = engine_ended(engine, version)
        if ended is not None:
            res.facts["engine_version_unsupported"] = ended
        if not db.get("DBClusterIdentifier"):  # a cluster member takes TLS settings from the cluster
            _tls_required(ctx, rds, db, res)
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
