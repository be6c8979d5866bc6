"""`conformity watch`: real-format CloudTrail events (EventBridge envelope, raw record, SNS-wrapped)
sent through moto's SQS on the test moto server after the account was changed over HTTP; the watcher
re-evaluates only what each event touched and records it in a findings store, so a fix closes its
finding and every other finding stays as it was. The CLI is driven end to end once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.conformity.aws import accounts
from tests.conformity.aws.conftest import run_scan

WATCH = "444444444444"  # an account of its own: the other tests' accounts stay as planted
ROLE = f"arn:aws:iam::{WATCH}:role/audit"
REDIS = [{"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


def envelope(source: str, name: str, request: dict[str, Any], response: dict[str, Any] | None = None,
             region: str = accounts.HOME, account: str = WATCH, read_only: bool = False) -> dict[str, Any]:
    """An EventBridge event as CloudTrail delivers it (fields as in AWS's documented samples)."""
    return {
        "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "detail-type": "AWS API Call via CloudTrail",
        "source": f"aws.{source}", "account": account, "time": "2026-01-01T12:00:00Z", "region": region,
        "resources": [],
        "detail": {
            "eventVersion": "1.09", "eventTime": "2026-01-01T12:00:00Z", "eventSource": f"{source}.amazonaws.com",
            "eventName": name, "awsRegion": region, "sourceIPAddress": "203.0.113.7", "userAgent": "aws-cli/2.15",
            "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "accountId": account,
                             "arn": f"arn:aws:iam::{account}:user/ops", "userName": "ops"},
            "requestParameters": request, "responseElements": response, "requestID": "r-1", "eventID": "e-1",
            "readOnly": read_only, "eventType": "AwsApiCall", "managementEvent": True,
            "recipientAccountId": account, "eventCategory": "Management",
        },
    }


