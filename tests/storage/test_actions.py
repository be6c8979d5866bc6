"""`cloudward storage scan --action ...` end to end on moto's S3 server over HTTP (real S3 calls on
loopback, no mocks): tags merged with the user's, quarantine that moves malicious objects and never
loses one, promotion of clean objects, a webhook on a local HTTP server thread. Fake credentials are
random per session and must never reach a webhook or the output.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.cli.common import load_all_rules
from cloudward.core.errors import UsageError
from cloudward.engines.content import load_content_judge
from cloudward.storage.actions import Actions, parse_actions, rules_value
from cloudward.storage.objects import s3_object
from cloudward.storage.scan import StorageScanOptions, scan_object
from tests.harness.plants.artifacts import XMRIG_CONFIG

KEY_ID = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
SECRET = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
MINER = XMRIG_CONFIG.encode()
DOTENV = f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode()
CLEAN = b"Quarterly numbers, nothing to see.\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cloudward.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


@pytest.fixture
def other_bucket(s3: Any, bucket: str) -> str:
    name = f"{bucket}-q"
    s3.create_bucket(Bucket=name)
    return name


def scan(config: Path, *args: str, usage_error: bool = False) -> tuple[dict[str, Any], str]:
    """Run `storage scan`; a usage error (exit 2 from the `cloudward` entry point) reaches CliRunner
    as the UsageError itself."""
    result = CliRunner().invoke(app, ["storage", "scan", *args, "--no-store", "-f", "json", "--config", str(config)])
    if usage_error:
        assert isinstance(result.exception, UsageError), result.output
        return {}, str(result.exception)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.output


def tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


# -- tag ----------------------------------------------------------------------------------------

def test_tag_merges_with_the_users_tags(s3: Any, bucket: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER,
                  Tagging="owner=alice&team=web&cloudward-scan-result=clean")  # ours, stale: replaced
    s3.put_object(Bucket=bucket, Key="docs/ok.txt", Body=CLEAN, Tagging="owner=bob")
    crowded = "&".join(f"t{i}=v{i}" for i in range(9))
    s3.put_object(Bucket=bucket, Key="crowded/config.json", Body=MINER, Tagging=crowded)

    doc, _ = scan(config, f"s3://{bucket}", "--action", "tag")
    miner = tags(s3, bucket, "m/config.json")
    assert miner["owner"] == "alice" and miner["team"] == "web"
    assert miner["cloudward-scan-result"] == "malicious"
    assert "content.malware.miner" in miner["cloudward-rules"].split()
    datetime.fromisoformat(miner["cloudward-scan-date"].replace("Z", "+00:00"))
    clean = tags(s3, bucket, "docs/ok.txt")
    assert clean["owner"] == "bob" and clean["cloudward-scan-result"] == "clean" and "cloudward-rules" not in clean

    # nine tags of the user's leave room for one of ours: the verdict; the user's are all kept
    full = tags(s3, bucket, "crowded/config.json")
    assert len(full) == 10 and full["cloudward-scan-result"] == "malicious"
    assert all(full[f"t{i}"] == f"v{i}" for i in range(9))
    [crowded_error] = [e for e in doc["scan"]["errors"] if e["stage"] == "action"]
    assert crowded_error["target"] == f"s3://{bucket}/crowded/config.json"
    assert "cloudward-scan-date" in crowded_error["message"]
    assert doc["scan"]["stats"]["tagged"] == 3

    # remembered, the tags already say so: nothing read, nothing written; the crowded object's tag
    # action failed, so it is judged (and its tags tried) again
    again, _ = scan(config, f"s3://{bucket}", "--action", "tag")
    assert again["scan"]["stats"]["unchanged"] == 2 and again["scan"]["stats"]["tagged"] == 1
    assert [e["target"] for e in again["scan"]["errors"]] == [f"s3://{bucket}/crowded/config.json"]
    assert tags(s3, bucket, "m/config.json") == miner


def test_rules_tag_is_cut_at_a_whole_rule_id() -> None:
    value = rules_value([f"content.malware.rule_{i:03}" for i in range(40)])
    assert len(value) <= 256 and value.endswith(" ...")
    assert all(part.startswith("content.malware.rule_") for part in value.split()[:-1])
    assert rules_value(["a,b"]) == "a_b"  # commas are not allowed in S3 tag values


# -- quarantine ---------------------------------------------------------------------------------

def test_quarantine_moves_malicious_and_secret_objects_and_leaves_clean_ones(
        s3: Any, bucket: str, other_bucket: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER, Tagging="owner=alice")
    s3.put_object(Bucket=bucket, Key="app/.env", Body=DOTENV)
    s3.put_object(Bucket=bucket, Key="docs/report final \u00fcber.txt", Body=CLEAN)

    doc, output = scan(config, f"s3://{bucket}", "--action", "tag", "--action", f"quarantine=s3://{other_bucket}/held")
    assert doc["scan"]["errors"] == [] and doc["scan"]["stats"]["quarantined"] == 2
    assert keys(s3, bucket) == {"docs/report final \u00fcber.txt"}
    assert keys(s3, other_bucket) == {"held/m/config.json", "held/app/.env"}
    assert body(s3, other_bucket, "held/m/config.json") == MINER
    assert body(s3, other_bucket, "held/app/.env") == DOTENV
    copy = tags(s3, other_bucket, "held/m/config.json")
    assert copy["cloudward-scan-result"] == "malicious" and copy["owner"] == "alice"
    assert tags(s3, other_bucket, "held/app/.env")["cloudward-scan-result"] == "secret"
    assert tags(s3, bucket, "docs/report final \u00fcber.txt")["cloudward-scan-result"] == "clean"
    assert SECRET not in output

    again, _ = scan(config, f"s3://{bucket}")  # the moved objects are not there any more
    assert again["scan"]["stats"]["objects"] == 1 and again["findings"] == []


def test_quarantine_on_only_malicious_leaves_secrets(s3: Any, bucket: str, other_bucket: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    s3.put_object(Bucket=bucket, Key="app/.env", Body=DOTENV)
    scan(config, f"s3://{bucket}", "--action", f"quarantine=s3://{other_bucket}", "--quarantine-on", "malicious")
    assert keys(s3, bucket) == {"app/.env"}
    assert keys(s3, other_bucket) == {"m/config.json"}


def test_quarantine_in_a_versioned_bucket_removes_the_scanned_version(
        s3: Any, bucket: str, other_bucket: str, config: Path) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="site/index.txt", Body=CLEAN)
    s3.put_object(Bucket=bucket, Key="site/index.txt", Body=MINER)  # a clean page overwritten by a miner
    scan(config, f"s3://{bucket}", "--action", f"quarantine=s3://{other_bucket}")
    versions = s3.list_object_versions(Bucket=bucket, Prefix="site/index.txt")
    assert len(versions.get("Versions", [])) == 1 and not versions.get("DeleteMarkers")
    assert body(s3, bucket, "site/index.txt") == CLEAN  # the malicious version is gone, the earlier one is back
    assert body(s3, other_bucket, "site/index.txt") == MINER


def test_quarantine_into_a_missing_bucket_leaves_the_original(s3: Any, bucket: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    doc, _ = scan(config, f"s3://{bucket}", "--action", "quarantine=s3://cw-no-such-quarantine-bucket")
    [error] = doc["scan"]["errors"]
    assert error["stage"] == "action" and error["target"] == f"s3://{bucket}/m/config.json"
    assert "quarantine" in error["message"] and "cw-no-such-quarantine-bucket" in error["message"]
    assert "left in place" in error["message"]
    assert body(s3, bucket, "m/config.json") == MINER
    assert doc["scan"]["stats"]["action_errors"] == 1 and doc["scan"]["stats"]["quarantined"] == 0
    assert [f["rule_id"] for f in doc["findings"]] == ["content.malware.miner"]  # the finding stands


def test_quarantine_never_overwrites_a_different_quarantined_object(
        s3: Any, bucket: str, other_bucket: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    s3.put_object(Bucket=other_bucket, Key="m/config.json", Body=b"an earlier, different sample\n")
    doc, _ = scan(config, f"s3://{bucket}", "--action", f"quarantine=s3://{other_bucket}")
    [error] = doc["scan"]["errors"]
    assert "different object" in error["message"] and "left in place" in error["message"]
    assert body(s3, bucket, "m/config.json") == MINER
    assert body(s3, other_bucket, "m/config.json") == b"an earlier, different sample\n"


def test_an_object_changed_since_its_scan_is_not_moved(s3: Any, bucket: str, other_bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    judge, _ = load_content_judge(list(load_all_rules()))
    result = scan_object(s3_object(s3, bucket, "m/config.json"), StorageScanOptions(judge=judge))
    assert result.verdict == "malicious"
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=CLEAN)  # replaced between scan and action
    actions = Actions(parse_actions(["tag", f"quarantine=s3://{other_bucket}"]), s3=s3)
    outcome = actions.apply(result)
    assert not outcome.moved and len(outcome.errors) == 2
    assert all("changed since it was scanned" in e for e in outcome.errors)
    assert body(s3, bucket, "m/config.json") == CLEAN and keys(s3, other_bucket) == set()
    assert "cloudward-scan-result" not in tags(s3, bucket, "m/config.json")  # no malicious tag on clean content


def test_quarantine_into_the_scanned_bucket_needs_a_prefix(s3: Any, bucket: str, config: Path) -> None:
    _, message = scan(config, f"s3://{bucket}", "--action", f"quarantine=s3://{bucket}", usage_error=True)
    assert "give a prefix" in message
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    s3.put_object(Bucket=bucket, Key="quarantine/old/config.json", Body=MINER)  # quarantined earlier
    doc, _ = scan(config, f"s3://{bucket}", "--action", f"quarantine=s3://{bucket}/quarantine/")
    assert keys(s3, bucket) == {"quarantine/m/config.json", "quarantine/old/config.json"}
    assert doc["scan"]["stats"]["quarantined"] == 1 and doc["scan"]["errors"] == []


# -- promote ------------------------------------------------------------------------------------

def test_promote_copies_clean_objects_only(s3: Any, bucket: str, other_bucket: str, config: Path) -> None:
    s3.put_object(Bucket=bucket, Key="in/ok.txt", Body=CLEAN, ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="in/config.json", Body=MINER)
    s3.put_object(Bucket=bucket, Key="in/.env", Body=DOTENV)
    doc, _ = scan(config, f"s3://{bucket}", "--action", f"promote=s3://{other_bucket}/published/")
    assert doc["scan"]["stats"]["promoted"] == 1 and doc["scan"]["errors"] == []
    assert keys(s3, other_bucket) == {"published/in/ok.txt"}
    assert body(s3, other_bucket, "published/in/ok.txt") == CLEAN
    assert s3.head_object(Bucket=other_bucket, Key="published/in/ok.txt")["ContentType"] == "text/plain"
    assert tags(s3, other_bucket, "published/in/ok.txt")["cloudward-scan-result"] == "clean"
    assert keys(s3, bucket) == {"in/ok.txt", "in/config.json", "in/.env"}  # originals stay


# -- webhook ------------------------------------------------------------------------------------

class Hook:
    """A local HTTP server thread that records what it is sent and answers `status`."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                hook.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN-in-the-path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def test_webhook_receives_a_json_summary_without_raw_secrets(s3: Any, bucket: str, config: Path, hook: Hook) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
    s3.put_object(Bucket=bucket, Key="app/.env", Body=DOTENV)
    s3.put_object(Bucket=bucket, Key="ok.txt", Body=CLEAN)
    doc, output = scan(config, f"s3://{bucket}", "--action", "tag", "--action", f"webhook={hook.url}")
    assert doc["scan"]["stats"]["notified"] == 2 and doc["scan"]["errors"] == []
    assert SECRET not in output and "T0KEN" not in output
    sent = {json.loads(raw)["object"]["key"]: json.loads(raw) for _, _, raw in hook.requests}
    assert set(sent) == {"m/config.json", "app/.env"}  # clean objects are not announced by default
    for path, headers, raw in hook.requests:
        assert path == "/hooks/T0KEN-in-the-path" and headers["Content-Type"] == "application/json"
        assert SECRET.encode() not in raw and KEY_ID.encode() not in raw
    miner = sent["m/config.json"]
    assert miner["verdict"] == "malicious" and miner["object"]["bucket"] == bucket and miner["object"]["etag"]
    assert "content.malware.miner" in miner["rule_ids"] and "tagged" in miner["actions"]
    assert miner["findings"][0]["severity"] and miner["findings"][0]["fingerprint"]
    assert sent["app/.env"]["verdict"] == "secret" and sent["app/.env"]["findings"][0]["evidence"]
    assert XMRIG_CONFIG.splitlines()[1].encode() not in json.dumps(miner).encode()  # no content, only verdicts

    again, _ = scan(config, f"s3://{bucket}", "--action", f"webhook={hook.url}")  # remembered: not announced again
    assert again["scan"]["stats"]["notified"] == 0 and len(hook.requests) == 2


