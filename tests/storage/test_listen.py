"""`cloudward storage listen`: scan on upload, end to end on moto's server over HTTP (real S3 and SQS
calls on loopback, no mocks).

Each test wires a bucket's `s3:ObjectCreated:*` notifications to an SQS queue with
`put_bucket_notification_configuration`; moto (5.x) delivers them itself, the `s3:TestEvent` it sends
when notifications are configured included, so uploads reach the listener the way S3 sends them
(keys URL-encoded with `+` for space). Two kinds of message are posted by the tests themselves,
because S3 would only send them by accident: a second copy of a real notification (SQS delivers at
least once: a duplicate) and a body that is not a notification at all. An unreadable object is one
in the GLACIER storage class: HEAD works, GET answers 403 InvalidObjectState, as on AWS.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import string
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.storage.listen import parse_message, queue_region
from tests.harness.plants.artifacts import XMRIG_CONFIG

KEY_ID = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
SECRET = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
MINER = XMRIG_CONFIG.encode()
DOTENV = f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode()
CLEAN = b"Quarterly numbers, nothing to see.\n"
ODD_KEY = "incoming/report final (v2) \u00fcber+plus%20.txt"  # spaces, unicode, a literal + and %


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cloudward.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


@pytest.fixture
def sqs(aws_env: str) -> Any:
    import boto3

    return boto3.client("sqs", endpoint_url=aws_env, region_name="us-east-1")


def make_queue(sqs: Any, **attributes: str) -> str:
    url: str = sqs.create_queue(QueueName=f"cw-{uuid.uuid4().hex[:12]}", Attributes=attributes)["QueueUrl"]
    return url


def arn(sqs: Any, queue: str) -> str:
    value: str = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return value


@pytest.fixture
def queue(sqs: Any, s3: Any, bucket: str) -> str:
    """A queue receiving the bucket's ObjectCreated notifications (and moto's test event)."""
    url = make_queue(sqs)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn(sqs, url), "Events": ["s3:ObjectCreated:*"]}]})
    return url


@pytest.fixture
def dlq(sqs: Any) -> str:
    return make_queue(sqs)


@pytest.fixture
def quarantine(s3: Any, bucket: str) -> str:
    name = f"{bucket}-q"
    s3.create_bucket(Bucket=name)
    return name


def listen(config: Path, queue: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["storage", "listen", "--queue", queue, "--once", *args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def waiting(sqs: Any, queue: str) -> int:
    """Messages still in the queue, visible or in flight."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def drain(sqs: Any, queue: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        out += got


def tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def stored(config: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["findings", "list", "-f", "json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    findings: list[dict[str, Any]] = json.loads(result.stdout)["findings"]
    return findings


def test_uploads_are_scanned_tagged_quarantined_and_recorded(s3: Any, sqs: Any, bucket: str, queue: str,
                                                             quarantine: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    s3.put_object(Bucket=bucket, Key="app/.env", Body=DOTENV)
    s3.put_object(Bucket=bucket, Key=ODD_KEY, Body=CLEAN)
    assert waiting(sqs, queue) == 4  # moto delivered the test event and three ObjectCreated:Put

    output = listen(config, queue, "--action", "tag", "--action", f"quarantine=s3://{quarantine}/held",
                    "--concurrency", "2")
    assert "4 messages (1 test events), 3 objects scanned (1 malicious, 1 with secrets, 0 errors)" in output
    assert waiting(sqs, queue) == 0  # every message deleted, the test event included
    assert keys(s3, bucket) == {ODD_KEY}
    assert tags(s3, bucket, ODD_KEY)["cloudward-scan-result"] == "clean"
    assert keys(s3, quarantine) == {"held/m/config.json", "held/app/.env"}
    assert tags(s3, quarantine, "held/m/config.json")["cloudward-scan-result"] == "malicious"
    assert tags(s3, quarantine, "held/app/.env")["cloudward-scan-result"] == "secret"
    assert SECRET not in output

    findings = {(f["rule_id"].split(".")[0], f["target"]["name"]) for f in stored(config)}
    assert ("content", f"s3://{bucket}/m/config.json") in findings
    assert ("secret", f"s3://{bucket}/app/.env") in findings
    assert not any(name.endswith(ODD_KEY) for _, name in findings)


def test_no_store_records_nothing(s3: Any, sqs: Any, bucket: str, queue: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    listen(config, queue, "--no-store")
    assert waiting(sqs, queue) == 0 and stored(config) == []


def test_unreadable_object_is_retried_then_dead_lettered(s3: Any, sqs: Any, bucket: str, queue: str, dlq: str,
                                                         config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="cold/archive.bin", Body=b"x" * 100, StorageClass="GLACIER")
    s3.put_object(Bucket=bucket, Key="ok.txt", Body=CLEAN)
    output = listen(config, queue, "--dead-letter-queue", dlq, "--max-attempts", "3", "--retry-delay", "0",
                    "--action", "tag")
    assert "1 dead-lettered, 2 retried" in output
    assert waiting(sqs, queue) == 0
    [dead] = drain(sqs, dlq)
    assert parse_message(dead["Body"]).records[0].key == "cold/archive.bin"  # the notification, unchanged
    attributes = dead["MessageAttributes"]
    assert attributes["cloudward-receive-count"]["StringValue"] == "3"
    assert "InvalidObjectState" in attributes["cloudward-error"]["StringValue"]
    assert attributes["cloudward-source-queue"]["StringValue"] == queue
    assert tags(s3, bucket, "ok.txt")["cloudward-scan-result"] == "clean"  # the rest went on


def test_without_a_dead_letter_queue_the_queues_redrive_policy_takes_it(s3: Any, sqs: Any, bucket: str,
                                                                         config: Path) -> None:
    own_dlq = make_queue(sqs)
    redriven = make_queue(sqs, RedrivePolicy=json.dumps({"deadLetterTargetArn": arn(sqs, own_dlq),
                                                         "maxReceiveCount": "2"}))
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn(sqs, redriven), "Events": ["s3:ObjectCreated:*"]}]})
    s3.put_object(Bucket=bucket, Key="cold/archive.bin", Body=b"x" * 100, StorageClass="GLACIER")
    output = listen(config, redriven, "--max-attempts", "2", "--retry-delay", "0")
    assert "left to the queue's redrive policy" in output and "no RedrivePolicy" not in output
    assert waiting(sqs, redriven) == 0
    [dead] = drain(sqs, own_dlq)
    assert parse_message(dead["Body"]).records[0].key == "cold/archive.bin"


