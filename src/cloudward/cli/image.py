"""`cloudward image scan|sbom`: container images from archives, OCI layouts, registries and engines.

Thin: validate options, compose the scan (Container Security's pipeline plus the secret scanner and
the shared YARA rules, handed in from here so capabilities stay independent), then report, store and
gate through `cli/common.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error,
3 no image could be read, 130 interrupted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

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
    load_all_rules,
    parse_severity,
    resolve_format,
    settings,
)

if TYPE_CHECKING:
    from cloudward.container.scan import ContentScanner, ImageScanOptions
    from cloudward.core.rules import Rule

app = typer.Typer(help="Scan container images: packages, vulnerabilities, secrets, malware, configuration; SBOMs.",
                  no_args_is_help=True)

ImagesArgument = typer.Argument(..., show_default=False, metavar="IMAGE...",
                                help="app.tar (docker-archive or OCI archive), oci:DIR[:TAG], a layout directory, "
                                     "registry/repo:tag or @digest, docker://name:tag (local engine).")
ScannersOption = typer.Option("vuln,secret,malware,config", "--scanners", metavar="LIST",
                              help="Comma-separated: vuln, secret, malware, config.")
AdvisoriesOption = typer.Option(None, "--advisories", metavar="FILE",
                                help="Advisory database (default: <data dir>/advisories.db; `cloudward db update`).")
InsecureOption = typer.Option(False, "--insecure", help="Talk plain HTTP to the registry (a local or test registry).")
PlatformOption = typer.Option("linux/amd64", "--platform", metavar="OS/ARCH[/VARIANT]",
                              help="Which image of a multi-platform index to read.")
UsernameOption = typer.Option(None, "--username", envvar="CLOUDWARD_REGISTRY_USERNAME",
                              help="Registry user (or CLOUDWARD_REGISTRY_USERNAME).")
PasswordOption = typer.Option(None, "--password", envvar="CLOUDWARD_REGISTRY_PASSWORD", show_default=False,
                              help="Registry password or token (better: CLOUDWARD_REGISTRY_PASSWORD).")
EngineOption = typer.Option(None, "--engine-url", metavar="URL", envvar="DOCKER_HOST",
                            help="Docker/podman engine API for docker:// images (default: DOCKER_HOST, "
                                 "else /var/run/docker.sock).")
YaraOption = typer.Option(None, "--yara-rules", metavar="DIR", help="Add the YARA rules in this folder (repeatable).")
NoCacheOption = typer.Option(False, "--no-cache", help="Read every layer again instead of the per-image cache.")


def _scanners(text: str) -> frozenset[str]:
    from cloudward.container.scan import SCANNERS
    from cloudward.core.errors import UsageError

    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(SCANNERS)
    if unknown or not chosen:
        raise UsageError(f"--scanners: unknown {', '.join(sorted(unknown)) or '(empty)'} "
                         f"(choose from {', '.join(SCANNERS)})")
    return chosen


def content_scanners(rules: list[Rule], yara_dirs: list[Path], scanners: frozenset[str]) -> list[ContentScanner]:
    """The secret scanner and the shared YARA rules as image content scanners (only those asked for)."""
    from cloudward import __version__
    from cloudward.container.content import malware_scanner, secret_scanner

    out = []
    if "secret" in scanners:
        from cloudward import secrets

        secret_rules = [r for r in rules if r.engine_name == "secrets"]
        compiled = secrets.compile_rules(secret_rules)
        key = secrets.installation_key()
        ids = hashlib.sha256("\n".join(sorted(r.id for r in secret_rules)).encode()).hexdigest()[:12]

        def scan(data: bytes, origin: str, location: object) -> list:  # type: ignore[type-arg]
            return secrets.scan_bytes(data, origin, compiled, location, target_kind="image", hmac_key=key)  # type: ignore[arg-type]

        out.append(secret_scanner(scan, f"{__version__}:{ids}"))
    if "malware" in scanners:
        from cloudward.core.errors import UsageError
        from cloudward.engines.content import load_content_judge

        judge, problems = load_content_judge(rules, yara_dirs=yara_dirs)
        if problems:
            user_files = [f for f in (judge.yara.files if judge.yara else []) if not f.startswith("builtin:")]
            if yara_dirs and not user_files:
                raise UsageError(f"--yara-rules: no usable rule file ({'; '.join(problems[:5])})")
            err_console().print(f"yara: left out {len(problems)} rule file(s): {'; '.join(problems[:5])}",
                                highlight=False)
        out.append(malware_scanner(judge))
    return out


def scan_options(config: Path | None, scanners: str = "vuln,secret,malware,config", *,
                 advisories: Path | None = None, rules_dir: list[Path] | None = None,
                 yara_rules: list[Path] | None = None, no_cache: bool = False, insecure: bool = False,
                 platform: str = "linux/amd64", username: str | None = None, password: str | None = None,
                 engine_url: str | None = None) -> ImageScanOptions:
    """Everything an image scan needs, resolved from options and config (shared with `registry scan`
    and `admission serve`)."""
    from cloudward.container.scan import ImageScanOptions

    chosen = _scanners(scanners)
    rules = list(load_all_rules(list(rules_dir or [])))
    data_dir = settings(config).resolved_data_dir()
    return ImageScanOptions(
        scanners=chosen,
        advisories=advisories if advisories is not None else data_dir / "advisories.db",
        content=content_scanners(rules, list(yara_rules or []), chosen),
        rules=[r for r in rules if r.engine_name == "image"],
        cache_dir=None if no_cache else data_dir / "cache",
        insecure=insecure, platform=platform, username=username, password=password,
        engine_url=_engine_url(engine_url),
    )


def _engine_url(value: str | None) -> str | None:
    if value is None:
        return None
    return value if "://" in value else f"unix://{os.path.abspath(value)}"


@app.command("scan")
def scan(
    images: list[str] = ImagesArgument,
    scanners: str = ScannersOption,
    advisories: Path | None = AdvisoriesOption,
    insecure: bool = InsecureOption,
    platform: str = PlatformOption,
    username: str | None = UsernameOption,
    password: str | None = PasswordOption,
    engine_url: str | None = EngineOption,
    yara_rules: list[Path] = YaraOption,
    no_cache: bool = NoCacheOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Scan images: OS and language packages against advisories, secrets and malware in every layer,
    and the image config (user, ports, volumes, ENV, build steps)."""
    from cloudward.container.scan import scan_images

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    options = scan_options(config, scanners, advisories=advisories, rules_dir=rules_dir, yara_rules=yara_rules,
                           no_cache=no_cache, insecure=insecure, platform=platform, username=username,
                           password=password, engine_url=engine_url)
    result = scan_images(images, options)
    for item in result.inventory:
        err_console().print(
            f"image scan: {item['image']}: {item['os'] or 'unknown OS'}, {item['layers']} layers, "
            f"{item['packages']:,} packages, {item['vulnerabilities']:,} vulnerabilities"
            f"{cached_note(item)}", highlight=False, soft_wrap=True)
    err_console().print(f"image scan: {len(result.findings):,} findings, {len(result.errors):,} errors",
                        highlight=False)
    finish(result, format, output, fail_on, config, no_store)


