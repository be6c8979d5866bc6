from pathlib import Path

import pytest

from cloudward.core.errors import RuleError
from cloudward.core.rules import load_rules, parse_rule_documents

GOOD = """
id: demo.open_thing
title: A demo rule
severity: high
category: exposure
description: Something is open that should not be.
remediation: Close it and restart the service.
attack: [T1133]
tags: [demo]
match: {engine: demo, flag: true}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_user_rules_load_and_validate(tmp_path):
    _write(tmp_path, "a.yaml", GOOD)
    ruleset = load_rules([], [tmp_path])
    rule = ruleset.get("demo.open_thing")
    assert rule.severity == "high" and rule.source.endswith("a.yaml")


def test_duplicate_id_names_both_files(tmp_path):
    _write(tmp_path / "one", "a.yaml", GOOD)
    _write(tmp_path / "two", "b.yaml", GOOD)
    with pytest.raises(RuleError) as info:
        load_rules([], [tmp_path / "one", tmp_path / "two"])
    assert "a.yaml" in str(info.value) and "b.yaml" in str(info.value)


def test_user_rule_cannot_replace_builtin(tmp_path):
    from cloudward.exposure.evaluate import validate_rule

    builtin = load_rules(["cloudward.exposure"], validators={"exposure": validate_rule})
    some_id = next(iter(builtin)).id
    _write(tmp_path, "mine.yaml", GOOD.replace("demo.open_thing", some_id).replace("engine: demo, flag: true",
           "engine: exposure, service: redis, when: {fact: x, equals: 1}"))
    with pytest.raises(RuleError, match="duplicate rule id"):
        load_rules(["cloudward.exposure"], [tmp_path], validators={"exposure": validate_rule})


@pytest.mark.parametrize(("text", "message"), [
    ("id: [unclosed", "not valid YAML"),
    ("- just\n- a list", "must be a mapping"),
    (GOOD.replace("severity: high", "severity: apocalyptic"), "severity"),
    (GOOD.replace("demo.open_thing", "NotDotted"), "dotted snake_case"),
    (GOOD.replace("[T1133]", "[T99]"), "ATT&CK"),
    (GOOD + "surprise: 1\n", "surprise"),
])
def test_broken_rules_name_the_file(tmp_path, text, message):
    path = _write(tmp_path, "broken.yaml", text)
    with pytest.raises(RuleError) as info:
        load_rules([], [tmp_path])
    assert str(path) in str(info.value) and message in str(info.value)


def test_engine_validator_errors_name_the_rule(tmp_path):
    _write(tmp_path, "a.yaml", GOOD)

    def reject(rule):
        raise ValueError("flag is not supported")

    with pytest.raises(RuleError, match=r"demo.open_thing.*flag is not supported"):
        load_rules([], [tmp_path], validators={"demo": reject})
    with pytest.raises(RuleError, match="unknown engine"):
        load_rules([], [tmp_path], validators={"other": reject})


def test_multi_document_files():
    rules = parse_rule_documents(GOOD + "---\n" + GOOD.replace("open_thing", "other_thing"), "x.yaml")
    assert [r.id for r in rules] == ["demo.open_thing", "demo.other_thing"]


def test_missing_rules_dir(tmp_path):
    with pytest.raises(RuleError, match="does not exist"):
        load_rules([], [tmp_path / "nope"])