def test_duplicates_are_not_rescanned_and_deleted_objects_are_let_go(s3: Any, sqs: Any, bucket: str, queue: str,
                                                                       config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    s3.put_object(Bucket=bucket, Key="tmp/upload.part", Body=CLEAN)
    s3.delete_object(Bucket=bucket, Key="tmp/upload.part")  # gone before the listener gets to it
    received = drain(sqs, queue)
    for message in received:  # put them back, and a second copy of the miner's notification
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    [miner] = [m for m in received if "config.json" in m["Body"]]
    sqs.send_message(QueueUrl=queue, MessageBody=miner["Body"])

    output = listen(config, queue, "--concurrency", "1", "--action", "tag")
    assert "1 objects scanned (1 malicious" in output and "1 duplicates, 1 gone" in output
    assert waiting(sqs, queue) == 0
    assert tags(s3, bucket, "m/config.json")["cloudward-scan-result"] == "malicious"

    sqs.send_message(QueueUrl=queue, MessageBody=miner["Body"])  # a later run remembers it too
    assert "0 objects scanned" in listen(config, queue) and waiting(sqs, queue) == 0


def test_a_message_that_is_not_a_notification_goes_to_the_dead_letter_queue(sqs: Any, queue: str, dlq: str,
                                                                             config: Path) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="hello, not an S3 event")
    output = listen(config, queue, "--dead-letter-queue", dlq)
    assert "not an S3 event notification" in output and "1 dead-lettered" in output
    assert [m["Body"] for m in drain(sqs, dlq)] == ["hello, not an S3 event"]
    assert waiting(sqs, queue) == 0


def test_a_missing_queue_is_a_usage_error(aws_env: str, config: Path) -> None:
    result = CliRunner().invoke(app, ["storage", "listen", "--queue", f"{aws_env}/123456789012/cw-no-such-queue",
                                      "--once", "--config", str(config)])
    assert result.exit_code != 0 and "cw-no-such-queue" in str(result.exception)


def test_sigterm_stops_a_running_listener(s3: Any, sqs: Any, bucket: str, queue: str, config: Path) -> None:
    """Not --once: it long-polls (20 s) until SIGTERM, which interrupts the poll; exit 0."""
    cloudward = Path(sys.executable).parent / "cloudward"
    proc = subprocess.Popen([str(cloudward), "storage", "listen", "--queue", queue, "--action", "tag", "--no-store",
                             "--config", str(config)], stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
        deadline = time.monotonic() + 30
        while "cloudward-scan-result" not in tags(s3, bucket, "m/config.json"):
            assert time.monotonic() < deadline and proc.poll() is None, "not tagged in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "storage listen: 2 messages (1 test events), 1 objects scanned (1 malicious" in err
    assert waiting(sqs, queue) == 0


def test_notifications_are_parsed_as_s3_sends_them() -> None:
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {
        "key": "a+b%2Bc/%C3%BCber%20x", "eTag": "abc", "versionId": "v1"}}}
    removed = {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "gone"}}}
    parsed = parse_message(json.dumps({"Records": [record, removed]}))
    [note] = parsed.records
    assert (note.bucket, note.key, note.version_id, note.etag) == ("b", "a b+c/\u00fcber x", "v1", "abc")
    assert parsed.ignored == 1 and not parsed.test
    through_sns = json.dumps({"Type": "Notification", "Message": json.dumps({"Records": [record]})})
    assert parse_message(through_sns).records == [note]
    assert parse_message(json.dumps({"Event": "s3:TestEvent", "Bucket": "b"})).test
    for bad in ("nope", "[]", "{}", json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]})):
        with pytest.raises(ValueError):
            parse_message(bad)
    assert queue_region("https://sqs.eu-west-1.amazonaws.com/123/q") == "eu-west-1"
    assert queue_region("http://127.0.0.1:5000/123/q") is None
