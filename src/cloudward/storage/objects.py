"""Where objects come from: an S3-compatible bucket (any endpoint) or a local directory, as one
`StoredObject` with a streaming opener, so the scanner never cares which.

S3 objects are read with ranged GETs (`Range: bytes=a-b`, 8 MiB at a time): nothing is written to
disk, memory stays at one range whatever the object's size, and a dropped connection costs one
range (retried), not the whole object. Local files are read as they are; symbolic links and
special files are never followed or opened (a scan must not wander out of the directory it was
given or block on a FIFO).
"""

from __future__ import annotations

import functools
import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote

__all__ = ["RANGE_SIZE", "ObjectError", "StoredObject", "iter_local", "iter_s3", "parse_s3_url", "s3_client"]

RANGE_SIZE = 8 * 1024 * 1024
RANGE_RETRIES = 3


class ObjectError(Exception):
    """A listing or read failed; the message names the bucket, prefix or object."""


@dataclass
class StoredObject:
    """One object to scan. `url` names it for people (`s3://bucket/key`, or a local path) and is the
    finding target; `etag` (or size+mtime for files) tells an unchanged object on a re-scan."""

    url: str
    key: str
    size: int
    etag: str | None
    opener: Callable[[], BinaryIO] = field(repr=False)
    bucket: str | None = None
    version_id: str | None = None
    last_modified: str | None = None

    def open(self) -> BinaryIO:
        return self.opener()

    @property
    def location(self) -> dict[str, Any]:
        where: dict[str, Any] = {"key": self.key}
        if self.bucket is not None:
            where["bucket"] = self.bucket
        if self.version_id:
            where["version_id"] = self.version_id
        if self.etag:
            where["etag"] = self.etag
        return where


# -- S3 -----------------------------------------------------------------------------------------

def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url}: not an s3:// URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url}: no bucket name")
    return bucket, prefix


def s3_client(endpoint_url: str | None = None, region: str | None = None, *, max_pool: int = 16) -> Any:
    """A boto3 S3 client from the standard credential chain (env, profile, instance role) with
    path-style addressing for custom endpoints (MinIO, moto, Ceph) and a pool sized to the scan's
    concurrency."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ObjectError("S3 scanning needs boto3: pip install 'cloudward[aws]'") from None
    config = Config(max_pool_connections=max_pool, retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path"} if endpoint_url else None)
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class _RangedReader(io.RawIOBase):
    """A read-only stream over one S3 object made of ranged GETs, each retried on its own."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, version_id: str | None, etag: str | None) -> None:
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._version, self._etag = version_id, etag
        self._pos = 0
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def _fetch(self, start: int) -> bytes:
        end = min(start + RANGE_SIZE, self._size) - 1
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key, "Range": f"bytes={start}-{end}"}
        if self._version:
            kwargs["VersionId"] = self._version
        elif self._etag:
            kwargs["IfMatch"] = self._etag  # the object changed under us: fail rather than mix versions
        last: Exception | None = None
        for _ in range(RANGE_RETRIES):
            try:
                body = self._client.get_object(**kwargs)["Body"]
                try:
                    data: bytes = body.read()
                finally:
                    body.close()
                if len(data) != end - start + 1:
                    raise OSError(f"short range: {len(data)} of {end - start + 1} bytes")
                return data
            except Exception as exc:  # botocore errors, connection resets
                last = exc
                if _status(exc) in (403, 404, 412):
                    break
        raise OSError(f"s3://{self._bucket}/{self._key}: bytes {start}-{end}: {_describe(last)}")

    def readinto(self, buffer: Any) -> int:
        if not self._buffer:
            if self._pos >= self._size:
                return 0
            self._buffer = self._fetch(self._pos)
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self._pos += n
        return n


def _status(exc: BaseException | None) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def iter_s3(client: Any, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
    """Every object under `prefix` (paginated listing). A listing failure raises ObjectError naming
    the bucket; objects are yielded as pages arrive, so a huge bucket starts scanning at once."""
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key, size = item["Key"], int(item.get("Size", 0))
                etag = str(item.get("ETag", "")).strip('"') or None
                modified = item.get("LastModified")
                yield StoredObject(
                    url=f"s3://{bucket}/{key}", key=key, size=size, etag=etag, bucket=bucket,
                    last_modified=modified.isoformat() if modified is not None else None,
                    opener=_s3_opener(client, bucket, key, size, None, etag),
                )
    except ObjectError:
        raise
    except Exception as exc:
        raise ObjectError(f"s3://{bucket}/{prefix}: cannot list: {_describe(exc)}") from None


def s3_object(client: Any, bucket: str, key: str, version_id: str | None = None) -> StoredObject:
    """One object by key (scan on upload), with its current size and ETag."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        head = client.head_object(**kwargs)
    except Exception as exc:
        raise ObjectError(f"s3://{bucket}/{key}: {_describe(exc)}") from None
    size = int(head.get("ContentLength", 0))
    etag = str(head.get("ETag", "")).strip('"') or None
    modified = head.get("LastModified")
    return StoredObject(url=f"s3://{bucket}/{key}", key=key, size=size, etag=etag, bucket=bucket,
                        version_id=version_id, last_modified=modified.isoformat() if modified is not None else None,
                        opener=_s3_opener(client, bucket, key, size, version_id, etag))


def _s3_opener(client: Any, bucket: str, key: str, size: int, version_id: str | None,
               etag: str | None) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        return io.BufferedReader(_RangedReader(client, bucket, key, size, version_id, etag), buffer_size=1024 * 1024)
    return opener


def display_key(key: str) -> str:
    """A key as it can be shown on one line (keys may hold newlines and control characters)."""
    return quote(key, safe="/ !$&'()*+,;=:@-._~") if any(ord(c) < 32 or ord(c) == 127 for c in key) else key


# -- local files --------------------------------------------------------------------------------

def iter_local(root: str, errors: Callable[[str, str], None]) -> Iterator[StoredObject]:
    """Regular files under `root` (or `root` itself), never following symbolic links; unreadable
    directories and special files go to `errors(path, why)` and the walk continues."""
    try:
        info = os.lstat(root)
    except OSError as exc:
        errors(root, f"cannot read: {exc.strerror or exc}")
        return
    if stat.S_ISREG(info.st_mode):
        yield _local(root, os.path.basename(root), info)
        return
    if not stat.S_ISDIR(info.st_mode):
        errors(root, "not a regular file or directory")
        return
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            errors(current, f"cannot list: {exc.strerror or exc}")
            continue
        for entry in listing:
            try:
                entry_info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                errors(entry.path, f"cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(entry_info.st_mode):
                stack.append(entry.path)
            elif stat.S_ISREG(entry_info.st_mode):
                yield _local(entry.path, os.path.relpath(entry.path, root), entry_info)
            elif stat.S_ISLNK(entry_info.st_mode):
                continue  # links are not followed: a scan stays inside the tree it was given
            else:
                errors(entry.path, "not a regular file (FIFO, socket or device): not read")


def _open_local(path: str) -> BinaryIO:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    return os.fdopen(fd, "rb", buffering=1024 * 1024)


def _local(path: str, key: str, info: os.stat_result) -> StoredObject:
    # a partial of a module function, not a closure: local objects can be sent to worker processes
    return StoredObject(url=os.path.abspath(path), key=key, size=info.st_size,
                        etag=f"{info.st_size}-{info.st_mtime_ns}", opener=functools.partial(_open_local, path))
