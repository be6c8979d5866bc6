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
    from cloudward.container.image import Image
    from cloudward.container.sbom_cache import Entry
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


IMAGE_SCAN_ENGINES = ("image", "content", "secrets")  # the rule engines an image scan uses


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
    rules = list(load_all_rules(list(rules_dir or []), engines=IMAGE_SCAN_ENGINES))
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
    from cloudward.cli.image_replay import say  # plain lines, as the replay of this command prints them
    from cloudward.container.sources import open_image
    from cloudward.core.errors import UsageError

    if format not in SBOM_FORMATS:
        raise UsageError(f"--format: unknown SBOM format {format!r} (choose from {', '.join(SBOM_FORMATS)})")
    if vulns and format != "cyclonedx":
        raise UsageError("--vulns: only the cyclonedx format carries vulnerabilities")
    data_dir = settings(config).resolved_data_dir()
    database = advisories if advisories is not None else data_dir / "advisories.db"
    if vulns and not database.is_file():
        raise UsageError(f"--vulns: no advisory database at {database} (run `cloudward db update`)")
    img = open_image(image, insecure=insecure, platform=platform, username=username, password=password,
                     engine_url=_engine_url(engine_url))
    entry = _sbom_entry(image, img, platform, format, vulns, database, None if no_cache else data_dir, config)
    for message in entry.notes:
        say(f"warning: {image}: {message}")
    text = entry.render()
    if output is None:
        typer.echo(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        say(f"wrote {format} SBOM of {image} ({entry.packages:,} packages) to {output}")


def _sbom_entry(reference: str, img: Image, platform: str, fmt: str, vulns: bool, database: Path,
                data_dir: Path | None, config: Path | None) -> Entry:
    """The document (stamps left as sentinels) and its warnings: from the SBOM cache when this exact
    image was written this way before, else analysed (through the layer and image caches) and
    remembered, with an alias that lets `cli/image_replay.py` answer the same command line."""
    from cloudward.cli.image_replay import say, settings_fingerprint
    from cloudward.container.sbom_cache import CacheProblem, Entry, SbomCache, alias_key, entry_key

    key = entry_key(img, reference, platform=platform, fmt=fmt, vulns=vulns, advisories=database)
    cache = None if data_dir is None else SbomCache(data_dir / "cache" / "sboms")
    entry = None
    if cache is not None:
        try:
            entry = cache.get(key)
        except CacheProblem as exc:
            say(f"warning: ignoring a damaged SBOM cache entry: {exc}")
    if entry is None:
        body, sentinels, notes, packages = _render_sbom(reference, img, fmt, vulns, database, data_dir)
        entry = Entry(key, fmt, body, sentinels, notes, packages)
        if cache is not None:
            cache.put(entry)
    if cache is not None and data_dir is not None:
        located = settings_fingerprint(None if config is None else str(config), os.environ)
        alias = None
        if located is not None and located[0] == os.path.abspath(data_dir):
            alias = alias_key(reference, platform=platform, fmt=fmt, vulns=vulns, advisories=database,
                              settings=located[1])
        if alias is not None:
            cache.put_alias(alias, key, img.identity)
    return entry


def _render_sbom(reference: str, img: Image, fmt: str, vulns: bool, database: Path, data_dir: Path | None
                 ) -> tuple[str, tuple[str, str], list[str], int]:
    """(document with sentinel stamps, the sentinels, warnings, package count)."""
    from cloudward.container.sbom import to_cyclonedx, to_spdx
    from cloudward.container.sbom_cache import new_sentinels
    from cloudward.container.scan import ImageScanOptions, analyse_layers, image_target

    cache = None if data_dir is None else data_dir / "cache"
    found = analyse_layers(img, image_target(reference), ImageScanOptions(scanners=frozenset(), cache_dir=cache))
    result = found.catalog
    notes = [*found.errors, *result.errors, *(f"{path}: not read ({why})" for path, why in found.skipped)]
    subject = {"type": "image", "name": reference, "digest": img.manifest_digest or img.id, "id": img.id}
    sentinels = new_sentinels()
    if vulns:
        from cloudward.engines.osv.findings import queries_for
        from cloudward.engines.osv.match import Matcher

        with Matcher(database) as matcher:
            matches = matcher.match(queries_for(result.packages))
            notes.extend(matcher.errors)
        text = to_cyclonedx(result, subject, matches, stamps=sentinels)
    else:
        text = (to_cyclonedx if fmt == "cyclonedx" else to_spdx)(result, subject, stamps=sentinels)
    return text, sentinels, notes, len(result.packages)


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
    rules = [r for r in load_all_rules(list(rules_dir or []), engines=("image",)) if r.engine_name == "image"]
    result = lint_paths(list(paths or ["."]), rules)
    err_console().print(f"image lint: {result.stats.get('files', 0)} Dockerfiles, {len(result.findings):,} findings, "
                        f"{len(result.errors):,} errors", highlight=False)
    finish(result, format, output, fail_on, config, no_store)
