import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudward.engines.conditions import compile_condition
from cloudward.engines.versions import LooseVersion, check_range, in_range


@pytest.mark.parametrize(("a", "b"), [
    ("9.2p1", "9.8p1"), ("9.8", "9.8p1"), ("7.0.9", "7.0.15"), ("2+deb12u2", "2+deb12u10"),
    ("4.3p2", "4.4p1"), ("6.2.16", "7.0.0"),
])
def test_loose_version_order(a, b):
    assert LooseVersion(a) < LooseVersion(b)


def test_ranges():
    regresshion = ">=8.5p1,<9.8p1 || <4.4p1"
    assert in_range("9.2p1", regresshion)
    assert in_range("8.5p1", regresshion)
    assert not in_range("9.8p1", regresshion)
    assert not in_range("8.4p1", regresshion)
    assert in_range("4.3", regresshion)
    assert not in_range("garbage", regresshion)
    with pytest.raises(ValueError):
        check_range(">>1.0")


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=5))
def test_numeric_versions_compare_like_tuples(parts):
    text = ".".join(map(str, parts))
    bumped = ".".join(map(str, [*parts[:-1], parts[-1] + 1]))
    assert LooseVersion(text) < LooseVersion(bumped)
    assert in_range(text, f"<{bumped}") and not in_range(bumped, f"<{text}")


FACTS = {"auth_required": False, "version": "7.0.15", "role": "master", "methods": ["password", "publickey"],
         "nested": {"port": 6379}}


@pytest.mark.parametrize(("condition", "expected"), [
    ({"fact": "auth_required", "equals": False}, True),
    ({"fact": "auth_required", "equals": True}, False),
    ({"fact": "missing", "equals": None}, False),
    ({"fact": "missing", "exists": False}, True),
    ({"fact": "version", "version": "<7.0.16"}, True),
    ({"fact": "methods", "contains": "password"}, True),
    ({"fact": "role", "in": ["master", "replica"]}, True),
    ({"fact": "role", "matches": "^rep"}, False),
    ({"fact": "nested.port", "ge": 1024}, True),
    ({"all": [{"fact": "role", "equals": "master"}, {"not": {"fact": "auth_required", "truthy": True}}]}, True),
    ({"any": [{"fact": "missing", "exists": True}, {"fact": "role", "not_equals": "master"}]}, False),
])
def test_conditions(condition, expected):
    assert compile_condition(condition)(FACTS) is expected


@pytest.mark.parametrize("bad", [
    {"fact": "x"}, {"fact": "x", "equals": 1, "in": [1]}, {"all": []}, {"fact": "x", "frobnicate": 1},
    {"fact": "x", "version": "<<1"}, {"fact": "x", "in": "notalist"}, {"all": [], "any": []}, [1, 2],
])
def test_invalid_conditions_are_rejected_at_compile_time(bad):
    with pytest.raises(ValueError):
        compile_condition(bad)