def cached_note(item: dict[str, object]) -> str:
    cached = item.get("cached_layers") or 0
    return f" ({cached} of {item['layers']} layers from the cache)" if cached else ""


SBOM_FORMATS = ("cyclonedx", "spdx-json")
SbomOutputOption = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")


@app.command("sbom")
def sbom(
    image: str = typer.Argument(..., show_default=False, metavar="IMAGE", help="As for `image scan`."),
    format: str = typer.Option("cyclonedx", "--format", "-f", help="cyclonedx (CycloneDX 1.6 JSON) or spdx-json "
                               "(SPDX 2.3)."),
    output: Path | None = SbomOutputOption,
    insecure: bool = InsecureOption,
    platform: str = PlatformOption,
    username: str | None = UsernameOption,
    password: str | None = PasswordOption,
    engine_url: str | None = EngineOption,
    no_cache: bool = NoCacheOption,
    vulns: bool = typer.Option(False, "--vulns", help="CycloneDX only: add the packages' known vulnerabilities "
                               "(OSV advisories, as `image scan` matches them) to the document."),
    advisories: Path | None = AdvisoriesOption,
    config: Path | None = ConfigOption,
) -> None:
    """Write the image's software bill of materials (OS packages, Python, npm, Go, Java)."""
    from cloudward.container.sbom import to_cyclonedx, to_spdx
    from cloudward.container.scan import ImageScanOptions, analyse_layers, image_target
    from cloudward.container.sources import open_image
    from cloudward.core.errors import UsageError

    if format not in SBOM_FORMATS:
        raise UsageError(f"--format: unknown SBOM format {format!r} (choose from {', '.join(SBOM_FORMATS)})")
    if vulns and format != "cyclonedx":
        raise UsageError("--vulns: only the cyclonedx format carries vulnerabilities")
    database = advisories if advisories is not None else settings(config).resolved_data_dir() / "advisories.db"
    if vulns and not database.is_file():
        raise UsageError(f"--vulns: no advisory database at {database} (run `cloudward db update`)")
    img = open_image(image, insecure=insecure, platform=platform, username=username, password=password,
                     engine_url=_engine_url(engine_url))
    cache = None if no_cache else settings(config).resolved_data_dir() / "cache"
    found = analyse_layers(img, image_target(image), ImageScanOptions(scanners=frozenset(), cache_dir=cache))
    result = found.catalog
    notes = [*found.errors, *result.errors, *(f"{path}: not read ({why})" for path, why in found.skipped)]
    for message in notes:
        err_console().print(f"warning: {image}: {message}", highlight=False, markup=False, soft_wrap=True)
    subject = {"type": "image", "name": image, "digest": img.manifest_digest or img.id, "id": img.id}
    if vulns:
        from cloudward.engines.osv.findings import queries_for
        from cloudward.engines.osv.match import Matcher

        with Matcher(database) as matcher:
            matches = matcher.match(queries_for(result.packages))
            for message in matcher.errors:
                err_console().print(f"warning: {image}: {message}", highlight=False, markup=False, soft_wrap=True)
        text = to_cyclonedx(result, subject, matches)
    else:
        text = (to_cyclonedx if format == "cyclonedx" else to_spdx)(result, subject)
    if output is None:
        typer.echo(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        err_console().print(f"wrote {format} SBOM of {image} ({len(result.packages):,} packages) to {output}",
                            highlight=False)


LintPathsArgument = typer.Argument(None, show_default=False, metavar="PATH...",
                                   help="Dockerfiles, or directories searched for Dockerfile, Containerfile and "
                                        "*.Dockerfile (default: .).")


@app.command("lint")
def lint(
    paths: list[str] = LintPathsArgument,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Judge Dockerfiles and Containerfiles before they are built (root user, secrets in ENV/ARG,
    copied credentials, curl | sh, risky ports, runtime socket volumes, unpinned bases)."""
    from cloudward.container.dockerfile import lint_paths

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    rules = [r for r in load_all_rules(list(rules_dir or [])) if r.engine_name == "image"]
    result = lint_paths(list(paths or ["."]), rules)
    err_console().print(f"image lint: {result.stats.get('files', 0)} Dockerfiles, {len(result.findings):,} findings, "
                        f"{len(result.errors):,} errors", highlight=False)
    finish(result, format, output, fail_on, config, no_store)
