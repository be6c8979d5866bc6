"""ReplyFramer: reply boundaries in a server's stream, whatever the reads' sizes; malformed streams
raise ProtocolError and nothing else."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.network.resp import ProtocolError
from cloudward.network.resp_replies import ReplyFramer

line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
scalars = st.one_of(
    line_text.map(lambda t: b"+" + t + b"\r\n"),
    line_text.map(lambda t: b"-ERR " + t + b"\r\n"),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: b":%d\r\n" % i),
    st.binary(max_size=300).map(lambda v: b"$%d\r\n%s\r\n" % (len(v), v)),  # CRLF inside values too
    st.just(b"$-1\r\n"),
    st.just(b"*-1\r\n"),
    st.just(b"*0\r\n"),
    # RESP3 (a client that sent HELLO 3 shares a connection that did too)
    st.sampled_from([b"_\r\n", b"#t\r\n", b"#f\r\n", b",3.14\r\n", b",inf\r\n", b"%0\r\n", b"~0\r\n",
                     b"(3492890328409238509324850943850943825024385\r\n"]),
    st.binary(max_size=60).map(lambda v: b"!%d\r\n%s\r\n" % (len(v), v)),
    st.binary(max_size=60).map(lambda v: b"=%d\r\ntxt:%s\r\n" % (len(v) + 4, v)),
)


def _aggregate(items: list[bytes]) -> st.SearchStrategy[bytes]:
    pairs = len(items) // 2
    return st.sampled_from([
        b"*%d\r\n" % len(items) + b"".join(items),
        b"~%d\r\n" % len(items) + b"".join(items),
        b"%%%d\r\n" % pairs + b"".join(items[:2 * pairs]) if pairs else b"%0\r\n",
    ])


replies = st.recursive(scalars, lambda inner: st.lists(inner, min_size=1, max_size=6).flatmap(_aggregate),
                       max_leaves=20)


def frame(stream: bytes, cuts: list[int], groups: list[int]) -> list[int]:
    """Feed `stream` in reads cut at `cuts`, asking for replies `groups` at a time as the shared
    connection does per client; return the absolute end of every group."""
    framer = ReplyFramer()
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reads = [(a, stream[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    ends: list[int] = []
    pending = list(groups)
    for offset, data in reads:
        pos = 0
        while pending:
            pos, done = framer.advance(data, pos, pending[0])
            if done < pending[0]:
                pending[0] -= done
                assert pos == len(data)
                break
            pending.pop(0)
            ends.append(offset + pos)
    return ends


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, min_size=1, max_size=12), st.lists(st.integers(0, 10_000), max_size=12), st.data())
def test_every_boundary_is_found_whatever_the_reads(items: list[bytes], cuts: list[int], data: st.DataObject):
    groups: list[int] = []
    left = len(items)
    while left:
        take = data.draw(st.integers(1, left))
        groups.append(take)
        left -= take
    stream = b"".join(items)
    expected, at = [], 0
    index = 0
    for take in groups:
        at += sum(len(x) for x in items[index:index + take])
        index += take
        expected.append(at)
    assert frame(stream, cuts, groups) == expected


def test_a_huge_declared_bulk_costs_a_counter_not_memory():
    framer = ReplyFramer()
    assert framer.advance(b"$1099511627776\r\nabc", 0, 1) == (19, 0)
    assert not framer.idle
    assert framer.advance(b"x" * 1000, 0, 1) == (1000, 0)  # still inside it


def test_one_reply_per_client_out_of_a_batched_read():
    stream = b"+OK\r\n$3\r\nabc\r\n:7\r\n*2\r\n$1\r\na\r\n$-1\r\n-ERR no\r\n"
    framer = ReplyFramer()
    pos, ends = 0, []
    for _ in range(5):
        pos, done = framer.advance(stream, pos, 1)
        assert done == 1
        ends.append(pos)
    assert ends == [5, 14, 18, 34, 43] and framer.idle


@pytest.mark.parametrize("stream, message", [
    (b">2\r\n+message\r\n+x\r\n", "unexpected reply type"),  # a push: never on a shared connection
    (b"|1\r\n+a\r\n+b\r\n", "unexpected reply type"),  # an attribute: neither
    (b"$3\r\nabcde\r\n", "does not end in CRLF"),
    (b"$x\r\n", "invalid reply length"),
    (b"*+5\r\n", "invalid reply length"),
    (b"\r\n", "empty reply line"),
    (b"*1\r\n" * 70, "nested deeper"),
])
def test_malformed_streams_are_refused(stream: bytes, message: str):
    with pytest.raises(ProtocolError, match=message):
        ReplyFramer().advance(stream, 0, 10)


def test_an_endless_line_is_refused():
    framer = ReplyFramer()
    framer.advance(b"+" + b"a" * (ReplyFramer.MAX_LINE - 10), 0, 1)
    with pytest.raises(ProtocolError, match="longer than"):
        framer.advance(b"a" * 100, 0, 1)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(1, 5))
def test_fuzz_garbage_raises_only_protocol_error(reads: list[bytes], count: int):
    framer = ReplyFramer()
    try:
        for data in reads:
            pos, done = framer.advance(data, 0, count)
            assert 0 <= pos <= len(data) and 0 <= done <= count
    except ProtocolError:
        pass
