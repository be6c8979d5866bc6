"""Property tests: whatever bytes or near-valid text a file holds, the scan never raises - each file
gives findings or one error naming it - and the parsers hold their limits."""

from __future__ import annotations

import contextlib
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloudward.conformity.iac import ExtraJudge, tf_expr
from cloudward.conformity.iac.kubernetes import observations as k8s_observations
from cloudward.conformity.iac.yamlsafe import YamlLimitError, load_documents
from cloudward.core.scan import ScanStatus

from .conftest import scan

NAMES = ["main.tf", "pod.yaml", "docker-compose.yml", "x.tfplan.json", "Dockerfile"]
HCL_TOKENS = ['resource "aws_security_group" "a" {', "}", "{", "ingress {", "from_port = 22",
              'cidr_blocks = ["0.0.0.0/0"]', "var.x", "${local.y}", 'module "m" {', 'source = "../m"', "= [", "]",
              "<<EOF", "EOF", "#", "//", "/*", "*/", '"', "jsonencode({", "})", "\n", "  ", "true", "null", "1e999",
              "count = ", "for_each = ", "count.index", "each.key", "each.value.x", "toset([", "var.x ? 1 : 0",
              "range(99999999)", '{ a = 1 }', '[for k, v in var.m : v]']
YAML_TOKENS = ["apiVersion: v1", "kind: Pod", "kind: Deployment", "spec:", "containers:", "- name: a", "  ", "\n",
               "securityContext: {privileged: true}", "&a", "*a", "<<: *a", "---", "...", "[", "]", "{", "}",
               "hostPath: {path: /}", "services:", "ports: [\"2375:2375\"]", "!!python/object:os.system", "? ",
               "|", ">", "'", '"', "# cloudward:skip=iac.k8s.host_pid", "volumes:", "template:"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def judges() -> tuple[ExtraJudge, ...]:
    from cloudward.cli.common import load_all_rules
    from cloudward.cli.iac import dockerfile_judge

    return (dockerfile_judge(load_all_rules()),)


def check(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / name).write_bytes(content)
        result = scan(root, judges=judges())
        assert result.status is ScanStatus.COMPLETED
        assert all(e.target == name and e.message for e in result.errors)
        assert len(result.errors) <= 1
        assert all(f.location["path"] == name and f.location["line"] >= 1 for f in result.findings)


@SETTINGS
@given(st.sampled_from(NAMES), st.binary(max_size=2048))
def test_random_bytes_never_crash_the_scan(name: str, content: bytes) -> None:
    check(name, content)


DOCKER_TOKENS = ["FROM", "RUN", "USER", "EXPOSE", "ARG", "ENV", "COPY", "ADD", "HEALTHCHECK", "\\\n", "\n", " ",
                 "<<EOF", "EOF", "$X", "${X:-y}", "2375", "root", "--mount=type=secret", "# syntax=x", "|", "sh"]


@SETTINGS
@given(st.lists(st.sampled_from(DOCKER_TOKENS), max_size=60))
@example(["\\\n"])  # a lone line continuation: BuildKit gives a command without an instruction
def test_dockerfile_ish_text_never_crashes_the_scan(tokens: list[str]) -> None:
    check("Dockerfile", " ".join(tokens).encode())


@SETTINGS
@given(st.lists(st.sampled_from(HCL_TOKENS), max_size=60))
def test_hcl_ish_text_never_crashes_the_scan(tokens: list[str]) -> None:
    check("main.tf", " ".join(tokens).encode())


@SETTINGS
@given(st.sampled_from(["pod.yaml", "compose.yaml"]), st.lists(st.sampled_from(YAML_TOKENS), max_size=60),
       st.lists(st.sampled_from(["\n", " ", "  ", ": ", "\n  "]), min_size=1, max_size=60))
def test_yaml_ish_text_never_crashes_the_scan(name: str, tokens: list[str], glue: list[str]) -> None:
    text = "".join(t + glue[i % len(glue)] for i, t in enumerate(tokens))
    check(name, text.encode())


@SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=40))
@example({"<<": None})  # a quoted '<<' is a key, not a merge
def test_any_yaml_value_loads_as_itself_and_walks_without_error(value: object) -> None:
    import yaml

    text = yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "spec": value})
    documents = list(load_documents(text))
    assert documents[0][1] == yaml.safe_load(text)
    list(k8s_observations(documents, "f.yaml", text))


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=2, max_value=12), st.integers(min_value=2, max_value=12))
def test_alias_expansion_is_counted_exactly(levels: int, width: int) -> None:
    lines = ["l0: &l0 x"] + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    text = "\n".join(lines) + "\n"
    expanded = 1 + sum(sum(width ** k for k in range(j + 1)) * 1 for j in range(levels))  # root + each entry
    limit = 10_000
    try:
        list(load_documents(text, max_nodes=limit))
        refused = False
    except YamlLimitError:
        refused = True
    # keys count once each; value i expands to sum(width^k, k<=i) nodes
    assert refused is (expanded + levels > limit)


