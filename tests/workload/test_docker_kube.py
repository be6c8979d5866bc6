"""Docker Engine, kubelet and etcd configuration collectors: every place that can open the API
(daemon.json, unit ExecStart and drop-ins, /etc/default, docker.socket), the socket file and the
docker group; kubelet config file vs flags and their defaults; etcd in its three usual homes."""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.engines.iocs import load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import docker, kube
from cloudward.workload.observation import HostContext
from tests.harness.hostroot import build_clean_root, write


@cache
def host_rules():
    return load_all_rules().engine("host")


def run(root: Path, module):
    errors: list[tuple[str, str]] = []
    ctx = HostContext(root=HostRoot(root), iocs=load_iocs(), error=lambda item, message: errors.append((item, message)))
    return list(module.collect(ctx)), errors


def subject(observations, name: str):
    found = [o for o in observations if o.subject == name]
    assert len(found) == 1, [o.subject for o in observations]
    return found[0].facts


def fired(root: Path, collector: str) -> dict[str, str]:
    result = run_audit(HostRoot(root), host_rules(), only=[collector], processes=False)
    assert not [e for e in result.errors if e.target.startswith("collector ")]
    return {f.rule_id: f.severity.value for f in result.findings}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_clean_root(tmp_path / "r")


# -- docker ---------------------------------------------------------------------------------------

def test_clean_root_has_no_docker_daemon_and_no_docker_finding(root):
    observations, errors = run(root, docker)
    assert errors == []
    assert [o.subject for o in observations] == ["docker_group"]
    assert subject(observations, "docker_group") == {"gid": 998, "members": [], "docker_installed": False}
    assert not [r for r in fired(root, "docker") if r.startswith("host.docker.")]


def test_daemon_json_tcp_on_all_interfaces_is_critical(root):
    write(root, "/etc/docker/daemon.json", '{"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]}')
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert facts["tcp_endpoints"] == [{"endpoint": "tcp://0.0.0.0:2375", "source": "/etc/docker/daemon.json",
                                       "loopback": False}]
    assert fired(root, "docker")["host.docker.api_tcp_without_tls"] == "critical"


def test_tlsverify_makes_a_tcp_api_acceptable(root):
    write(root, "/etc/docker/daemon.json", '{"hosts": ["tcp://0.0.0.0:2376"], "tlsverify": true, '
          '"tlscacert": "/etc/docker/ca.pem"}')
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert facts["tlsverify"] is True and facts["tls"] is True
    assert not [r for r in fired(root, "docker") if r.startswith("host.docker.api")]


def test_tls_without_verify_is_still_unauthenticated(root):
    write(root, "/etc/docker/daemon.json", '{"hosts": ["tcp://0.0.0.0:2376"], "tls": true}')
    assert "host.docker.api_tcp_without_tls" in fired(root, "docker")


def test_loopback_tcp_is_medium(root):
    write(root, "/etc/docker/daemon.json", '{"hosts": ["tcp://127.0.0.1:2375"]}')
    rules = fired(root, "docker")
    assert rules.get("host.docker.api_tcp_loopback_without_tls") == "medium"
    assert "host.docker.api_tcp_without_tls" not in rules


def test_unit_execstart_with_continuation_and_dropin_reset(root):
    write(root, "/lib/systemd/system/docker.service",
          "[Unit]\nDescription=Docker\n[Service]\nExecStart=/usr/bin/dockerd -H fd:// \\\n  -H tcp://0.0.0.0:2375\n")
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert facts["tcp_endpoints"][0]["source"] == "/lib/systemd/system/docker.service:4"
    write(root, "/etc/systemd/system/docker.service.d/override.conf",
          "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd://\n")
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert facts["tcp_endpoints"] == []
    assert facts["unit_files"] == ["/lib/systemd/system/docker.service",
                                   "/etc/systemd/system/docker.service.d/override.conf"]


