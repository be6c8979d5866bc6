"""RDS, per region: DB instances (public, encrypted, backups, Multi-AZ, deletion protection, minor
upgrades, IAM auth, tags copied to snapshots, enhanced monitoring, log exports) and manual snapshots
(public, encrypted)."""

from __future__ import annotations

from cloudward.conformity.aws.collectors._base import Context


def collect(ctx: Context) -> None:
    rds = ctx.client("rds")
    for db in ctx.pages(rds, "describe_db_instances", "DBInstances"):
        ident = str(db["DBInstanceIdentifier"])
        ctx.add("rds_instance", ident, str(db.get("DBInstanceArn") or ctx.arn("rds", f"db:{ident}")),
                engine=db.get("Engine", ""), publicly_accessible=bool(db.get("PubliclyAccessible")),
                storage_encrypted=bool(db.get("StorageEncrypted")),
                backup_retention_days=int(db.get("BackupRetentionPeriod", 0) or 0),
                multi_az=bool(db.get("MultiAZ")), deletion_protection=bool(db.get("DeletionProtection")),
                auto_minor_version_upgrade=bool(db.get("AutoMinorVersionUpgrade")),
                iam_auth=bool(db.get("IAMDatabaseAuthenticationEnabled")),
                cloudwatch_logs_exports=list(db.get("EnabledCloudwatchLogsExports") or []),
                copy_tags_to_snapshot=bool(db.get("CopyTagsToSnapshot")),
                monitoring_interval=int(db.get("MonitoringInterval", 0) or 0))
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
