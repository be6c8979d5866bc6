"""IaC scanning benchmark: `cloudward iac scan` against Checkov and `trivy config` on the same tree.

The tree is built fresh each run: every `iac` rule's positive and negative fixture from tests/rules
(each in a directory of its own, so Terraform modules do not mix), plus a generated estate - a few
hundred Terraform configurations with variables and a local module, Kubernetes manifests (plain and
`helm template` style, several documents per file) and compose files, about a third of them with a
planted misconfiguration - so that timing means something. All three tools run offline inside a
network namespace with loopback only (`unshare -n`): trivy with its embedded checks
(`--skip-check-update`), Checkov with `--skip-download`.

Reported: wall clock and peak memory (median of `--repeat` runs), the ratios, and a coverage table:
for every planted class (one rule's positive fixture), did each tool report something on the
positive file that it did not report on the negative one? That test needs no mapping between the
tools' check ids, and the check ids that made the difference are shown. A second table does the
same for Terraform *values*: pairs of configurations that differ only in a variables file, a
`count`, a `for_each` map, a downloaded module's manifest or a Kustomize patch, so it shows which
tools evaluate them.

    .venv/bin/python benchmarks/conformity/iac.py [--repeat 3] [--configs 300] [--keep] [--no-write]

Peers: benchmarks/conformity/setup-iac-peers (Checkov in .venv-checkov, trivy from setup-peers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, measure, today, write_section

CLOUDWARD = ROOT / ".venv" / "bin" / "cloudward"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
TRIVY = ROOT / ".venv-peers" / "bin" / "trivy"
FIXTURES = ROOT / "tests" / "rules"
TOOLS = ("cloudward", "checkov", "trivy")


# ---------------------------------------------------------------------------------------------
# the tree

def copy_fixtures(tree: Path) -> dict[str, tuple[str, str]]:
    """rule id -> (positive path, negative path), relative to the tree."""
    classes: dict[str, tuple[str, str]] = {}
    for folder in sorted(FIXTURES.glob("iac.*")):
        pair = []
        for kind in ("positive", "negative"):
            source = next(p for p in sorted(folder.glob(f"{kind}.*")) if p.is_file())
            name = _fixture_name(folder.name, source)
            target = tree / "fixtures" / folder.name / kind / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            pair.append(target.relative_to(tree).as_posix())
        classes[folder.name] = (pair[0], pair[1])
    return classes


def _fixture_name(rule: str, source: Path) -> str:
    if source.suffix == ".tf":
        return "main.tf"
    if rule.startswith("iac.compose."):
        return "docker-compose.yml"
    return "manifest.yaml"


SG = '''resource "aws_security_group" "svc_{i}" {{
  name   = "svc-{i}"
  vpc_id = var.vpc_id
  ingress {{
    description = "service port"
    from_port   = {port}
    to_port     = {port}
    protocol    = "tcp"
    cidr_blocks = [var.ingress_cidr]
  }}
  egress {{
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
'''
INSTANCE = '''resource "aws_instance" "app_{i}" {{
  ami                    = "ami-0123456789abcdef0"
  instance_type          = "t3.small"
  vpc_security_group_ids = [aws_security_group.svc_{i}.id]
  monitoring             = true
  ebs_optimized          = true
  metadata_options {{
    http_tokens = "{tokens}"
  }}
  root_block_device {{
    encrypted = {encrypted}
  }}
}}
'''
BUCKET = '''resource "aws_s3_bucket" "data_{i}" {{
  bucket = "estate-data-{i}"
}}
resource "aws_s3_bucket_public_access_block" "data_{i}" {{
  bucket                  = aws_s3_bucket.data_{i}.id
  block_public_acls       = true
  block_public_policy     = {block}
  ignore_public_acls      = true
  restrict_public_buckets = true
}}
'''
DB = '''resource "aws_db_instance" "db_{i}" {{
  engine              = "postgres"
  instance_class      = "db.t3.micro"
  allocated_storage   = 20
  publicly_accessible = {public}
  storage_encrypted   = true
}}
'''
MODULE = '''variable "world" {{
  default = "10.0.0.0/8"
}}
resource "aws_security_group_rule" "admin" {{
  type              = "ingress"
  security_group_id = "sg-0123"
  from_port         = 22
  to_port           = 22
  protocol          = "tcp"
  cidr_blocks       = [var.world]
}}
'''
DEPLOY = '''---
# Source: estate/templates/deployment-{i}.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: estate
spec:
  replicas: 2
  selector:
    matchLabels: {{app: app-{i}}}
  template:
    metadata:
      labels: {{app: app-{i}}}
    spec:
      hostNetwork: {host_network}
      containers:
        - name: app
          image: registry.example/app:{i}.0
          resources:
            limits: {{cpu: 500m, memory: 256Mi}}
          securityContext:
            privileged: {privileged}
            allowPrivilegeEscalation: false
            runAsNonRoot: true
            runAsUser: 10001
---
# Source: estate/templates/service-{i}.yaml
apiVersion: v1
kind: Service
metadata:
  name: app-{i}
  namespace: estate
spec:
  selector: {{app: app-{i}}}
  ports:
    - port: 80
      targetPort: 8080
'''
DAEMON = '''apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent-{i}
  namespace: kube-system
spec:
  selector:
    matchLabels: {{app: agent-{i}}}
  template:
    metadata:
      labels: {{app: agent-{i}}}
    spec:
      hostPID: {host_pid}
      volumes:
        - name: host
          hostPath:
            path: {host_path}
      containers:
        - name: agent
          image: registry.example/agent:{i}.1
          securityContext:
            allowPrivilegeEscalation: false
            runAsNonRoot: true
'''
COMPOSE = '''services:
  web:
    image: registry.example/web:{i}
    ports:
      - "8080:80"
  cache:
    image: redis:7
    ports:
      - "{redis}"
  worker:
    image: registry.example/worker:{i}
    privileged: {privileged}
    volumes:
      - {volume}
'''


def generate(tree: Path, configs: int) -> dict[str, int]:
    """A Terraform estate of `configs` root configurations (each calling a local module), as many
    Kubernetes files and a quarter as many compose files; every third item carries a plant."""
    counts: dict[str, int] = defaultdict(int)
    estate = tree / "estate"
    module = estate / "modules" / "admin-sg"
    module.mkdir(parents=True)
    (module / "main.tf").write_text(MODULE.format())
    ports = [443, 22, 6379, 2375, 10250, 8443]
    for i in range(configs):
        bad = i % 3 == 0
        folder = estate / "terraform" / f"svc-{i:03d}"
        folder.mkdir(parents=True)
        (folder / "variables.tf").write_text(
            'variable "vpc_id" {\n  default = "vpc-0123"\n}\n'
            f'variable "ingress_cidr" {{\n  default = "{"0.0.0.0/0" if bad else "10.20.0.0/16"}"\n}}\n')
        main = (SG.format(i=i, port=ports[i % len(ports)] if bad else 443)
                + INSTANCE.format(i=i, tokens="optional" if i % 6 == 0 else "required",
                                  encrypted="false" if i % 9 == 0 else "true")
                + BUCKET.format(i=i, block="false" if i % 12 == 0 else "true")
                + DB.format(i=i, public="true" if i % 15 == 0 else "false")
                + f'module "admin_{i}" {{\n  source = "../../modules/admin-sg"\n'
                + ('  world  = "0.0.0.0/0"\n' if i % 10 == 0 else "") + "}\n")
        (folder / "main.tf").write_text(main)
        counts["terraform files"] += 2
        k8s = estate / "kubernetes"
        k8s.mkdir(exist_ok=True)
        (k8s / f"app-{i:03d}.yaml").write_text(DEPLOY.format(
            i=i, host_network="true" if i % 5 == 0 else "false", privileged="true" if i % 7 == 0 else "false"))
        counts["kubernetes files"] += 1
        if i % 4 == 0:
            (k8s / f"agent-{i:03d}.yaml").write_text(DAEMON.format(
                i=i, host_pid="true" if i % 8 == 0 else "false",
                host_path="/var/run/docker.sock" if i % 16 == 0 else "/var/log"))
            counts["kubernetes files"] += 1
            compose = estate / "compose" / f"stack-{i:03d}"
            compose.mkdir(parents=True)
            (compose / "docker-compose.yml").write_text(COMPOSE.format(
                i=i, redis="6379:6379" if bad else "127.0.0.1:6379:6379", privileged="true" if bad else "false",
                volume="/var/run/docker.sock:/var/run/docker.sock" if i % 8 == 0 else "./data:/data"))
            counts["compose files"] += 1
    counts["terraform files"] += 1
    return dict(counts)


DB_PUBLIC = '''variable "public" {{
  default = false
}}
variable "enabled" {{
  default = {enabled}
}}
resource "aws_db_instance" "db" {{
  count               = var.enabled ? 1 : 0
  engine              = "postgres"
  instance_class      = "db.t3.micro"
  publicly_accessible = var.public
  storage_encrypted   = true
}}
'''
SG_FOR_EACH = '''variable "rules" {{
  default = {{
    web   = {{ cidr = "0.0.0.0/0", port = 443 }}
    admin = {{ cidr = "{admin}", port = 22 }}
  }}
}}
resource "aws_security_group" "sg" {{
  for_each    = var.rules
  name        = "sg-${{each.key}}"
  description = "per-key rules"
  ingress {{
    description = "from the map"
    from_port   = each.value.port
    to_port     = each.value.port
    protocol    = "tcp"
    cidr_blocks = [each.value.cidr]
  }}
}}
'''
IMDS_COUNT = '''resource "aws_instance" "web" {{
  count         = {count}
  ami           = "ami-0123456789abcdef0"
  instance_type = "t3.small"
  monitoring    = true
  ebs_optimized = true
  metadata_options {{
    http_tokens = count.index == 1 ? "optional" : "required"
  }}
  root_block_device {{
    encrypted = true
  }}
}}
'''
REMOTE_CALL = '''module "sg" {
  source  = "terraform-aws-modules/security-group/aws"
  version = "5.1.0"
}
'''
REMOTE_MODULE = '''resource "aws_security_group_rule" "admin" {{
  type              = "ingress"
  description       = "admin"
  security_group_id = "sg-0123"
  from_port         = 22
  to_port           = 22
  protocol          = "tcp"
  cidr_blocks       = ["{cidr}"]
}}
'''
MODULES_JSON = json.dumps({"Modules": [
    {"Key": "", "Source": "", "Dir": "."},
    {"Key": "sg", "Source": "registry.terraform.io/terraform-aws-modules/security-group/aws", "Version": "5.1.0",
     "Dir": ".terraform/modules/sg"}]})


KUSTOMIZE = {
    "base/kustomization.yaml": "resources:\n  - deployment.yaml\n",
    "base/deployment.yaml": DEPLOY.split("---\n")[1].format(i=900, host_network="false", privileged="false"),
    "overlay/kustomization.yaml": "resources:\n  - ../base\nnamePrefix: prod-\npatches:\n  - path: patch.yaml\n",
}
KUSTOMIZE_PATCH = '''apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-900
  namespace: estate
spec:
  template:
    spec:
      containers:
        - name: app
          securityContext:
            {setting}
'''


def value_classes(tree: Path) -> dict[str, tuple[str, str]]:
    """Terraform-values classes: name -> (positive directory, negative directory), relative to the tree.
    Each pair differs only in what a tool must evaluate to see the planted setting."""
    pairs: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        "terraform.tfvars sets a variable (public database)": (
            {"main.tf": DB_PUBLIC.format(enabled="true"), "terraform.tfvars": "public = true\n"},
            {"main.tf": DB_PUBLIC.format(enabled="true"), "terraform.tfvars": "public = false\n"}),
        "*.auto.tfvars.json sets a variable (public database)": (
            {"main.tf": DB_PUBLIC.format(enabled="true"), "prod.auto.tfvars.json": '{"public": true}'},
            {"main.tf": DB_PUBLIC.format(enabled="true"), "prod.auto.tfvars.json": '{"public": false}'}),
        "count = 0 removes a resource (public database)": (
            {"main.tf": DB_PUBLIC.format(enabled="true").replace("default = false", "default = true", 1)},
            {"main.tf": DB_PUBLIC.format(enabled="false").replace("default = false", "default = true", 1)}),
        "count.index decides one instance (IMDSv1)": (
            {"main.tf": IMDS_COUNT.format(count=2)}, {"main.tf": IMDS_COUNT.format(count=1)}),
        "for_each over a map, one key world-open SSH": (
            {"main.tf": SG_FOR_EACH.format(admin="0.0.0.0/0")}, {"main.tf": SG_FOR_EACH.format(admin="10.0.0.0/8")}),
        "registry module from terraform init (world-open SSH)": (
            {"main.tf": REMOTE_CALL, ".terraform/modules/modules.json": MODULES_JSON,
             ".terraform/modules/sg/main.tf": REMOTE_MODULE.format(cidr="0.0.0.0/0")},
            {"main.tf": REMOTE_CALL, ".terraform/modules/modules.json": MODULES_JSON,
             ".terraform/modules/sg/main.tf": REMOTE_MODULE.format(cidr="10.0.0.0/8")}),
        "Kustomize overlay patch adds privileged: true": (
            {**KUSTOMIZE, "overlay/patch.yaml": KUSTOMIZE_PATCH.format(setting="privileged: true")},
            {**KUSTOMIZE, "overlay/patch.yaml": KUSTOMIZE_PATCH.format(setting="readOnlyRootFilesystem: true")}),
    }
    classes: dict[str, tuple[str, str]] = {}
    for index, (name, (positive, negative)) in enumerate(pairs.items()):
        made = []
        for kind, files in (("positive", positive), ("negative", negative)):
            folder = tree / "values" / f"{index:02d}" / kind
            for rel, text in files.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_text(text)
            made.append(folder.relative_to(tree).as_posix())
        classes[name] = (made[0], made[1])
    return classes


# ---------------------------------------------------------------------------------------------
# running the tools

def offline(argv: list[str]) -> list[str]:
    """Run inside a new network namespace (loopback only) when we may: no tool can phone home."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *argv]
    return argv


