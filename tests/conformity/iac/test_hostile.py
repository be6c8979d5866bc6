"""Hostile input: each bad file is one error naming it, and the findings of the good files stay."""

from __future__ import annotations

from pathlib import Path

from cloudward.conformity.iac import MAX_BYTES

from .conftest import hits, scan, write_tree

GOOD = '''resource "aws_db_instance" "db" {
  publicly_accessible = true
  storage_encrypted   = true
}
'''


def bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "apiVersion: v1\nkind: ConfigMap\n" + "\n".join(lines) + "\n"


HOSTILE: dict[str, str | bytes] = {
    "broken.tf": 'resource "aws_instance" "x" {\n  ami = \n',
    "binary.tf": bytes(range(256)) * 8,
    "latin1.tf": 'resource "x" "y" { name = "caf\xe9" }\n'.encode("latin-1"),
    "broken.yaml": "apiVersion: v1\nkind: Pod\nspec: [unclosed\n",
    "bomb.yaml": bomb(),
    "deep.yaml": "a: " + "[" * 400 + "]" * 400 + "\n",
    "deep.tf": "locals {\n  x = " + "[" * 3000 + "]" * 3000 + "\n}\n",
    "tabs.yaml": "a:\n\tb: 1\n",
    "bad.tfplan.json": '{"planned_values": ',
}


def test_each_hostile_file_is_one_named_error_and_good_findings_stay(tmp_path: Path) -> None:
    write_tree(tmp_path, {**HOSTILE, "good/main.tf": GOOD})
    result = scan(tmp_path)
    assert hits(result) == {("iac.tf.rds_public", "good/main.tf", 1)}
    errors = {e.target: e.message for e in result.errors}
    assert set(errors) == set(HOSTILE)
    assert "binary" in errors["binary.tf"] and "UTF-8" in errors["latin1.tf"]
    assert "alias" in errors["bomb.yaml"] or "expands" in errors["bomb.yaml"]
    assert "deeper" in errors["deep.yaml"]
    assert "HCL" in errors["broken.tf"] and "YAML" in errors["broken.yaml"]


def test_an_oversized_yaml_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "huge.yaml"
    with big.open("wb") as handle:  # a sparse 50 MB file: its size is what is judged
        handle.truncate(50 * 1024 * 1024)
    write_tree(tmp_path, {"main.tf": GOOD})
    result = scan(tmp_path)
    assert [e.target for e in result.errors] == ["huge.yaml"]
    assert f"{MAX_BYTES:,}-byte limit" in result.errors[0].message
    assert len(result.findings) == 1


def test_a_bomb_within_the_limit_is_built_without_expanding(tmp_path: Path) -> None:
    write_tree(tmp_path, {"small.yaml": bomb(levels=4, width=4)})
    assert not scan(tmp_path).errors


def test_symlinks_out_of_the_root_are_reported_and_not_followed(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.tf": GOOD, "dir/x.tf": GOOD})
    root = write_tree(tmp_path / "root", {"main.tf": GOOD})
    (root / "link.tf").symlink_to(outside / "secret.tf")
    (root / "linkdir").symlink_to(outside / "dir")
    (root / "inside.tf").symlink_to(root / "main.tf")  # inside: scanned once, where it really is
    (root / "loop").symlink_to(root / "loop")
    result = scan(root)
    assert hits(result) == {("iac.tf.rds_public", "main.tf", 1)}
    errors = {e.target: e.message for e in result.errors}
    assert set(errors) == {"link.tf", "linkdir", "loop"}
    assert "outside the scanned root" in errors["link.tf"]


def test_skipped_directories_are_not_entered(tmp_path: Path) -> None:
    write_tree(tmp_path, {".terraform/modules/x/main.tf": GOOD, "node_modules/p/main.tf": GOOD,
                          ".git/main.tf": GOOD, "src/main.tf": GOOD})
    assert hits(scan(tmp_path)) == {("iac.tf.rds_public", "src/main.tf", 1)}


def test_missing_paths_fail_the_scan_and_a_single_file_keeps_its_given_name(tmp_path: Path) -> None:
    from cloudward.conformity.iac import scan_paths
    from cloudward.core.scan import ScanStatus

    from .conftest import iac_rules

    assert scan(tmp_path / "nope").status is ScanStatus.FAILED
    write_tree(tmp_path, {"one.tf": GOOD})
    result = scan_paths([str(tmp_path / "one.tf"), str(tmp_path / "nope")], iac_rules())
    assert result.status is ScanStatus.COMPLETED and len(result.errors) == 1
    assert result.findings[0].location["path"] == str(tmp_path / "one.tf")


def test_odd_but_valid_shapes_are_described_without_errors(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "odd.tf": '''resource "aws_security_group" "a" {
  ingress = "not a block"
}
resource "aws_instance" "b" {
  metadata_options = 5
}
resource "aws_iam_policy" "c" {
  policy = jsonencode([1, 2])
}
resource "aws_eks_cluster" "d" {
  vpc_config = ["x"]
}
''',
        "odd.yaml": '''apiVersion: v1
kind: Pod
metadata: [1, 2]
spec:
  containers: "nope"
  volumes: {a: 1}
  hostPID: "true"
---
apiVersion: v1
kind: Pod
metadata: {name: 7}
spec:
  containers:
    - 5
    - {name: [x], securityContext: {privileged: "yes", capabilities: {add: SYS_ADMIN}}}
''',
        "compose.yaml": "services:\n  a: 3\n  b:\n    ports: 2375\n    volumes: {x: y}\n    user: 0\n",
    })
    result = scan(tmp_path)
    assert not result.errors
    # a literal that is not a boolean is not `true`: nothing privileged is claimed
    assert "iac.k8s.privileged_container" not in {f.rule_id for f in result.findings}
    assert ("iac.compose.root_user", "compose.yaml", 3) in hits(result)
