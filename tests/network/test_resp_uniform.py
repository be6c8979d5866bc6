"""The pipelined fast path (`resp.uniform_names` + `CompiledPolicy.all_plain`, used by the Redis
proxy on a read of whole commands that all have the same arity) must name exactly the commands the
exact parser finds, refuse to speak for any read it cannot prove, and never let a refused command
pass: checked on fixed frames and by hypothesis on random pipelines cut at random offsets."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.network.redis_policy import load_policy
from cloudward.network.resp import Limits, RequestParser, encode_command, uniform_names

LIMITS = Limits()
POLICY = load_policy(None)


def pipeline(*commands: list[bytes]) -> bytes:
    return b"".join(encode_command(c) for c in commands)


def exact_names(data: bytes) -> list[bytes] | None:
    """The exact parser's names for `data` when it holds only whole commands (None otherwise).
    A huge max_commands keeps the parser off its own split fast path."""
    parser = RequestParser(LIMITS)
    try:
        _, commands = parser.feed(data, max_commands=1 << 30)
    except ValueError:
        return None
    if parser.failed is not None or not parser.idle or parser.buffered:
        return None
    return [args[0] for args, _, _, _ in commands]


def test_a_uniform_pipeline_is_named_without_a_step_per_command():
    data = pipeline(*[[b"SET", b"key:%d" % i, b"v" * i] for i in range(16)])
    names, split = uniform_names(data, LIMITS)
    assert names == [b"SET"] * 16 and split == data.split(b"\r\n")
    assert POLICY.all_plain(names)
    gets = pipeline(*[[b"get", b"k"]] * 16)
    assert uniform_names(gets, LIMITS)[0] == [b"get"] * 16


def test_reads_it_cannot_prove_are_left_to_the_exact_parser():
    mixed = pipeline([b"SET", b"k", b"v"], [b"GET", b"k"])
    assert uniform_names(mixed, LIMITS) == (None, mixed.split(b"\r\n"))  # the split is handed on
    cut = pipeline([b"GET", b"a"], [b"GET", b"b"])[:-3]
    assert uniform_names(cut, LIMITS)[0] is None
    # a payload holding \r\n that looks like a command of the same arity
    hidden = pipeline([b"SET", b"k", b"x\r\n*3\r\n$8\r\nFLUSHALL\r\n$1\r\na"])
    assert uniform_names(hidden, LIMITS)[0] is None and exact_names(hidden) == [b"SET"]
    for frame in (b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",  # a length redis reads, written non-canonically
                  b"*2\r\n$3\r\nGET\r\n$2\r\nk\r\n",  # a payload shorter than declared
                  b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n",
                  b"GET k\r\n", b"*0\r\n", b"*1\r\n$4\r\nPING\r\n*1\r\n"):
        assert uniform_names(frame, LIMITS)[0] is None, frame
    tight = Limits(max_bulk=1024)  # limits below the fast path's tables: the exact parser checks them
    assert uniform_names(pipeline([b"GET", b"k"]), tight) == (None, None)


def test_refused_and_listed_commands_are_never_plain():
    assert not POLICY.all_plain([b"GET", b"SLAVEOF", b"GET"])
    assert not POLICY.all_plain([b"Config"])
    assert POLICY.all_plain([b"GET", b"gEt", b"INCR"])
    assert not POLICY.all_plain([b"slaveof"])  # a memo of plain names never swallows a refused one
    allow_only = load_policy(None).source.model_copy(update={"allow_commands": [b"get".decode()]}).compile()
    assert allow_only.all_plain([b"GET"]) and not allow_only.all_plain([b"GET", b"SET"])


_REFUSED = [[b"SLAVEOF", b"127.0.0.1", b"1"], [b"CONFIG", b"SET", b"dir", b"/tmp"], [b"config", b"get"],
            [b"MODULE", b"LOAD", b"/x.so"], [b"DEBUG", b"SLEEP"], [b"EVAL", b"return 1", b"0"]]
_ALLOWED = [[b"GET", b"k"], [b"SET", b"k", b"v"], [b"incr", b"n"], [b"PING"], [b"HSET", b"h", b"f", b"v"]]
_arg = st.binary(max_size=24) | st.sampled_from([b"\r\n", b"*1\r\n$4\r\nPING\r\n", b"$3\r\n", b"\r", b"*"])


@st.composite
def _pipelines(draw: st.DrawFn) -> list[list[bytes]]:
    """Mostly same-arity pipelines (what the fast path takes), sometimes mixed, mixing allowed,
    refused and random commands."""
    arity = draw(st.integers(1, 4))
    out = []
    for _ in range(draw(st.integers(1, 20))):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            command = list(draw(st.sampled_from(_ALLOWED)))
        elif kind < 7:
            command = list(draw(st.sampled_from(_REFUSED)))
        else:
            command = [draw(st.sampled_from([b"GET", b"SET", b"SLAVEOF", b"x"])), *draw(st.lists(_arg, max_size=3))]
        if draw(st.integers(0, 9)) < 8:  # bring it to the pipeline's arity
            command = (command + [b"a"] * arity)[:arity]
        if draw(st.integers(0, 29)) == 0:  # a last argument smuggling a refused command of the same arity
            fake = encode_command([b"SLAVEOF"] + [b"a"] * (len(command) - 1))
            command[-1] = command[-1] + b"\r\n" + fake[:-2]
        out.append(command)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=_pipelines(), cuts=st.lists(st.integers(0, 4000), max_size=6))
def test_fuzz_fast_path_and_exact_parser_agree_on_cut_pipelines(commands, cuts):
    data = pipeline(*commands)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    parser = RequestParser(LIMITS)
    seen: list[bytes] = []
    passed: list[bytes] = []  # names the fast path forwarded without a look at each command
    for a, b in itertools.pairwise(points):
        chunk = data[a:b]
        names, split = uniform_names(chunk, LIMITS) if parser.idle else (None, None)
        if names is not None:  # what the proxy does: the read is forwarded whole, the parser untouched
            assert names == exact_names(chunk)
            if POLICY.all_plain(names):
                passed += names
            seen += names
            continue
        parsed = parser.feed_lazy(chunk, 0, split)[1]
        seen += [args[0] for args, _, _, _ in parsed]
    assert seen == [c[0] for c in commands]
    assert parser.idle and parser.buffered == 0
    refused = {c[0].lower() for c in _REFUSED}
    assert not any(n.lower() in refused for n in passed)


@settings(max_examples=300, deadline=None)
@given(garbage=st.lists(st.binary(max_size=24) | st.sampled_from(
    [b"*2\r\n", b"*1\r\n", b"$3\r\n", b"$03\r\n", b"GET\r\n", b"\r\n", b"$1099511627776\r\n", b"*-1\r\n"]),
    max_size=24))
def test_fuzz_hostile_reads_are_named_exactly_or_left_alone(garbage):
    data = b"".join(garbage)
    names, split = uniform_names(data, LIMITS)
    assert split is None or split == data.split(b"\r\n")
    if names is not None:
        assert names == exact_names(data)
