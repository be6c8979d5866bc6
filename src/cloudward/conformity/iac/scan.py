"""`iac scan`: find IaC files under the given paths, parse each into observations, judge them with
the `iac` rules (and, for Dockerfiles, the judge the CLI hands in), then apply skip comments.

Every file is read at most once, bounded in size, and parsed in isolation: a file that cannot be
read or parsed becomes one error naming it, and the scan goes on with everything else. Terraform
root modules take their variables files (and `--var-file` / `--var`) and the modules `terraform
init` downloaded; a Kustomize root is rendered and its output judged in place of the files it lists.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cloudward.conformity.iac import compose, kubernetes, kustomize, terraform, tf_facts
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
    cli_variables: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (origin, values) in order
    kustomize: list[str] | None = None

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
    if terraform.is_auto_tfvars(name):
        return "tfvars"
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
               skip_rules: Iterable[str] = (), max_bytes: int = MAX_BYTES, var_files: Sequence[str] = (),
               variables: Sequence[tuple[str, str]] = (),
               kustomize_command: Sequence[str] | None = None) -> ScanResult:
    """`var_files` and `variables` (NAME, VALUE) set root module variables over the variables files
    Terraform loads by itself; `kustomize_command` is the renderer (None: find one; empty: none)."""
    skipped = set(skip_rules)
    rules = [r for r in rules if r.id not in skipped]
    result = ScanResult(kind="iac", targets=list(paths))
    for judge in judges:
        judge.compiled = subject_rules.compile_rules([r for r in judge.rules if r.id not in skipped], judge.engine)
    run = _Run(result, subject_rules.compile_rules(rules, ENGINE), list(judges), max_bytes)
    run.kustomize = kustomize.command() if kustomize_command is None else list(kustomize_command) or None
    _cli_variables(var_files, variables, run)
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
        tfvars: dict[str, list[tuple[str, str]]] = {}  # directory -> (shown path, text) of its variables files
        consumed: set[Path] = set()
        if not single:
            made, consumed = _kustomizations(files, base, run)
            observations += [(o, None) for o in made]
        for path in files:
            kind = _kind(path.name, run)
            if kind is None:
                continue
            if consumed and path.resolve() in consumed:
                run.count("files")
                run.count("kustomize_inputs")  # judged through the render
                continue
            shown = _shown(base, path, given, single)
            text = _read(path, shown, run)
            if text is None:
                continue
            if shown in run.texts:
                run.roots[shown] = given
            run.count("files")
            if kind == "tfvars":
                tfvars.setdefault(terraform.relative_dir(shown), []).append((shown, text))
                run.count("tfvars")
            elif kind == "terraform":
                try:
                    parsed = terraform.parse_hcl(text, shown)
                except ParseError as exc:
                    run.error(shown, str(exc), "parse")
                    continue
                directory = terraform.relative_dir(shown)
                modules.setdefault(directory, terraform.TfModule(directory)).files.append(parsed)
                run.count("terraform")
            elif kind in ("json", "yaml"):
                parsed_file = (_plan(text, shown, run, path.name.endswith(".tfplan.json")) if kind == "json"
                               else _yaml(text, shown, run))
                try:
                    observations += [(o, None) for o in list(parsed_file)]
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
        manifests, downloaded = ({}, set()) if single else _downloaded_modules(modules, base, run)
        observations += [(o, None) for o in _configurations(modules, run, tfvars, manifests, downloaded)]
        for observation, _ in observations[start:]:
            observation.root = given  # the store closes a fixed finding only when its root was scanned
    _judge(observations, run)
    # Suppressed findings travel in the scan's stats: in JSON, SARIF and HTML, not in the table.
    result.stats = {**run.counts, "findings": len(result.findings), "suppressed": len(run.suppressed),
                    **({"suppressed_findings": run.suppressed} if run.suppressed else {})}
    failed = not found_any and bool(paths)
    return result.finish(ScanStatus.FAILED if failed else ScanStatus.COMPLETED)


def _configurations(modules: dict[str, terraform.TfModule], run: _Run, tfvars: dict[str, list[tuple[str, str]]],
                    manifests: dict[str, dict[str, str]], downloaded: set[str]) -> Iterator[Observation]:
    """Each root configuration (a directory no other scanned directory calls as a module, and not a
    module read only because a modules.json named it) with its variables files and the modules it
    calls. A manifest naming a scanned directory never hides that directory as a root."""
    called = terraform.called_directories(modules)
    for directory in sorted(modules):
        if directory in called or directory in downloaded:
            continue
        warnings: list[str] = []
        inputs = _root_variables(directory, tfvars.get(directory, []), run)
        try:
            resources = list(terraform.expand(modules, directory, inputs, manifest=manifests.get(directory),
                                              warnings=warnings))
            made = list(_terraform_observations(resources))
        except Exception as exc:  # a shape no parser expected: this configuration's error, never the scan's
            run.error(directory, f"cannot describe the Terraform configuration: {_first_line(exc)}", "parse")
            continue
        for warning in warnings:
            run.error(warning.split(":", 1)[0], warning, "terraform")
        run.counts["terraform_resources"] = run.counts.get("terraform_resources", 0) + len(resources)
        yield from made


def _root_variables(directory: str, files: list[tuple[str, str]], run: _Run) -> dict[str, Any]:
    """Terraform's precedence: terraform.tfvars < terraform.tfvars.json < *.auto.tfvars(.json) in
    lexical order < --var-file in order < --var. A malformed file is an error naming it; the scan
    goes on with what the others (and the defaults) give."""
    by_name = {PurePosixPath(shown).name: (shown, text) for shown, text in files}
    values: dict[str, Any] = {}
    for name in terraform.tfvars_order(list(by_name)):
        shown, text = by_name[name]
        try:
            values.update(terraform.parse_tfvars(text, shown))
        except ParseError as exc:
            run.error(shown, f"{exc}: its values are not used", "parse")
    for _, given in run.cli_variables:
        values.update(given)
    return values


def _cli_variables(var_files: Sequence[str], variables: Sequence[tuple[str, str]], run: _Run) -> None:
    for given in var_files:
        path = Path(given)
        if not path.is_file():
            run.error(given, "--var-file: no such file", "read")
            continue
        text = _read(path, given, run)
        if text is None:
            continue
        try:
            run.cli_variables.append((given, terraform.parse_tfvars(text, given)))
        except ParseError as exc:
            run.error(given, f"{exc}: its values are not used", "parse")
    if variables:
        run.cli_variables.append(("--var", {name: terraform.cli_value(value) for name, value in variables}))


MODULES_JSON = ".terraform/modules/modules.json"
MAX_MODULE_FILES = 500  # .tf files read from one downloaded module


def _downloaded_modules(modules: dict[str, terraform.TfModule], base: Path,
                        run: _Run) -> tuple[dict[str, dict[str, str]], set[str]]:
    """Root directory -> {module key: directory} from `terraform init`'s modules.json, reading the
    .tf files of each downloaded module (inside the scanned root only; never from the network),
    and the directories read that way."""
    manifests: dict[str, dict[str, str]] = {}
    downloaded: set[str] = set()
    real_root = base.resolve()
    for directory in sorted(modules):
        folder = base / directory
        manifest_path = folder / MODULES_JSON
        shown = f"{directory}/{MODULES_JSON}" if directory != "." else MODULES_JSON
        if not manifest_path.is_file():
            continue
        if not _contained(manifest_path, real_root):
            run.error(shown, "outside the scanned root (a symbolic link): not read", "modules")
            continue
        text = _read(manifest_path, shown, run)
        if text is None:
            continue
        try:
            entries, refused = terraform.read_manifest(text, directory)
        except ParseError as exc:
            run.error(shown, str(exc), "modules")
            continue
        for reason in refused:
            run.error(shown, reason, "modules")
        manifest: dict[str, str] = {}
        for key, (target, _source) in entries.items():
            if target == directory:
                run.error(shown, f"module {key[:80]}: Dir is the root module itself: not followed", "modules")
                continue
            if target not in modules:
                if not _load_module(base / target, target, real_root, modules, run, shown, key):
                    continue
                downloaded.add(target)
            manifest[key] = target
        manifests[directory] = manifest
        run.count("terraform_manifests")
    return manifests, downloaded


def _contained(path: Path, real_root: Path) -> bool:
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return False
    return real == real_root or real_root in real.parents


def _load_module(folder: Path, directory: str, real_root: Path, modules: dict[str, terraform.TfModule], run: _Run,
                 manifest: str, key: str) -> bool:
    if not folder.is_dir():
        run.error(manifest, f"module {key}: {directory} is missing (run terraform init again)", "modules")
        return False
    if not _contained(folder, real_root):
        run.error(manifest, f"module {key}: {directory} leaves the scanned root (a symbolic link): not read",
                  "modules")
        return False
    module = terraform.TfModule(directory)
    names = sorted(p for p in folder.iterdir() if p.name.endswith(".tf") and not p.is_symlink() and p.is_file())
    if len(names) > MAX_MODULE_FILES:
        run.error(manifest, f"module {key}: more than {MAX_MODULE_FILES} .tf files: the first are read", "modules")
    for path in names[:MAX_MODULE_FILES]:
        shown = f"{directory}/{path.name}"
        text = _read(path, shown, run)
        if text is None:
            continue
        try:
            module.files.append(terraform.parse_hcl(text, shown))
        except ParseError as exc:
            run.error(shown, str(exc), "parse")
            continue
        run.count("terraform")
    modules[directory] = module
    return True


# --- Kustomize ------------------------------------------------------------------------------------------

def _kustomizations(files: list[Path], base: Path, run: _Run) -> tuple[list[Observation], set[Path]]:
    """Observations of each root kustomization's rendered output, and the files those renders
    consumed (not judged again as plain manifests). Without a renderer, or when a render is
    refused or fails, the files stay plain manifests and the reason is an error naming it."""
    directories = sorted({p.parent for p in files if p.name in kustomize.NAMES})
    if not directories:
        return [], set()
    if run.kustomize is None:
        for directory in directories:
            run.error(_rel(kustomize.kustomization_file(directory) or directory, base),
                      "kustomize (or kubectl) not found: the manifests are judged as plain files", "kustomize")
        return [], set()
    real_root = base.resolve()
    plans = {d: kustomize.plan(d.resolve(), real_root, run.max_bytes) for d in directories}
    included = {k for d, p in plans.items() for k in p.kustomizations if k != d.resolve()}
    roots: list[tuple[Path, Path | None, str, kustomize.Plan]] = []
    for directory, found in plans.items():
        if directory.resolve() in included:
            continue  # a base: judged through the overlays that include it
        kfile = kustomize.kustomization_file(directory)
        shown = _rel(kfile or directory, base)
        if found.problems:
            for problem in found.problems[:5]:
                run.error(shown, f"not rendered: {problem}", "kustomize")
            continue
        roots.append((directory, kfile, shown, found))
    # Each render is a process of its own that mostly waits: run a few at once.
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(roots)))) as pool:
        renders = list(pool.map(lambda root: _render(run.kustomize or [], root[0], run.max_bytes * 4), roots))
    made: list[Observation] = []
    consumed: set[Path] = set()
    for (directory, _, shown, found), rendered in zip(roots, renders, strict=True):
        try:
            if isinstance(rendered, kustomize.KustomizeError):
                raise rendered
            observations = _rendered(rendered, directory, shown, base, run)
        except kustomize.KustomizeError as exc:
            run.error(shown, f"not rendered: {exc}", "kustomize")
            continue
        made += observations
        consumed |= found.files
        run.count("kustomizations")
    return made, consumed


def _render(argv: list[str], directory: Path, max_bytes: int) -> tuple[str, Path] | kustomize.KustomizeError:
    try:
        return kustomize.render(argv, directory, max_bytes)
    except kustomize.KustomizeError as exc:
        return exc


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _rendered(rendered: tuple[str, Path], directory: Path, shown: str, base: Path, run: _Run) -> list[Observation]:
    text, wrapper = rendered
    try:
        try:
            documents = list(load_documents(text))
        except Exception as exc:  # the renderer's own output should parse; a limit is this overlay's error
            raise kustomize.KustomizeError(f"rendered output not judged: {_first_line(exc)}") from None
        made = list(kubernetes.observations(documents, shown, text))
        kfile = kustomize.kustomization_file(directory)
        ktext = (_read(kfile, shown, run) or "") if kfile is not None else ""
        sources: dict[int, tuple[str, int, int] | None] = {}  # document -> (source, its line, entry line)
        for observation in made:
            observation.extra_location = dict(observation.extra_location)
            index = int(observation.extra_location.pop("document", 0)) - 1
            if index not in sources:
                sources[index] = _source(documents[index][1], wrapper, directory, ktext, base, run) \
                    if 0 <= index < len(documents) else None
            traced = sources[index]
            observation.line = traced[2] if traced is not None else 1
            observation.extra_location["kustomization"] = shown
            observation.skip_at = ((shown, 1), (shown, observation.line))
            if traced is not None:
                observation.extra_location["source"] = f"{traced[0]}:{traced[1]}"
                observation.skip_at = (*observation.skip_at, (traced[0], traced[1]))
        return made
    finally:
        shutil.rmtree(wrapper, ignore_errors=True)


def _source(document: Any, wrapper: Path, directory: Path, ktext: str, base: Path,
            run: _Run) -> tuple[str, int, int] | None:
    """(shown path, line) of the source object a rendered one came from, when it can be traced, and
    the line of the kustomization entry that brought it in."""
    path = kustomize.origin(document, wrapper, directory)
    if path is None or not _contained(path, base.resolve()):
        return None
    entry = kustomize.entry_line(ktext, directory.resolve(), path.resolve())
    shown = _rel(path, base)
    text = _read(path, shown, run)
    if text is None:
        return None
    kind = document.get("kind") if isinstance(document, dict) else None
    rendered = str((document.get("metadata") or {}).get("name", "")) if isinstance(document, dict) else ""
    try:
        sources = list(load_documents(text))
    except Exception:  # the tool rendered it, so it parses; if not, the object's line stays unknown (1)
        return shown, 1, entry
    for start, source in sources:
        metadata = source.get("metadata") if isinstance(source, dict) else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(source, dict) and source.get("kind") == kind and isinstance(name, str) and name in rendered:
            return shown, int(getattr(source, "line", 0) or start), entry
    return shown, 1, entry


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
