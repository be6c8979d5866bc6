"""Webhooks: payload shapes (generic JSON, signed; Slack-compatible, escaped; never evidence) and
real deliveries to a receiver on 127.0.0.1 after jobs run by a real server: a first scan's new
findings are announced, the same scan again announces nothing."""

from __future__ import annotations

import hashlib
import hmac
import json

from cloudward.core.finding import Finding, Target
from cloudward.server.jobs.runner import JobInfo
from cloudward.server.webhooks import finding_summary, generic_payload, mask_url, slack_payload
from cloudward.store.views import StoredFinding
from tests.harness.services import ServicePool, start_redis
from tests.server._support import ApiServer, wait_for_job
from tests.server.receiver import webhook_receiver
from tests.store._support import T0

SECRET = "webhook-signing-secret-0123456789"


def _job() -> JobInfo:
    return JobInfo("j1", "exposure scan 10.0.0.0/24", "succeeded", "alice", None, T0, T0, T0, 0, "s1", False, "", "")


def _stored(title: str, severity: str = "critical") -> StoredFinding:
    finding = Finding(rule_id="secret.aws_key", title=title, severity=severity, category="secret",
                      target=Target(kind="path", name="repo/.env"), evidence={"match": "AKIA************MPLE"},
                      first_seen=T0)
    return StoredFinding(finding=finding, status="open", first_scan_id="s1", last_scan_id="s1")


def test_payloads_carry_no_evidence_and_escape_slack_markup() -> None:
    items = [finding_summary(_stored("<!channel> & <http://x|click>")) for _ in range(12)]
    generic = generic_payload(_job(), {"id": "s1"}, items)
    assert generic["count"] == 12 and "evidence" not in json.dumps(generic) and "AKIA" not in json.dumps(generic)
    slack = slack_payload(_job(), {"id": "s1"}, items)
    text = json.dumps(slack)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; &lt;http://x|click&gt;" in text
    assert "and 2 more" in text and slack["text"].startswith("cloudward: 12 new findings (worst: critical)")


def test_masked_urls() -> None:
    assert mask_url("https://hooks.slack.com/services/T0/B0/abc") == "https://hooks.slack.com/***"
    assert mask_url("http://127.0.0.1:9999/hook?token=x") == "http://127.0.0.1:9999/***"


def test_new_findings_are_delivered_once(postgresql_api: ApiServer, services: ServicePool) -> None:
    api = postgresql_api
    redis = services.start(start_redis)
    command = f"exposure scan 127.0.0.1 -p {redis.port}"
    with webhook_receiver() as receiver, api.client("admin") as admin, api.client("analyst") as analyst:
        generic = admin.post("/api/v1/webhooks", json={"url": receiver.url + "/generic", "min_severity": "high",
                                                       "secret": SECRET}).json()
        slack = admin.post("/api/v1/webhooks", json={"url": receiver.url + "/slack", "kind": "slack",
                                                     "min_severity": "critical"}).json()
        first = wait_for_job(analyst, analyst.post("/api/v1/jobs", json={"command": command}).json()["id"])
        assert first["status"] == "succeeded", first
        (delivery,) = receiver.at("/generic")
        digest = hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers["x-cloudward-signature"] == f"sha256={digest}"
        payload = delivery.json()
        assert payload["event"] == "scan.new_findings" and payload["scan"]["id"] == first["scan_id"]
        rules = {f["rule_id"] for f in payload["findings"]}
        assert "redis.unauthenticated" in rules
        page = analyst.get("/api/v1/findings", params={"scan": first["scan_id"], "rule": "redis.*"}).json()
        assert f"127.0.0.1:{redis.port}" in {f["target"]["name"] for f in page["items"]}
        assert {f["severity"] for f in payload["findings"]} <= {"high", "critical"}
        assert all("evidence" not in f for f in payload["findings"])
        (message,) = receiver.at("/slack")
        assert "new finding" in message.json()["text"] and "x-cloudward-signature" not in message.headers
        # the same scan again: nothing is new, so nobody is called
        second = wait_for_job(analyst, analyst.post("/api/v1/jobs", json={"command": command}).json()["id"])
        assert second["status"] == "succeeded"
        assert len(receiver.at("/generic")) == 1 and len(receiver.at("/slack")) == 1
        hooks = {h["id"]: h for h in admin.get("/api/v1/webhooks").json()}
        assert hooks[generic["id"]]["last_status"] == "200" and hooks[slack["id"]]["last_status"] == "200"
        metrics = admin.get("/metrics").text
        assert 'cloudward_webhook_deliveries_total{result="delivered"} 2.0' in metrics
        assert 'cloudward_jobs_finished_total{status="succeeded"}' in metrics
        for hook in (generic, slack):
            admin.delete(f"/api/v1/webhooks/{hook['id']}")
