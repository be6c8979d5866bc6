"""The SSM and AWS Backup collectors against tiny local endpoints that answer only the calls they make,
in AWS's wire format (JSON 1.1 for SSM, REST-JSON for Backup), because moto 5.2.5 (the newest release)
serves neither DescribeInstanceInformation nor ListBackupSelections/GetBackupSelection. Pagination,
tag selections, and a denied or absent API (an error naming the call and the permission, the other
services' findings kept) are proven here; the weak and hardened accounts prove the rules (test_scan.py)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tests.conformity.aws import accounts
from tests.conformity.aws.conftest import Proxy, run_scan, signing_service

from cloudward.conformity.aws.collectors import COLLECTORS
from cloudward.conformity.aws.scan import run_unit

Answer = tuple[int, dict[str, str], bytes]
Route = Callable[[str, str, dict[str, str], bytes], "Answer | None"]


class Endpoint:
    """A loopback HTTP server answering what `route` answers, and 400 UnknownOperation to anything else."""

    def __init__(self, route: Route) -> None:
        self.calls: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(inner) -> None:
                length = int(inner.headers.get("Content-Length", 0) or 0)
                body = inner.rfile.read(length) if length else b""
                headers = dict(inner.headers.items())
                self.calls.append(f"{inner.command} {inner.path} {headers.get('X-Amz-Target', '')}".strip())
                answer = route(inner.command, inner.path, headers, body) or (
                    400, {"Content-Type": "application/json", "x-amzn-ErrorType": "UnknownOperationException"},
                    b'{"__type": "UnknownOperationException", "message": "not served here"}')
                status, extra, payload = answer
                inner.send_response(status)
                for name, value in extra.items():
                    inner.send_header(name, value)
                inner.send_header("Content-Length", str(len(payload)))
                inner.end_headers()
                inner.wfile.write(payload)

            do_GET = do_POST = _any

            def log_message(inner, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(aws_creds: None) -> Iterator[Callable[[Route], Endpoint]]:
    made: list[Endpoint] = []

    def make(route: Route) -> Endpoint:
        made.append(Endpoint(route))
        return made[-1]

    yield make
    for each in made:
        each.close()


def _session(url: str) -> Any:
    import boto3

    from cloudward.conformity.aws.session import AwsSession, SessionOptions

    return AwsSession(options=SessionOptions(endpoint_url=url, region="us-east-1", max_attempts=1),
                      boto=boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                         region_name="us-east-1"), account="123456789012")


def _json(payload: Any, content_type: str = "application/x-amz-json-1.1") -> Answer:
    return 200, {"Content-Type": content_type}, json.dumps(payload).encode()


def test_ssm_collector_reads_every_page(endpoint):
    pages = {None: {"InstanceInformationList": [{"InstanceId": "i-1", "PingStatus": "Online"}], "NextToken": "p2"},
             "p2": {"InstanceInformationList": [{"InstanceId": "i-2", "PingStatus": "ConnectionLost"}]}}

    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        if headers.get("X-Amz-Target") == "AmazonSSM.DescribeInstanceInformation":
            return _json(pages[json.loads(body or b"{}").get("NextToken")])
        return None

    server = endpoint(route)
    unit = run_unit(_session(server.url), COLLECTORS["ssm"], "us-east-1")
    assert unit.errors == [] and not unit.failed
    [region] = unit.resources
    assert region.type == "ssm_region" and region.facts["managed_instances"] == {"i-1": "Online",
                                                                                 "i-2": "ConnectionLost"}
    assert len(server.calls) == 2


def test_backup_collector_reads_plans_selections_and_tag_conditions(endpoint):
    selections = {"plan-a": {"sel-1": {"SelectionName": "volumes", "IamRoleArn": "arn:aws:iam::123456789012:role/b",
                                       "Resources": ["arn:aws:ec2:*:*:volume/*"], "NotResources": ["arn:x"]}},
                  "plan-b": {"sel-2": {"SelectionName": "tagged", "IamRoleArn": "arn:aws:iam::123456789012:role/b",
                                       "ListOfTags": [{"ConditionType": "STRINGEQUALS",
                                                       "ConditionKey": "aws:ResourceTag/backup",
                                                       "ConditionValue": "daily"}]}}}

    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        if path.startswith("/backup/plans/?") or path == "/backup/plans/":
            if "nextToken=more" in path:
                return _json({"BackupPlansList": [{"BackupPlanId": "plan-b", "BackupPlanName": "b"}]},
                             "application/json")
            return _json({"BackupPlansList": [{"BackupPlanId": "plan-a", "BackupPlanName": "a"}],
                          "NextToken": "more"}, "application/json")
        found = re.match(r"^/backup/plans/([^/]+)/selections/([^/?]*)", path)
        if found and found.group(1) in selections:
            plan, sid = found.groups()
            if not sid:
                return _json({"BackupSelectionsList": [{"SelectionId": s, "SelectionName": d["SelectionName"],
                                                        "BackupPlanId": plan} for s, d in selections[plan].items()]},
                             "application/json")
            return _json({"BackupPlanId": plan, "SelectionId": sid, "BackupSelection": selections[plan][sid]},
                         "application/json")
        return None

    server = endpoint(route)
    unit = run_unit(_session(server.url), COLLECTORS["backup"], "us-east-1")
    assert unit.errors == [], unit.errors
    [region] = unit.resources
    assert region.facts["plan_count"] == 2
    by_name = {s["selection"]: s for s in region.facts["selections"]}
    assert by_name["volumes"]["resources"] == ["arn:aws:ec2:*:*:volume/*"]
    assert by_name["volumes"]["not_resources"] == ["arn:x"]
    assert by_name["tagged"]["tags"] == [{"key": "backup", "value": "daily", "op": "equals", "join": "any"}]


def test_a_missing_or_denied_api_is_an_error_naming_it_and_the_rest_is_kept(moto_endpoint):
    """SSM denied (403 AccessDeniedException) and AWS Backup absent (an HTML 404 page, what an endpoint
    without the API answers): both units fail with errors naming call and permission; EC2 is judged."""

    def decide(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        service = signing_service(headers)
        if service == "ssm":
            return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(
                {"__type": "AccessDeniedException", "message": "not authorized to perform: "
                                                               "ssm:DescribeInstanceInformation"}).encode()
        if service == "backup":
            return 404, {"Content-Type": "text/html"}, b"<html><h1>404 Not Found</h1></html>"
        return None

    with Proxy(moto_endpoint, decide) as proxy:
        result = run_scan(proxy.url, accounts.WEAK, regions=(accounts.HOME,), services=["ssm", "backup", "ec2"])
    assert result.status.value == "completed"
    assert sorted(result.stats["failed_units"]) == ["backup/us-east-1", "ssm/us-east-1"]
    messages = sorted(e.message for e in result.errors)
    assert messages[0].startswith("backup in us-east-1: 404 on ListBackupPlans (needs backup:ListBackupPlans): "
                                  "HTTP 404 from the endpoint"), messages
    assert messages[1].startswith("ssm in us-east-1: AccessDeniedException on DescribeInstanceInformation "
                                  "(needs ssm:DescribeInstanceInformation)"), messages
    rules = {f.rule_id for f in result.findings}
    assert "aws.ec2.sg_world_redis" in rules
    assert not {"aws.ssm.instance_not_managed", "aws.backup.volume_not_protected"} & rules
    # the errors sit on the units' scopes, so the store closes nothing there
    assert {e.target for e in result.errors} == {f"aws/{accounts.WEAK}/us-east-1/ssm",
                                                 f"aws/{accounts.WEAK}/us-east-1/backup"}
