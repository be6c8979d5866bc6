"""The `cloudward/v1` JSON writer: exactly the contract, ordered, ASCII-safe, adding nothing."""

from __future__ import annotations

import io
import json

from cloudward import __version__
from cloudward.report import write_report
from cloudward.report._common import ordered

from .conftest import HOSTILE, MASKED_SECRET, RAW_SECRET


def render(result) -> str:
    stream = io.StringIO()
    write_report(result, "json", stream)
    return stream.getvalue()


def test_output_is_exactly_the_ordered_contract(shuffled):
    text = render(shuffled)
    assert json.loads(text) == ordered(shuffled).contract(__version__)
    assert text.endswith("}\n") and text.startswith('{\n  "schema": "cloudward/v1",')


def test_contract_keys(result):
    doc = json.loads(render(result))
    assert list(doc) == ["schema", "tool", "scan", "findings", "inventory"]
    assert doc["schema"] == "cloudward/v1"
    assert doc["tool"] == {"name": "cloudward", "version": __version__}
    assert {"id", "started", "finished", "targets", "errors"} <= set(doc["scan"])
    assert doc["scan"]["errors"][0] == {
        "target": "127.0.0.3:443",
        "message": "TLS handshake timed out",
        "stage": "connect",
    }
    for finding in doc["findings"]:
        assert {
            "rule_id",
            "title",
            "severity",
            "category",
            "target",
            "location",
            "evidence",
            "remediation",
            "references",
            "attack",
            "compliance",
            "fingerprint",
        } <= set(finding)
        assert set(finding["target"]) == {"kind", "name"}
        assert finding["severity"] in {"critical", "high", "medium", "low", "info"}
        assert "key" not in finding  # the secret's HMAC key part stays out of the contract
    assert [f["severity"] for f in doc["findings"]] == [
        "critical",
        "critical",
        "high",
        "medium",
        "low",
        "info",
    ]


def test_writer_adds_no_secret_and_keeps_redaction(result):
    text = render(result)
    assert RAW_SECRET not in text
    assert MASKED_SECRET in text
    assert "hmac-of-the-secret" not in text


def test_hostile_evidence_stays_data_and_output_is_ascii(result):
    text = render(result)
    assert text.isascii()
    assert "\x1b" not in text and "\u202e" not in text
    banners = [f["evidence"].get("banner") for f in json.loads(text)["findings"]]
    assert HOSTILE in banners  # round-trips exactly, lone surrogate included


def test_pretty_printed_with_stable_key_order(result):
    text = render(result)
    assert '\n  "tool": {\n    "name": "cloudward",' in text
    finding_keys = list(json.loads(text)["findings"][0])
    assert finding_keys[:5] == ["rule_id", "title", "severity", "category", "target"]
