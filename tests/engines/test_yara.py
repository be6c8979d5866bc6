"""The shared YARA engine: rule files from the package and user folders, errors that name the file
and the line, a broken user file that leaves the rest working, bounded scans."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest
import yara_x
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.engines.yara import (
    YaraMatch,
    YaraRules,
    YaraTimeout,
    compile_sources,
    load_rules,
    read_bounded,
)

BUILTIN = resources.files("cloudward.data").joinpath("yara")

GOOD = """
rule fixture_hello : greeting demo
{
    meta:
        description = "says hello"
        severity = "low"
        attack = "T1105"
        weight = 3
    strings:
        $a = "hello fixture"
    condition:
        $a
}
"""

BROKEN = """rule fine_rule { condition: true }

rule broken_rule {
    condition:
        not_declared_anywhere
}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_rules_compile_without_errors_or_warnings():
    rules = load_rules([BUILTIN])
    assert rules.errors == []
    assert len(rules.files) >= 3
    compiler = yara_x.Compiler()
    for entry in BUILTIN.iterdir():
        if entry.name.endswith(".yar"):
            compiler.add_source(entry.read_text(), origin=entry.name)
    assert compiler.warnings() == []  # e.g. `$a*` silently including `$act1` once hid a bug


def test_every_builtin_rule_has_description_severity_and_attack():
    from cloudward.core.attack import unknown_techniques

    rules = load_rules([BUILTIN])
    assert rules.compiled is not None
    for rule in rules.compiled:
        meta = dict(rule.metadata)
        assert meta.get("description"), rule.identifier
        assert meta.get("severity") in {"low", "medium", "high", "critical"}, rule.identifier
        assert meta.get("attack") and not unknown_techniques([meta["attack"]]), rule.identifier


def test_scan_bytes_reports_rule_namespace_tags_meta_and_count(tmp_path: Path):
    rules = load_rules([], [write(tmp_path / "u" / "hello.yar", GOOD).parent])
    assert rules.errors == []
    matches = rules.scan_bytes(b"xx hello fixture yy hello fixture")
    assert matches == [YaraMatch(rule="fixture_hello", namespace="user", tags=("greeting", "demo"),
                                 meta={"description": "says hello", "severity": "low", "attack": "T1105",
                                       "weight": 3}, strings=2)]
    assert rules.scan_bytes(b"nothing here") == []


def test_syntax_error_names_file_and_line(tmp_path: Path):
    bad = write(tmp_path / "rules" / "bad.yar", BROKEN)
    rules = load_rules([], [bad.parent])
    assert len(rules.errors) == 1
    error = rules.errors[0]
    assert error.source == str(bad)
    assert error.line == 5
    assert str(error).startswith(f"{bad}:5: ")
    assert "not_declared_anywhere" in error.message


def test_broken_user_file_keeps_builtin_and_other_user_rules(tmp_path: Path):
    folder = tmp_path / "rules"
    write(folder / "a_bad.yar", BROKEN)
    write(folder / "b_good.yar", GOOD)
    rules = load_rules([BUILTIN], [folder])
    assert [e.source for e in rules.errors] == [str(folder / "a_bad.yar")]
    names = set(rules.rule_names)
    assert "user:fixture_hello" in names
    assert "cloudward:xmrig_config" in names
    # the broken file is left out whole: its valid first rule is not half-loaded
    assert "user:fine_rule" not in names
    assert [m.rule for m in rules.scan_bytes(b"hello fixture")] == ["fixture_hello"]


def test_duplicate_rule_across_user_files_drops_the_second(tmp_path: Path):
    folder = tmp_path / "rules"
    write(folder / "one.yar", GOOD)
    write(folder / "two.yar", GOOD)
    rules = load_rules([], [folder])
    assert rules.files == [str(folder / "one.yar")]
    assert len(rules.errors) == 1 and rules.errors[0].source == str(folder / "two.yar")
    assert "duplicate" in rules.errors[0].message


def test_user_rule_with_the_name_of_a_builtin_rule_lives_in_its_own_namespace(tmp_path: Path):
    write(tmp_path / "r" / "x.yar", 'rule xmrig_config { strings: $a = "zz-top" condition: $a }')
    rules = load_rules([BUILTIN], [tmp_path / "r"])
    assert rules.errors == []
    assert [(m.namespace, m.rule) for m in rules.scan_bytes(b"zz-top")] == [("user", "xmrig_config")]


def test_missing_folder_non_utf8_and_includes_are_errors(tmp_path: Path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "latin.yar").write_bytes(b"rule x { condition: true } // \xff\xfe")
    write(tmp_path / "r" / "inc.yar", 'include "/etc/passwd"\nrule y { condition: true }\n')
    rules = load_rules([], [tmp_path / "r", tmp_path / "nowhere"])
    messages = {Path(e.source).name: e.message for e in rules.errors}
    assert "not UTF-8" in messages["latin.yar"]
    assert "inc.yar" in messages  # includes are disabled: a rule file cannot read other files
    assert "does not exist" in messages["nowhere"]
    assert rules.files == []
    assert rules.scan_bytes(b"anything") == []


def test_compile_sources_and_empty_rules():
    rules = compile_sources([("mem:1", GOOD, "ns1"), ("mem:2", "rule {", "ns2")])
    assert [e.source for e in rules.errors] == ["mem:2"]
    assert rules.errors[0].line == 1
    assert [(m.namespace, m.rule) for m in rules.scan_bytes(b"hello fixture")] == [("ns1", "fixture_hello")]
    assert YaraRules(compiled=None).scan_bytes(b"x") == []


def test_scan_file_reads_at_most_max_bytes(tmp_path: Path):
    rules = compile_sources([("mem", GOOD, "t")])
    path = tmp_path / "data.bin"
    path.write_bytes(b"A" * 5000 + b"hello fixture")
    assert [m.rule for m in rules.scan_file(path, max_bytes=10_000)] == ["fixture_hello"]
    assert rules.scan_file(path, max_bytes=4096) == []  # the match lies past the bound


def test_scan_file_refuses_fifo_and_final_symlink(tmp_path: Path):
    rules = compile_sources([("mem", GOOD, "t")])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        rules.scan_file(fifo)  # would block forever if opened blocking
    target = write(tmp_path / "t.txt", "hello fixture")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError):
        read_bounded(link, 100)


def test_slow_rule_times_out():
    slow = """
    rule slow {
        condition:
            for all i in (0..filesize - 1) : (
                for all j in (0..filesize - 1) : (uint8(i) != uint8(j) + 1000)
            )
    }
    """
    rules = compile_sources([("mem", slow, "t")], timeout=1)
    with pytest.raises(YaraTimeout):
        rules.scan_bytes(b"\x00" * 200_000)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4096))
def test_builtin_rules_never_crash_on_arbitrary_bytes(data: bytes):
    rules = _builtin()
    for match in rules.scan_bytes(data):
        assert match.namespace == "cloudward"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_rule_text_is_either_compiled_or_reported(text: str):
    rules = compile_sources([("fuzz", text, "f")])
    assert rules.files == ["fuzz"] or [e.source for e in rules.errors] == ["fuzz"]


_CACHE: dict[str, YaraRules] = {}


def _builtin() -> YaraRules:
    if "b" not in _CACHE:
        _CACHE["b"] = load_rules([BUILTIN])
    return _CACHE["b"]
