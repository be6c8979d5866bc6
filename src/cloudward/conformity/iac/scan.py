"""`iac scan`: find IaC files under the given paths, parse each into observations, judge them with
the `iac` rules (and, for Dockerfiles, the judge the CLI hands in), then apply skip comments.

Every file is read at most once, bounded in size, and parsed in isolation: a file that cannot be
read or parsed becomes one error naming it, and the scan goes on with everything else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudward.conformity.iac import compose, kubernetes, terraform, tf_facts
from cloudward.conformity.iac.model import Observation, ParseError
from cloudward.conformity.iac.skips import SkipIndex
from cloudward.conformity.iac.yamlsafe import YamlLimitError, load_documents
from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.engines import subject_rules

__all__ = ["ENGINE", "MAX_BYTES", "ExtraJudge", "scan_paths"]

ENGINE = "iac"
MAX_BYTES = 4 * 1024 * 1024  # per file: real IaC files are far smaller; larger ones are reported, not read
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".terraform", ".terragrunt-cache", "node_modules", ".venv", "venv",
                       "__pycache__", ".tox"})
SKIP_RULE_ID = "iac.skip_without_reason"


@dataclass
class ExtraJudge:
    """A judge for files another capability owns (Dockerfiles: `image lint`'s parser and rules),
    handed in by the CLI so capabilities stay independent. `observe(text)` yields (subject, facts,
    line, key) and raises ValueError on a file it cannot parse."""

    name: str
    claims: Callable[[str], bool]
    observe: Callable[[str], Iterable[tuple[str, dict[str, Any], int, str]]]
    rules: Sequence[Rule]
    engine: str
    compiled: dict[str, list[subject_rules.CompiledRule]] = field(default_factory=dict)


@dataclass
class _Run:
    result: ScanResult
    compiled: dict[str, list[subject_rules.CompiledRule]]
    judges: list[ExtraJudge]
    max_bytes: int
    texts: dict[str, str] = field(default_factory=dict)  # files holding skip comments, by shown path
    roots: dict[str, str] = field(default_factory=dict)  # shown path of those files -> scanned root
    counts: dict[str, int] = field(default_factory=dict)
    suppressed: list[dict[str, Any]] = field(default_factory=list)

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def error(self, where: str, message: str, stage: str) -> None:
        self.result.add_error(where, message, stage=stage)


def _shown(root: Path, path: Path, given: str, single_file: bool) -> str:
    if single_file:
        return given
    return path.relative_to(root).as_posix()


def _walk(root: Path, run: _Run) -> Iterator[Path]:
    """Regular files under `root`; symbolic links are never followed (one that leaves the root is
    reported), version-control, dependency and Terraform cache folders are skipped."""
    real_root = root.resolve()
    for current, dirs, files in os.walk(root, followlinks=False):
        here = Path(current)
        keep = []
        for name in sorted(dirs):
            if name in SKIP_DIRS:
                continue
            if (here / name).is_symlink():
                _symlink(here / name, real_root, root, run)
                continue
            keep.append(name)
        dirs[:] = keep
        chart = here.name == "templates" and (here.parent / "Chart.yaml").is_file()
        for name in sorted(files):
            path = here / name
            if path.is_symlink():
                _symlink(path, real_root, root, run)
                continue
            if chart and name.endswith((".yaml", ".yml", ".tpl")):
                run.count("helm_templates_skipped")  # Go templates: scan `helm template` output instead
                continue
            yield path


def _symlink(path: Path, real_root: Path, root: Path, run: _Run) -> None:
    try:
        target = path.resolve()
    except (OSError, RuntimeError):
        run.error(path.relative_to(root).as_posix(), "symbolic link that cannot be resolved: not followed", "find")
        return
    if target != real_root and real_root not in target.parents:
        run.error(path.relative_to(root).as_posix(), f"symbolic link to {target}, outside the scanned root: "
                  "not followed", "find")
    # a link inside the root: its target is scanned where it is


def _kind(name: str, run: _Run) -> str | None:
    lower = name.lower()
    if lower.endswith(".tf"):
        return "terraform"
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    for judge in run.judges:
        if judge.claims(name):
            return f"judge:{judge.name}"
    return None


def _read(path: Path, shown: str, run: _Run) -> str | None:
    try:
        size = path.stat().st_size
        if size > run.max_bytes:
            run.error(shown, f"{size:,} bytes, larger than the {run.max_bytes:,}-byte limit for an IaC file: "
                      "not read", "read")
            return None
        data = path.read_bytes()
    except OSError as exc:
        run.error(shown, f"cannot read: {exc.strerror or exc}", "read")
        return None
    if b"\x00" in data[:8192]:
        run.error(shown, "binary content (NUL bytes): not an IaC file", "parse")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        run.error(shown, f"not UTF-8 text (byte {exc.start}): not parsed", "parse")
        return None
    if "cloudward:skip" in text:
        run.texts[shown] = text
    return text


# --- per kind -----------------------------------------------------------------------------------------

def _yaml(text: str, shown: str, run: _Run) -> Iterator[Observation]:
    try:
        documents = list(load_documents(text))
    except YamlLimitError as exc:
        run.error(shown, f"refused: {exc}", "parse")
        return
    except Exception as exc:  # yaml.YAMLError, and anything a hostile document provokes
        run.error(shown, f"not valid YAML: {_first_line(exc)}", "parse")
        return
    name = Path(shown).name
    if any(compose.is_compose(name, doc) for _, doc in documents):
        run.count("compose")
        for line, doc in documents:
            if compose.is_compose(name, doc):
                yield from compose.observations(doc, shown, line)
        return
    if any(kubernetes.is_manifest(doc) or (isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"))
           for _, doc in documents):
        run.count("kubernetes")
        yield from kubernetes.observations(documents, shown, text)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _terraform_observations(resources: list[tf_facts.TfResource]) -> Iterator[Observation]:
    context = tf_facts.tree_context(resources)
    for resource in resources:
        for subject, facts, suffix in tf_facts.observe(resource, context):
            facts = {"address": resource.address, "type": resource.type, **facts}
            extra: dict[str, Any] = {"resource": resource.address}
            if resource.module:
                extra["module"] = resource.module
            line = resource.block_lines.get(suffix, resource.line)  # a nested block points at itself
            yield Observation(subject, facts, resource.path, line,
                              resource.address + (f"/{suffix}" if suffix else ""),
                              skip_at=resource.skip_at or ((resource.path, resource.line),), extra_location=extra)


def _plan(text: str, shown: str, run: _Run, by_name: bool) -> Iterator[Observation]:
    if not by_name and '"planned_values"' not in text and '"resource_changes"' not in text:
        return  # an ordinary JSON file
    try:
        resources = terraform.plan_resources(text, shown)
    except ParseError as exc:
        if by_name:
            run.error(shown, str(exc), "parse")
        return
    run.count("terraform_plan")
    yield from _terraform_observations(resources)


# --- the scan -----------------------------------------------------------------------------------------

def scan_paths(paths: Sequence[str], rules: Iterable[Rule], *, judges: Sequence[ExtraJudge] = (),
               skip_rules: Iterable[str] = (), max_bytes: int = MAX_BYTES) -> ScanResult:
    skipped = set(skip_rules)
    rules = [r for r in rules if r.id not in skipped]
    result = ScanResult(kind="iac", targets=list(paths))
    for judge in judges:
        judge.compiled = subject_rules.compile_rules([r for r in judge.rules if r.id not in skipped], judge.engine)
    run = _Run(result, subject_rules.compile_rules(rules, ENGINE), list(judges), max_bytes)
    observations: list[tuple[Observation, ExtraJudge | None]] = []
    found_any = False
    for given in paths:
        start = len(observations)
        root = Path(given)
        if root.is_symlink() and root.is_file():
            run.error(given, "symbolic link: give the file it points to", "find")
            continue
        if root.is_file():
            files, base, single = [root], root.parent, True
        elif root.is_dir():
            files, base, single = list(_walk(root, run)), root, False
        else:
            run.error(given, "no such file or directory", "find")
            continue
        found_any = True
        modules: dict[str, terraform.TfModule] = {}
        for path in files:
            kind = _kind(path.name, run)
            if kind is None:
                continue
            shown = _shown(base, path, given, single)
            text = _read(path, shown, run)
            if text is None:
                continue
            if shown in run.texts:
                run.roots[shown] = given
            run.count("files")
            if kind == "terraform":
                try:
                    parsed = terraform.parse_hcl(text, shown)
                except ParseError as exc:
                    run.error(shown, str(exc), "parse")
                    continue
                directory = terraform.relative_dir(shown)
                modules.setdefault(directory, terraform.TfModule(directory)).files.append(parsed)
                run.count("terraform")
            elif kind in ("json", "yaml"):
                made = (_plan(text, shown, run, path.name.endswith(".tfplan.json")) if kind == "json"
                        else _yaml(text, shown, run))
                try:
                    observations += [(o, None) for o in list(made)]
                except Exception as exc:  # a shape no parser expected: this file's error, never the scan's
                    run.error(shown, f"cannot describe: {_first_line(exc)}", "parse")
            else:
                judge = next(j for j in run.judges if f"judge:{j.name}" == kind)
                try:
                    items = list(judge.observe(text))
                except Exception as exc:  # another capability's parser: whatever it raises is this file's error
                    run.error(shown, f"cannot parse: {_first_line(exc)}", "parse")
                    continue
                run.count(judge.name)
                observations += [(Observation(subject, facts, shown, line, key, skip_at=((shown, line),)), judge)
                                 for subject, facts, line, key in items]
        observations += [(o, None) for o in _configurations(modules, run)]
        for observation, _ in observations[start:]:
            observation.root = given  # the store closes a fixed finding only when its root was scanned
    _judge(observations, run)
    # Suppressed findings travel in the scan's stats: in JSON, SARIF and HTML, not in the table.
    result.stats = {**run.counts, "findings": len(result.findings), "suppressed": len(run.suppressed),
                    **({"suppressed_findings": run.suppressed} if run.suppressed else {})}
    failed = not found_any and bool(paths)
    return result.finish(ScanStatus.FAILED if failed else ScanStatus.COMPLETED)


def _configurations(modules: dict[str, terraform.TfModule], run: _Run) -> Iterator[Observation]:
    """Each root configuration (a directory no other scanned directory calls as a module) with the
    local modules it calls."""
    called = terraform.called_directories(modules)
    for directory in sorted(modules):
        if directory in called:
            continue
        warnings: list[str] = []
        try:
            resources = list(terraform.expand(modules, directory, warnings=warnings))
            made = list(_terraform_observations(resources))
        except Exception as exc:  # a shape no parser expected: this configuration's error, never the scan's
            run.error(directory, f"cannot describe the Terraform configuration: {_first_line(exc)}", "parse")
            continue
        for warning in warnings:
            run.error(warning.split(":", 1)[0], warning, "modules")
        run.counts["terraform_resources"] = run.counts.get("terraform_resources", 0) + len(resources)
        yield from made


def _judge(observations: list[tuple[Observation, ExtraJudge | None]], run: _Run) -> None:
    indexes: dict[str, SkipIndex] = {path: SkipIndex(text) for path, text in run.texts.items()}
    for path, index in sorted(indexes.items()):
        for skip in index.unjustified:
            observations.append((Observation("skip_comment", {"rules": list(skip.rules), "reason": ""}, path,
                                             skip.line, f"skip:{','.join(skip.rules)}",
                                             root=run.roots.get(path, "")), None))
    for observation, judge in observations:
        compiled = judge.compiled if judge is not None else run.compiled
        location = {"path": observation.path, "line": observation.line, **observation.extra_location,
                    "root": observation.root}
        target = Target(kind="path", name=observation.path)
        for finding in subject_rules.evaluate(observation.subject, observation.facts, compiled, target,
                                              location=location, key=observation.key):
            places = ((observation.path, observation.line), *observation.skip_at)
            reason = _skipped(finding, places, indexes)
            if reason is None:
                run.result.findings.append(finding)
            else:
                run.suppressed.append(_suppressed(finding, reason))


def _skipped(finding: Finding, places: Iterable[tuple[str, int]], indexes: dict[str, SkipIndex]) -> str | None:
    if finding.rule_id == SKIP_RULE_ID:
        return None
    for path, line in places:
        index = indexes.get(path)
        if index is None:
            continue
        skip = index.find(finding.rule_id, (line,))
        if skip is not None:
            return f"{path}:{skip.line}: {skip.reason}"
    return None


def _suppressed(finding: Finding, reason: str) -> dict[str, Any]:
    return {"rule_id": finding.rule_id, "severity": finding.severity.value,
            "path": finding.location.get("path"), "line": finding.location.get("line"),
            "resource": finding.location.get("resource", finding.location.get("object", "")),
            "reason": reason, "fingerprint": finding.fingerprint}
