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
- redis_proxy: `*.json` client traffic, {"policy": <proxy policy>, "commands": [[arg, ...], ...]} or
  {"policy", "raw": "<bytes as sent>"}, fed to the proxy's own connection handling (no server is started).
- docker_proxy: `*.json` HTTP requests, {"method", "path" (the request target, query included), "headers",
  "body" (JSON or text), "policy"}, judged in the order the proxy judges one.
- scan: `*.json` failed connection attempts, {"attempts": [[proto, source, host, port, time], ...]} and/or
  {"generate": [{"proto", "source", "hosts": [...], "ports": [...], "start", "step"}, ...]} (one attempt
  per host and port, `step` seconds apart), counted by the scan detector with just that rule; real nmap
  scans are in tests/network/test_scans.py.
- suricata: no fixture files; every signature is proven on real traffic by tests/network/test_inspect.py.
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


def _redis_proxy_fires(rule, path: Path) -> bool:
    """The fixture's bytes go through the proxy's own client-side handling (RESP parser, AUTH gate,
    renamed/deny/allow lists, the rules' judge) as one client connection's reads; the two sockets are
    recording stand-ins, since no server is started here. The rule fires when the proxy reports it."""
    import asyncio

    from cloudward.network.redis_policy import RedisPolicy
    from cloudward.network.redis_proxy import RedisProxy, Upstream, _ClientSide, _ServerSide
    from cloudward.network.resp import encode_command

    class Recorder(RedisProxy):
        reported: list[str]

        def report(self, rule, action, detail, client, arguments=()) -> None:
            if rule is not None:
                self.reported.append(rule.id)

    class Wire:  # a transport that only keeps what is written to it
        def __init__(self) -> None:
            self.sent = bytearray()

        def write(self, data: bytes) -> None:
            self.sent += data

        def can_write_eof(self) -> bool:
            return True

        def get_extra_info(self, name: str, default=None):
            return default

        def write_eof(self) -> None: ...
        def close(self) -> None: ...
        def abort(self) -> None: ...
        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...

    data = json.loads(path.read_text())
    proxy = Recorder(RedisPolicy.model_validate(data.get("policy") or {}).compile(), Upstream())
    proxy.reported = []
    if "raw" in data:
        payload = data["raw"].encode("latin-1")
    else:
        payload = b"".join(encode_command([a.encode() for a in command]) for command in data["commands"])

    async def connection() -> None:  # finish() schedules its close on the running loop
        client = _ClientSide(proxy)
        client.transport, client.early = Wire(), None  # connected: what arrives is judged at once
        client.server = _ServerSide(client)
        client.server.transport = Wire()
        client.process(payload)

    asyncio.run(connection())
    return rule.id in proxy.reported


DOCKER_TOKEN = "fixture-token-5f0c1e9a7b"  # the fixtures' own throwaway token


def _docker_proxy_fires(rule, path: Path) -> bool:
    """A request parsed by h11 as the proxy's client side parses it, then judged in the order of the
    proxy's `_handle`: bearer token, request target, head, body bound, body. A request h11 refuses is
    `malformed_request`, as in `_protocol_error`. Without an Authorization header the fixture token goes."""
    import h11

    from cloudward.network.docker_judge import BODY_LIMIT, MALFORMED, UNAUTHENTICATED, RequestError, parse_target
    from cloudward.network.docker_policy import Policy, hash_token
    from cloudward.network.docker_proxy import MAX_HEAD_BYTES, DockerProxy, parse_address

    data = json.loads(path.read_text())
    policy = Policy.model_validate({"tokens": [{"name": "fixture", "sha256": hash_token(DOCKER_TOKEN)}],
                                    **(data.get("policy") or {})})
    proxy = DockerProxy(parse_address("unix:///var/run/docker.sock"), lambda: policy)
    body = data.get("body", "")
    raw_body = (json.dumps(body) if isinstance(body, dict | list) else str(body)).encode()
    headers = {"Host": "docker", "Authorization": f"Bearer {DOCKER_TOKEN}", **(data.get("headers") or {})}
    head = f"{data.get('method', 'GET')} {data['path']} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.receive_data(head.encode() + f"Content-Length: {len(raw_body)}\r\n\r\n".encode() + raw_body)
    try:
        request = conn.next_event()
    except h11.RemoteProtocolError:
        return rule.id == MALFORMED
    if proxy._authenticate(request, proxy.state) is None:
        return rule.id == UNAUTHENTICATED
    try:
        route = parse_target(request.method, request.target)
        violations = proxy.state.judge.head(route)
        if route.judges_body and not violations:
            if len(raw_body) > policy.max_body_bytes:
                return rule.id == BODY_LIMIT
            violations = proxy.state.judge.body(route, raw_body)
    except RequestError as exc:
        return rule.id == exc.rule_id
    return rule.id in {v.rule_id for v in violations}


