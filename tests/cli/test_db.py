"""`cloudward db update|status`, through the top-level command as a user types it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.core.errors import UsageError

DATA = Path(__file__).parent.parent / "engines" / "data" / "osv"


def test_update_then_status(tmp_path: Path) -> None:
    db = tmp_path / "advisories.db"
    runner = CliRunner()
    result = runner.invoke(app, ["db", "update", "--source", str(DATA), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "7 advisories" in result.output and "Debian" in result.output
    assert "Debian: 4" in result.output
    result = runner.invoke(app, ["db", "status", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "7 advisories (1 withdrawn)" in result.output and "PyPI: 1" in result.output


def test_default_path_from_config(tmp_path: Path) -> None:
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = CliRunner().invoke(app, ["db", "update", "--source", str(DATA), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "advisories.db").is_file()


def test_failed_update_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["db", "update", "--source", "http://127.0.0.1:9", "--ecosystem", "PyPI",
                                      "--db", str(tmp_path / "a.db")])
    assert result.exit_code == 3
    assert not (tmp_path / "a.db").exists()


def test_bad_source_is_usage_error(tmp_path: Path) -> None:
    args = ["db", "update", "--source", str(tmp_path / "nope"), "--db", str(tmp_path / "a.db")]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UsageError)


def test_status_without_db(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["db", "status", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 3


@pytest.mark.parametrize("args", [["--help"], ["update", "--help"]])
def test_help(args: list[str]) -> None:
    assert CliRunner().invoke(app, ["db", *args]).exit_code == 0