def test_failing_webhook_is_an_error_and_retried_next_run(s3: Any, bucket: str, config: Path, hook: Hook) -> None:
    failing = Hook(status=503)
    try:
        s3.put_object(Bucket=bucket, Key="m/config.json", Body=MINER)
        doc, output = scan(config, f"s3://{bucket}", "--action", f"webhook={failing.url}")
    finally:
        failing.close()
    [error] = doc["scan"]["errors"]
    assert error["stage"] == "action" and error["target"] == f"s3://{bucket}/m/config.json"
    assert "webhook" in error["message"] and "HTTP 503" in error["message"] and "3 attempt" in error["message"]
    assert len(failing.requests) == 3  # one try and two retries
    assert "T0KEN" not in output  # the URL's path may hold a token: never printed

    again, _ = scan(config, f"s3://{bucket}", "--action", f"webhook={hook.url}")  # not remembered: told now
    assert again["scan"]["stats"]["unchanged"] == 0 and again["scan"]["stats"]["notified"] == 1
    assert len(hook.requests) == 1


def test_plain_http_webhook_beyond_loopback_is_refused(config: Path, tmp_path: Path) -> None:
    _, message = scan(config, str(tmp_path), "--action", "webhook=http://hooks.example.invalid/x", usage_error=True)
    assert "plain http only to loopback" in message
    with pytest.raises(UsageError):
        parse_actions(["webhook=ftp://127.0.0.1/x"])
    assert parse_actions(["webhook=http://hooks.example.invalid/x"], allow_http_webhook=True)[0].kind == "webhook"