def test_dropin_adds_tcp_host_with_equals_and_tlsverify_false(root):
    write(root, "/lib/systemd/system/docker.service", "[Service]\nExecStart=/usr/bin/dockerd -H fd://\n")
    write(root, "/etc/systemd/system/docker.service.d/tcp.conf",
          "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --host=tcp://10.0.0.7:2375 --tlsverify=false\n")
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert [e["endpoint"] for e in facts["tcp_endpoints"]] == ["tcp://10.0.0.7:2375"]
    assert facts["tlsverify"] is False
    assert "host.docker.api_tcp_without_tls" in fired(root, "docker")


def test_hosts_in_daemon_json_and_flags_are_flagged(root):
    write(root, "/etc/docker/daemon.json", '{"hosts": ["tcp://0.0.0.0:2375"]}')
    write(root, "/lib/systemd/system/docker.service", "[Service]\nExecStart=/usr/bin/dockerd -H fd://\n")
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert facts["hosts_in_both"] is True  # dockerd refuses to start like this; still reported
    write(root, "/etc/systemd/system/docker.service.d/no-h.conf", "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd\n")
    assert subject(run(root, docker)[0], "docker_daemon")["hosts_in_both"] is False


def test_default_file_docker_opts(root):
    write(root, "/etc/default/docker", 'DOCKER_OPTS="-H tcp://0.0.0.0:4243 -H unix:///var/run/docker.sock"\n')
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert facts["tcp_endpoints"][0]["endpoint"] == "tcp://0.0.0.0:4243"
    assert facts["tcp_endpoints"][0]["source"] == "/etc/default/docker:1"


def test_socket_unit_listen_stream_port_and_mode(root):
    write(root, "/lib/systemd/system/docker.socket",
          "[Socket]\nListenStream=/run/docker.sock\nListenStream=2375\nSocketMode=0660\n")
    facts = subject(run(root, docker)[0], "docker_daemon")
    assert [e["endpoint"] for e in facts["tcp_endpoints"]] == ["tcp://2375"]
    assert facts["tcp_beyond_loopback"] is True and facts["socket_unit_world_writable"] is False
    write(root, "/etc/systemd/system/docker.socket.d/mode.conf", "[Socket]\nSocketMode=0666\n")
    assert "host.docker.socket_unit_world_writable" in fired(root, "docker")


def test_world_writable_socket_file(root, monkeypatch):
    write(root, "/usr/bin/dockerd", "")
    monkeypatch.chdir(root / "run")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("docker.sock")  # relative: fixture paths can exceed sun_path's 108 bytes
    finally:
        server.close()
    os.chmod(root / "run/docker.sock", 0o666)
    facts = subject(run(root, docker)[0], "docker_socket")
    assert facts["is_socket"] is True and facts["mode"] == "0666" and facts["world_writable"] is True
    assert fired(root, "docker").get("host.docker.socket_world_writable") == "high"
    os.chmod(root / "run/docker.sock", 0o660)
    assert "host.docker.socket_world_writable" not in fired(root, "docker")


def test_docker_group_members_matter_only_with_docker_installed(root):
    group = (root / "etc/group").read_text().replace("docker:x:998:", "docker:x:998:admin")
    write(root, "/etc/group", group)
    assert "host.docker.group_members" not in fired(root, "docker")
    write(root, "/usr/bin/dockerd", "", 0o755)
    facts = subject(run(root, docker)[0], "docker_group")
    assert facts["members"] == ["admin"] and facts["docker_installed"] is True
    assert fired(root, "docker").get("host.docker.group_members") == "medium"


def test_malformed_and_binary_daemon_json_are_errors(root):
    write(root, "/etc/docker/daemon.json", '{"hosts": ["tcp://0.0.0.0:2375"')
    observations, errors = run(root, docker)
    assert errors[0][0] == "/etc/docker/daemon.json" and "malformed" in errors[0][1]
    assert subject(observations, "docker_daemon")["tcp_endpoints"] == []
    write(root, "/etc/docker/daemon.json", b"\x00\x01\x02" * 100)
    _, errors = run(root, docker)
    assert errors[0][0] == "/etc/docker/daemon.json" and "binary" in errors[0][1]
    (root / "etc/docker/daemon.json").unlink()
    (root / "etc/docker/daemon.json").mkdir()
    _, errors = run(root, docker)
    assert errors[0][0] == "/etc/docker/daemon.json"


