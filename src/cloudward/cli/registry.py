"""`cloudward registry scan HOST:PORT`: every repository and tag of a registry, new images only.

Thin: options, compose the image scan options (shared with `image scan`), walk, report, store,
gate. What "new images only" means, and why unchanged images' findings are reported again, is in
`cloudward/container/registry_scan.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on,
2 usage error, 3 the registry could not be listed at all, 130 interrupted (what was scanned is
remembered; the next run resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cloudward.cli.common import (
    ConfigOption,
    FailOnOption,
    FormatOption,
    NoStoreOption,
    OutputOption,
    RulesOption,
    err_console,
    finish,
    parse_severity,
    resolve_format,
    settings,
)
from cloudward.cli.image import (
    AdvisoriesOption,
    InsecureOption,
    NoCacheOption,
    PasswordOption,
    PlatformOption,
    ScannersOption,
    UsernameOption,
    YaraOption,
    scan_options,
)

app = typer.Typer(help="Scan a container registry: every repository and tag, each new image once.",
                  no_args_is_help=True)

RepositoryOption = typer.Option(None, "--repository", metavar="GLOB",
                                help="Only repositories matching (repeatable); plain names are listed without "
                                     "the catalog, for registries that do not offer one.")
TagOption = typer.Option(None, "--tag", metavar="GLOB", help="Only tags matching (repeatable).")
ConcurrencyOption = typer.Option(4, "--concurrency", min=1, max=64,
                                 help="Repositories listed and tags resolved at once.")
RescanOption = typer.Option(False, "--rescan", help="Scan every image again, even those scanned before "
                                                     "(vulnerabilities against today's advisory database).")


@app.command("scan")
def scan(
    registry: str = typer.Argument(..., metavar="HOST[:PORT]", help="The registry, e.g. registry.local:5000."),
    repository: list[str] = RepositoryOption,
    tag: list[str] = TagOption,
    concurrency: int = ConcurrencyOption,
    rescan: bool = RescanOption,
    scanners: str = ScannersOption,
    advisories: Path | None = AdvisoriesOption,
    insecure: bool = InsecureOption,
    platform: str = PlatformOption,
    username: str | None = UsernameOption,
    password: str | None = PasswordOption,
    yara_rules: list[Path] = YaraOption,
    no_cache: bool = NoCacheOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Walk the catalog (or the repositories named), resolve every tag to its image digest and scan
    each digest not scanned before. Unchanged images are not pulled again; their findings from the
    earlier scan are reported again (the findings store would otherwise close them as fixed)."""
    from cloudward.container.registry_scan import RegistryScanOptions, scan_registry
    from cloudward.core.errors import UsageError

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    if not registry or "/" in registry or "://" in registry or "@" in registry:
        raise UsageError(f"{registry}: give the registry as HOST[:PORT] (no scheme, no repository)")
    image_options = scan_options(config, scanners, advisories=advisories, rules_dir=rules_dir, yara_rules=yara_rules,
                                 no_cache=no_cache, insecure=insecure, platform=platform, username=username,
                                 password=password)
    options = RegistryScanOptions(image=image_options, state_dir=settings(config).resolved_data_dir() / "registry",
                                  repositories=list(repository or ["*"]), tags=list(tag or ["*"]),
                                  concurrency=concurrency, rescan=rescan)
    result = scan_registry(registry, options,
                           progress=lambda name: err_console().print(f"scanning {name}", highlight=False))
    err_console().print(summary(result.stats, len(result.findings)), highlight=False, soft_wrap=True)
    finish(result, format, output, fail_on, config, no_store)


def summary(stats: dict[str, Any], findings: int) -> str:
    """`registry scan: 3 repositories, 4 tags, 3 images: 1 scanned, 2 unchanged (5 findings carried over
    from earlier scans), 0 errors; 7 findings`."""
    unchanged = stats.get("unchanged", 0)
    carried = stats.get("carried_findings", 0)
    return (f"registry scan: {stats.get('repositories', 0)} repositories, {stats.get('tags', 0)} tags, "
            f"{stats.get('digests', 0)} images: {stats.get('scanned', 0)} scanned, {unchanged} unchanged"
            + (f" ({carried:,} findings carried over from earlier scans)" if unchanged else "")
            + f", {stats.get('errors', 0)} errors; {findings:,} findings")