def test_actions_on_a_local_directory(tmp_path: Path, config: Path, hook: Hook) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    (root / "config.json").write_bytes(MINER)
    for spec in ("tag", "quarantine=s3://somewhere", "promote=s3://somewhere"):
        _, message = scan(config, str(root), "--action", spec, usage_error=True)
        assert "only for s3://" in message
    doc, _ = scan(config, str(root), "--action", f"webhook={hook.url}")  # a webhook works for files too
    assert doc["scan"]["stats"]["notified"] == 1
    [(_, _, raw)] = hook.requests
    sent = json.loads(raw)
    assert sent["object"]["bucket"] is None and sent["object"]["url"] == str(root / "config.json")
    assert (root / "config.json").read_bytes() == MINER


def test_bad_action_specs_are_usage_errors() -> None:
    for spec in ("tag=x", "quarantine", "quarantine=/tmp/q", "promote=s3://", "delete", "webhook="):
        with pytest.raises(UsageError):
            parse_actions([spec])
    with pytest.raises(UsageError):
        parse_actions(["tag", "tag"])


def test_help_renders() -> None:
    """Option help goes through rich markup: `[/prefix]` in it once broke `--help`."""
    for command in ("scan", "listen"):
        result = CliRunner().invoke(app, ["storage", command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--action" in result.output
