"""Scan jobs: the command allow-list (and a fuzz of its parser), log scrubbing, and real jobs run
by a real server: an exposure scan of a harness redis whose findings come back through the API,
and a long scan cancelled through the API."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.errors import UsageError
from cloudward.server.jobs.commands import parse_command
from cloudward.server.jobs.scrub import scrub
from tests.harness.services import Service
from tests.server._support import ApiServer, wait_for_job


@pytest.mark.parametrize("text, words", [
    ("exposure scan 10.0.0.0/16 -p teamtnt", ("exposure", "scan", "10.0.0.0/16", "-p", "teamtnt")),
    ("cloudward secrets scan '/srv/my repo'", ("secrets", "scan", "/srv/my repo")),
    ("conformity scan aws --regions all", ("conformity", "scan", "aws", "--regions", "all")),
    ("audit", ("audit",)),
    ("iac scan . ; rm -rf /", ("iac", "scan", ".", ";", "rm", "-rf", "/")),  # `;` is a path argument, no shell
])
def test_allowed_commands_become_argument_lists(text: str, words: tuple[str, ...]) -> None:
    assert parse_command(text).words == words


@pytest.mark.parametrize("text, message", [
    ("", "needs a command"),
    ("rm -rf /", "not a command a job may run"),
    ("findings list", "not a command a job may run"),
    ("server --init-admin x", "not a command a job may run"),
    ("exposure scan 10.0.0.1 -o /etc/cron.d/x", "option -o"),
    ("exposure scan 10.0.0.1 --output=/tmp/x", "option --output"),
    ("exposure scan 10.0.0.1 -fjson", "option -f"),
    ("exposure scan -iL /etc/shadow", "option -iL"),
    ("image scan r/app:1 --password hunter2", "option --password"),
    ("secrets scan . --no-store", "option --no-store"),
    ("secrets scan . -- --format", "option --"),
    ("exposure scan 'unclosed", "cannot parse"),
    ("exposure scan \x00", "control characters"),
])
def test_refused_commands_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_command(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_command_parser_never_crashes_and_never_lets_a_denied_option_through(text: str) -> None:
    try:
        command = parse_command("exposure scan " + text)
    except UsageError:
        return
    assert command.words[:2] == ("exposure", "scan")
    for word in command.words[2:]:
        assert word.split("=")[0] not in ("-o", "--output", "-f", "--format", "--config", "--no-store", "--")
        assert not word.startswith(("-o", "-f", "-iL"))


def test_log_tail_is_scrubbed() -> None:
    raw = ("\x1b[31mconnecting to postgresql://cw:hunter2@db/cw\x1b[0m\r\n"
           "password=letmein token: abcdefgh12345678 Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y\n"
           "key AKIAIOSFODNN7EXAMPLE and cw_0123456789ab_" + "A" * 43 + "\n"
           "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nstore pw s3cretvalue\n")
    clean = scrub(raw, secrets=["s3cretvalue"])
    for secret in ("hunter2", "letmein", "abcdefgh12345678", "eyJhbGci", "AKIAIOSFODNN7EXAMPLE", "A" * 43, "MIIE",
                   "s3cretvalue", "\x1b", "\r"):
        assert secret not in clean
    assert "connecting to postgresql://cw:***@db/cw" in clean


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["password", "API_KEY", "db-token", "secret"]),
       st.from_regex(r"[A-Za-z0-9]{8,20}", fullmatch=True))
def test_scrub_never_crashes_and_masks_assignments(noise: str, name: str, value: str) -> None:
    clean = scrub(f"{noise}\n{name}={value}\n")
    assert f"{name}={value}" not in clean


def test_exposure_job_finds_the_open_redis(sqlite_api: ApiServer, redis_server: Service) -> None:
    """On SQLite here; tests/server/test_webhooks.py runs the same kind of job on PostgreSQL."""
    api = sqlite_api
    command = f"exposure scan 127.0.0.1 -p {redis_server.port}"
    with api.client("analyst") as analyst, api.client("read-only") as reader:
        started = analyst.post("/api/v1/jobs", json={"command": command})
        assert started.status_code == 202, started.text
        assert started.json()["status"] == "queued"
        job = wait_for_job(reader, started.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["exit_code"] == 0 and job["scan_id"]
        scan = reader.get(f"/api/v1/scans/{job['scan_id']}").json()
        assert scan["kind"] == "exposure" and scan["targets"] == ["127.0.0.1"]
        page = reader.get("/api/v1/findings", params={"scan": job["scan_id"], "rule": "redis.unauthenticated"}).json()
        assert [f["target"]["name"] for f in page["items"]] == [f"127.0.0.1:{redis_server.port}"]
        assert reader.post("/api/v1/jobs", json={"command": command}).status_code == 403
        refused = analyst.post("/api/v1/jobs", json={"command": "exposure scan 127.0.0.1 -o /tmp/x"})
        assert refused.status_code == 400 and "option -o" in refused.json()["detail"]


def test_running_job_is_cancelled_through_the_api(sqlite_api: ApiServer) -> None:
    api = sqlite_api  # the runner is the same on both stores: one long job is enough
    # every port of one loopback address at 20 new connections a second: long enough to cancel
    command = "exposure scan 127.0.0.9 -p 1-65535 --rate 20"
    with api.client("analyst") as analyst:
        job_id = analyst.post("/api/v1/jobs", json={"command": command}).json()["id"]
        deadline = time.monotonic() + 60
        while analyst.get(f"/api/v1/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)  # let the CLI get past start-up, so the interrupt reaches the scan itself
        assert analyst.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        job = wait_for_job(analyst, job_id)
        assert job["status"] == "cancelled" and job["cancel_requested"]
        if job["scan_id"]:  # interrupted in the scan: recorded as a cancelled scan with what it had
            assert analyst.get(f"/api/v1/scans/{job['scan_id']}").json()["status"] == "cancelled"
        again = analyst.post(f"/api/v1/jobs/{job_id}/cancel").json()
        assert again["status"] == "cancelled"
