"""The RESP request parser and the reply splicer of `network protect redis`, on their own: framing,
strictness, limits refused before any byte is awaited, reads cut anywhere, and hypothesis fuzzing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.network.resp import (
    UNAUTHENTICATED_LIMITS,
    Limits,
    ProtocolError,
    ReplySplicer,
    RequestParser,
    encode_command,
    error_reply,
    split_inline,
)


def parse_all(data: bytes, parser: RequestParser | None = None, chunk: int = 0) -> list[list[bytes]]:
    parser = parser or RequestParser()
    out = []
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        buf, commands = parser.feed(piece)
        for args, start, end, encode in commands:
            if not encode:
                assert buf[start:end] == encode_command(args)  # the span is the very frame
            out.append(args)
    return out


# --- framing ------------------------------------------------------------------------------------


def test_arrays_of_bulk_strings_with_spans():
    frames = [encode_command([b"SET", b"k", b"v\r\nwith crlf"]), encode_command([b"GET", b"k"]),
              encode_command([b"PING"])]
    parser = RequestParser()
    buf, commands = parser.feed(b"".join(frames))
    assert [c[0] for c in commands] == [[b"SET", b"k", b"v\r\nwith crlf"], [b"GET", b"k"], [b"PING"]]
    assert [buf[s:e] for _, s, e, _ in commands] == frames
    assert parser.buffered == 0


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 16])
def test_reads_cut_anywhere_give_the_same_commands(chunk):
    commands = [[b"SET", b"key", b"x" * 100], [b"MSET", b"a", b"", b"b", b"\r\n"], [b"GET", b"key"]]
    data = b"".join(encode_command(c) for c in commands)
    assert parse_all(data, chunk=chunk) == commands


def test_null_and_empty_arrays_are_consumed_not_commands():
    assert parse_all(b"*0\r\n*-1\r\n" + encode_command([b"PING"])) == [[b"PING"]]


def test_inline_commands_split_like_redis():
    assert parse_all(b"SET k v\r\nGET k\n\r\n\n  PING  \r\n") == [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"PING"]]
    assert split_inline(b'SET "a b" \'c d\' "x\\x41\\n\\"q"') == [b"SET", b"a b", b"c d", b'xA\n"q']
    assert split_inline(b"config set DIR /tmp") == [b"config", b"set", b"DIR", b"/tmp"]
    assert split_inline(b'a"b c" d') == [b"ab c", b"d"]  # a quote opens mid-word, as in sdssplitargs
    assert split_inline(b"a\x0bb") == [b"a\x0bb"]  # \v does not end an unquoted word in redis


def test_inline_commands_are_flagged_for_reencoding():
    _, commands = RequestParser().feed(b"GET k\r\n")
    assert commands == [([b"GET", b"k"], 0, 7, True)]


@pytest.mark.parametrize("line, problem", [
    (b'SET "unterminated\r\n', "unbalanced quotes"),
    (b"SET 'x\r\n", "unbalanced quotes"),
    (b'SET "a"b\r\n', "closing quote"),
    (b"GET a\x00b\r\n", "NUL"),
])
def test_malformed_inline_commands(line, problem):
    with pytest.raises(ProtocolError, match=problem):
        RequestParser().feed(line)


@pytest.mark.parametrize("frame, problem", [
    (b"*1\r\n$03\r\nGET\r\n", "invalid bulk length '03'"),
    (b"*1\r\n$+3\r\nGET\r\n", "invalid bulk length"),
    (b"*1\r\n$ 3\r\nGET\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length '-1'"),
    (b"*1\r\n$3\r\nGETxx", "not followed by"),
    (b"*2\r\n+GET\r\n:5\r\n", "expected '\\$'"),
    (b"*x\r\n", "invalid array length 'x'"),
    (b"*1_0\r\n", "invalid array length"),
    (b"*" + b"9" * 40, "invalid array header"),
    (b"*1\r\n$" + b"9" * 40, "invalid bulk header"),
])
def test_frames_redis_could_read_differently_are_refused(frame, problem):
    parser = RequestParser()
    with pytest.raises(ProtocolError, match=problem):
        parser.feed(frame)
    with pytest.raises(ProtocolError):  # and the parser stays failed: nothing after it is trusted
        parser.feed(encode_command([b"PING"]))


# --- limits ---------------------------------------------------------------------------------------


def test_a_2_to_the_40_bulk_length_is_refused_before_reading_it():
    parser = RequestParser()
    with pytest.raises(ProtocolError, match="bulk length 1099511627776 exceeds the limit of 67108864 bytes"):
        parser.feed(b"*1\r\n$1099511627776\r\n")
    assert parser.buffered == 0


def test_limits_on_arrays_inline_lines_and_requests():
    limits = Limits(max_bulk=100, max_array=3, max_inline=64, max_request=200)
    with pytest.raises(ProtocolError, match="array of 4 arguments exceeds the limit of 3"):
        RequestParser(limits).feed(b"*4\r\n")
    with pytest.raises(ProtocolError, match="inline request longer than 64 bytes"):
        RequestParser(limits).feed(b"A" * 65)
    with pytest.raises(ProtocolError, match="inline request longer than 64 bytes"):
        parser = RequestParser(limits)
        parser.feed(b"A" * 40)
        parser.feed(b"A" * 40)
    with pytest.raises(ProtocolError, match="request larger than the limit of 200 bytes"):
        RequestParser(limits).feed(b"*3\r\n$100\r\n" + b"x" * 100 + b"\r\n$100\r\n")
    assert parse_all(encode_command([b"SET", b"k", b"x" * 100]), RequestParser(limits)) == [[b"SET", b"k", b"x" * 100]]


def test_unauthenticated_limits_are_tight():
    with pytest.raises(ProtocolError, match="array of 11 arguments"):
        RequestParser(UNAUTHENTICATED_LIMITS).feed(b"*11\r\n")
    with pytest.raises(ProtocolError, match="bulk length 16385"):
        RequestParser(UNAUTHENTICATED_LIMITS).feed(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n")


def test_a_large_value_in_small_reads_is_held_as_received():
    value = bytes(range(256)) * 4096  # 1 MiB
    frame = encode_command([b"SET", b"k", value])
    parser = RequestParser()
    got = []
    for i in range(0, len(frame), 16384):
        _, commands = parser.feed(frame[i:i + 16384])
        got += commands
        if not commands:
            assert parser.buffered <= i + 16384  # what arrived, never the declared length
    assert got == [([b"SET", b"k", value], -1, -1, True)]
    assert parser.buffered == 0


def test_max_commands_leaves_the_rest_held_for_the_next_call():
    data = b"".join(encode_command([b"CMD", b"%d" % i]) for i in range(5))
    parser = RequestParser(UNAUTHENTICATED_LIMITS)
    _, first = parser.feed(data, max_commands=1)
    assert [c[0] for c in first] == [[b"CMD", b"0"]]
    parser.limits = Limits()  # e.g. the client authenticated
    _, rest = parser.feed(b"")
    assert [c[0][1] for c in rest] == [b"1", b"2", b"3", b"4"]


# --- replies --------------------------------------------------------------------------------------


def _marker_reply(marker: bytes) -> bytes:
    """What redis answers to a marker command: an unknown-command error naming it."""
    name = marker.split(b"\r\n")[2]
    return b"-ERR unknown command '" + name + b"', with args beginning with: \r\n"


def test_splicer_puts_local_replies_in_place():
    splicer = ReplySplicer()
    marker = splicer.marker(b"-NOPERM blocked\r\n")
    stream = b"+OK\r\n$5\r\nhello\r\n" + _marker_reply(marker) + b":1\r\n"
    out, close = splicer.feed(stream)
    assert out == b"+OK\r\n$5\r\nhello\r\n-NOPERM blocked\r\n:1\r\n"
    assert not close and splicer.idle


def test_splicer_drops_replies_the_client_suppressed_and_closes_on_request():
    splicer = ReplySplicer()
    first = splicer.marker(b"-first\r\n")
    second = splicer.marker(b"-second\r\n", close=True)
    # CLIENT REPLY SKIP swallowed the first marker's reply: only the second comes back
    out, close = splicer.feed(b"+OK\r\n" + _marker_reply(second))
    assert out == b"+OK\r\n-second\r\n" and close
    assert first not in out and splicer.idle


def test_splicer_ignores_a_stored_value_naming_a_marker_it_did_not_send():
    splicer = ReplySplicer()
    splicer.marker(b"-mine\r\n")
    forged = b"-ERR unknown command 'cloudward.00000000000000000000', with args beginning with: \r\n"
    out, _ = splicer.feed(b"$" + str(len(forged)).encode() + b"\r\n" + forged + b"\r\n")
    assert b"-mine" not in out and len(splicer) == 1


# --- fuzzing --------------------------------------------------------------------------------------

_arg = st.binary(min_size=0, max_size=40) | st.sampled_from([b"\r\n", b"*1\r\n$4\r\nPING\r\n", b"$3\r\n", b"\r"])
_command = st.lists(_arg, min_size=1, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(_command, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_fuzz_any_framing_of_valid_commands_parses_back(commands, cuts):
    data = b"".join(encode_command(c) for c in commands)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    parser = RequestParser()
    got = []
    for a, b in itertools.pairwise(points):
        buf, parsed = parser.feed(data[a:b])
        for args, start, end, encode in parsed:
            if not encode:
                assert buf[start:end] == encode_command(args)
            got.append(args)
    assert got == commands
    assert parser.buffered == 0


@settings(max_examples=400, deadline=None)
@given(garbage=st.lists(st.binary(max_size=64) | st.sampled_from(
    [b"*", b"$", b"\r\n", b"*1\r\n", b"$1099511627776\r\n", b"*2\r\n$3\r\nGET\r\n", b'"', b"'", b"\\x4"]),
    max_size=20))
def test_fuzz_hostile_bytes_parse_or_fail_cleanly(garbage):
    limits = Limits(max_bulk=1024, max_array=64, max_inline=256, max_request=4096)
    parser = RequestParser(limits)
    fed = 0
    for piece in garbage:
        fed += len(piece)
        try:
            buf, commands = parser.feed(piece)
        except ProtocolError as exc:
            assert str(exc)
            return
        for args, start, end, encode in commands:
            assert args and all(isinstance(a, bytes) for a in args)
            if not encode:
                assert buf[start:end] == encode_command(args)
        assert parser.buffered <= fed  # nothing is ever held beyond what was received


_reply = st.sampled_from([b"+OK\r\n", b":42\r\n", b"$-1\r\n", b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", b"-ERR x\r\n",
                          b"$7\r\nab\r\ncd\r\r\n", b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", b"_\r\n"])


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.tuples(st.booleans(), _reply), min_size=1, max_size=20),
       cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_fuzz_splicer_keeps_every_reply_in_order_whatever_the_reads(items, cuts):
    splicer = ReplySplicer()
    stream, expected = b"", b""
    for index, (local, reply) in enumerate(items):
        if local:
            payload = error_reply(f"NOPERM local {index}")
            stream += _marker_reply(splicer.marker(payload))
            expected += payload
        else:
            stream += reply
            expected += reply
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    out = b""
    for a, b in itertools.pairwise(points):
        piece, close = splicer.feed(stream[a:b])
        assert not close
        out += piece
    assert out == expected
    assert len(splicer) == 0
