"""`cloudward network`: inspect captures and live traffic, and run the virtual-patching proxies.

Each command lives in its own module (network_inspect, network_redis, network_docker), which adds
itself to the groups defined here; this module imports them at the bottom so `app` is complete."""

from __future__ import annotations

import typer

app = typer.Typer(help="Network security: signature inspection of captures and live traffic, "
                  "and protocol-aware proxies (virtual patching).", no_args_is_help=True)
rules_app = typer.Typer(help="Suricata-syntax rule files: check and load.", no_args_is_help=True)
protect_app = typer.Typer(help="Protocol-aware proxies that let safe commands through and stop exploits.",
                          no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(protect_app, name="protect")

from cloudward.cli import network_docker, network_inspect, network_redis  # noqa: E402,F401  (register commands)
