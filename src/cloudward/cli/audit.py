"""`cloudward audit`: the README's main job — audit this machine with every capability built so far.

Today that is the exposure scan of this machine's own listening sockets (read from /proc/net), as
an attacker on the network would see them, summarised by the links of TeamTNT's attack chain.
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


def audit(
    format: str | None = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    rules_dir: list[Path] = RulesOption,
    config: Path | None = ConfigOption,
    no_store: bool = NoStoreOption,
) -> None:
    """Audit this machine: exposure of its own listening services, summarised by the TeamTNT chain."""
    from rich.table import Table

    from cloudward.exposure.local import local_targets
    from cloudward.exposure.scanner import scan_local

    conf = settings(config)
    ruleset = load_all_rules(rules_dir)
    listeners = local_targets()
    err_console().print(f"audit: {len(listeners)} listening TCP sockets on this machine", highlight=False)
    result = scan_local(listeners, conf, ruleset)

    table = Table(title="TeamTNT attack chain: what this machine exposes", title_justify="left")
    table.add_column("link in the chain")
    table.add_column("findings", justify="right")
    table.add_column("worst")
    for link, count, worst in summarise(result):
        table.add_row(link, str(count), worst)
    err_console().print(table)
    finish(result, format, output, fail_on, config, no_store)
