"""Dockerfiles and Containerfiles judged before any image is built: `cloudward image lint [PATH...]`.

Parsing is BuildKit's own (the `dockerfile` package wraps its Go parser), so what is judged is what
`docker build` would run. Each FROM stage and each instruction becomes a subject with facts, and
the same YAML rules language as image configs decides (`container/rules/dockerfile.yaml`, engine
`image`, subjects `dockerfile_stage` and `dockerfile_instruction`). Findings point at the file and
line; their identity is the stage and the instruction's content, never the line number, so an
edit above a finding does not make it new. Literal values of credential-looking ENV and ARG are
never kept: only their names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cloudward.container.scan import DOCKER_SOCKETS, RISKY_PORTS, _env_facts, _runs_as_root
from cloudward.core.finding import Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.engines import subject_rules

__all__ = ["find_dockerfiles", "lint_paths", "observations"]

MAX_BYTES = 1024 * 1024
_SKIP_DIRS = {".git", "node_modules", "vendor", "third_party", ".venv", "venv", "__pycache__", ".tox"}
_DOWNLOAD_PIPE = re.compile(r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(ba|da|z)?sh\b", re.IGNORECASE)
_WORLD_WRITABLE = re.compile(r"\bchmod\s+(-R\s+)?(0?777|a\+w|o\+w|666)\b")
_SUDO = re.compile(r"(^|[;&|]\s*|\s)sudo\s")
_CREDENTIAL_SOURCE = re.compile(
    r"(^|/)(id_rsa|id_dsa|id_ecdsa|id_ed25519|\.ssh|\.aws|\.env|\.npmrc|\.pypirc|\.netrc|\.git-credentials|"
    r"credentials(\.json)?|\.docker/config\.json|kubeconfig|[^/]*\.pem|[^/]*\.key|[^/]*\.p12|[^/]*\.pfx)/?$",
    re.IGNORECASE)


def is_dockerfile(name: str) -> bool:
    lower = name.lower()
    return (lower in ("dockerfile", "containerfile") or lower.endswith((".dockerfile", ".containerfile"))
            or lower.startswith(("dockerfile.", "containerfile.")))


def find_dockerfiles(paths: Sequence[str], errors: list[tuple[str, str]]) -> list[Path]:
    """Files named like Dockerfiles under each path (a file given by name is taken as it is);
    symbolic links are not followed, vendored and dependency folders are skipped."""
    found: list[Path] = []
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            found.append(root)
            continue
        if not root.is_dir():
            errors.append((raw, "no such file or directory"))
            continue
        for current, dirs, files in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in sorted(files):
                path = Path(current) / name
                if is_dockerfile(name) and not path.is_symlink():
                    found.append(path)
    return found


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def _arg(value: str) -> str:
    name, eq, default = value.partition("=")
    return f"{name}={_unquote(default)}" if eq else f"{name}="


def _pairs(values: Sequence[str]) -> list[str]:
    """ENV values as `NAME=value` items (the parser gives NAME, value, NAME, value ...)."""
    items = list(values)
    if len(items) % 2 == 0 and all("=" not in k for k in items[0::2]):
        return [f"{items[i]}={_unquote(items[i + 1])}" for i in range(0, len(items), 2)]
    return [_unquote(v) for v in items]


def observations(text: str) -> Iterator[tuple[str, dict[str, Any], int, str]]:
    """(subject, facts, line, key) for each stage and instruction; raises ValueError on a parse error."""
    import dockerfile

    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        raise ValueError(str(exc)) from None
    stages: list[dict[str, Any]] = []
    names: set[str] = set()
    for command in commands:
        if not command.cmd:  # a lone line continuation parses to a command without an instruction
            continue
        cmd, values, line = command.cmd.upper(), list(command.value), command.start_line
        if cmd == "FROM":
            base = values[0] if values else ""
            name = values[2] if len(values) >= 3 and values[1].upper() == "AS" else ""
            image, _, digest = base.partition("@")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            from_stage = base.lower() in names
            stages.append({
                "index": len(stages), "name": name, "base": base, "base_tag": tag, "base_digest": digest,
                "from_stage": from_stage,
                "unpinned": not digest and tag in ("", "latest") and base.lower() != "scratch" and not from_stage
                and "$" not in base,
                "line": line, "user": "", "healthcheck": False, "exposed_ports": [], "volumes": [], "env": [],
                "args": [],
            })
            if name:
                names.add(name.lower())
            continue
        if not stages:
            if cmd == "ARG":
                stages.append({"index": -1, "name": "", "base": "", "line": line, "user": "", "healthcheck": False,
                               "exposed_ports": [], "volumes": [], "env": [], "args": [], "global": True})
            else:
                continue
        stage = stages[-1]
        joined = " ".join(values)
        if cmd == "USER":
            stage["user"] = values[0] if values else ""
        elif cmd == "HEALTHCHECK":
            stage["healthcheck"] = bool(values) and values[0].upper() != "NONE"
        elif cmd == "EXPOSE":
            for port in values:
                head = port.split("/", 1)[0].split("-", 1)[0]
                if head.isdigit():
                    stage["exposed_ports"].append(int(head))
        elif cmd == "VOLUME":
            stage["volumes"] += [v for v in values if v]
        elif cmd == "ENV":
            stage["env"] += _pairs(values)
        elif cmd == "ARG":  # `ARG A`, `ARG B=1`, `ARG C="x y" D=2`: one NAME[=default] per value
            stage["args"] += [_arg(v) for v in values]
        flags = " ".join(command.flags)
        sources = values[:-1] if cmd in ("COPY", "ADD") and len(values) > 1 else []
        facts = {
            "instruction": cmd, "value": joined[:2000], "line": line, "stage": stage["index"],
            "download_pipe_shell": cmd == "RUN" and bool(_DOWNLOAD_PIPE.search(joined)),
            "add_url_without_checksum": cmd == "ADD" and any(s.startswith(("http://", "https://")) for s in sources)
            and "--checksum=" not in flags,
            "uses_sudo": cmd == "RUN" and bool(_SUDO.search(" " + joined)),
            "world_writable_chmod": (cmd == "RUN" and bool(_WORLD_WRITABLE.search(joined)))
            or bool(re.search(r"--chmod=0?(777|666)\b", flags)),
            "credential_sources": [s for s in sources if _CREDENTIAL_SOURCE.search(s.rstrip("/") + "/")
                                   or _CREDENTIAL_SOURCE.search(s)],
            "secret_mount": "--mount=type=secret" in flags,
        }
        key = f"{stage['index']}:{cmd}:{joined[:200]}"
        yield "dockerfile_instruction", facts, line, key
    final = max((s["index"] for s in stages), default=-1)
    for stage in stages:
        if stage.get("global"):
            continue
        env_names, secret_env = _env_facts(stage["env"])
        _, secret_args = _env_facts(stage["args"])
        ports = sorted(set(stage["exposed_ports"]))
        facts = {
            "index": stage["index"], "name": stage["name"], "base": stage["base"], "base_tag": stage["base_tag"],
            "unpinned": stage["unpinned"], "is_final": stage["index"] == final, "user": stage["user"],
            "runs_as_root": _runs_as_root(stage["user"]), "healthcheck": stage["healthcheck"],
            "exposed_ports": ports, "risky_ports": [p for p in ports if p in RISKY_PORTS],
            "risky_services": [RISKY_PORTS[p] for p in ports if p in RISKY_PORTS],
            "docker_api_port": 2375 in ports, "volumes": stage["volumes"],
            "other_risky_ports": [p for p in ports if p in RISKY_PORTS and p != 2375],
            "runtime_socket_volumes": [v for v in stage["volumes"] if v.rstrip("/") in DOCKER_SOCKETS],
            "env_names": env_names, "secret_env_names": secret_env, "secret_arg_names": secret_args,
        }
        yield "dockerfile_stage", facts, stage["line"], f"stage:{stage['index']}:{stage['name'] or stage['base']}"


def lint_paths(paths: Sequence[str], rules: Sequence[Rule]) -> ScanResult:
    result = ScanResult(kind="dockerfile", targets=list(paths))
    compiled = subject_rules.compile_rules(rules, "image")
    problems: list[tuple[str, str]] = []
    files = find_dockerfiles(paths, problems)
    for where, why in problems:
        result.add_error(where, why, stage="find")
    for path in files:
        try:
            if path.stat().st_size > MAX_BYTES:
                result.add_error(str(path), f"larger than {MAX_BYTES} bytes: not a Dockerfile", stage="read")
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            found = list(observations(text))
        except (OSError, ValueError) as exc:
            result.add_error(str(path), f"cannot parse: {exc}", stage="parse")
            continue
        target = Target(kind="path", name=str(path))
        for subject, facts, line, key in found:
            result.findings.extend(subject_rules.evaluate(subject, facts, compiled, target,
                                                          location={"path": str(path), "line": line}, key=key))
    result.stats = {"files": len(files)}
    return result.finish(ScanStatus.FAILED if paths and not files and problems else ScanStatus.COMPLETED)
