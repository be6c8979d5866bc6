"""The shared item types and helpers of the secret sources."""

import codecs
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudward.core.scan import ScanResult
from cloudward.engines.blobs import PrefixedReader, buffered, display
from cloudward.secrets.sources import Blob, ErrorCode, SourceError, SourceStats, sniff_encoding


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"", "utf-8"),
        (b"KEY=value\nOTHER=x\n", "utf-8"),
        ("naïve façade — ünïcode\n".encode(), "utf-8"),
        ("ü".encode() * 100 + "€".encode()[:2], "utf-8"),  # a character cut by the sniff window
        (b"\x1b[31mred\x1b[0m\n", "utf-8"),  # ANSI colours are still text
        (b"ELF\x00\x01\x02", None),
        (bytes(range(1, 32)) * 10, None),  # control bytes
        (bytes(range(128, 256)) * 4, None),  # not UTF-8, mostly high bytes
        (codecs.BOM_UTF16_LE + "A=1\n".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF32_LE + "A=1\n".encode("utf-32-le"), "utf-32"),
    ],
)
def test_sniff_encoding(head, expected):
    assert sniff_encoding(head) == expected


def test_display_escapes_control_bidi_and_undecodable_bytes():
    assert display("src/app.py") == "src/app.py"
    assert display("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert display("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert display(b"bad\xff.txt".decode("utf-8", "surrogateescape")) == "bad\\xff.txt"
    assert display("new\nline").isprintable()


def test_inline_blob_reopens_and_one_shot_blob_does_not():
    blob = Blob.from_bytes("x", b"hello")
    assert blob.read() == b"hello"
    with blob.open() as stream:
        assert stream.read() == b"hello"
    stream_blob = Blob("y", None, {}, "stdin", opener=lambda: io.BytesIO(b"data"), one_shot=True)
    assert not stream_blob.reopenable
    assert stream_blob.read() == b"data"
    with pytest.raises(RuntimeError, match="already opened"):
        stream_blob.open()


def test_utf16_blob_is_transcoded_to_utf8():
    raw = codecs.BOM_UTF16_LE + "PASSWORD=hunter2\n".encode("utf-16-le")
    blob = Blob.from_bytes("x.ps1", raw)
    blob.encoding = "utf-16"
    assert blob.read() == b"PASSWORD=hunter2\n"


def test_prefixed_reader_replays_head_then_rest():
    rest = io.BytesIO(b"world")
    assert buffered(PrefixedReader(b"hello ", rest)).read() == b"hello world"


def test_source_error_records_into_scan_result_and_stats_count_it():
    result = ScanResult(kind="secrets")
    error = SourceError("a.zip", "corrupt zip archive: boom", ErrorCode.CORRUPT)
    error.record(result)
    assert result.errors[0].target == "a.zip"
    assert result.errors[0].stage == "secrets.source"
    stats = SourceStats()
    stats.note(error)
    stats.note(SourceError("b.bin", "skipped: binary content", ErrorCode.BINARY))
    stats.note(Blob.from_bytes("c", b"x"))
    assert stats.as_dict()["errors"] == 1
    assert stats.as_dict()["skipped"] == {"binary": 1}
    assert stats.blobs == 1


@given(st.text())
def test_display_is_always_printable(name):
    assert display(name).isprintable()


@given(st.binary(max_size=9000))
def test_sniff_never_raises(head):
    assert sniff_encoding(head) in (None, "utf-8", "utf-16", "utf-32")