def _scan_fires(rule, path: Path) -> bool:
    from cloudward.network.scans import ScanDetector

    data = json.loads(path.read_text())
    attempts = [tuple(a) for a in data.get("attempts", [])]
    for spec in data.get("generate", []):
        ts = float(spec.get("start", 0))
        for host in spec["hosts"]:
            for port in spec["ports"]:
                attempts.append((spec.get("proto", "tcp"), spec["source"], host, port, ts))
                ts += float(spec.get("step", 0.1))
    detector = ScanDetector((rule,))
    for proto, source, host, port, ts in attempts:
        detector.attempt(proto, source, host, int(port), float(ts))
    return rule.id in {a.rule.id for a in detector.alerts}


# engine name -> does this rule fire on this fixture file?
FIRES = {"exposure": _exposure_fires, "secrets": _secrets_fires, "host": _host_fires,
         "image": _subject_fires("image"), "content": _subject_fires("content"), "aws": _subject_fires("aws"),
         "iac": _iac_fires, "appsec": _appsec_fires, "redis_proxy": _redis_proxy_fires,
         "docker_proxy": _docker_proxy_fires, "scan": _scan_fires}
# Suricata signatures (engine `suricata`) are proven on a real capture instead of fixture files: each one
# has an attack scenario that fires it and a look-alike that must not in tests/network/test_inspect.py
# (EXPECTED); test_signature_rules_are_proven_by_capture_tests keeps that list and these rules together.
CAPTURE_TESTED = {"suricata"}
FIXTURE_RULES = [r for r in RULES if r.engine_name not in CAPTURE_TESTED]


@pytest.mark.parametrize("rule", FIXTURE_RULES, ids=lambda r: r.id)
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


@pytest.mark.parametrize("rule", [r for r in RULES if r.engine_name in CAPTURE_TESTED], ids=lambda r: r.id)
def test_signature_rules_are_proven_by_capture_tests(rule):
    from cloudward.network.rulesets import GENERATED_SID_BASE
    from tests.network.test_inspect import EXPECTED

    proven = {label for label in EXPECTED if isinstance(label, int)}
    generated = {str(label).split(":")[0] for label in EXPECTED if isinstance(label, str)}
    written = [sid for sid in rule.match["sids"] if sid < GENERATED_SID_BASE]
    assert set(written) <= proven
    assert written or rule.id in generated
    assert not _fixtures(rule.id, "positive") and not _fixtures(rule.id, "negative")


def test_core_yaml_loader_reads_the_proxies_rules_and_not_the_signature_folder():
    """network/rules/signatures/ holds Suricata rules and their prose YAML (not core rules)."""
    import re

    from cloudward.core.rules import builtin_rule_files

    assert [source for source, _ in builtin_rule_files(["cloudward.network"])] == [
        "builtin:cloudward.network/rules/docker-proxy.yaml", "builtin:cloudward.network/rules/redis-proxy.yaml",
        "builtin:cloudward.network/rules/scans.yaml"]
    files = {re.sub(r"(:\d+| \(.*\))$", "", r.source) for r in RULES if r.engine_name == "suricata"}
    assert files == {"builtin:cloudward.network/rules/signatures/teamtnt.rules", "builtin:cloudward.data/iocs.yaml"}


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