MODULES_JSON = ".terraform/modules/modules.json"
EXPR_TOKENS = ["var.n", "local.m", "each.value", "each.key", "count.index", "aws_x.y.id", "1", "-2.5", "1e308", '"s"',
               '"a-${var.n}"', "true", "null", "?", ":", "+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||",
               "!", "(", ")", "[", "]", "{", "}", ",", "=", "=>", ".", "[*]", "for", "in", "if", "toset(", "range(",
               "length(", "merge(", "lookup(", "flatten(", "zipmap(", "split(", "join(", "element(", "x", "k", "v",
               "...", "${", '"', "\\", "%{", "<<EOF", "#", "/*"]


def expression_tables() -> tf_expr.Lookup:
    return tf_expr.lookup_in({"var": {"n": 3, "m": {"a": [1, {"b": "0.0.0.0/0"}]}}, "local": {"m": {"k": "v"}},
                              "count": {"index": 0}, "each": {"key": "a", "value": {"x": "y"}}})


@SETTINGS
@given(st.lists(st.sampled_from(EXPR_TOKENS), max_size=40))
@example(["range(", "1e308", ")"])
@example(["var.n", ".", "1e308"])
@example(["[", "for", "k", "in", "range(", "9999", ")", ":", "[", "for", "v", "in", "range(", "9999", ")", ":", "v",
          "]", "]"])
def test_expressions_evaluate_or_say_why_never_crash(tokens: list[str]) -> None:
    text = " ".join(tokens)
    for evaluate in (tf_expr.evaluate, tf_expr.evaluate_template):
        with contextlib.suppress(tf_expr.Unknown, tf_expr.ExprError):
            evaluate(text, expression_tables())


@SETTINGS
@given(st.sampled_from(["terraform.tfvars", "terraform.tfvars.json", "x.auto.tfvars", MODULES_JSON]),
       st.one_of(st.binary(max_size=1024), st.lists(st.sampled_from([*HCL_TOKENS, '"Modules"', '"Dir"', '"../.."']),
                                                     max_size=40).map(lambda t: " ".join(t).encode())))
def test_variables_files_and_module_manifests_never_crash_the_scan(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "main.tf").write_text('variable "n" {\n  default = 1\n}\nresource "aws_instance" "i" {\n'
                                      '  count = var.n\n}\nmodule "m" {\n  source = "a/b/c"\n  count = var.n\n}\n')
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
        result = scan(root, judges=judges())
        assert result.status is ScanStatus.COMPLETED
        assert all(e.message for e in result.errors)
        assert all(f.location["path"] == "main.tf" for f in result.findings)


KUSTOMIZE_TOKENS = ["resources:", "bases:", "components:", "patches:", "patchesStrategicMerge:", "configMapGenerator:",
                    "- path: p.yaml", "- ../..", "- ..", "- /etc", "- d.yaml", "- sub", "- https://x.invalid/r",
                    "- github.com/a/b?ref=v1", "files: [a=../../x]", "envs: [e.env]", "helmCharts:", "- name: c",
                    "namePrefix: p-", "&a [*a, *a]", "*a", "{", "}", "[", "]", "- ", "  ", "\n", ":", "'", '"']


@SETTINGS
@given(st.lists(st.sampled_from(KUSTOMIZE_TOKENS), max_size=40), st.sampled_from(["\n", " ", "\n  ", "\n- "]))
def test_kustomization_references_are_checked_without_crashing(tokens: list[str], glue: str) -> None:
    from cloudward.conformity.iac import kustomize

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "tree"
        (root / "sub").mkdir(parents=True)
        (root / "d.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
        (root / "sub" / "kustomization.yaml").write_text("resources: [../d.yaml]\n")
        (root / "kustomization.yaml").write_text(glue.join(tokens))
        found = kustomize.plan(root.resolve(), root.resolve(), 4096)
        # whatever it says, it never lets a path outside the tree or a remote address through
        assert all(p == root.resolve() or root.resolve() in p.parents for p in found.files | found.kustomizations)
        if found.problems:
            return
        assert found.files <= {root.resolve() / "kustomization.yaml", root.resolve() / "d.yaml",
                               root.resolve() / "sub" / "kustomization.yaml"}
