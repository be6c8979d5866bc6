"""The `cloudward` command. Thin: parse options, call a capability, store, report, exit.

`main()` answers `--version` before importing typer, rich or anything heavy, so it stays fast.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from cloudward import __version__

        print(f"cloudward {__version__}")
        return
    from cloudward.cli.app import run

    run()
