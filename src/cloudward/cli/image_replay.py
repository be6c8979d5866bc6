"""`cloudward image sbom` on an unchanged image, answered before typer, pydantic or the analysis load.

Why: once the analysis itself was cached, a re-scan spent nearly all its time starting the CLI
(typer builds and validates every option through pydantic, ~0.2 s here). The first run of a
command line does the work the usual way and leaves the document and an alias behind
(`container/sbom_cache.py`); the same command line on the same image is then answered here.

Anything this small parser does not know exactly how typer would take - an unknown, abbreviated
or repeated option, `--help`, a registry or engine reference, `--no-cache`, a missing database, a
settings file or `CLOUDWARD_*` variable the command has not validated before - makes `replay`
return False, and the command runs as always: errors, help and exit codes stay typer's.
"""

from __future__ import annotations

import os
import sys

from cloudward.container.sbom_cache import sha256

TYPE_CHECKING = False  # not typing's: importing typing costs this path more than its own work
if TYPE_CHECKING:
    from collections.abc import Mapping

_VALUES = {"--format": "format", "-f": "format", "--output": "output", "-o": "output", "--platform": "platform",
           "--advisories": "advisories", "--config": "config"}
_FLAGS = {"--vulns": "vulns"}
# typer options of `image sbom` read from the environment; not settings, and meaningless for a local image
_NOT_SETTINGS = ("CLOUDWARD_REGISTRY_USERNAME", "CLOUDWARD_REGISTRY_PASSWORD")


_STRIPPED = dict.fromkeys((7, 8, 11, 12, 13))  # what rich strips from printed text: BEL, BS, VT, FF, CR


def say(line: str) -> None:
    """One line on stderr as `err_console().print(line, markup=False, emoji=False, highlight=False,
    soft_wrap=True)` writes it, without loading rich: `image sbom` prints through this on both paths.
    (A tab after anything but printable ASCII goes to rich itself, which counts terminal cells.)"""
    text = line.translate(_STRIPPED)
    if "\t" in text:
        if not all(" " <= c <= "~" or c in "\t\n" for c in text):
            from rich.console import Console

            Console(stderr=True).print(line, highlight=False, markup=False, emoji=False, soft_wrap=True)
            return
        text = "\n".join(part.expandtabs(8) for part in text.split("\n"))
    sys.stderr.write(text + "\n")


def parse(args: list[str]) -> dict[str, str] | None:
    """`image sbom`'s arguments as typer would take them, or None for anything less than certain."""
    opts: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name in _FLAGS and not eq:
            key = _FLAGS[name]
            value = "1"
        elif name in _VALUES and (not eq or name.startswith("--")):
            key = _VALUES[name]
            if not eq:
                if i >= len(args):
                    return None
                value, i = args[i], i + 1
            if not value or value.startswith("-"):
                return None
        else:
            return None
        if key in opts:
            return None
        opts[key] = value
    if len(positional) != 1:
        return None
    opts["image"] = positional[0]
    return opts


def as_pathlib(text: str) -> str:
    """`str(Path(text))` without importing pathlib: typer hands the command a Path, whose spelling
    (`./a//b/` is `a/b`) is what the command prints."""
    root = "//" if text.startswith("//") and not text.startswith("///") else "/" if text.startswith("/") else ""
    parts = [part for part in text.split("/") if part and part != "."]
    return root + "/".join(parts) if root or parts else "."


def _toml_data_dir(text: str) -> str | None:
    """The top-level `data_dir` of a cloudward.toml, "" when it has none, None when unsure (the
    caller then leaves the command to the real parser)."""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            break
        if not line.startswith(("data_dir", '"data_dir"', "'data_dir'")):
            if "data_dir" in line:
                return None
            continue
        key, eq, rest = line.partition("=")
        rest = rest.strip()
        if key.strip() != "data_dir" or not eq or len(rest) < 2 or rest[0] not in "\"'":
            return None
        end = rest.find(rest[0], 1)
        tail = rest[end + 1:].strip() if end > 0 else "x"
        if end < 0 or "\\" in rest[:end] or rest.startswith(('"""', "'''")) or (tail and not tail.startswith("#")):
            return None
        return rest[1:end]
    return ""


def _default_dir(kind: str) -> str:
    from platformdirs import user_config_dir, user_data_dir

    return (user_config_dir if kind == "config" else user_data_dir)("cloudward", appauthor=False)


def settings_fingerprint(config: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(data dir, fingerprint of everything `load_settings` reads: the config file it would pick and
    its bytes, every `CLOUDWARD_*` variable). The command, having validated its settings, writes
    this into its alias; an unchanged fingerprint here means the settings would validate again."""
    if config is not None:
        candidates = [config]
    elif env.get("CLOUDWARD_CONFIG"):
        candidates = [env["CLOUDWARD_CONFIG"]]
    else:
        candidates = ["cloudward.toml", os.path.join(_default_dir("config"), "cloudward.toml")]
    source, data = "defaults", b""
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                with open(candidate, "rb") as handle:
                    data = handle.read(1024 * 1024 + 1)
            except OSError:
                return None
            if len(data) > 1024 * 1024:
                return None  # not a settings file this path should be reading
            source = os.path.abspath(candidate)
            break
        if config is not None:
            return None  # the command reports the missing file
    if "CLOUDWARD_DATA_DIR" in env:
        data_dir: str | None = env["CLOUDWARD_DATA_DIR"]
    else:
        try:
            data_dir = _toml_data_dir(data.decode("utf-8"))
        except UnicodeDecodeError:
            return None
    if data_dir is None:
        return None
    resolved = os.path.abspath(os.path.expanduser(data_dir) if data_dir else _default_dir("data"))
    h = sha256()
    for part in (source, resolved, *sorted(f"{k}={v}" for k, v in env.items()
                                           if k.startswith("CLOUDWARD_") and k not in _NOT_SETTINGS)):
        h.update(part.encode("utf-8", "surrogateescape") + b"\x00")
    h.update(data)
    return resolved, h.hexdigest()


def replay(args: list[str]) -> bool:
    """Serve `image sbom ARGS` from the cache: True when done, False to run the command instead."""
    opts = parse(args)
    if opts is None:
        return False
    fmt = opts.get("format", "cyclonedx")
    vulns = "vulns" in opts
    if fmt not in ("cyclonedx", "spdx-json") or (vulns and fmt != "cyclonedx"):
        return False
    located = settings_fingerprint(opts.get("config"), os.environ)
    if located is None:
        return False
    data_dir, fingerprint = located
    database = opts.get("advisories") or os.path.join(data_dir, "advisories.db")
    if vulns and not os.path.isfile(database):
        return False
    from cloudward.container.sbom_cache import CacheProblem, SbomCache, alias_key, local_path

    image = opts["image"]
    path = local_path(image)
    alias = alias_key(image, platform=opts.get("platform", "linux/amd64"), fmt=fmt, vulns=vulns,
                      advisories=database, settings=fingerprint)
    if path is None or alias is None:
        return False
    cache = SbomCache(os.path.join(data_dir, "cache", "sboms"))
    key = cache.resolve(alias, path)
    if key is None:
        return False
    try:
        entry = cache.get(key)
    except CacheProblem:
        return False  # the command says so, and rebuilds it
    if entry is None:
        return False
    text = entry.render()
    output = opts.get("output")
    if output is not None:
        try:
            parent = os.path.dirname(output)
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:
            return False  # the command reports it its own way
    for message in entry.notes:
        say(f"warning: {image}: {message}")
    if output is None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        say(f"wrote {fmt} SBOM of {image} ({entry.packages:,} packages) to {as_pathlib(output)}")
    return True
