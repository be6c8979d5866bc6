"""The HTTP-speaking service probes (Docker, etcd, kubelet, Kubernetes API, Weave Scope, Jupyter,
Elasticsearch, distribution registry) against real services where they run here, and against
stand-ins replaying the real answers where they cannot (see tests/exposure/standins).

Probes are driven exactly as the scanner drives them — one `ProbeContext` per port, plain HTTP
first and then TLS — and their observations are judged by the shipped exposure rules through
`exposure/evaluate.py`, so each test checks identification, facts and the resulting findings.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import pytest

from cloudward.core.rules import load_rules
from cloudward.exposure.evaluate import CompiledRule, compile_rules, evaluate, validate_rule
from cloudward.exposure.net import Limits
from cloudward.exposure.probes import (
    docker,
    elasticsearch,
    etcd,
    jupyter,
    kubernetes,
    registry_v2,
    weave_scope,
)
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext
from tests.exposure.standins import RawServer, Reply, StandIn, json_reply
from tests.exposure.standins.elasticsearch_standin import elasticsearch as es_standin
from tests.exposure.standins.kube_apiserver_standin import kube_apiserver
from tests.exposure.standins.kubelet_standin import kubelet, pod
from tests.exposure.standins.weave_scope_standin import weave_scope as scope_standin
from tests.harness.services import Service, ServicePool, http_get, start_etcd

HTTP_PROBES: list[Probe] = [
    *docker.PROBES, *etcd.PROBES, *kubernetes.PROBES, *weave_scope.PROBES, *jupyter.PROBES,
    *elasticsearch.PROBES, *registry_v2.PROBES,
]
PROBE = {p.name: p for p in HTTP_PROBES}


@cache
def exposure_rules() -> list[CompiledRule]:
    return compile_rules(load_rules(["cloudward.exposure"], validators={"exposure": validate_rule}))


def fired(observation: Observation) -> set[str]:
    return {f.rule_id for f in evaluate(observation, exposure_rules())}


def identify(name: str, host: str, port: int, tls: bool, limits: Limits | None = None) -> Observation | None:
    """One probe, one attempt, on a fresh context; checks the facts are JSON-safe."""
    observation = asyncio.run(PROBE[name].identify(ProbeContext(host, port, limits or Limits()), tls))
    if observation is not None:
        json.dumps(observation.facts, allow_nan=False)
    return observation


def scan_port(host: str, port: int, limits: Limits | None = None) -> dict[tuple[str, bool], Observation]:
    """What the scanner would do: every HTTP probe on one shared context, plain HTTP then TLS."""

    async def run() -> dict[tuple[str, bool], Observation]:
        ctx = ProbeContext(host, port, limits or Limits())
        found: dict[tuple[str, bool], Observation] = {}
        for tls in (False, True):
            for probe in HTTP_PROBES:
                observation = await probe.identify(ctx, tls)
                if observation is not None:
                    json.dumps(observation.facts, allow_nan=False)
                    found[(probe.name, tls)] = observation
        return found

    return asyncio.run(run())


def only_reads(standin: StandIn) -> None:
    """Probes never change what they look at: GETs only, and never a request twice per context."""
    assert standin.methods_seen() <= {"GET"}, standin.methods_seen()
    keys = [(r.method, r.path) for r in standin.requests]
    assert len(keys) == len(set(keys)), f"uncached duplicate requests: {keys}"


# --------------------------------------------------------------------------- Docker Engine API


def test_podman_docker_api_over_plain_http_is_unauthenticated(podman_api: Service) -> None:
    """Real podman system service answering the Docker API on loopback, as an exposed 2375 does."""
    observation = identify("docker", podman_api.host, podman_api.port, tls=False)
    assert observation is not None and observation.service == "docker"
    facts = observation.facts
    assert facts["product"] == "podman"
    assert facts["api_readable"] is True and facts["tls"] is False
    assert facts["api_version"].startswith("1.")
    assert isinstance(facts["containers"], int) and isinstance(facts["images"], int)
    assert facts["os"] == "linux"
    assert fired(observation) == {"docker.api_unauthenticated"}


DOCKER_VERSION = {
    "Platform": {"Name": "Docker Engine - Community"},
    "Components": [{"Name": "Engine", "Version": "24.0.7", "Details": {"ApiVersion": "1.43"}},
                   {"Name": "containerd", "Version": "1.6.25"}, {"Name": "runc", "Version": "1.1.10"}],
    "Version": "24.0.7", "ApiVersion": "1.43", "MinAPIVersion": "1.12", "GitCommit": "311b9ff",
    "GoVersion": "go1.20.10", "Os": "linux", "Arch": "amd64", "KernelVersion": "5.15.0-91-generic",
    "BuildTime": "2023-10-26T09:08:02.000000000+00:00",
}
DOCKER_INFO = {"ID": "7TRN:IPZB", "Containers": 4, "ContainersRunning": 2, "ContainersPaused": 0,
               "ContainersStopped": 2, "Images": 9, "Name": "build-01",
               "OperatingSystem": "Ubuntu 22.04.3 LTS", "Swarm": {"LocalNodeState": "inactive"},
               "SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin"],
               "Plugins": {"Authorization": None, "Volume": ["local"]}}
DOCKER_HEADERS = (("Api-Version", "1.43"), ("Docker-Experimental", "false"), ("Ostype", "linux"),
                  ("Server", "Docker/24.0.7 (linux)"))


def docker_standin(*, require_client_cert: bool = False) -> StandIn:
    """dockerd on 2376 with `--tls` (no `--tlsverify`) or with `--tlsverify` (client certs required)."""
    routes: dict[str, Any] = {
        "GET /_ping": Reply(200, "OK", list(DOCKER_HEADERS)),
        "GET /version": json_reply(DOCKER_VERSION, 200, *DOCKER_HEADERS),
        "GET /info": json_reply(DOCKER_INFO, 200, *DOCKER_HEADERS),
    }
    not_found = json_reply({"message": "page not found"}, 404, *DOCKER_HEADERS)
    return StandIn("dockerd-tls", routes, tls=True, require_client_cert=require_client_cert,
                   default=not_found)


def test_docker_tls_without_client_certificate_is_reported() -> None:
    """Stand-in dockerd (no Docker daemon here) serving TLS without verifying clients (`--tls`)."""
    with docker_standin() as server:
        found = scan_port(server.host, server.port)
        only_reads(server)
    assert set(found) == {("docker", True)}  # nothing answers plain HTTP on a TLS port
    observation = found[("docker", True)]
    assert observation.facts["product"] == "docker"
    assert observation.facts["containers_running"] == 2
    assert observation.facts["authorization_plugins"] == []
    assert fired(observation) == {"docker.api_tls_without_client_auth"}


def test_docker_tls_requiring_client_certificate_is_not_identified() -> None:
    """Stand-in dockerd with `--tlsverify` (ssl CERT_REQUIRED). Our certificate-less client is
    refused during or right after the handshake; such a port cannot be told from any other
    mutual-TLS service, so the probe returns None (no observation, no finding) by design."""
    with docker_standin(require_client_cert=True) as server:
        assert identify("docker", server.host, server.port, tls=True) is None
        assert scan_port(server.host, server.port) == {}
        assert server.requests == []  # no HTTP request ever got through


def test_docker_api_denied_by_authorization_plugin_is_identified_without_finding() -> None:
    """Stand-in dockerd whose authorization plugin denies `/version`: still Docker (the router stamps
    Api-Version on the refusal), not readable, so no finding."""
    denied = json_reply({"message": "authorization denied by plugin opa-docker-authz"}, 403, *DOCKER_HEADERS)
    with StandIn("dockerd-authz", {"GET /version": denied}, default=denied) as server:
        observation = identify("docker", server.host, server.port, tls=False)
        only_reads(server)
    assert observation is not None and observation.facts["api_readable"] is False
    assert fired(observation) == set()


# --------------------------------------------------------------------------- etcd


def test_etcd_without_auth_is_unauthenticated(etcd_server: Service) -> None:
    """Real etcd 3.4, no client-cert auth, no RBAC: the count-only range read answers."""
    observation = identify("etcd", etcd_server.host, etcd_server.port, tls=False)
    assert observation is not None and observation.service == "etcd"
    facts = observation.facts
    assert facts["server_version"].startswith("3.")
    assert facts["auth_required"] is False and facts["gateway"] == "/v3"
    assert isinstance(facts["key_count"], int) and facts["key_count"] >= 0
    assert fired(observation) == {"etcd.unauthenticated"}


def _etcdctl(service: Service, *args: str, user: str | None = None) -> str:
    command = ["etcdctl", "--endpoints", service.url or "", *args]
    if user:
        command[1:1] = ["--user", user]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")} | {"ETCDCTL_API": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_etcd_key_count_and_auth_enabled(services: ServicePool) -> None:
    """Real etcd, its own instance because the test writes keys and then turns RBAC on: the key
    count is reported without reading a value, and once auth is on the probe still identifies
    etcd but the range read is refused, so there is no finding."""
    server = services.start(start_etcd)
    for i in range(3):
        _etcdctl(server, "put", f"/registry/secrets/default/s{i}", "c2VjcmV0")
    before = identify("etcd", server.host, server.port, tls=False)
    assert before is not None and before.facts["key_count"] == 3
    assert "c2VjcmV0" not in json.dumps(before.facts)

    _etcdctl(server, "user", "add", "root:cloudward-test-pw")
    subprocess.run(["etcdctl", "--endpoints", server.url or "", "user", "grant-role", "root", "root"],
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=30, check=False)
    _etcdctl(server, "auth", "enable")
    after = identify("etcd", server.host, server.port, tls=False)
    assert after is not None and after.service == "etcd"
    assert after.facts["auth_required"] is True
    assert "key_count" not in after.facts
    assert fired(after) == set()


def test_etcd_ignores_services_without_the_etcd_version_shape(registry_server: Service) -> None:
    """A real registry answers /version with a 404: not etcd."""
    assert identify("etcd", registry_server.host, registry_server.port, tls=False) is None


# --------------------------------------------------------------------------- kubelet


def test_kubelet_anonymous_api_is_critical() -> None:
    """Stand-in kubelet (cannot run here) on TLS with anonymous auth and AlwaysAllow."""
    with kubelet("anonymous") as server:
        found = scan_port(server.host, server.port)
        only_reads(server)
        asked = set(server.paths_seen())
    assert set(found) == {("kubelet", True)}
    observation = found[("kubelet", True)]
    assert observation.facts["pod_count"] == 3
    assert observation.facts["namespaces"] == ["default", "kube-system"]
    assert "not-a-real-secret" not in json.dumps(observation.facts)  # env values are never kept
    assert not any(p.startswith(("/run", "/exec", "/attach", "/portForward")) for p in asked)
    assert fired(observation) == {"kubelet.anonymous_api"}


def test_kubelet_with_webhook_authorization_is_identified_without_finding() -> None:
    """Stand-in kubelet: anonymous authenticated but forbidden by Webhook authorization (403)."""
    with kubelet("forbidden") as server:
        observation = identify("kubelet", server.host, server.port, tls=True)
        only_reads(server)
    assert observation is not None and observation.facts["auth"] == "forbidden"
    assert observation.facts["pods_readable"] is False
    assert fired(observation) == set()


def test_kubelet_without_anonymous_auth_is_not_identified() -> None:
    """Stand-in kubelet with --anonymous-auth=false: a bare 401 "Unauthorized" that any Go server
    could send, so the probe does not claim it (and there is nothing to report)."""
    with kubelet("unauthorized") as server:
        assert identify("kubelet", server.host, server.port, tls=True) is None


def test_kubelet_read_only_port_is_high() -> None:
    """Stand-in kubelet read-only port (10255): plain HTTP, no auth, /pods and /spec/."""
    with kubelet("read_only") as server:
        found = scan_port(server.host, server.port)
        only_reads(server)
    assert set(found) == {("kubelet", False)}
    observation = found[("kubelet", False)]
    assert observation.facts["read_only_port"] is True
    assert observation.facts["spec_readable"] is True and observation.facts["num_cores"] == 4
    assert fired(observation) == {"kubelet.read_only_port"}


def test_kubelet_pod_list_beyond_the_byte_ceiling_still_counts_as_readable() -> None:
    """Stand-in kubelet on a busy node: the PodList outgrows max_bytes; the prefix proves it."""
    pods = [pod(f"worker-{i:04d}-abcde", f"team-{i % 7}", "busybox:1.36") for i in range(300)]
    with kubelet("anonymous", pods=pods) as server:
        observation = identify("kubelet", server.host, server.port, tls=True,
                               limits=Limits(max_bytes=16 * 1024))
    assert observation is not None
    assert observation.facts["pods_truncated"] is True and "pod_count" not in observation.facts
    assert fired(observation) == {"kubelet.anonymous_api"}


# --------------------------------------------------------------------------- Kubernetes API server


def test_api_server_letting_anonymous_list_namespaces_is_critical() -> None:
    """Stand-in kube-apiserver (cannot run here) with a binding granting system:anonymous lists."""
    with kube_apiserver("open") as server:
        found = scan_port(server.host, server.port)
        only_reads(server)
    assert set(found) == {("kubernetes", True)}
    observation = found[("kubernetes", True)]
    assert observation.facts["git_version"] == "v1.28.4"
    assert observation.facts["listable_resource"] == "namespaces"
    assert observation.facts["namespaces_count"] == 5
    assert "payments" in observation.facts["namespaces"]
    assert fired(observation) == {"kubernetes.api_anonymous_resource_listing"}


def test_api_server_letting_anonymous_list_pods_only_is_critical() -> None:
    """Stand-in kube-apiserver where anonymous may list pods but not namespaces (limit=1 asked)."""
    with kube_apiserver("pods_only") as server:
        observation = identify("kubernetes", server.host, server.port, tls=True)
        assert any("limit=1" in p for p in server.paths_seen() if p.startswith("/api/v1/pods"))
    assert observation is not None
    assert observation.facts["listable_resource"] == "pods" and observation.facts["pods_count"] == 3
    assert fired(observation) == {"kubernetes.api_anonymous_resource_listing"}


def test_api_server_with_default_rbac_only_leaks_its_version() -> None:
    """Stand-in kube-apiserver with default RBAC: /version anonymous, listings 403."""
    with kube_apiserver("default_rbac") as server:
        observation = identify("kubernetes", server.host, server.port, tls=True)
        only_reads(server)
    assert observation is not None
    assert observation.facts["resource_listing_anonymous"] is False
    assert fired(observation) == {"kubernetes.api_anonymous_version"}


def test_api_server_without_anonymous_auth_is_identified_without_finding() -> None:
    """Stand-in kube-apiserver with --anonymous-auth=false: 401 Status objects everywhere."""
    with kube_apiserver("no_anonymous") as server:
        observation = identify("kubernetes", server.host, server.port, tls=True)
    assert observation is not None and observation.facts["anonymous_auth"] is False
    assert fired(observation) == set()


def test_api_server_hiding_even_its_version_is_identified_and_still_asked_for_lists() -> None:
    """Stand-in kube-apiserver with anonymous auth on but no public-info-viewer binding."""
    with kube_apiserver("locked_down") as server:
        observation = identify("kubernetes", server.host, server.port, tls=True)
        assert any(p.startswith("/api/v1/namespaces") for p in server.paths_seen())
    assert observation is not None and observation.facts["anonymous_auth"] is True
    assert observation.facts["resource_listing_anonymous"] is False
    assert fired(observation) == set()


# --------------------------------------------------------------------------- Weave Scope


def test_weave_scope_without_auth_is_critical() -> None:
    """Stand-in Weave Scope app (unmaintained, not installable here) replaying /api and
    /api/topology."""
    with scope_standin("open") as server:
        found = scan_port(server.host, server.port)
        only_reads(server)
    assert set(found) == {("weave_scope", False)}  # its /api is not mistaken for Jupyter's
    observation = found[("weave_scope", False)]
    facts = observation.facts
    assert facts["version"] == "1.13.2" and facts["plugins"] == ["iowait"]
    assert facts["topologies"] == ["Containers", "Hosts", "Pods", "Processes"]
    assert facts["container_count"] == 37 and facts["host_count"] == 3
    rules = fired(observation)
    assert rules == {"weave_scope.unauthenticated"}
    finding = evaluate(observation, exposure_rules())[0]
    assert "teamtnt" in finding.tags and {"T1133", "T1609"} <= set(finding.attack)


def test_weave_scope_behind_basic_auth_is_not_identified() -> None:
    """Stand-in Scope with basic auth: a 401 like any protected site; not claimed."""
    with scope_standin("basic_auth") as server:
        assert scan_port(server.host, server.port) == {}


# --------------------------------------------------------------------------- Jupyter


def test_jupyter_with_token_is_identified_without_finding(jupyter_with_token: Service) -> None:
    """Real jupyter-server with a token: /api is public, /api/kernels answers 403."""
    observation = identify("jupyter", jupyter_with_token.host, jupyter_with_token.port, tls=False)
    assert observation is not None and observation.service == "jupyter"
    assert observation.facts["auth_required"] is True
    assert observation.facts["version"]
    assert fired(observation) == set()


def test_jupyter_without_token_runs_code_for_anyone(jupyter_no_token: Service) -> None:
    """Real jupyter-server with no token and no password."""
    observation = identify("jupyter", jupyter_no_token.host, jupyter_no_token.port, tls=False)
    assert observation is not None
    facts = observation.facts
    assert facts["auth_required"] is False and facts["kernels_listable"] is True
    assert facts["kernel_count"] == 0  # listed, none started
    assert facts["contents_listable"] is True
    assert isinstance(facts["terminals_enabled"], bool)
    assert fired(observation) == {"jupyter.unauthenticated"}


def test_an_api_answering_version_at_api_is_not_taken_for_jupyter() -> None:
    """Stand-in of some other web API whose /api is {"version": "1.0"}: not Jupyter."""
    routes = {"GET /api": json_reply({"version": "1.0"}, 200, ("Server", "nginx/1.24.0"))}
    with StandIn("not-jupyter", routes, default=json_reply({"error": "not found"}, 404)) as server:
        assert identify("jupyter", server.host, server.port, tls=False) is None


def test_jupyter_behind_a_proxy_that_strips_its_headers(jupyter_no_token: Service) -> None:
    """Stand-in nginx-like proxy replaying the real (no-token) Jupyter's /api and /api/kernels
    without Tornado's or Jupyter's headers: the kernels answer still identifies it."""
    base = f"http://{jupyter_no_token.host}:{jupyter_no_token.port}"
    routes: dict[str, Any] = {}
    for path in ("/api", "/api/kernels", "/api/contents?content=0", "/api/terminals"):
        status, body = http_get(base + path)
        routes[f"GET {path}"] = Reply(status, body, [("Content-Type", "application/json"),
                                                     ("Server", "nginx/1.24.0")])
    with StandIn("jupyter-proxy", routes) as server:
        observation = identify("jupyter", server.host, server.port, tls=False)
        only_reads(server)
    assert observation is not None and observation.facts["auth_required"] is False
    assert fired(observation) == {"jupyter.unauthenticated"}


# --------------------------------------------------------------------------- Elasticsearch


def test_elasticsearch_without_security_is_reported() -> None:
    """Stand-in Elasticsearch 7.17 with security off (Elasticsearch cannot be installed here)."""
    with es_standin("open") as server:
        found = scan_port(server.host, server.port)
        only_reads(server)
    assert set(found) == {("elasticsearch", False)}
    facts = found[("elasticsearch", False)].facts
    assert facts["product"] == "elasticsearch" and facts["version"] == "7.17.15"
    assert facts["cluster_status"] == "yellow" and facts["index_count"] == 3
    assert facts["indices"] == ["customers", "orders-2024.03"]  # system indices left out of the sample
    assert facts["docs_count"] == 120385
    assert fired(found[("elasticsearch", False)]) == {"elasticsearch.unauthenticated"}


def test_elasticsearch_with_security_is_identified_without_finding() -> None:
    """Stand-in Elasticsearch 8 with security on: 401 + WWW-Authenticate Basic realm="security"."""
    with es_standin("secured") as server:
        observation = identify("elasticsearch", server.host, server.port, tls=False)
        assert server.paths_seen() == ["/"]  # a refusal at / settles it
    assert observation is not None and observation.facts["auth_required"] is True
    assert fired(observation) == set()


def test_opensearch_without_security_plugin_is_reported() -> None:
    """Stand-in OpenSearch 2.11 without the security plugin."""
    with es_standin("opensearch") as server:
        observation = identify("elasticsearch", server.host, server.port, tls=False)
    assert observation is not None and observation.facts["product"] == "opensearch"
    assert fired(observation) == {"elasticsearch.unauthenticated"}


# --------------------------------------------------------------------------- distribution registry


def test_registry_is_identified_and_reports_nothing(registry_server: Service) -> None:
    """Real docker-registry (distribution 2.8) without auth: identified, no finding by design."""
    found = scan_port(registry_server.host, registry_server.port)
    assert set(found) == {("registry", False)}
    observation = found[("registry", False)]
    assert observation.facts["auth_required"] is False
    assert observation.facts["catalog_readable"] is True
    assert fired(observation) == set()


def test_registry_requiring_a_token_is_identified() -> None:
    """Stand-in registry behind token auth (Docker Hub style 401 + Bearer challenge)."""
    challenge = 'Bearer realm="https://auth.example/token",service="registry.example"'
    denied = Reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                   [("Docker-Distribution-Api-Version", "registry/2.0"), ("Www-Authenticate", challenge)])
    with StandIn("registry-token", {}, default=denied) as server:
        observation = identify("registry", server.host, server.port, tls=False)
    assert observation is not None
    assert observation.facts["auth_required"] is True and observation.facts["auth_scheme"] == "Bearer"
    assert fired(observation) == set()


# --------------------------------------------------------------------------- identification is by answer


REAL: list[tuple[str, str]] = [("podman_api", "docker"), ("etcd_server", "etcd"),
                               ("registry_server", "registry"), ("jupyter_with_token", "jupyter"),
                               ("jupyter_no_token", "jupyter")]


@pytest.mark.parametrize(("fixture", "expected"), REAL, ids=[f for f, _ in REAL])
def test_each_real_service_is_claimed_by_exactly_its_probe(
    fixture: str, expected: str, request: pytest.FixtureRequest
) -> None:
    """All HTTP probes look at each real service over one shared context; only its own claims it."""
    service: Service = request.getfixturevalue(fixture)
    found = scan_port(service.host, service.port)
    assert {name for name, _ in found} == {expected}


# --------------------------------------------------------------------------- hostile peers


HOSTILE_RAW = [b"", b"-ERR wrong number of arguments for 'get' command\r\n",
               b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", bytes(range(256)) * 64,
               b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n{\"ApiVersion\":"]


@pytest.mark.parametrize("reply", HOSTILE_RAW, ids=["silent-close", "redis-error", "ssh-banner",
                                                     "binary", "short-body"])
def test_non_http_and_broken_peers_are_not_identified(reply: bytes) -> None:
    """Raw TCP peers (not HTTP, or HTTP cut short): every probe returns None, none raises."""
    with RawServer(reply) as server:
        assert scan_port(server.host, server.port, Limits(io_timeout=0.5, connect_timeout=0.5)) == {}


def _hostile(body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Callable[[Any], Reply]:
    return lambda _request: Reply(200, body, [("Content-Type", "application/json"), *headers])


def test_hostile_json_neither_crashes_nor_identifies() -> None:
    """Deep nesting (RecursionError in json), wrong types and huge strings on every shared path."""
    deep = b"[" * 200_000
    with StandIn("hostile-deep", {}, default=_hostile(deep, [("Api-Version", "1.43")])) as server:
        found = scan_port(server.host, server.port)
    # The Api-Version header alone identifies Docker (not readable); no crash, no finding.
    assert set(found) == {("docker", False)}
    assert found[("docker", False)].facts["api_readable"] is False
    assert fired(found[("docker", False)]) == set()

    typed = json.dumps({"etcdserver": 3, "major": 1, "minor": [], "gitVersion": None, "version": 7,
                        "id": {}, "hostname": 1, "tagline": 5}).encode()
    with StandIn("hostile-types", {}, default=_hostile(typed)) as server:
        assert scan_port(server.host, server.port) == {}


def test_facts_are_bounded_against_huge_strings() -> None:
    """A Scope-shaped answer with 40 kB strings, escape sequences and 3000 plugins (still under the
    byte ceiling, so it parses) is clipped and capped."""
    details = {"id": "x" * 40_000, "version": "v" * 40_000, "hostname": "h\x1b[31m" * 5_000,
               "plugins": [{"id": f"p{i}"} for i in range(3000)]}
    routes = {"GET /api": json_reply(details), "GET /api/topology": json_reply([])}
    with StandIn("hostile-scope", routes) as server:
        observation = identify("weave_scope", server.host, server.port, tls=False)
    assert observation is not None
    assert len(observation.facts["hostname"]) <= 203 and "\x1b" not in observation.facts["hostname"]
    assert len(observation.facts["version"]) <= 67
    assert len(observation.facts["plugins"]) == 10
    assert "topology_readable" not in observation.facts  # an empty list proves nothing
    assert fired(observation) == set()
