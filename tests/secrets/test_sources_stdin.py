"""Standard input: streamed, never buffered whole; archives piped in are opened."""

from __future__ import annotations

import gzip
import io
import tracemalloc

from cloudward.engines.blobs import MiB
from cloudward.secrets.sources import Blob, ErrorCode, SourceError, SourceStats, read_stream


class Endless(io.RawIOBase):
    """`size` bytes of log lines produced on demand (a pipe that is never in memory at once)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size
        self.line = b"2024-01-01T00:00:00 INFO request served in 12ms\n"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        chunk = (self.line * (n // len(self.line) + 1))[:n]
        buffer[:n] = chunk
        self.left -= n
        return n


def test_stdin_is_one_streamed_blob_in_bounded_memory():
    stats = SourceStats()
    source = io.BufferedReader(Endless(256 * MiB))
    items = list(read_stream(source, stats=stats))
    (blob,) = items
    assert blob.origin == "-" and blob.target_kind == "stdin" and blob.size is None and blob.one_shot
    tracemalloc.start()
    total = 0
    try:
        with blob.open() as stream:
            while chunk := stream.read(MiB):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 * MiB
    assert peak < 16 * MiB
    assert stats.bytes_read == 256 * MiB
    assert not source.closed  # the caller's stream stays open


def test_binary_input_is_scanned_by_default():
    data = b"\x00\x01core dump\x00password=hunter2\x00"
    (blob,) = list(read_stream(io.BytesIO(data)))
    assert blob.read() == data
    (error,) = list(read_stream(io.BytesIO(data), skip_binary=True))
    assert error.code is ErrorCode.BINARY


def test_piped_gzip_is_decompressed():
    items = list(read_stream(io.BytesIO(gzip.compress(b"TOKEN=abc\n")), origin="stdin"))
    assert [i.origin for i in items] == ["stdin!stdin"]
    assert items[0].read() == b"TOKEN=abc\n"


def test_size_cap_reports_the_rest():
    items = []
    for item in read_stream(io.BytesIO(b"a" * 5000), max_size=1000):
        if isinstance(item, Blob):
            items.append(len(item.read()))
        else:
            items.append(item)
    assert items[0] == 1000
    assert isinstance(items[1], SourceError) and items[1].code is ErrorCode.TOO_LARGE
    items = [i for i in read_stream(io.BytesIO(b"a" * 1000), max_size=1000) if isinstance(i, SourceError)]
    assert items == []
