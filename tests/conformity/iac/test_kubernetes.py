"""Kubernetes: every workload kind down to its pod spec and every sort of container, Helm template
output, kubelet and control-plane configuration - and agreement with the admission webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudward.container.admission import Policy, spec_violations
from cloudward.engines.podspec import WORKLOAD_TEMPLATES

from .conftest import hits, rule_ids, scan, write_tree

POD_SPEC: dict[str, Any] = {
    "hostPID": True,
    "containers": [{"name": "app", "image": "registry.example/app:1",
                    "securityContext": {"privileged": True}}],
}


def wrap(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": f"w-{kind.lower()}"}}
    node = obj
    path = WORKLOAD_TEMPLATES[kind]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = spec
    return obj


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                                  "ReplicationController", "PodTemplate"])
def test_every_workload_kind_reaches_its_pod_spec(tmp_path: Path, kind: str) -> None:
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(wrap(kind, POD_SPEC), sort_keys=False))
    result = scan(tmp_path)
    assert {"iac.k8s.privileged_container", "iac.k8s.host_pid"} <= rule_ids(result)
    assert all(f.location["kind"] == kind and f.location["object"] == f"w-{kind.lower()}" for f in result.findings)


def test_init_and_ephemeral_containers_are_judged_at_their_own_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pod.yaml": '''apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  securityContext: {runAsNonRoot: true}
  initContainers:
    - name: setup
      image: busybox:1.36
      securityContext: {allowPrivilegeEscalation: false, capabilities: {add: [SYS_ADMIN]}}
  containers:
    - name: app
      image: app:1
      securityContext: {allowPrivilegeEscalation: false}
  ephemeralContainers:
    - name: debug
      image: busybox:1.36
      securityContext: {allowPrivilegeEscalation: false, privileged: true}
'''})
    result = scan(tmp_path)
    assert hits(result) == {("iac.k8s.sys_admin_capability", "pod.yaml", 8),
                            ("iac.k8s.privileged_container", "pod.yaml", 16),
                            ("iac.k8s.privileged_pod_service_account_token", "pod.yaml", 6)}
    fields = {f.evidence.get("container"): f for f in result.findings if "container" in f.evidence}
    assert set(fields) == {"setup", "debug"}


HELM = '''---
# Source: shop/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: shop
---
# Source: shop/templates/daemonset.yaml
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: shop-agent
spec:
  template:
    spec:
      hostNetwork: true
      volumes:
        - name: docker
          hostPath:
            path: /var/run/docker.sock
      containers:
        - name: agent
          image: "shop/agent:2.0"
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
---
# Source: shop/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-web
spec:
  template:
    spec:
      containers:
        - name: web
          image: "shop/web:2.0"
          securityContext:
            runAsUser: 0
            allowPrivilegeEscalation: false
'''


def test_helm_template_output_keeps_each_documents_source_and_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {"rendered.yaml": HELM})
    result = scan(tmp_path)
    assert hits(result) == {("iac.k8s.host_network", "rendered.yaml", 16),
                            ("iac.k8s.runtime_socket_mount", "rendered.yaml", 16),
                            ("iac.k8s.runs_as_root", "rendered.yaml", 37)}
    sources = {f.rule_id: (f.location["helm_source"], f.location["document"]) for f in result.findings}
    assert sources["iac.k8s.host_network"] == ("shop/templates/daemonset.yaml", 2)
    assert sources["iac.k8s.runs_as_root"] == ("shop/templates/deployment.yaml", 3)


def test_raw_chart_templates_are_skipped_not_errors(tmp_path: Path) -> None:
    write_tree(tmp_path, {"chart/Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n",
                          "chart/templates/d.yaml": "{{- if .Values.x }}\nkind: {{ .Values.kind }}\n{{- end }}\n"})
    result = scan(tmp_path)
    assert not result.errors and result.stats["helm_templates_skipped"] == 1


def test_a_kind_list_is_walked(tmp_path: Path) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": [wrap("Pod", POD_SPEC)]}
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(doc))
    assert "iac.k8s.privileged_container" in rule_ids(scan(tmp_path))


def test_control_plane_flags_in_sh_c_and_args(tmp_path: Path) -> None:
    write_tree(tmp_path, {"etcd.yaml": '''apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
    - name: etcd
      image: registry.k8s.io/etcd:3.5.9-0
      command: ["/bin/sh", "-c", "exec /usr/local/bin/etcd --listen-client-urls=http://0.0.0.0:2379"]
''', "apiserver.yaml": '''apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
    - name: kube-apiserver
      image: registry.k8s.io/kube-apiserver:v1.29.0
      command: [kube-apiserver]
      args: ["--authorization-mode=AlwaysAllow,RBAC", "--anonymous-auth=true"]
'''})
    assert {"iac.k8s.etcd_no_client_cert_auth", "iac.k8s.etcd_plaintext_client_url", "iac.k8s.apiserver_always_allow",
            "iac.k8s.apiserver_anonymous_auth"} <= rule_ids(scan(tmp_path))


# --- agreement with the admission webhook --------------------------------------------------------------

CASES: dict[str, dict[str, Any]] = {
    "privileged": {"containers": [{"name": "c", "image": "i:1", "securityContext": {"privileged": True}}]},
    "sys_admin": {"containers": [{"name": "c", "image": "i:1",
                                  "securityContext": {"capabilities": {"add": ["sys_admin"]}}}]},
    "all_caps": {"containers": [{"name": "c", "image": "i:1", "securityContext": {"capabilities": {"add": ["ALL"]}}}]},
    "host_pid": {"hostPID": True, "containers": [{"name": "c", "image": "i:1"}]},
    "host_ipc": {"hostIPC": True, "containers": [{"name": "c", "image": "i:1"}]},
    "host_network": {"hostNetwork": True, "containers": [{"name": "c", "image": "i:1"}]},
    "root": {"volumes": [{"name": "r", "hostPath": {"path": "/"}}], "containers": [{"name": "c", "image": "i:1"}]},
    "etc": {"volumes": [{"name": "r", "hostPath": {"path": "//etc/"}}], "containers": [{"name": "c", "image": "i:1"}]},
    "proc_below": {"volumes": [{"name": "r", "hostPath": {"path": "/proc/1/root"}}],
                   "containers": [{"name": "c", "image": "i:1"}]},
    "docker_sock": {"volumes": [{"name": "s", "hostPath": {"path": "/var/run/../run/docker.sock"}}],
                    "containers": [{"name": "c", "image": "i:1"}]},
    "containerd_dir": {"volumes": [{"name": "s", "hostPath": {"path": "/run/containerd"}}],
                       "containers": [{"name": "c", "image": "i:1"}]},
    "clean": {"volumes": [{"name": "l", "hostPath": {"path": "/var/log/app"}}],
              "containers": [{"name": "c", "image": "i:1",
                              "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]},
}
# the admission policy's checks, and the IaC rules that judge the same thing
AGREEING_RULES = {"iac.k8s.privileged_container", "iac.k8s.sys_admin_capability", "iac.k8s.all_capabilities",
                  "iac.k8s.host_pid", "iac.k8s.host_ipc", "iac.k8s.host_network", "iac.k8s.sensitive_host_path",
                  "iac.k8s.runtime_socket_mount"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_iac_rules_agree_with_the_admission_webhook(tmp_path: Path, case: str) -> None:
    spec = CASES[case]
    denied = bool(spec_violations(spec, Policy()))
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(wrap("Pod", spec)))
    flagged = bool(rule_ids(scan(tmp_path)) & AGREEING_RULES)
    assert flagged == denied, (case, spec_violations(spec, Policy()), rule_ids(scan(tmp_path)))
    assert denied is (case != "clean")