@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("tcp://127.0.0.1:2375", True), ("tcp://[::1]:2375", True), ("tcp://localhost:2375", True),
    ("tcp://0.0.0.0:2375", False), ("tcp://:2375", False), ("tcp://2375", False), ("2375", False),
    ("tcp://10.0.0.1:2376", False), ("tcp://[::]:2375", False), ("tcp://docker.example:2375", False),
])
def test_endpoint_is_loopback(endpoint, loopback):
    assert docker.endpoint_is_loopback(endpoint) is loopback


# -- kubelet --------------------------------------------------------------------------------------

KUBEADM_DROPIN = """\
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \\
  --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""

SECURE_KUBELET = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
"""


def test_no_kubelet_no_observation(root):
    assert run(root, kube) == ([], [])


def test_kubeadm_node_with_secure_config(root):
    write(root, "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN)
    write(root, "/var/lib/kubelet/config.yaml", SECURE_KUBELET)
    write(root, "/var/lib/kubelet/kubeadm-flags.env",
          'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock"\n')
    write(root, "/etc/kubernetes/kubelet.conf", "apiVersion: v1\nkind: Config\nclusters: []\n")
    facts = subject(run(root, kube)[0], "kubelet_config")
    assert facts["config_file"] == "/var/lib/kubelet/config.yaml"
    assert (facts["anonymous_auth"], facts["authorization_mode"], facts["read_only_port"]) == (False, "Webhook", 0)
    assert not [r for r in fired(root, "kube") if r.startswith("host.kubelet.")]
    write(root, "/etc/default/kubelet", "KUBELET_EXTRA_ARGS=--anonymous-auth=true --read-only-port 10255\n")
    facts = subject(run(root, kube)[0], "kubelet_config")
    assert facts["anonymous_auth"] is True and facts["sources"]["anonymous_auth"] == "/etc/default/kubelet:1"
    assert facts["read_only_port"] == 10255
    rules = fired(root, "kube")
    assert rules.get("host.kubelet.anonymous_auth") == "medium" and "host.kubelet.read_only_port" in rules
    assert "host.kubelet.anonymous_always_allow" not in rules


def test_kubeadm_node_before_init_is_not_reported(root):
    # The kubelet package's drop-in points --config at a file `kubeadm init` has not written yet:
    # that kubelet cannot start, so the flag defaults must not be reported as an open kubelet.
    write(root, "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN)
    assert run(root, kube) == ([], [])


def test_config_file_defaults_are_secure(root):
    write(root, "/var/lib/kubelet/config.yaml", "apiVersion: kubelet.config.k8s.io/v1beta1\n"
          "kind: KubeletConfiguration\n")
    facts = subject(run(root, kube)[0], "kubelet_config")
    assert facts["anonymous_auth"] is False and facts["authorization_always_allow"] is False
    assert facts["read_only_port"] == 0
    assert facts["defaults_from"] == "config file"


def test_flags_only_kubelet_takes_the_insecure_flag_defaults(root):
    write(root, "/etc/default/kubelet", 'KUBELET_EXTRA_ARGS="--node-ip=10.0.0.4"\n')
    facts = subject(run(root, kube)[0], "kubelet_config")
    assert facts["defaults_from"] == "flags"
    assert facts["anonymous_auth"] is True and facts["authorization_mode"] == "AlwaysAllow"
    assert facts["read_only_port"] == 10255
    assert fired(root, "kube").get("host.kubelet.anonymous_always_allow") == "critical"


def test_config_flag_points_elsewhere_and_json_is_read(root):
    write(root, "/lib/systemd/system/kubelet.service",
          "[Service]\nExecStart=/usr/bin/kubelet --config /etc/kubernetes/kubelet/kubelet-config.json\n")
    write(root, "/etc/kubernetes/kubelet/kubelet-config.json",
          '{"kind": "KubeletConfiguration", "authentication": {"anonymous": {"enabled": true}}, '
          '"authorization": {"mode": "AlwaysAllow"}, "readOnlyPort": 0}')
    facts = subject(run(root, kube)[0], "kubelet_config")
    assert facts["config_file"] == "/etc/kubernetes/kubelet/kubelet-config.json"
    assert fired(root, "kube").get("host.kubelet.anonymous_always_allow") == "critical"


def test_malformed_oversized_and_odd_kubelet_files(root):
    write(root, "/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\nauthentication: [unclosed\n")
    observations, errors = run(root, kube)
    assert observations == [] and errors[0][0] == "/var/lib/kubelet/config.yaml" and "YAML" in errors[0][1]
    write(root, "/var/lib/kubelet/config.yaml", "# pad\n" * 200_000)
    _, errors = run(root, kube)
    assert "larger than" in errors[0][1]
    write(root, "/var/lib/kubelet/config.yaml", "- just\n- a list\n")
    _, errors = run(root, kube)
    assert "not a mapping" in errors[0][1]
    write(root, "/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\nreadOnlyPort: many\n")
    observations, errors = run(root, kube)
    assert subject(observations, "kubelet_config")["read_only_port"] == -1
    assert "not a number" in errors[0][1]
    assert "host.kubelet.read_only_port" not in fired(root, "kube")


# -- etcd -----------------------------------------------------------------------------------------

def test_etcd_yaml_open_and_closed(root):
    write(root, "/etc/etcd/etcd.conf.yml", "name: e0\nlisten-client-urls: http://0.0.0.0:2379,http://127.0.0.1:2379\n")
    facts = subject(run(root, kube)[0], "etcd_config")
    assert facts["listens_beyond_loopback"] is True and facts["plaintext_beyond_loopback"] is True
    assert facts["client_cert_auth"] is False
    assert fired(root, "kube").get("host.etcd.no_client_cert_auth") == "high"
    write(root, "/etc/etcd/etcd.conf.yml", "listen-client-urls: https://10.0.0.5:2379\nclient-transport-security:\n"
          "  client-cert-auth: true\n  trusted-ca-file: /etc/etcd/ca.crt\n")
    facts = subject(run(root, kube)[0], "etcd_config")
    assert facts["client_cert_auth"] is True
    assert "host.etcd.no_client_cert_auth" not in fired(root, "kube")


def test_etcd_default_listen_is_loopback(root):
    write(root, "/etc/etcd/etcd.conf.yml", "name: e0\ndata-dir: /var/lib/etcd\n")
    facts = subject(run(root, kube)[0], "etcd_config")
    assert facts["listen_client_urls"] == ["http://localhost:2379"] and facts["listens_beyond_loopback"] is False


def test_etcd_environment_file(root):
    write(root, "/etc/default/etcd", 'ETCD_LISTEN_CLIENT_URLS="http://0.0.0.0:2379"\nETCD_CLIENT_CERT_AUTH=false\n')
    facts = subject(run(root, kube)[0], "etcd_config")
    assert facts["sources"]["listen-client-urls"] == "/etc/default/etcd:1"
    assert "host.etcd.no_client_cert_auth" in fired(root, "kube")


def test_kubeadm_etcd_manifest(root):
    write(root, "/etc/kubernetes/manifests/etcd.yaml", """\
apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    command:
    - etcd
    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379
    - --client-cert-auth=true
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
""")
    facts = subject(run(root, kube)[0], "etcd_config")
    assert facts["client_cert_auth"] is True and facts["listens_beyond_loopback"] is True
    assert "host.etcd.no_client_cert_auth" not in fired(root, "kube")


def test_malformed_etcd_manifest_is_an_error(root):
    write(root, "/etc/kubernetes/manifests/etcd.yaml", "spec: {containers: [\n")
    observations, errors = run(root, kube)
    assert observations == [] and errors[0][0] == "/etc/kubernetes/manifests/etcd.yaml"


@pytest.mark.parametrize(("args", "expected"), [
    (["--a=1", "--b", "2", "--c", "--d=x=y"], {"a": "1", "b": "2", "c": "true", "d": "x=y"}),
    (["--anonymous-auth=false", "--anonymous-auth=true"], {"anonymous-auth": "true"}),
])
def test_parse_flags(args, expected):
    assert kube.parse_flags(args) == expected
