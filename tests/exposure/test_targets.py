"""Targets and ports: parsing, errors that name the bad input, lazy expansion, and properties."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.errors import UsageError
from cloudward.exposure.targets import (
    MAX_PORT,
    TEAMTNT_PORTS,
    Host,
    Targets,
    endpoints,
    format_ports,
    parse_ports,
    parse_target,
    parse_targets,
    read_target_file,
)


def fake_resolver(table: dict[str, list[str]]):
    def resolve(name: str) -> list[str]:
        if name not in table:
            raise UsageError(f"target {name!r}: cannot resolve host name: not in test table")
        return table[name]

    return resolve


def addresses(targets: Targets) -> list[str]:
    return [h.address for h in targets]


# --- targets -----------------------------------------------------------------------------------


def test_single_addresses_v4_and_v6():
    targets = parse_targets(["127.0.0.1", "::1", "[::1]"])
    assert sorted(addresses(targets)) == ["127.0.0.1", "::1"]
    assert len(targets) == 2


def test_cidr_scans_every_address_including_network_and_broadcast():
    assert addresses(parse_targets(["127.0.9.0/30"])) == [f"127.0.9.{i}" for i in range(4)]
    assert addresses(parse_targets(["127.0.9.8/31"])) == ["127.0.9.8", "127.0.9.9"]
    assert addresses(parse_targets(["127.0.9.8/32"])) == ["127.0.9.8"]
    # Host bits set: like nmap, the network containing it.
    assert addresses(parse_targets(["127.0.9.5/30"])) == [f"127.0.9.{i}" for i in range(4, 8)]


def test_ipv6_cidr():
    got = addresses(parse_targets(["fd00::/126"]))
    assert got == ["fd00::", "fd00::1", "fd00::2", "fd00::3"]


def test_overlapping_targets_are_scanned_once_and_names_are_kept():
    resolve = fake_resolver({"db.test": ["127.0.9.2"], "far.test": ["127.0.10.1", "::1"]})
    targets = parse_targets(["127.0.9.0/30", "127.0.9.1", "db.test", "127.0.9.2/31", "far.test"],
                            resolve=resolve)
    hosts = list(targets)
    assert len(hosts) == len(targets) == 6
    assert len({h.address for h in hosts}) == 6
    named = {h.address: h.name for h in hosts if h.name}
    assert named == {"127.0.9.2": "db.test", "127.0.10.1": "far.test", "::1": "far.test"}
    assert Host("127.0.9.2", "db.test").label == "db.test (127.0.9.2)"


def test_labels_keep_what_was_asked_and_the_addresses_names_resolved_to():
    targets = parse_targets(["127.0.9.0/30", "db.test"], resolve=fake_resolver({"db.test": ["127.0.9.9"]}))
    assert targets.labels() == ["127.0.9.0/30", "db.test", "127.0.9.9"]
    assert targets.resolved() == {"db.test": ["127.0.9.9"]}


def test_host_names_resolve_for_real():
    hosts = list(parse_targets(["localhost"]))
    assert hosts and all(h.name == "localhost" for h in hosts)
    assert all(ipaddress.ip_address(h.address).is_loopback for h in hosts)


@pytest.mark.parametrize(("text", "fragment"), [
    ("127.0.0.300", "not an IP address, CIDR or host name"),
    ("127.0.0.0/33", "not a valid CIDR"),
    ("10.0.0.1-20", "address ranges are not supported"),
    ("127.0.0.1:6379", "give ports with -p"),
    ("http://example.test/", "give a host, not a URL"),
    ("bad_name!", "not an IP address, CIDR or host name"),
    ("no-such-host.invalid", "cannot resolve host name"),
])
def test_bad_targets_are_usage_errors_naming_the_target(text, fragment):
    with pytest.raises(UsageError) as caught:
        parse_target(text, resolve=fake_resolver({}))
    assert repr(text) in str(caught.value) and fragment in str(caught.value)


def test_no_targets_is_a_usage_error():
    with pytest.raises(UsageError, match="no targets"):
        parse_targets([" "])


def test_large_ranges_are_refused_unless_allowed():
    with pytest.raises(UsageError) as caught:
        parse_targets(["127.0.0.0/8"])
    message = str(caught.value)
    assert "127.0.0.0/8 (16,777,216 addresses)" in message and "--allow-large-range" in message
    assert len(parse_targets(["127.0.0.0/16"])) == 65536  # exactly the default limit is fine
    with pytest.raises(UsageError):
        parse_targets(["127.0.0.0/28", "127.1.0.0/28"], max_hosts=31)
    big = parse_targets(["127.0.0.0/8"], allow_large=True)
    assert big.size == 2**24
    assert next(iter(big)).address == "127.0.0.0"


def test_huge_ipv6_ranges_are_lazy():
    targets = parse_targets(["fd00::/64"], allow_large=True)
    assert targets.size == 2**64 and len(targets) == 2**62  # len() is clamped to fit ssize_t
    first = list(itertools.islice(targets, 3))
    assert [h.address for h in first] == ["fd00::", "fd00::1", "fd00::2"]


def test_endpoints_are_generated_lazily():
    stream = endpoints(parse_targets(["127.0.0.0/16"]), TEAMTNT_PORTS)
    first = list(itertools.islice(stream, 15))
    assert first[0] == (Host("127.0.0.0"), 22)
    assert first[13] == (Host("127.0.0.0"), 27017)
    assert first[14] == (Host("127.0.0.1"), 22)


def test_target_file(tmp_path: Path):
    listing = tmp_path / "targets.txt"
    listing.write_text("# lab hosts\n127.0.9.1\n\n  127.0.9.4/31   # two more\n127.0.9.9 127.0.9.10\n")
    assert read_target_file(listing) == ["127.0.9.1", "127.0.9.4/31", "127.0.9.9", "127.0.9.10"]
    targets = parse_targets(["127.0.9.2"], listing)
    assert sorted(addresses(targets)) == ["127.0.9.1", "127.0.9.10", "127.0.9.2", "127.0.9.4",
                                          "127.0.9.5", "127.0.9.9"]


def test_target_file_errors_name_the_file(tmp_path: Path):
    with pytest.raises(UsageError, match=r"missing\.txt: target list not found"):
        read_target_file(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("127.0.0.1\nnot a target!\n")
    with pytest.raises(UsageError, match="'not'"):
        parse_targets([], bad)


# --- ports -------------------------------------------------------------------------------------


def test_teamtnt_profile_is_exactly_the_fourteen_ports():
    assert parse_ports("teamtnt") == (22, 2375, 2376, 2379, 4040, 5432, 6379, 6443, 8080, 8888, 9200,
                                      10250, 10255, 27017)


@pytest.mark.parametrize(("spec", "expected"), [
    ("22", (22,)),
    ("22,80,8000-8003", (22, 80, 8000, 8001, 8002, 8003)),
    ("80, 22 ,80", (22, 80)),
    ("-3", (1, 2, 3)),
    ("65534-", (65534, 65535)),
    ("TEAMTNT,1", (1, *TEAMTNT_PORTS)),
])
def test_port_specs(spec, expected):
    assert parse_ports(spec) == expected


def test_dash_means_every_port_and_lists_combine():
    assert parse_ports("-") == tuple(range(1, 65536))
    assert parse_ports(["22", "teamtnt", "100-101"]) == tuple(sorted({22, 100, 101, *TEAMTNT_PORTS}))


@pytest.mark.parametrize(("spec", "fragment"), [
    ("0", "outside 1-65535"),
    ("65536", "outside 1-65535"),
    ("80-70", "runs backwards"),
    ("22,,80", "empty item"),
    ("http", "not a port, range or profile"),
    ("1-2-3", "not a port"),
])
def test_bad_port_specs(spec, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_ports(spec)


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=MAX_PORT), min_size=1, max_size=300))
def test_port_format_round_trip(ports):
    text = format_ports(ports)
    assert parse_ports(text) == tuple(sorted(ports))
    assert len(text.split(",")) <= len(ports)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, MAX_PORT), st.integers(0, 300)), min_size=1, max_size=20))
def test_port_ranges_cover_exactly_their_union(ranges):
    spec = ",".join(f"{low}-{min(low + width, MAX_PORT)}" for low, width in ranges)
    expected = set()
    for low, width in ranges:
        expected.update(range(low, min(low + width, MAX_PORT) + 1))
    assert parse_ports(spec) == tuple(sorted(expected))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(20, 32))
def test_ipv4_cidr_never_yields_outside_and_counts_exactly(value, prefix):
    network = ipaddress.IPv4Network((value, prefix), strict=False)
    targets = parse_targets([str(network)])
    got = addresses(targets)
    assert len(got) == len(set(got)) == network.num_addresses == len(targets)
    assert all(ipaddress.IPv4Address(a) in network for a in got)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(118, 128))
def test_ipv6_cidr_never_yields_outside_and_counts_exactly(value, prefix):
    network = ipaddress.IPv6Network((value, prefix), strict=False)
    targets = parse_targets([str(network)])
    got = addresses(targets)
    assert len(got) == len(set(got)) == network.num_addresses == len(targets)
    assert all(ipaddress.IPv6Address(a) in network for a in got)
    # The text round-trips through the parser as a single address.
    assert all(parse_target(a).addresses == (ipaddress.IPv6Address(a),) for a in got[:3])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(26, 32)), min_size=1, max_size=6))
def test_overlapping_cidrs_yield_the_union_once(parts):
    networks = [ipaddress.IPv4Network((0x7F000000 | value, prefix), strict=False) for value, prefix in parts]
    targets = parse_targets([str(n) for n in networks])
    got = addresses(targets)
    expected = {str(a) for n in networks for a in n}
    assert len(got) == len(targets) and set(got) == expected and len(got) == len(expected)
