"""Kustomize overlays rendered by the real tool (`kubectl kustomize`, which this machine kind ships;
`kustomize build` when it is on PATH) and judged as what gets applied: findings at the
kustomization with the source file traced, the files it lists not judged twice, and remote or
escaping references refused before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

from cloudward.conformity.iac import kustomize

from .conftest import hits, scan, write_tree

DEPLOYMENT = '''apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 10001}
      containers:
        - name: web
          image: registry.example/web:1.0
          securityContext:
            allowPrivilegeEscalation: false
'''
SERVICE = '''apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80}]
'''
PATCH = '''apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: web
          securityContext:
            {setting}
'''


def tree(root: Path, setting: str) -> Path:
    return write_tree(root, {
        "base/kustomization.yaml": "resources:\n  - deployment.yaml\n  - service.yaml\n",
        "base/deployment.yaml": "---\n" + SERVICE.replace("name: web", "name: other") + "---\n" + DEPLOYMENT,
        "base/service.yaml": SERVICE,
        "overlays/prod/kustomization.yaml": "resources:\n  - ../../base\nnamePrefix: prod-\nnamespace: prod\n"
                                            "patches:\n  - path: harden.yaml\n",
        "overlays/prod/harden.yaml": PATCH.format(setting=setting),
    })


def test_the_renderer_is_found() -> None:
    assert kustomize.command() is not None  # kubectl comes with this machine kind (kubectl kustomize)


def test_an_overlay_that_adds_privileged_is_found_at_the_kustomization(tmp_path: Path) -> None:
    result = scan(tree(tmp_path, "privileged: true"))
    assert not result.errors
    # at the kustomization's entry that brought the object in (`- ../../base`, line 2)
    assert ("iac.k8s.privileged_container", "overlays/prod/kustomization.yaml", 2) in hits(result)
    finding = next(f for f in result.findings if f.rule_id == "iac.k8s.privileged_container")
    assert finding.location["object"] == "prod-web"  # the rendered name
    assert finding.location["source"] == "base/deployment.yaml:10"  # the traced source document
    assert result.stats["kustomizations"] == 1 and result.stats["kustomize_inputs"] == 5


def test_an_overlay_that_does_not_is_clean_and_the_listed_files_are_not_judged_again(tmp_path: Path) -> None:
    root = tree(tmp_path, "readOnlyRootFilesystem: true")
    (root / "base" / "deployment.yaml").write_text(DEPLOYMENT.replace("allowPrivilegeEscalation: false",
                                                                      "allowPrivilegeEscalation: true"))
    result = scan(root)
    assert not result.errors
    # the base's setting reaches the render once, at the overlay; the base file itself is not judged
    assert hits(result) == {("iac.k8s.privilege_escalation_allowed", "overlays/prod/kustomization.yaml", 2)}
    (root / "base" / "deployment.yaml").write_text(DEPLOYMENT)
    assert not scan(root).findings


def test_a_plain_manifest_beside_a_kustomization_is_still_judged(tmp_path: Path) -> None:
    root = tree(tmp_path, "readOnlyRootFilesystem: true")
    (root / "base" / "stray.yaml").write_text(DEPLOYMENT.replace("allowPrivilegeEscalation: false",
                                                                 "privileged: true"))
    assert hits(scan(root)) >= {("iac.k8s.privileged_container", "base/stray.yaml", 15)}


def test_skip_comments_in_the_source_file_apply(tmp_path: Path) -> None:
    root = tree(tmp_path, "privileged: true")
    text = (root / "base" / "deployment.yaml").read_text()
    (root / "base" / "deployment.yaml").write_text(text.replace(
        "---\napiVersion: apps/v1", "---\n# cloudward:skip=iac.k8s.privileged_container reason: lab cluster only\n"
                                    "apiVersion: apps/v1"))
    result = scan(root)
    assert "iac.k8s.privileged_container" not in {f.rule_id for f in result.findings}
    assert any(s["rule_id"] == "iac.k8s.privileged_container" for s in result.stats["suppressed_findings"])


def test_skip_comments_at_the_top_of_the_kustomization_apply(tmp_path: Path) -> None:
    root = tree(tmp_path, "privileged: true")
    kfile = root / "overlays" / "prod" / "kustomization.yaml"
    kfile.write_text("# cloudward:skip=iac.k8s.privileged_container reason: debug overlay, never deployed\n"
                     + kfile.read_text())
    result = scan(root)
    assert "iac.k8s.privileged_container" not in {f.rule_id for f in result.findings}
    assert [s["rule_id"] for s in result.stats["suppressed_findings"]] == ["iac.k8s.privileged_container"]


def test_without_a_renderer_the_files_are_plain_manifests(tmp_path: Path) -> None:
    root = tree(tmp_path, "privileged: true")
    result = scan(root, kustomize_command=())
    assert sorted(e.target for e in result.errors) == ["base/kustomization.yaml", "overlays/prod/kustomization.yaml"]
    assert all("not found" in e.message for e in result.errors)
    # the patch alone reads like a Deployment: judged as a plain file, as before this feature
    assert ("iac.k8s.privileged_container", "overlays/prod/harden.yaml", 9) in hits(result)


def test_a_remote_resource_is_never_fetched(tmp_path: Path) -> None:
    root = tree(tmp_path, "privileged: true")
    (root / "overlays" / "prod" / "kustomization.yaml").write_text(
        "resources:\n  - ../../base\n  - https://github.com/example/repo//deploy?ref=v1\n")
    result = scan(root)
    assert [e.target for e in result.errors] == ["overlays/prod/kustomization.yaml"]
    assert "a remote resource, not fetched (offline)" in result.errors[0].message
    assert result.stats.get("kustomizations", 0) == 0  # nothing rendered; the files are judged plainly


def test_references_leaving_the_tree_are_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"kustomization.yaml": "resources: [d.yaml]\n",
                                                "d.yaml": DEPLOYMENT.replace("allowPrivilegeEscalation: false",
                                                                             "privileged: true")})
    root = write_tree(tmp_path / "tree", {"up/kustomization.yaml": "resources:\n  - ../../outside\n",
                                          "abs/kustomization.yaml": f"resources:\n  - {outside}/d.yaml\n"})
    (root / "link").mkdir()
    os.symlink(outside, root / "link" / "out")
    (root / "link" / "kustomization.yaml").write_text("resources:\n  - out\n")
    result = scan(root)
    assert not result.findings
    messages = {e.target: e.message for e in result.errors}
    assert "leaves the scanned root" in messages["up/kustomization.yaml"]
    assert "absolute path" in messages["abs/kustomization.yaml"]
    assert "leaves the scanned root" in messages["link/kustomization.yaml"]


def test_a_failing_render_is_a_named_error(tmp_path: Path) -> None:
    root = tree(tmp_path, "privileged: true")
    (root / "overlays" / "prod" / "harden.yaml").write_text(PATCH.format(setting="privileged: true")
                                                            .replace("name: web\nspec", "name: nothing\nspec"))
    result = scan(root)
    assert [e.target for e in result.errors] == ["overlays/prod/kustomization.yaml"]
    assert result.errors[0].message.startswith("not rendered: kubectl kustomize failed") or \
        result.errors[0].message.startswith("not rendered: kustomize build failed")


def test_renders_are_bounded_in_size_and_time_and_leave_nothing_behind(tmp_path: Path) -> None:
    import tempfile

    import pytest

    root = tree(tmp_path, "privileged: true")
    argv = kustomize.command()
    assert argv is not None
    before = set(Path(tempfile.gettempdir()).glob("cloudward-kustomize-*"))
    with pytest.raises(kustomize.KustomizeError, match="larger than 100 bytes"):
        kustomize.render(argv, root / "overlays" / "prod", max_bytes=100)
    with pytest.raises(kustomize.KustomizeError, match="took longer than"):
        kustomize.render(argv, root / "overlays" / "prod", max_bytes=1 << 20, timeout=0)
    assert set(Path(tempfile.gettempdir()).glob("cloudward-kustomize-*")) == before


def test_a_kustomization_bomb_is_refused_before_any_render(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    root = write_tree(tmp_path, {"kustomization.yaml": bomb + "resources: [d.yaml]\n", "d.yaml": SERVICE})
    result = scan(root)
    # refused twice, each naming the file: by the kustomize stage and as a plain YAML file
    assert {(e.target, e.stage) for e in result.errors} == {("kustomization.yaml", "kustomize"),
                                                            ("kustomization.yaml", "parse")}
    assert any("cannot read: YamlLimitError" in e.message for e in result.errors)


def test_an_old_renderer_without_origin_annotations_still_renders(tmp_path: Path) -> None:
    # A stand-in for kustomize < v4.5 (kubectl < 1.24), which refuses `buildMetadata`: no such old
    # binary installs beside this machine's kubectl, so a script plays its refusal and otherwise
    # hands the real kubectl the directory.
    old = tmp_path / "old-kustomize"
    old.write_text('#!/bin/sh\nif grep -q buildMetadata "$1/kustomization.yaml"; then\n'
                   '  echo \'Error: json: unknown field "buildMetadata"\' >&2; exit 1\nfi\n'
                   'exec kubectl kustomize "$1"\n')
    old.chmod(0o755)
    result = scan(tree(tmp_path / "repo", "privileged: true"), kustomize_command=[str(old)])
    assert not result.errors
    finding = next(f for f in result.findings if f.rule_id == "iac.k8s.privileged_container")
    assert (finding.location["path"], finding.location["line"]) == ("overlays/prod/kustomization.yaml", 1)
    assert "source" not in finding.location  # nothing to trace it by