def sg_request(group: str) -> dict[str, Any]:
    return {"groupId": group, "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 6379, "toPort": 6379,
                                                           "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}


@pytest.fixture(scope="module")
def account(moto_endpoint: str) -> dict[str, Any]:
    """A hardened-looking group (SSH from the office), an unrelated world-open Docker group, and a queue."""
    c = accounts.Clients(moto_endpoint, WATCH)
    ec2 = c("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    app = ec2.create_security_group(GroupName="app", Description="ssh from the office", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=app, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    legacy = ec2.create_security_group(GroupName="legacy", Description="docker", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=legacy, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 2375, "ToPort": 2375, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    sqs = c("sqs")
    queue = sqs.create_queue(QueueName="cloudtrail-events")["QueueUrl"]
    return {"clients": c, "ec2": ec2, "sqs": sqs, "queue": queue, "app": app, "legacy": legacy, "vpc": vpc}


def send(account: dict[str, Any], *bodies: Any) -> None:
    for body in bodies:
        account["sqs"].send_message(QueueUrl=account["queue"],
                                    MessageBody=body if isinstance(body, str) else json.dumps(body))


def watcher(moto_endpoint: str, queue: str, store: Any) -> Any:
    from cloudward.cli.common import load_all_rules
    from cloudward.conformity.aws.scan import Judge
    from cloudward.conformity.aws.session import SessionOptions, open_session
    from cloudward.conformity.aws.watch import Watcher, WatchSettings

    session = open_session(SessionOptions(endpoint_url=moto_endpoint, region=accounts.HOME, assume_role=ROLE))
    sqs = session.client("sqs")
    return Watcher(sqs, session, Judge(load_all_rules()),
                   WatchSettings(queue_url=queue, regions=[accounts.HOME], once=True), record=store.record_scan)


def open_rules(store: Any, resource: str) -> set[str]:
    from cloudward.store.views import FindingQuery

    return {f.finding.rule_id for f in store.list_findings(FindingQuery(status="open"))
            if resource in f.finding.target.name}


def test_events_open_and_close_findings_and_leave_the_rest(moto_endpoint: str, account: dict[str, Any],
                                                           tmp_path: Path) -> None:
    from cloudward.store import Store

    ec2, app, legacy = account["ec2"], account["app"], account["legacy"]
    with Store.open(f"sqlite:///{tmp_path}/store.db") as store:
        store.record_scan(run_scan(moto_endpoint, WATCH, regions=(accounts.HOME,), services=["ec2", "iam"]))
        assert "aws.ec2.sg_world_docker_api" in open_rules(store, legacy)
        app_before = open_rules(store, app)  # sg_unused: nothing uses it
        assert not app_before & {"aws.ec2.sg_world_redis", "aws.ec2.sg_world_open"}
        iam_before = {r for r in open_rules(store, f":iam::{WATCH}:")}
        assert "aws.iam.password_policy_missing" in iam_before

        # open 6379 to the world on the good group: the EventBridge event opens the findings
        ec2.authorize_security_group_ingress(GroupId=app, IpPermissions=REDIS)
        send(account, envelope("ec2", "AuthorizeSecurityGroupIngress", sg_request(app), {"_return": True}),
             "this is not JSON {",
             envelope("ec2", "DescribeSecurityGroups", {"groupSet": {}}, read_only=True),
             envelope("ec2", "CreateTags", {"resourcesSet": {"items": [{"resourceId": app}]}}),
             envelope("ec2", "AuthorizeSecurityGroupIngress", sg_request(app), account="999999999999"))
        w = watcher(moto_endpoint, account["queue"], store)
        stats = w.run()
        assert stats["malformed"] == 1 and stats["read_only"] == 1 and stats["unknown"] == 1
        assert stats["other_account"] == 1 and stats["evaluated"] == 1 and stats["batches"] == 1
        assert {"aws.ec2.sg_world_redis", "aws.ec2.sg_world_open"} <= open_rules(store, app)
        assert "aws.ec2.sg_world_docker_api" in open_rules(store, legacy)
        attributes = account["sqs"].get_queue_attributes(QueueUrl=account["queue"], AttributeNames=["All"])
        assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"  # the malformed one deleted too

        # revoke it: a raw CloudTrail record wrapped by SNS closes them; nothing else moves
        ec2.revoke_security_group_ingress(GroupId=app, IpPermissions=REDIS)
        record = envelope("ec2", "RevokeSecurityGroupIngress", sg_request(app))["detail"]
        send(account, {"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
                       "Message": json.dumps(record)})
        stats = watcher(moto_endpoint, account["queue"], store).run()
        assert stats["evaluated"] == 1
        assert open_rules(store, app) == app_before
        assert "aws.ec2.sg_world_docker_api" in open_rules(store, legacy)
        assert open_rules(store, f":iam::{WATCH}:") == iam_before


def test_a_deleted_resource_closes(moto_endpoint: str, account: dict[str, Any], tmp_path: Path) -> None:
    from cloudward.store import Store

    ec2 = account["ec2"]
    with Store.open(f"sqlite:///{tmp_path}/store.db") as store:
        doomed = ec2.create_security_group(GroupName="doomed", Description="x", VpcId=account["vpc"])["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=doomed, IpPermissions=REDIS)
        send(account, envelope("ec2", "CreateSecurityGroup", {"groupName": "doomed"}, {"groupId": doomed}))
        watcher(moto_endpoint, account["queue"], store).run()
        assert "aws.ec2.sg_world_redis" in open_rules(store, doomed)
        ec2.delete_security_group(GroupId=doomed)
        send(account, envelope("ec2", "DeleteSecurityGroup", {"groupId": doomed}))
        watcher(moto_endpoint, account["queue"], store).run()
        assert not open_rules(store, doomed)


def test_parse_and_map_events() -> None:
    from cloudward.conformity.aws.watch import ApiCall, parse_body, touches

    event = envelope("lambda", "AddPermission20150331v2", {"functionName": "arn:aws:lambda:us-east-1:1:function:fn"})
    (call,) = parse_body(json.dumps(event))
    assert call.name == "AddPermission" and call.account == WATCH and call.region == accounts.HOME
    (touch,) = touches(call) or []
    assert touch.ids == ("fn",) and touch.types == ("lambda_function",)
    (call,) = parse_body(json.dumps({"Records": [event["detail"]]}))
    assert call.source == "lambda.amazonaws.com"
    for bad in ("[]", "{}", '{"detail-type": "EC2 Instance State-change Notification", "detail": {}}',
                '{"eventName": "RunInstances"}'):
        with pytest.raises(ValueError):
            parse_body(bad)
    run = ApiCall("ec2.amazonaws.com", "RunInstances", "eu-west-1", WATCH,
                  response={"instancesSet": {"items": [{"instanceId": "i-1"}, {"instanceId": "i-2"}]}})
    assert touches(run)[0].ids == ("i-1", "i-2")  # type: ignore[index]
    imds = ApiCall("ec2.amazonaws.com", "ModifyInstanceMetadataOptions", "eu-west-1", WATCH,
                   request={"ModifyInstanceMetadataOptionsRequest": {"InstanceId": "i-9", "HttpTokens": "required"}})
    assert touches(imds)[0].ids == ("i-9",)  # type: ignore[index]
    stop = ApiCall("cloudtrail.amazonaws.com", "StopLogging", "us-east-1", WATCH,
                   request={"name": "arn:aws:cloudtrail:us-east-1:1:trail/main"})
    found = touches(stop, ["us-east-1", "eu-west-1"]) or []
    assert found[0].ids == ("main",) and {t.region for t in found[1:]} == {"us-east-1", "eu-west-1", "global"}
    bucket = ApiCall("s3.amazonaws.com", "PutBucketPolicy", "us-east-1", WATCH, request={"bucketName": "b"})
    assert touches(bucket)[0].ids == ("b",)  # type: ignore[index]
    role = ApiCall("iam.amazonaws.com", "PutRolePolicy", "us-east-1", WATCH, request={"roleName": "r"})
    assert touches(role)[0].types == ("iam_role",)  # type: ignore[index]
    assert touches(ApiCall("ec2.amazonaws.com", "CreateTags", "us-east-1", WATCH)) is None


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "cloudward"), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_cli_watch_end_to_end(moto_endpoint: str, account: dict[str, Any], tmp_path: Path) -> None:
    """IMDSv1 instance launched -> RunInstances event -> `watch --once` opens the finding; metadata
    options fixed -> ModifyInstanceMetadataOptions event -> the finding is closed; SIGTERM stops a
    long-polling watcher cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDWARD_")}
    env.update(CLOUDWARD_DATA_DIR=str(tmp_path / "data"), AWS_ENDPOINT_URL=moto_endpoint)
    ec2 = account["ec2"]
    image = accounts._image(ec2)
    subnet = ec2.create_subnet(VpcId=account["vpc"], CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet,
                                 MetadataOptions={"HttpTokens": "optional"})["Instances"][0]["InstanceId"]
    send(account, envelope("ec2", "RunInstances", {"instancesSet": {"items": [{"imageId": image}]}},
                           {"instancesSet": {"items": [{"instanceId": instance}]}}))
    argv = ["conformity", "watch", "--queue", account["queue"], "--once", "--assume-role", ROLE]
    proc = _cli(argv, env)
    assert proc.returncode == 0, proc.stderr
    assert "1 evaluated" in proc.stderr
    listed = _cli(["findings", "list", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    rules = {f["rule_id"] for f in _findings(listed.stdout) if instance in json.dumps(f)}
    assert "aws.ec2.instance_imdsv1" in rules

    ec2.modify_instance_metadata_options(InstanceId=instance, HttpTokens="required")
    send(account, envelope("ec2", "ModifyInstanceMetadataOptions", {
        "ModifyInstanceMetadataOptionsRequest": {"InstanceId": instance, "HttpTokens": "required"}}))
    proc = _cli(argv, env)
    assert proc.returncode == 0, proc.stderr
    listed = _cli(["findings", "list", "--format", "json"], env)
    rules = {f["rule_id"] for f in _findings(listed.stdout) if instance in json.dumps(f)}
    assert "aws.ec2.instance_imdsv1" not in rules

    # without --once it long-polls until SIGTERM, then exits 0
    running = subprocess.Popen([str(Path(sys.executable).parent / "cloudward"), "conformity", "watch", "--queue",
                                account["queue"], "--assume-role", ROLE], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        assert running.stderr is not None
        while time.monotonic() < deadline and "watching" not in running.stderr.readline():
            pass
        time.sleep(0.5)
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0
    finally:
        if running.poll() is None:
            running.kill()


def _findings(text: str) -> list[dict[str, Any]]:
    doc = json.loads(text)
    return doc if isinstance(doc, list) else list(doc.get("findings", []))
