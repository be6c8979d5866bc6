"""Inline skips: honoured only with a reason, reported as suppressed (never lost), and a skip
without a reason is itself a finding that skips nothing."""

from __future__ import annotations

from pathlib import Path

from .conftest import hits, scan, suppressed, write_tree

SG = '''resource "aws_security_group" "bastion" {
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
'''


def test_hash_skip_with_reason_above_the_resource(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": "# cloudward:skip=iac.tf.sg_world_ssh reason: bastion behind the VPN\n" + SG})
    result = scan(tmp_path)
    assert not result.findings
    [entry] = suppressed(result)
    assert entry["rule_id"] == "iac.tf.sg_world_ssh" and not result.inventory
    assert entry["path"] == "main.tf" and entry["line"] == 3  # the ingress block
    assert entry["reason"] == "main.tf:1: bastion behind the VPN"
    assert result.stats["suppressed"] == 1


def test_slash_skip_on_the_resource_line_and_a_list_of_rules(tmp_path: Path) -> None:
    text = SG.replace('"bastion" {', '"bastion" { // cloudward:skip=iac.tf.rds_public,iac.tf.sg_world_ssh reason: lab')
    write_tree(tmp_path, {"main.tf": text})
    result = scan(tmp_path)
    assert not result.findings and len(suppressed(result)) == 1


def test_skip_for_another_rule_or_too_far_above_does_not_apply(tmp_path: Path) -> None:
    other = "# cloudward:skip=iac.tf.rds_public reason: not this one\n" + SG
    far = "# cloudward:skip=iac.tf.sg_world_ssh reason: too far\n\nlocals {}\n" + SG
    write_tree(tmp_path, {"a/main.tf": other, "b/main.tf": far})
    result = scan(tmp_path)
    assert hits(result) == {("iac.tf.sg_world_ssh", "a/main.tf", 3), ("iac.tf.sg_world_ssh", "b/main.tf", 5)}
    assert not suppressed(result)


def test_skip_without_reason_is_reported_and_skips_nothing(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": "# cloudward:skip=iac.tf.sg_world_ssh\n" + SG})
    result = scan(tmp_path)
    assert hits(result) == {("iac.tf.sg_world_ssh", "main.tf", 3), ("iac.skip_without_reason", "main.tf", 1)}
    skip = next(f for f in result.findings if f.rule_id == "iac.skip_without_reason")
    assert skip.severity.value == "low" and skip.evidence["rules"] == ["iac.tf.sg_world_ssh"]


def test_yaml_skip_above_a_container_and_above_a_document(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pods.yaml": '''apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
    # cloudward:skip=iac.k8s.privileged_container reason: node exporter needs the host's devices
    - name: exporter
      image: exporter:1
      securityContext: {privileged: true, allowPrivilegeEscalation: false}
---
# cloudward:skip=iac.k8s.host_pid reason: debugging pod, deleted after use
apiVersion: v1
kind: Pod
metadata: {name: b}
spec:
  hostPID: true
  securityContext: {runAsNonRoot: true}
  containers:
    - name: debug
      image: debug:1
      securityContext: {allowPrivilegeEscalation: false}
'''})
    result = scan(tmp_path)
    assert {e["rule_id"] for e in suppressed(result)} == {"iac.k8s.privileged_container", "iac.k8s.host_pid"}
    # the pod-level finding on the same pod is not covered by a container's skip
    assert {f.rule_id for f in result.findings} == {"iac.k8s.privileged_pod_service_account_token"}


def test_a_skip_at_the_module_call_covers_the_modules_resources(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "root/main.tf": '''# cloudward:skip=iac.tf.sg_world_ssh reason: the bastion module, audited in SEC-12
module "bastion" {
  source = "../mod"
}
''', "mod/sg.tf": SG})
    result = scan(tmp_path)
    assert not result.findings and suppressed(result)[0]["path"] == "mod/sg.tf"
    assert suppressed(result)[0]["reason"].startswith("root/main.tf:1:")


def test_compose_skip_above_the_service_name(tmp_path: Path) -> None:
    write_tree(tmp_path, {"docker-compose.yml": '''services:
  # cloudward:skip=iac.compose.docker_socket_mount reason: traefik reads container labels
  proxy:
    image: traefik:3
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
'''})
    result = scan(tmp_path)
    assert not result.findings and suppressed(result)[0]["rule_id"] == "iac.compose.docker_socket_mount"


def test_dockerfile_findings_honour_skips_too(tmp_path: Path) -> None:
    from cloudward.cli.common import load_all_rules
    from cloudward.cli.iac import dockerfile_judge

    write_tree(tmp_path, {"svc/Dockerfile": "FROM debian:12\nUSER 10001\nHEALTHCHECK CMD true\n"
                                            "# cloudward:skip=dockerfile.download_and_execute reason: vendor script\n"
                                            "RUN curl -fsSL https://example.invalid/i.sh | sh\n"
                                            "RUN wget -qO- https://example.invalid/j.sh | bash\n"})
    result = scan(tmp_path, judges=[dockerfile_judge(load_all_rules())])
    assert hits(result) == {("dockerfile.download_and_execute", "svc/Dockerfile", 6)}
    assert [(e["rule_id"], e["line"]) for e in suppressed(result)] == [("dockerfile.download_and_execute", 5)]
