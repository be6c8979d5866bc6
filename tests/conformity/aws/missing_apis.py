"""The APIs moto (5.2.5, the newest release) does not serve, answered in AWS's real wire format so the
collectors that need them run against the same endpoint as everything else:

- Systems Manager DescribeInstanceInformation (JSON 1.1, X-Amz-Target AmazonSSM.*): the managed
  instances of the calling account in the signed region;
- AWS Backup ListBackupSelections and GetBackupSelection (REST-JSON, GET /backup/plans/{id}/selections/):
  the selections of plans moto itself holds (moto serves CreateBackupPlan and ListBackupPlans).

Everything else is forwarded to moto. The calling account is asked of moto once per access key
(sts:GetCallerIdentity with the caller's own Authorization header; moto does not check signatures),
so each planted account sees only what was planted for it (`accounts.OutsideMoto`).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from typing import Any

from tests.conformity.aws.accounts import OutsideMoto
from tests.conformity.aws.proxy import Proxy

SELECTIONS = re.compile(r"^/backup/plans/([^/?]+)/selections/([^/?]*)")
JSON11 = {"Content-Type": "application/x-amz-json-1.1"}
REST_JSON = {"Content-Type": "application/json"}


def _not_found(message: str) -> tuple[int, dict[str, str], bytes]:
    return 404, {**REST_JSON, "x-amzn-ErrorType": "ResourceNotFoundException"}, json.dumps(
        {"Code": "ResourceNotFoundException", "Message": message}).encode()


def _header(headers: dict[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name), "")


def _scope(headers: dict[str, str]) -> list[str]:
    """SigV4 credential scope: access key, date, region, service."""
    credential = _header(headers, "authorization").split("Credential=", 1)[-1].split(",", 1)[0]
    return credential.split("/")


class MotoPlus(Proxy):
    """A proxy in front of moto that answers the APIs moto lacks from `outside`."""

    def __init__(self, moto: str, outside: OutsideMoto) -> None:
        super().__init__(moto, self._decide)
        self.outside = outside
        self._accounts: dict[str, str] = {}
        self._accounts_lock = threading.Lock()

    def _account(self, headers: dict[str, str]) -> str:
        key = _scope(headers)[0]
        with self._accounts_lock:
            if key in self._accounts:
                return self._accounts[key]
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        auth = _header(headers, "authorization")
        conn.request("POST", "/", body=b"Action=GetCallerIdentity&Version=2011-06-15",
                     headers={"Authorization": auth.replace("/ssm/", "/sts/").replace("/backup/", "/sts/"),
                              "Content-Type": "application/x-www-form-urlencoded",
                              "X-Amz-Security-Token": _header(headers, "x-amz-security-token")})
        text = conn.getresponse().read().decode("utf-8", "replace")
        conn.close()
        found = re.search(r"<Account>(\d{12})</Account>", text)
        account = found.group(1) if found else ""
        with self._accounts_lock:
            self._accounts[key] = account
        return account

    def _decide(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, dict[str, str], bytes] | None:
        target = _header(headers, "x-amz-target")
        if target == "AmazonSSM.DescribeInstanceInformation":
            scope = _scope(headers)
            region = scope[2] if len(scope) > 2 else ""
            managed = self.outside.managed.get(self._account(headers), {}).get(region, [])
            now = time.time()
            items = [{"InstanceId": iid, "PingStatus": "Online", "LastPingDateTime": now, "AgentVersion": "3.3.987.0",
                      "IsLatestVersion": True, "PlatformType": "Linux", "ResourceType": "EC2Instance"}
                     for iid in managed]
            return 200, JSON11, json.dumps({"InstanceInformationList": items}).encode()
        match = SELECTIONS.match(path)
        if method == "GET" and match and _scope(headers)[3:4] == ["backup"]:
            plan, selection_id = match.group(1), match.group(2)
            selections = self.outside.selections.get(self._account(headers), {}).get(plan)
            if selections is None:
                return _not_found(f"backup plan {plan} not found")
            if not selection_id:
                items = [{"SelectionId": s["SelectionId"], "SelectionName": s["SelectionName"], "BackupPlanId": plan,
                          "CreationDate": 1.7e9, "IamRoleArn": s["IamRoleArn"]} for s in selections]
                return 200, REST_JSON, json.dumps({"BackupSelectionsList": items}).encode()
            chosen = next((s for s in selections if s["SelectionId"] == selection_id), None)
            if chosen is None:
                return _not_found(f"selection {selection_id} not found")
            document: dict[str, Any] = {k: v for k, v in chosen.items() if k != "SelectionId"}
            return 200, REST_JSON, json.dumps({"BackupPlanId": plan, "SelectionId": selection_id,
                                               "CreationDate": 1.7e9, "BackupSelection": document}).encode()
        return None
