"""The replay path's small parsers against the real ones, on hostile input: its command-line parser
against typer's, its `data_dir` reader against tomllib, its path spelling against pathlib; and the
SBOM cache's file readers on arbitrary bytes (a damaged file is a miss or a CacheProblem, never a
crash nor a trusted document)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.cli import image as image_cli
from cloudward.cli.image_replay import _toml_data_dir, as_pathlib, parse, settings_fingerprint
from cloudward.container import sbom_cache
from cloudward.container.sbom_cache import CacheProblem, Entry, SbomCache, new_sentinels
from cloudward.core.config import load_settings

TOKENS = ["-f", "--format", "--format=cyclonedx", "--format=spdx-json", "-f=cyclonedx", "-o", "--output",
          "--output=x.json", "out.json", "./dir//out.json", "--vulns", "--vulns=1", "--platform", "linux/arm64",
          "--config", "c.toml", "--advisories", "a.db", "img.tar", "other.tar", "--no-cache", "-", "--", "cyclonedx",
          "spdx-json", "-fcyclonedx", "--help", "-h", "--form", "--insecure", "", "-o-", "--output="]


def typer_params(args: list[str]) -> dict[str, Any] | None:
    """What typer's own parser makes of `image sbom ARGS` (None when it refuses them)."""
    import typer

    command = typer.main.get_command(image_cli.app).get_command(None, "sbom")  # type: ignore[attr-defined]
    try:
        with command.make_context("sbom", list(args)) as ctx:
            return dict(ctx.params)
    except BaseException:  # usage errors, --help's exit
        return None


PIECES = [["-f", "cyclonedx"], ["--format", "spdx-json"], ["-o", "out.json"], ["--output", "./d//o.json"], ["--vulns"],
          ["--platform", "linux/arm64"], ["--config", "c.toml"], ["--advisories", "a.db"], ["img.tar"], ["img.tar"]]
ARGV = st.lists(st.sampled_from(PIECES) | st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=2),
                max_size=6).map(lambda pieces: [token for piece in pieces for token in piece])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV)
def test_the_replay_takes_arguments_as_typer_does_or_not_at_all(args: list[str]) -> None:
    mine = parse(args)
    if mine is None:
        return
    theirs = typer_params(args)
    assert theirs is not None, args
    assert theirs["image"] == mine["image"]
    assert theirs["format"] == mine.get("format", "cyclonedx")
    assert theirs["vulns"] == ("vulns" in mine)
    assert theirs["platform"] == mine.get("platform", "linux/amd64")
    assert theirs["no_cache"] is False and theirs["insecure"] is False
    for key in ("output", "config", "advisories"):
        assert (None if theirs[key] is None else str(theirs[key])) == (
            None if key not in mine else as_pathlib(mine[key])), (key, args)


@given(st.text(alphabet="/.a", max_size=12))
def test_the_output_path_is_spelled_as_pathlib_spells_it(text: str) -> None:
    assert as_pathlib(text) == str(PurePosixPath(text))


TOML_LINES = ['data_dir = "/srv/cw"', "data_dir = '/srv/lit'", 'data_dir = "/a" # note', 'data_dir="/b"',
              'data_dir = "C:\\\\x"', "data_dir = 3", '"data_dir" = "/q"', 'data_dir_x = "/n"', "[store]",
              'url = "sqlite://"', 'data_dir = """/m"""', "# data_dir = '/c'", "", 'x = "data_dir"',
              'data_dir = "/a" "b"', "[exposure]", "concurrency = 4"]


@given(st.lists(st.sampled_from(TOML_LINES) | st.text(max_size=20), max_size=6))
def test_the_data_dir_reader_agrees_with_tomllib_or_abstains(lines: list[str]) -> None:
    text = "\n".join(lines)
    mine = _toml_data_dir(text)
    try:
        real = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # the command rejects the file; an alias is never written for it
    if mine is not None:
        assert mine == real.get("data_dir", ""), text


def test_the_data_dir_is_the_one_the_settings_name(tmp_path: Path) -> None:
    config = tmp_path / "cloudward.toml"
    for body, env in [(f'data_dir = "{tmp_path / "d"}"\n', {}), ("", {}),
                      ("", {"CLOUDWARD_DATA_DIR": str(tmp_path / "e")}), ("[store]\nurl = ''\n", {"HOME": "/nope"})]:
        config.write_text(body)
        saved = dict(os.environ)
        try:
            os.environ.update(env)  # platformdirs reads HOME and XDG_* from here
            located = settings_fingerprint(str(config), env)
            assert located is not None
            assert located[0] == os.path.abspath(load_settings(config, env).resolved_data_dir())
        finally:
            os.environ.clear()
            os.environ.update(saved)
    assert settings_fingerprint(str(tmp_path / "missing.toml"), {}) is None  # the command says it is missing


