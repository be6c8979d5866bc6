"""`cloudward audit`: the README's main job — audit this machine with every capability built so far.

Today that is the exposure scan of this machine's own listening sockets (read from /proc/net), as
an attacker on the network would see them, and the host audit of `/` (hardening, compromise hunt,
live processes, auth logs), merged into one scan and summarised by the links of TeamTNT's chain.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    settings,
)

if TYPE_CHECKING:
    from cloudward.core.scan import ScanResult


def threat_links() -> list[dict[str, Any]]:
    from importlib import resources

    import yaml

    text = resources.files("cloudward.data").joinpath("threat-map.yaml").read_text("utf-8")
    links: list[dict[str, Any]] = yaml.safe_load(text)
    return links


def summarise(result: ScanResult) -> list[tuple[str, int, str]]:
    """(link, number of findings, worst severity) for every link of the chain, in chain order."""
    rows = []
    for link in threat_links():
        hits = [f for f in result.findings if any(fnmatch(f.rule_id, g) for g in link["rules"])]
        worst = max((f.severity for f in hits), default=None)
        rows.append((link["link"], len(hits), worst.value if worst else "-"))
    return rows


def merge(result: ScanResult, host: ScanResult) -> None:
    """Fold the host audit into the exposure scan: one scan of this machine, one stored record."""
    from cloudward.core.scan import ScanStatus

    result.findings.extend(host.findings)
    result.errors.extend(host.errors)
    result.inventory.extend(host.inventory)
    result.targets.extend(t for t in host.targets if t not in result.targets)
    result.stats["host"] = host.stats
    if host.stats.get("partial"):
        result.stats["partial"] = True
    if host.status is ScanStatus.CANCELLED:
        result.status = ScanStatus.CANCELLED
    result.finished = host.finished


def audit(
    format: str | None = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    rules_dir: list[Path] = RulesOption,
    config: Path | None = ConfigOption,
    no_store: bool = NoStoreOption,
) -> None:
    """Audit this machine: its exposed services and the host itself, summarised by the TeamTNT chain."""
    from rich.table import Table

    from cloudward.cli.host import host_options
    from cloudward.core.scan import ScanStatus
    from cloudward.exposure.local import local_targets
    from cloudward.exposure.scanner import scan_local
    from cloudward.workload import HostRoot, run_audit

    conf = settings(config)
    ruleset = load_all_rules(rules_dir)
    listeners = local_targets()
    err_console().print(f"audit: {len(listeners)} listening TCP sockets on this machine", highlight=False)
    result = scan_local(listeners, conf, ruleset)
    if result.status is not ScanStatus.CANCELLED:
        err_console().print("audit: host hardening, compromise hunt, processes and logs of /", highlight=False)
        merge(result, run_audit(HostRoot("/"), ruleset.engine("host"), options=host_options(Path("/"), config)))

    table = Table(title="TeamTNT attack chain: what this machine exposes", title_justify="left")
    table.add_column("link in the chain")
    table.add_column("findings", justify="right")
    table.add_column("worst")
    for link, count, worst in summarise(result):
        table.add_row(link, str(count), worst)
    err_console().print(table)
    finish(result, format, output, fail_on, config, no_store)
