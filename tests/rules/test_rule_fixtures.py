"""Every data rule is proven by fixtures: tests/rules/<rule_id>/positive* must fire it and
negative* must not. A rule without both is a failure, so no detection claim goes untested.

What a fixture holds depends on the rule's engine (FIRES below):
- exposure: `*.json` observations, {"service": ..., "facts": {...}}.
- secrets: `*.txt` text scanned with just that rule (and any rule it `requires`).
- host: `*.json` host observations, {"subject": ..., "facts": {...}}.
- image: `*.json` image observations, {"subject": ..., "facts": {...}} (config, history step, file).
- content: `*.json` content observations, {"subject": ..., "facts": {...}}
  (YARA match, hash IOC, ClamAV, archive limit).
- aws: `*.json` AWS resource records, {"subject": <resource type>, "facts": {...}} (collected from the
  planted moto accounts of tests/conformity/aws, or hand-built where moto cannot show the case).
- iac: real IaC files (`*.tf`, `*.tfplan.json`, Kubernetes or compose `*.yaml`) scanned by `iac scan`
  with just that rule.
- appsec: `*.json` HTTP requests, {"method", "path", "query", "headers", "body", "policy"}, judged by the
  appsec inspector with just that rule; with "runtime": {"event", "args"}, that audit event is raised while
  the request is under the runtime guards.
"""

import json
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.attack import unknown_techniques
from cloudward.exposure.evaluate import compile_rules, evaluate
from cloudward.exposure.probes.base import Observation

HERE = Path(__file__).parent
RULES = list(load_all_rules())


def _fixtures(rule_id: str, kind: str) -> list[Path]:
    return sorted(p for p in (HERE / rule_id).glob(f"{kind}*") if p.is_file())


def _exposure_fires(rule, path: Path) -> bool:
    data = json.loads(path.read_text())
    observation = Observation(service=data["service"], host="127.0.0.1", port=1, facts=data["facts"])
    return rule.id in [f.rule_id for f in evaluate(observation, compile_rules([rule]))]


def _secrets_fires(rule, path: Path) -> bool:
    """Scan the fixture text with just this rule (plus any rule it `requires`, as a silent helper)."""
    from cloudward.secrets import scan_bytes

    findings = scan_bytes(path.read_bytes(), path.name, rules=[rule], hmac_key=b"fixture-key")
    return rule.id in [f.rule_id for f in findings]


def _host_fires(rule, path: Path) -> bool:
    from cloudward.core.finding import Target
    from cloudward.workload.evaluate import compile_rules as compile_host_rules
    from cloudward.workload.evaluate import evaluate as evaluate_host
    from cloudward.workload.observation import HostObservation

    data = json.loads(path.read_text())
    observation = HostObservation(subject=data["subject"], facts=data["facts"], path=data.get("path"))
    findings = evaluate_host(observation, compile_host_rules([rule]), Target(kind="host", name="fixture"))
    return rule.id in [f.rule_id for f in findings]


def _subject_fires(engine: str):
    def fires(rule, path: Path) -> bool:
        from cloudward.core.finding import Target
        from cloudward.engines import subject_rules

        data = json.loads(path.read_text())
        findings = subject_rules.evaluate(data["subject"], data["facts"], subject_rules.compile_rules([rule], engine),
                                          Target(kind="path", name="fixture"), location={}, key="fixture")
        return rule.id in [f.rule_id for f in findings]

    return fires


def _iac_fires(rule, path: Path) -> bool:
    from cloudward.conformity.iac import scan_paths

    result = scan_paths([str(path)], [rule])
    assert not result.errors, result.errors
    return rule.id in [f.rule_id for f in result.findings]


def _appsec_fires(rule, path: Path) -> bool:
    """A request {"method", "path", "query", "headers", "body" (text or JSON), "policy"} judged with that rule
    alone, as the adapters judge it (a body past the policy's max_body_bytes is cut and marked)."""
    from cloudward.appsec.policy import load_policy
    from cloudward.appsec.protect import Protector
    from cloudward.appsec.request import HttpRequest
    from cloudward.appsec.sink import FindingQueue

    data = json.loads(path.read_text())
    body = data.get("body", "")
    raw = (json.dumps(body) if isinstance(body, dict | list) else str(body)).encode()
    protector = Protector("block", load_policy(data.get("policy") or {}), rules=[rule],
                          findings=FindingQueue(lambda findings: None), guards="runtime" in data)
    policy = protector.route(data.get("method", "GET"), data.get("path", "/"))
    request = HttpRequest(method=data.get("method", "GET"), raw_path=data.get("path", "/"), query=data.get("query", ""),
                          headers=[(k.lower(), v) for k, v in (data.get("headers") or {}).items()],
                          body=raw[: policy.max_body_bytes], body_truncated=len(raw) > policy.max_body_bytes)
    if "runtime" in data:  # {"event": an audit event, "args": [...]} raised while the request is guarded
        import sys

        from cloudward.appsec.guards import GuardViolation

        try:
            with protector.guard(request, policy):
                sys.audit(data["runtime"]["event"], *data["runtime"]["args"])
        except GuardViolation:
            return rule.id == "appsec.runtime_guard"
        return False
    return rule.id in {d.rule_id for d in protector.judge(request, policy).detections}


# engine name -> does this rule fire on this fixture file?
FIRES = {"exposure": _exposure_fires, "secrets": _secrets_fires, "host": _host_fires,
         "image": _subject_fires("image"), "content": _subject_fires("content"), "aws": _subject_fires("aws"),
         "iac": _iac_fires, "appsec": _appsec_fires}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_has_positive_and_negative_fixtures(rule):
    assert _fixtures(rule.id, "positive"), f"tests/rules/{rule.id}/positive.json is missing"
    assert _fixtures(rule.id, "negative"), f"tests/rules/{rule.id}/negative.json is missing"


def _cases():
    for rule in RULES:
        for kind in ("positive", "negative"):
            for path in _fixtures(rule.id, kind):
                yield pytest.param(rule, kind == "positive", path, id=f"{rule.id}/{path.name}")


@pytest.mark.parametrize(("rule", "should_fire", "path"), list(_cases()))
def test_rule_fixture(rule, should_fire, path):
    assert FIRES[rule.engine_name](rule, path) is should_fire


def test_fixture_folders_name_real_rules():
    ids = {r.id for r in RULES}
    orphans = [p.name for p in HERE.iterdir() if p.is_dir() and not p.name.startswith("__") and p.name not in ids]
    assert not orphans, f"fixture folders without a rule: {orphans}"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_attack_ids_exist_in_mitre_data(rule):
    assert not unknown_techniques(rule.attack)


def test_shipped_attack_data_matches_corpus():
    """The package ships a reduced copy of the corpus; it must not drift from it."""
    from cloudward.core.attack import techniques

    corpus = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "mitre-attack" / "enterprise-techniques.json"
    data = json.loads(corpus.read_text())
    assert techniques() == {t["id"]: t["name"] for t in data["techniques"]}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_metadata_is_complete(rule):
    assert rule.references, "a rule must cite at least one reference"
    assert rule.attack or rule.category.value == "vulnerability"
