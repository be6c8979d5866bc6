"""The Hyperscan disk cache: a cached database matches exactly like a fresh compile, every input of the
compile is in the key, and an entry that cannot be trusted (corrupt, someone else's, writable by others,
a symlink) or a cache that cannot be written only means compiling. Every test points the cache at its own
temporary directory; none touches the user's data dir."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import hyperscan
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.engines import hyperscan_cache
from cloudward.engines.hyperscan_cache import ENV, cache_dir, compile_database, database_key

FLAGS = hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SOM_LEFTMOST
PATTERNS = [b"foo[0-9]+", b"bar", b"(?i)select\\s+\\w+"]
TEXT = b"xx foo42 BAR bar SELECT name yy"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # never the user's cache, whatever a test forgets to pass
    monkeypatch.setenv(ENV, str(tmp_path / "default-cache"))
    monkeypatch.setenv("CLOUDWARD_DATA_DIR", str(tmp_path / "data"))


class _Spy:
    """The hyperscan module, counting what the cache loads (to tell a cache hit from a compile)."""

    def __init__(self) -> None:
        self.loads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(hyperscan, name)

    def loadb(self, payload: bytes, mode: int) -> Any:
        self.loads += 1
        return hyperscan.loadb(payload, mode)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    spy = _Spy()
    monkeypatch.setattr(hyperscan_cache, "_hs", spy)
    return spy


def _matches(database: Any, text: bytes) -> list[tuple[int, int, int]]:
    found: list[tuple[int, int, int]] = []

    def on_match(pattern: int, start: int, end: int, _flags: int, _context: object) -> None:
        found.append((pattern, start, end))

    database.scan(text, match_event_handler=on_match)
    return sorted(found)


def _fresh(patterns: list[bytes], flags: int = FLAGS) -> Any:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns), flags=flags)
    return database


def _build(directory: Path, patterns: list[bytes] = PATTERNS, flags: int = FLAGS) -> Any:
    return compile_database(patterns, ids=list(range(len(patterns))), flags=flags, directory=directory)


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.hsdb"))


def _plant(directory: Path, patterns: list[bytes], database: Any) -> Path:
    """Store `database` under the name `patterns` would be cached as (a stand-in only the cache can return)."""
    name = database_key(patterns, ids=list(range(len(patterns))), flags=FLAGS, mode=hyperscan.HS_MODE_BLOCK)
    payload = hyperscan.dumpb(database)
    path = directory / f"{name}.hsdb"
    path.write_bytes(hyperscan_cache._MAGIC + hashlib.sha256(payload).digest() + payload)
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- hits and exactness

def test_second_build_loads_from_cache_and_matches_like_a_fresh_compile(tmp_path: Path, spy: _Spy) -> None:
    first = _build(tmp_path / "c")
    assert spy.loads == 0 and len(_entries(tmp_path / "c")) == 1
    second = _build(tmp_path / "c")
    assert spy.loads == 1
    assert _matches(second, TEXT) == _matches(first, TEXT) == _matches(_fresh(PATTERNS), TEXT) != []
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    assert stat.S_IMODE(_entries(tmp_path / "c")[0].stat().st_mode) == 0o600


def test_a_trusted_entry_is_what_is_returned(tmp_path: Path) -> None:
    # the planted entry (a database for other patterns) is returned: proof the cache, not a compile, answered
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    _plant(directory, PATTERNS, _fresh([b"yy"]))
    assert _matches(_build(directory), TEXT) == [(0, 29, 31)]


_ATOMS = st.sampled_from([b"a", b"b", b"ab", b"[ab]", b"a+", b"b?", b"(a|b)", b"\\d", b"x{1,3}", b".", b"^a", b"b$"])
_PATTERN = st.lists(_ATOMS, min_size=1, max_size=4).map(b"".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patterns=st.lists(_PATTERN, min_size=1, max_size=6), texts=st.lists(st.binary(max_size=40), max_size=5),
       caseless=st.booleans())
def test_cached_databases_match_exactly_like_uncached(spy: _Spy, patterns: list[bytes], texts: list[bytes],
                                                      caseless: bool) -> None:
    flags = FLAGS | (hyperscan.HS_FLAG_CASELESS if caseless else 0)
    before = spy.loads
    try:
        fresh = _fresh(patterns, flags)
    except hyperscan.error as refused:  # e.g. a pattern matching only the empty string: refused alike
        with tempfile.TemporaryDirectory() as where, pytest.raises(type(refused)):
            _build(Path(where), patterns, flags)
        return
    with tempfile.TemporaryDirectory() as where:
        _build(Path(where), patterns, flags)
        cached = _build(Path(where), patterns, flags)
    assert spy.loads == before + 1
    for text in [*texts, b"ab1xxx\nab"]:
        assert _matches(cached, text) == _matches(fresh, text)


# --------------------------------------------------------------------------- the key

def test_every_input_of_the_compile_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {"ids": [0, 1], "flags": [0, 0], "mode": hyperscan.HS_MODE_BLOCK}
    key = database_key([b"a", b"b"], **base)
    assert key == database_key([b"a", b"b"], **base)
    variants = [
        database_key([b"a", b"c"], **base),
        database_key([b"b", b"a"], **base),  # order
        database_key([b"a", b"b"], **{**base, "ids": [1, 0]}),
        database_key([b"a", b"b"], **{**base, "flags": [0, hyperscan.HS_FLAG_PREFILTER]}),
        database_key([b"a", b"b"], **{**base, "flags": hyperscan.HS_FLAG_CASELESS}),
        database_key([b"a", b"b"], **{**base, "mode": hyperscan.HS_MODE_STREAM}),
        database_key([b"a", b"b"], **base, literal=True),
        database_key([b"a", b"b"], **base, ext=[(hyperscan.HS_EXT_FLAG_MIN_LENGTH, 0, 0, 3, 0, 0)] * 2),
    ]
    monkeypatch.setattr(hyperscan_cache, "_platform", lambda: "another CPU")
    variants.append(database_key([b"a", b"b"], **base))
    assert len({key, *variants}) == len(variants) + 1


def test_a_changed_input_misses_the_cache(tmp_path: Path, spy: _Spy) -> None:
    _build(tmp_path, PATTERNS)
    changed = _build(tmp_path, PATTERNS, FLAGS | hyperscan.HS_FLAG_CASELESS)
    assert spy.loads == 0 and len(_entries(tmp_path)) == 2
    assert _matches(changed, TEXT) == _matches(_fresh(PATTERNS, FLAGS | hyperscan.HS_FLAG_CASELESS), TEXT)


# --------------------------------------------------------------------------- distrust and failure

def test_a_truncated_entry_is_compiled_again_replaced_and_logged_once(
        tmp_path: Path, spy: _Spy, caplog: pytest.LogCaptureFixture) -> None:
    _build(tmp_path)
    entry = _entries(tmp_path)[0]
    entry.write_bytes(entry.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger=hyperscan_cache.__name__):
        database = _build(tmp_path)
    assert spy.loads == 0 and _matches(database, TEXT) == _matches(_fresh(PATTERNS), TEXT)
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "checksum" in caplog.text
    _build(tmp_path)
    assert spy.loads == 1  # replaced by a good entry


@pytest.mark.parametrize("content", [b"", b"garbage", hyperscan_cache._MAGIC + b"\0" * 40,
                                     hyperscan_cache._MAGIC + hashlib.sha256(b"junk").digest() + b"junk"])
def test_corrupt_entries_fall_back_to_compiling(tmp_path: Path, content: bytes) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    _plant(directory, PATTERNS, _fresh([b"yy"])).write_bytes(content)
    assert _matches(_build(directory), TEXT) == _matches(_fresh(PATTERNS), TEXT)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), with_header=st.booleans())
def test_any_entry_content_gives_a_working_database(content: bytes, with_header: bool) -> None:
    if with_header:  # past our own checks: the bytes reach Hyperscan's deserializer, which must refuse them
        content = hyperscan_cache._MAGIC + hashlib.sha256(content).digest() + content
    with tempfile.TemporaryDirectory() as where:
        _plant(Path(where), PATTERNS, _fresh([b"yy"])).write_bytes(content)
        database = _build(Path(where))
    assert _matches(database, TEXT) == _matches(_fresh(PATTERNS), TEXT)


def test_an_entry_writable_by_others_is_ignored_and_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    planted = _plant(directory, PATTERNS, _fresh([b"yy"]))
    planted.chmod(0o666)
    assert _matches(_build(directory), TEXT) == _matches(_fresh(PATTERNS), TEXT)
    assert stat.S_IMODE(planted.stat().st_mode) == 0o600  # the compiled database replaced it


def test_an_entry_owned_by_someone_else_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    planted = _plant(directory, PATTERNS, _fresh([b"yy"]))
    if os.geteuid() == 0:
        os.chown(planted, 65534, -1)  # really someone else's file
    else:  # cannot give a file away: this user becomes someone else (then the directory is distrusted too)
        monkeypatch.setattr(hyperscan_cache.os, "geteuid", lambda: os.getuid() + 1)
    assert _matches(_build(directory), TEXT) == _matches(_fresh(PATTERNS), TEXT)


def test_a_symlinked_entry_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o700)
    planted = _plant(directory, PATTERNS, _fresh([b"yy"]))
    elsewhere = planted.rename(tmp_path / "elsewhere.hsdb")
    planted.symlink_to(elsewhere)
    assert _matches(_build(directory), TEXT) == _matches(_fresh(PATTERNS), TEXT)


def test_a_directory_writable_by_others_is_not_used(tmp_path: Path, spy: _Spy) -> None:
    directory = tmp_path / "c"
    directory.mkdir()
    _plant(directory, PATTERNS, _fresh([b"yy"]))
    directory.chmod(0o777)
    assert _matches(_build(directory), TEXT) == _matches(_fresh(PATTERNS), TEXT)
    assert spy.loads == 0 and len(_entries(directory)) == 1


@pytest.mark.parametrize("kind", ["under a file", "read-only"])
def test_an_unwritable_cache_dir_just_means_compiling(tmp_path: Path, kind: str) -> None:
    if kind == "under a file":
        (tmp_path / "file").write_text("x")
        directory = tmp_path / "file" / "cache"
    else:  # refuses writes to anyone but root
        directory = tmp_path / "ro"
        directory.mkdir(mode=0o500)
    try:
        for _ in range(2):
            assert _matches(_build(directory), TEXT) == _matches(_fresh(PATTERNS), TEXT)
    finally:
        if kind == "read-only":
            directory.chmod(0o700)


def test_only_the_newest_entries_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spy: _Spy) -> None:
    monkeypatch.setattr(hyperscan_cache, "MAX_ENTRIES", 3)
    for i in range(6):
        _build(tmp_path, [b"k%d" % i])
        for entry in _entries(tmp_path):  # mtimes 1 s apart: the order does not rest on clock resolution
            if entry.stat().st_mtime > 1e6 + i:
                os.utime(entry, (1e6 + i, 1e6 + i))
    assert len(_entries(tmp_path)) == 3
    _build(tmp_path, [b"k5"])
    _build(tmp_path, [b"k0"])
    assert spy.loads == 1  # k5 was kept, k0 pruned


# --------------------------------------------------------------------------- where, and the opt-out

def test_the_default_location_is_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    assert cache_dir() == tmp_path / "data" / "cache" / "hyperscan"
    compile_database(PATTERNS, ids=[0, 1, 2], flags=FLAGS)
    assert len(_entries(tmp_path / "data" / "cache" / "hyperscan")) == 1


def test_the_opt_out_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spy: _Spy) -> None:
    monkeypatch.setenv(ENV, "0")
    assert cache_dir() is None
    for _ in range(2):
        database = compile_database(PATTERNS, ids=[0, 1, 2], flags=FLAGS)
    assert _matches(database, TEXT) == _matches(_fresh(PATTERNS), TEXT)
    assert spy.loads == 0 and not (tmp_path / "data").exists() and not (tmp_path / "default-cache").exists()


def test_compile_errors_propagate_and_are_not_cached(tmp_path: Path) -> None:
    with pytest.raises(hyperscan.error):
        _build(tmp_path, [b"(unbalanced"])
    assert _entries(tmp_path) == []


# --------------------------------------------------------------------------- the three users

def test_appsec_pattern_sets_load_from_the_cache(spy: _Spy) -> None:
    from cloudward.appsec.multimatch import PatternSet

    patterns = [r"union\s+select", r"<script\b", r"foo(?=bar)", r"\.\./"]
    first = PatternSet(patterns)
    loads = spy.loads
    second = PatternSet(patterns)
    assert spy.loads == loads + 2  # the main and the plain-text database
    for text in ["a UNION select b", "union  select", "<script>", "foobar", "../etc", "plain words"]:
        assert first.hits(text) == second.hits(text)
    assert second.hits("union  select x") == {0}


def test_secrets_and_network_prefilters_load_from_the_cache(spy: _Spy) -> None:
    from cloudward.network.signatures import _HyperscanLiterals
    from cloudward.secrets.prefilter import HyperscanPrefilter

    keywords = ["akia", "ghp_", "password"]
    hits = HyperscanPrefilter(keywords).find(b"x GHP_ y akia")
    assert hits != [] and HyperscanPrefilter(keywords).find(b"x GHP_ y akia") == hits
    literals = [(b"\x00GET", False), (b"user", True)]
    assert sorted(_HyperscanLiterals(literals).scan(b"\x00GET USER")) == [0, 1]
    assert sorted(_HyperscanLiterals(literals).scan(b"\x00GET USER")) == [0, 1]
    assert spy.loads == 2
