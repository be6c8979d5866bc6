"""The one image model every source produces, so squash and scanners never care where an image came from."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cloudward.core.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ImageError(InputError):
    """An image could not be read; the message always names the input (path or reference)."""


@dataclass
class Layer:
    """One layer blob as stored (possibly compressed); ``opener`` re-reads it on demand."""

    digest: str
    diff_id: str | None
    media_type: str
    size: int
    opener: Callable[[], BinaryIO]

    def open_tar(self) -> BinaryIO:
        """A stream of the uncompressed layer tar, whatever compression the blob uses (sniffed by magic)."""
        raw = self.opener()
        head = _peek(raw, 4)
        if head.startswith(GZIP_MAGIC):
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        if head == ZSTD_MAGIC:
            import zstandard

            reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(raw)
            return reader
        return raw


def _peek(stream: BinaryIO, n: int) -> bytes:
    """Read the first bytes and rewind, or wrap non-seekable streams so nothing is lost."""
    if stream.seekable():
        pos = stream.tell()
        head = stream.read(n)
        stream.seek(pos)
        return head
    buffered = stream if isinstance(stream, io.BufferedReader) else None
    if buffered is not None:
        return buffered.peek(n)[:n]
    raise ImageError("layer stream is not seekable")


@dataclass
class Image:
    """A container image: config JSON plus ordered layers (bottom first)."""

    reference: str
    source: str
    manifest_digest: str | None
    config_digest: str
    config: dict[str, Any]
    layers: list[Layer]
    repo_tags: list[str] = field(default_factory=list)
    platform: str = "linux/amd64"
    # local sources: the small files read to identify the image (BlobStore.reads), so a cache can
    # recognise the same image later by re-reading only those, never the layers
    identity: list[tuple[str, int, int, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        """Image id, as Docker defines it: the config digest."""
        return self.config_digest


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of bytes, the form digests take in manifests."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def platform_of(config: dict[str, Any]) -> str:
    """``os/arch[/variant]`` from an image config."""
    plat = f"{config.get('os', 'linux')}/{config.get('architecture', 'amd64')}"
    return f"{plat}/{config['variant']}" if config.get("variant") else plat
