"""What `cloudward` loads before an image command runs: one command group instead of the whole tree,
and only the rules an image scan judges with, with the same results as loading everything."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import COMMANDS, app, build_app
from cloudward.cli.common import load_all_rules
from cloudward.cli.image import IMAGE_SCAN_ENGINES


@pytest.mark.parametrize("args", [["image", "sbom", "--help"], ["image", "--help"], ["image", "scan", "--help"],
                                  ["audit", "--help"]])
def test_the_one_group_command_tree_helps_as_the_whole_one(args: list[str]) -> None:
    whole = CliRunner().invoke(app, args, env={"COLUMNS": "100"})
    alone = CliRunner().invoke(build_app(args[0]), args, env={"COLUMNS": "100"})
    assert whole.exit_code == alone.exit_code == 0
    assert whole.output == alone.output


def test_the_whole_tree_has_every_command() -> None:
    import typer

    group = typer.main.get_command(app)
    assert sorted(group.list_commands(None)) == sorted(COMMANDS)  # type: ignore[attr-defined,arg-type]


def test_an_image_scan_reads_the_same_rules_for_its_engines() -> None:
    def mine(ruleset: object) -> list[tuple[str, str]]:
        return [(r.id, r.source) for r in ruleset if r.engine_name in IMAGE_SCAN_ENGINES]  # type: ignore[attr-defined]

    every = load_all_rules()
    some = load_all_rules(engines=IMAGE_SCAN_ENGINES)
    assert mine(some) == mine(every) and len(mine(some)) > 200
    assert {r.engine_name for r in some} == set(IMAGE_SCAN_ENGINES)
    assert any(r.engine_name == "aws" for r in every)


def test_an_image_scans_rules_load_no_other_capability() -> None:
    code = ("import sys; from cloudward.cli.common import load_all_rules; "
            "load_all_rules(engines=('image', 'content', 'secrets')); "
            "bad = sorted(m for m in sys.modules if m.startswith(('cloudward.conformity', 'cloudward.network', "
            "'cloudward.appsec', 'cloudward.exposure', 'cloudward.workload', 'cloudward.storage'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_building_every_command_loads_no_store() -> None:
    """As tests/cli checks for `import cloudward.cli.app`, which no longer builds anything by itself."""
    code = ("import sys; import cloudward.cli.app as a; a.app; import typer; typer.main.get_command(a.app); "
            "bad = [m for m in ('sqlalchemy', 'alembic', 'cloudward.store.repository') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