def argv_for(tool: str, tree: Path, out: Path, cache: Path) -> list[str]:
    if tool == "cloudward":
        return [str(CLOUDWARD), "iac", "scan", str(tree), "--no-store", "-f", "json", "-o", str(out)]
    if tool == "checkov":
        return [str(CHECKOV), "-d", str(tree), "-o", "json", "--output-file-path", str(out.parent),
                "--framework", "terraform", "terraform_plan", "kubernetes", "dockerfile", "--skip-download",
                "--quiet", "--compact"]
    return [str(TRIVY), "config", "--skip-check-update", "--format", "json", "--output", str(out), "--quiet",
            "--cache-dir", str(cache), str(tree)]


@dataclass
class Timing:
    seconds: list[float]
    peak_mib: list[float]
    code: int
    note: str

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak(self) -> float:
        return max(self.peak_mib)


def output_path(tool: str, work: Path) -> Path:
    folder = work / tool
    folder.mkdir(exist_ok=True)
    return folder / ("results_json.json" if tool == "checkov" else "out.json")


def run_once(tool: str, tree: Path, work: Path, timing: Timing) -> None:
    out = output_path(tool, work)
    if out.exists():
        out.unlink()
    measured = measure(offline(argv_for(tool, tree, out, work / "trivy-cache")),
                       env={"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    timing.seconds.append(measured.seconds)
    timing.peak_mib.append(measured.peak_rss_mib)
    timing.code = measured.returncode
    if not out.exists():
        timing.note = (measured.stderr.strip().splitlines() or ["no output"])[-1][:200]


def version(tool: str) -> str:
    argv = {"cloudward": [str(CLOUDWARD), "--version"], "checkov": [str(CHECKOV), "--version"],
            "trivy": [str(TRIVY), "--version"]}[tool]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout.strip().splitlines() or ["?"])[0].replace("Version: ", "trivy ")


# ---------------------------------------------------------------------------------------------
# reading results: relative file path -> set of check ids that failed there

def by_file_cloudward(out: Path, tree: Path) -> dict[str, set[str]]:
    doc = json.loads(out.read_text())
    found: dict[str, set[str]] = defaultdict(set)
    for finding in doc["findings"]:
        found[finding["location"]["path"]].add(finding["rule_id"])
    return found


def by_file_checkov(out: Path, tree: Path) -> dict[str, set[str]]:
    doc: Any = json.loads(out.read_text())
    reports = doc if isinstance(doc, list) else [doc]
    found: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        for check in (report.get("results") or {}).get("failed_checks") or []:
            path = check.get("file_abs_path") or check.get("file_path", "")
            rel = Path(path).resolve().relative_to(tree.resolve()).as_posix() if path.startswith("/") and \
                str(Path(path).resolve()).startswith(str(tree.resolve())) else path.lstrip("/")
            found[rel].add(check["check_id"])
    return found


def by_file_trivy(out: Path, tree: Path) -> dict[str, set[str]]:
    doc = json.loads(out.read_text())
    found: dict[str, set[str]] = defaultdict(set)
    for result in doc.get("Results") or []:
        for misconf in result.get("Misconfigurations") or []:
            if misconf.get("Status", "FAIL") == "FAIL":
                found[result["Target"]].add(misconf.get("AVDID") or misconf.get("ID"))
    return found


READERS = {"cloudward": by_file_cloudward, "checkov": by_file_checkov, "trivy": by_file_trivy}


def coverage(classes: dict[str, tuple[str, str]], found: dict[str, set[str]]) -> dict[str, list[str]]:
    """class -> the tool's check ids on the positive fixture (a file, or every file under a
    directory) that are absent from the negative one."""
    def under(where: str) -> set[str]:
        hits = set(found.get(where, set()))
        for path, ids in found.items():
            if path.startswith(where + "/"):
                hits |= ids
        return hits

    return {name: sorted(under(pos) - under(neg)) for name, (pos, neg) in classes.items()}


# ---------------------------------------------------------------------------------------------
# the section

def section(timings: dict[str, Timing], counts: dict[str, int], classes: dict[str, tuple[str, str]],
            covered: dict[str, dict[str, list[str]]], totals: dict[str, int], versions: dict[str, str],
            repeat: int, load: tuple[float, float], values: dict[str, tuple[str, str]] | None = None,
            values_covered: dict[str, dict[str, list[str]]] | None = None) -> str:
    files = sum(counts.values()) + 2 * len(classes) + 2 * len(values or {})
    estate = ", ".join(f"{v:,} {k}" for k, v in counts.items())
    lines = [
        "## Infrastructure as code: `cloudward iac scan` vs Checkov and `trivy config`",
        "",
        f"{today()}, {machine()}. Written by `benchmarks/conformity/iac.py` (peers from "
        "`benchmarks/conformity/setup-iac-peers`).",
        "",
        f"One tree of {files:,} files: the positive and negative fixture of each of the {len(classes)} IaC rules "
        f"(tests/rules, one directory each), {len(values or {})} pairs of Terraform configurations that differ "
        f"only in a value a tool must evaluate, and a generated estate ({estate};"
        " about a third carry a planted misconfiguration). Every tool scans the whole tree once per run, "
        "offline in a network namespace with loopback only: trivy with its embedded checks "
        "(`--skip-check-update`), Checkov with `--skip-download` and the frameworks cloudward covers "
        "(terraform, terraform_plan, kubernetes, dockerfile). Median of "
        f"{repeat} runs each; peak RSS is the largest. *File x check hits* counts each check once per file it "
        "failed in (the tools count findings differently; this is the comparable unit). Load average "
        f"(1 min) {load[0]:.2f} before the runs and {load[1]:.2f} after; the runs alternate between the tools "
        "round by round, so other work on the machine slows each of them alike: compare the ratios rather "
        "than the seconds.",
        "",
        "| tool | version | wall clock | peak memory | file x check hits | vs cloudward |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = timings["cloudward"].median
    for tool in TOOLS:
        t = timings.get(tool)
        if t is None:
            lines.append(f"| {tool} | not installed | | | | |")
            continue
        ratio = "1.00x" if tool == "cloudward" else f"{t.median / base:.2f}x slower" if t.median >= base \
            else f"{base / t.median:.2f}x faster"
        note = f" ({t.note})" if t.note else ""
        lines.append(f"| {tool} | {versions.get(tool, '?')} | {t.median:.2f} s{note} | {t.peak:.0f} MiB | "
                     f"{totals.get(tool, 0):,} | {ratio} |")
    lines += ["", "### Coverage of the planted classes", "",
              "A tool *found* a class when it reported a check on the class's positive fixture that it did not "
              "report on the negative one (the two files differ only in the planted setting); the check ids that "
              "made the difference are listed. ✔ found, · not found.", ""]
    present = [t for t in TOOLS if t in covered]
    lines += ["| planted class (cloudward rule) | " + " | ".join(present) + " | peer checks that differed |",
              "|---|" + "---|" * len(present) + "---|"]
    score = {t: 0 for t in present}
    for rule in sorted(classes):
        marks = []
        for tool in present:
            hit = bool(covered[tool][rule])
            score[tool] += hit
            marks.append("✔" if hit else "·")
        peers = "; ".join(f"{t}: {', '.join(covered[t][rule][:3])}" for t in present
                          if t != "cloudward" and covered[t][rule])
        lines.append(f"| `{rule}` | " + " | ".join(marks) + f" | {peers} |")
    lines.append("| **total** | " + " | ".join(f"**{score[t]}/{len(classes)}**" for t in present) + " | |")
    lines += ["", "Reading the table: the classes are cloudward's own rules, so its column is the fixture suite "
              "re-checked end to end, not a contest it can lose; the peers' columns say which of these "
              "TeamTNT-relevant settings each of them already catches. Classes the peers cover only through a "
              "broader check (e.g. any world-open ingress) show as not found when that check fires on the "
              "negative fixture too."]
    if values and values_covered:
        present = [t for t in TOOLS if t in values_covered]
        lines += ["", "### Values a tool must evaluate: variables files, count, for_each, downloaded modules, "
                  "Kustomize", "",
                  "Each row is a pair of configurations (directories) that differ only in what the named feature "
                  "decides; a tool found it when it reported a check on the positive directory that it did not "
                  "report on the negative one. Nothing is fetched: the registry module is read from the "
                  "`.terraform/modules` folder `terraform init` would have left.", "",
                  "| what decides | " + " | ".join(present) + " | peer checks that differed |",
                  "|---|" + "---|" * len(present) + "---|"]
        score = {t: 0 for t in present}
        for name in values:
            marks = []
            for tool in present:
                hit = bool(values_covered[tool][name])
                score[tool] += hit
                marks.append("✔" if hit else "·")
            peers = "; ".join(f"{t}: {', '.join(values_covered[t][name][:3])}" for t in present
                              if t != "cloudward" and values_covered[t][name])
            lines.append(f"| {name} | " + " | ".join(marks) + f" | {peers} |")
        lines.append("| **total** | " + " | ".join(f"**{score[t]}/{len(values)}**" for t in present) + " | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--configs", type=int, default=300, help="generated Terraform root configurations")
    parser.add_argument("--keep", action="store_true", help="keep the tree and the tools' outputs")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not edit docs/BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cloudward-iac-bench-"))
    tree = work / "tree"
    classes = copy_fixtures(tree)
    values = value_classes(tree)
    counts = generate(tree, args.configs)
    load_before = os.getloadavg()[0]
    timings: dict[str, Timing] = {}
    covered: dict[str, dict[str, list[str]]] = {}
    values_covered: dict[str, dict[str, list[str]]] = {}
    totals: dict[str, int] = {}
    versions: dict[str, str] = {}
    present = []
    for tool in TOOLS:
        binary = {"cloudward": CLOUDWARD, "checkov": CHECKOV, "trivy": TRIVY}[tool]
        if not binary.exists():
            print(f"{tool}: not installed ({binary}); run benchmarks/conformity/setup-iac-peers", file=sys.stderr)
            continue
        versions[tool] = version(tool)
        timings[tool] = Timing([], [], 0, "")
        present.append(tool)
    # Rounds alternate the tools, so load from other work on the machine falls on each of them alike.
    for _ in range(args.repeat):
        for tool in present:
            run_once(tool, tree, work, timings[tool])
    for tool in present:
        timing, out = timings[tool], output_path(tool, work)
        print(f"{tool}: median {timing.median:.2f}s, peak {timing.peak:.0f} MiB, exit {timing.code} {timing.note}",
              file=sys.stderr)
        if out.exists():
            found = READERS[tool](out, tree)
            covered[tool] = coverage(classes, found)
            values_covered[tool] = coverage(values, found)
            totals[tool] = sum(len(v) for v in found.values())
    if "cloudward" not in timings:
        print("cloudward is not installed: run scripts/setup", file=sys.stderr)
        return 2
    body = section(timings, counts, classes, covered, totals, versions, args.repeat,
                   (load_before, os.getloadavg()[0]), values, values_covered)
    print(body)
    if not args.no_write:
        write_section("conformity-iac", body)
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
