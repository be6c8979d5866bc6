"""The `cloudward` command. Thin: parse options, call a capability, store, report, exit.

`main()` answers `--version` before importing typer, rich or anything heavy, so it stays fast, and
lets `image_replay` answer an `image sbom` it has the document for (an unchanged image's re-scan).
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from cloudward import __version__

        print(f"cloudward {__version__}")
        return
    if sys.argv[1:3] == ["image", "sbom"]:
        from cloudward.cli.image_replay import replay

        if replay(sys.argv[3:]):
            return
    from cloudward.cli.app import run

    run()