def test_the_fingerprint_follows_the_file_and_the_variables(tmp_path: Path) -> None:
    config = tmp_path / "cloudward.toml"
    config.write_text('data_dir = "/srv/cw"\n')
    base = settings_fingerprint(str(config), {})
    assert base == settings_fingerprint(str(config), {"CLOUDWARD_REGISTRY_PASSWORD": "x", "OTHER": "y"})
    assert base != settings_fingerprint(str(config), {"CLOUDWARD_EXPOSURE_CONCURRENCY": "0"})
    config.write_text('data_dir = "/srv/cw"\n[fim]\npaths = []\n')
    assert base != settings_fingerprint(str(config), {})


def _entry(key: str = "k" * 64, notes: tuple[str, ...] = ("a\tb\nc", "")) -> Entry:
    sentinels = new_sentinels()
    body = f'{{"serialNumber":"urn:uuid:{sentinels[0]}","timestamp":"{sentinels[1]}","x":"\u00e9"}}'
    return Entry(key, "cyclonedx", body, sentinels, list(notes), 7)


def test_an_entry_reads_back_as_written(tmp_path: Path) -> None:
    cache = SbomCache(tmp_path)
    cache.put(_entry())
    got = cache.get("k" * 64)
    assert got is not None and got.notes == ["a\tb\nc", ""] and got.packages == 7
    text = got.render()
    assert "cloudward-serial" not in text and "cloudward-time" not in text and "\u00e9" in text
    assert cache.get("j" * 64) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_a_damaged_entry_is_a_problem_never_a_crash(tmp_path_factory: pytest.TempPathFactory, junk: bytes,
                                                    keep_head: bool) -> None:
    root = tmp_path_factory.mktemp("cache")
    cache = SbomCache(root)
    cache.put(_entry())
    path = root / ("k" * 64 + ".sbom")
    data = path.read_bytes()
    path.write_bytes((data.split(b"\n", 1)[0] + b"\n" + junk) if keep_head else junk)
    try:
        got = cache.get("k" * 64)
    except CacheProblem as exc:
        assert str(path) in str(exc)
        return
    assert got is None or got.body.encode() == junk  # only when the junk is the very document


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_a_damaged_alias_is_a_miss(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    root = tmp_path_factory.mktemp("cache")
    image = root / "image.tar"
    image.write_bytes(b"manifest" * 10)
    (root / ("a" * 64 + ".alias")).write_bytes(junk)
    assert SbomCache(root).resolve("a" * 64, str(image)) is None


def test_an_alias_checks_the_bytes_it_names(tmp_path: Path) -> None:
    import hashlib

    image = tmp_path / "image.tar"
    image.write_bytes(b"0123456789manifest-bytes0123")
    cache = SbomCache(tmp_path / "cache")
    cache.put_alias("a" * 64, "k" * 64, [("manifest.json", 10, 14, hashlib.sha256(b"manifest-bytes").hexdigest())])
    assert cache.resolve("a" * 64, str(image)) == "k" * 64
    image.write_bytes(b"0123456789manifest-BYTES0123")
    assert cache.resolve("a" * 64, str(image)) is None


def test_the_cache_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sbom_cache, "MAX_ENTRIES", 3)
    cache = SbomCache(tmp_path)
    for i in range(5):
        cache.put(_entry(key=str(i) * 64))
        os.utime(tmp_path / (str(i) * 64 + ".sbom"), ns=(i * 10**9, i * 10**9))
    cache.put(_entry(key="9" * 64))
    assert sorted(p.name[0] for p in tmp_path.glob("*.sbom")) == ["3", "4", "9"]
    monkeypatch.setattr(sbom_cache, "MAX_ENTRY_BYTES", 10)
    cache.put(_entry(key="8" * 64))  # larger than an entry may be: not kept
    assert cache.get("8" * 64) is None


@given(st.text(alphabet=st.sampled_from(list("ab \t\n\r\x07\x08\x0b\x0c\x1b[:é")), max_size=30))
def test_lines_are_printed_as_rich_printed_them(text: str) -> None:
    import contextlib
    import io

    from rich.console import Console

    from cloudward.cli.image_replay import say

    theirs = io.StringIO()
    Console(file=theirs, width=80).print(text, highlight=False, markup=False, emoji=False, soft_wrap=True)
    mine = io.StringIO()
    with contextlib.redirect_stderr(mine):
        say(text)
    assert mine.getvalue() == theirs.getvalue()
