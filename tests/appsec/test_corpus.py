"""The CRS corpus runner (`cloudward appsec test`) against the protected and the unprotected FastAPI
app: the report's numbers come from the answers the app really gave."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cloudward.appsec.corpus import iter_sample, load_corpus, replay, score
from cloudward.cli import appsec as appsec_cli
from tests.appsec.servers import start_fastapi
from tests.harness.services import Service

CORPUS = Path(__file__).resolve().parents[2].parent / "shared/corpora/crs/tests"  # Apache-2.0, see SOURCES.md
RULES = CORPUS.parent / "rules"


@pytest.fixture(scope="module")
def protected() -> Iterator[Service]:
    service = start_fastapi("block", extra_env={"APPSEC_FINDINGS": ""})
    yield service
    service.stop()


@pytest.fixture(scope="module")
def unprotected() -> Iterator[Service]:
    service = start_fastapi(protect=False)
    yield service
    service.stop()


def test_corpus_loads_every_request_stage() -> None:
    stages = load_corpus(CORPUS)
    assert len(stages) > 4000
    classes = {s.attack_class for s in stages}
    assert {"sqli", "xss", "rce", "lfi", "rfi", "ssrf/generic", "java", "scanner", "protocol"} <= classes
    assert all(s.raw for s in stages)
    assert not any("RESPONSE-" in s.file for s in stages)


def test_cli_report_against_protected_and_unprotected(protected: Service, unprotected: Service,
                                                      tmp_path: Path) -> None:
    root = typer.Typer()  # registered as in cloudward.cli.app
    root.add_typer(appsec_cli.app, name="appsec")
    runner = CliRunner()
    reports = {}
    for name, service in (("protected", protected), ("unprotected", unprotected)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(root, ["appsec", "test", "--target", str(service.url), "--corpus", str(CORPUS),
                                     "--crs-rules", str(RULES), "--sample", "10", "--format", "json", "-o", str(out)])
        assert result.exit_code == 0, result.output
        reports[name] = {c["class"]: c for c in json.loads(out.read_text())["classes"]}
    for cls in ("sqli", "xss", "rce", "lfi"):
        guarded, bare = reports["protected"][cls], reports["unprotected"][cls]
        assert guarded["attacks"] == bare["attacks"] > 0
        assert bare["blocked"] == 0 and bare["wrongly_blocked"] == 0  # nothing in front of the bare app
        assert guarded["blocked"] > 0 and 0 < guarded["detection_rate"] <= 1
        assert guarded["detection_rate"] == round(guarded["blocked"] / guarded["attacks"], 4)
        assert set(guarded) >= {"benign", "false_positive_rate", "pl1_detection_rate", "errors"}


def test_score_counts_what_came_back(protected: Service) -> None:
    stages = [s for s in iter_sample(load_corpus(CORPUS), 25) if s.attack_class == "sqli"]
    outcomes = replay(stages, str(protected.url))
    report = score(outcomes, str(protected.url))
    (sqli,) = report.classes
    assert sqli.blocked == sum(1 for o in outcomes if o.stage.is_attack and o.status == 403)
    assert sqli.attacks + sqli.benign + sqli.errors <= len(stages)
