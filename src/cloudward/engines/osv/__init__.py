"""OSV advisory database and matcher, shared by Container Security (image packages) and Workload
Security (installed host packages). Sits in the engines layer: it imports only `cloudward.core`."""

from cloudward.engines.osv.db import UpdateError, UpdateStats, default_db_path, status, update
from cloudward.engines.osv.match import Matcher, PackageQuery, VulnMatch
from cloudward.engines.osv.versions import affected, version_key

__all__ = ["Matcher", "PackageQuery", "UpdateError", "UpdateStats", "VulnMatch", "affected", "default_db_path",
           "status", "update", "version_key"]
