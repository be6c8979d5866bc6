"""Kustomize directories rendered by the real tool (`kustomize build`, else `kubectl kustomize`).

What gets applied is the overlay's output, not the files it lists, so a kustomization is judged by
rendering it. Before anything runs, every path a kustomization names (resources, bases,
components, patches, generators' files ...) is checked, recursively through the kustomizations it
includes: each must exist inside the scanned root. A remote resource (a git or HTTP address) is
never handed to the tool, so nothing is fetched; a path that leaves the scanned root (by `..` or a
link) is refused. The render runs from a throw-away wrapper kustomization that asks for
`originAnnotations`, so each rendered object names the file it came from; its output is bounded in
time and size.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudward.conformity.iac.yamlsafe import load_documents

NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
ORIGIN = "config.kubernetes.io/origin"
MAX_KUSTOMIZATIONS = 200  # reached from one root
TIMEOUT = 60.0  # seconds per render
_PATH_LISTS = ("resources", "bases", "components", "crds", "patchesStrategicMerge", "configurations",
               "generators", "transformers", "validators")
_DIRECTORY_LISTS = ("resources", "bases", "components", "generators", "transformers", "validators")
_PATH_OBJECTS = ("patches", "patchesJson6902", "replacements")
_GENERATORS = ("configMapGenerator", "secretGenerator")
_REMOTE_MARKS = ("://", "git@", "github.com/", "gitlab.com/", "bitbucket.org/", "?ref=", "?version=")


class KustomizeError(Exception):
    """A kustomization that cannot be rendered safely or at all; the message names why."""


@dataclass
class Plan:
    """What one kustomization reaches: its own and included kustomization directories, and every
    file they name (these are judged through the render, never again as plain manifests)."""

    directory: Path
    kustomizations: set[Path] = field(default_factory=set)
    files: set[Path] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def command() -> list[str] | None:
    """The renderer on this machine: `kustomize build`, else `kubectl kustomize`, else None."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def kustomization_file(directory: Path) -> Path | None:
    for name in NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _entries(doc: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(field, path, may be a directory) for every local path a kustomization names."""
    for name in _PATH_LISTS:
        for item in doc.get(name) or [] if isinstance(doc.get(name), list) else []:
            if isinstance(item, str) and "\n" not in item:  # a multi-line entry is an inline patch
                yield name, item, name in _DIRECTORY_LISTS
    for name in _PATH_OBJECTS:
        for item in doc.get(name) or [] if isinstance(doc.get(name), list) else []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                yield name, item["path"], False
    for name in _GENERATORS:
        for generator in doc.get(name) or [] if isinstance(doc.get(name), list) else []:
            if not isinstance(generator, dict):
                continue
            for key in ("files", "envs"):
                for item in generator.get(key) or [] if isinstance(generator.get(key), list) else []:
                    if isinstance(item, str):
                        yield f"{name}.{key}", item.rsplit("=", 1)[-1], False
            if isinstance(generator.get("env"), str):
                yield f"{name}.env", generator["env"], False
    openapi = doc.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield "openapi", openapi["path"], False
    if doc.get("helmCharts") or doc.get("helmChartInflationGenerator"):
        yield "helmCharts", "://helm", False  # charts are fetched or need --enable-helm: never rendered


def plan(directory: Path, real_root: Path, max_bytes: int) -> Plan:
    """Every kustomization and file reachable from `directory`, each checked before any render."""
    found = Plan(directory)
    stack = [directory]
    while stack:
        current = stack.pop()
        if current in found.kustomizations:
            continue
        if len(found.kustomizations) >= MAX_KUSTOMIZATIONS:
            found.problems.append(f"more than {MAX_KUSTOMIZATIONS} kustomizations reached: not rendered")
            break
        found.kustomizations.add(current)
        kfile = kustomization_file(current)
        if kfile is None:
            found.problems.append(f"{_show(current, real_root)}: a directory without a kustomization file")
            continue
        found.files.add(kfile)
        doc = _load(kfile, real_root, max_bytes, found)
        if doc is None:
            continue
        for name, entry, may_be_dir in _entries(doc):
            where = f"{_show(kfile, real_root)}: {name} {entry[:200]!r}"
            if any(mark in entry for mark in _REMOTE_MARKS):
                found.problems.append(f"{where}: a remote resource, not fetched (offline)")
                continue
            if entry.startswith("/") or "\x00" in entry:
                found.problems.append(f"{where}: an absolute path: not read")
                continue
            target = current / entry
            try:
                real = target.resolve()
            except (OSError, RuntimeError):
                found.problems.append(f"{where}: cannot be resolved")
                continue
            if real != real_root and real_root not in real.parents:
                found.problems.append(f"{where}: leaves the scanned root: not read")
                continue
            if real.is_dir() and may_be_dir:
                stack.append(real)
            elif real.is_file():
                found.files.add(real)
            else:
                found.problems.append(f"{where}: no such file or directory in the scanned tree")
    return found


def _show(path: Path, real_root: Path) -> str:
    try:
        return path.resolve().relative_to(real_root).as_posix()
    except (ValueError, OSError, RuntimeError):
        return str(path)


def _load(kfile: Path, real_root: Path, max_bytes: int, found: Plan) -> dict[str, Any] | None:
    shown = _show(kfile, real_root)
    try:
        if kfile.stat().st_size > max_bytes:
            found.problems.append(f"{shown}: larger than {max_bytes:,} bytes: not read")
            return None
        text = kfile.read_text(encoding="utf-8")
        documents = list(load_documents(text))
    except Exception as exc:  # unreadable, not UTF-8, not YAML, a YAML bomb: the kustomization's error
        found.problems.append(f"{shown}: cannot read: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        return None
    doc = documents[0][1] if documents else None
    if not isinstance(doc, dict):
        found.problems.append(f"{shown}: not a kustomization (no mapping)")
        return None
    return doc


def render(argv: list[str], directory: Path, max_bytes: int, timeout: float = TIMEOUT) -> tuple[str, Path]:
    """The rendered YAML of `directory` and the wrapper directory its origin paths are relative to
    (deleted by the caller). Raises KustomizeError naming what went wrong."""
    wrapper = Path(tempfile.mkdtemp(prefix="cloudward-kustomize-"))
    try:
        return _render_in(argv, directory, wrapper, max_bytes, timeout), wrapper
    except BaseException:
        shutil.rmtree(wrapper, ignore_errors=True)
        raise


def _render_in(argv: list[str], directory: Path, wrapper: Path, max_bytes: int, timeout: float) -> str:
    relative = os.path.relpath(directory.resolve(), wrapper.resolve())
    (wrapper / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {_quote(relative)}\nbuildMetadata: [originAnnotations]\n")
    try:
        return _run(argv, wrapper, wrapper, max_bytes, timeout)
    except KustomizeError as exc:
        if "buildMetadata" not in str(exc):
            raise
    # kustomize before v4.5 (kubectl before 1.24) knows no origin annotations: render the
    # directory itself; findings then point at the kustomization without a traced source.
    (wrapper / "kustomization.yaml").unlink()
    return _run(argv, directory, wrapper, max_bytes, timeout)


def _run(argv: list[str], target: Path, wrapper: Path, max_bytes: int, timeout: float) -> str:
    out_path, err_path = wrapper / "out.yaml", wrapper / "err.txt"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env["KUSTOMIZE_PLUGIN_HOME"] = str(wrapper / "no-plugins")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            process = subprocess.Popen([*argv, str(target)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                       env=env, cwd=wrapper)
        except OSError as exc:
            raise KustomizeError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                code = process.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if os.fstat(out.fileno()).st_size > max_bytes:
                process.kill()
                process.wait()
                raise KustomizeError(f"rendered output larger than {max_bytes:,} bytes: not judged")
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise KustomizeError(f"{' '.join(argv)} took longer than {timeout:.0f} s: stopped")
    if os.path.getsize(out_path) > max_bytes:
        raise KustomizeError(f"rendered output larger than {max_bytes:,} bytes: not judged")
    if code != 0:
        message = " ".join(err_path.read_text(errors="replace").split())[-400:]
        raise KustomizeError(f"{' '.join(argv)} failed: {message or f'exit {code}'}")
    return out_path.read_text(encoding="utf-8", errors="replace")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def origin(document: Any, wrapper: Path, directory: Path) -> Path | None:
    """The source file a rendered object came from (its origin annotation), when it says."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    raw = annotations.get(ORIGIN) if isinstance(annotations, dict) else None
    if not isinstance(raw, str):
        return None
    path = next((line.split(":", 1)[1].strip() for line in raw.splitlines() if line.startswith("path:")), None)
    if not path:
        return None
    for base in (wrapper, directory):  # the wrapper's, or the user's own buildMetadata
        candidate = Path(os.path.normpath(base / path))
        if candidate.is_file():
            return candidate
    return None


_LIST_ENTRY = re.compile(r"""^\s*-\s*(?:path:\s*)?["']?([^"'#\s]+)""")


def entry_line(text: str, directory: Path, source: Path) -> int:
    """The line of the kustomization entry (`- ../../base`) through which `source` was included;
    1 when no entry leads to it (a generator's output, a file it reached more indirectly)."""
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LIST_ENTRY.match(line)
        if not match or any(mark in match.group(1) for mark in _REMOTE_MARKS):
            continue
        try:
            target = (directory / match.group(1)).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if target == source or target in source.parents:
            return number
    return 1
