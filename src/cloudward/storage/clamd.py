"""A small client for clamd's INSTREAM protocol, so ClamAV's signatures join a storage scan without
writing objects to disk or running clamscan per file.

Protocol (clamd's documented commands, `z` prefix = NUL-terminated): `zINSTREAM\\0`, then chunks
`<uint32 big-endian length><bytes>`, then a zero-length chunk; clamd answers one line:
`stream: OK`, `stream: <Signature> FOUND` or `... ERROR` (e.g. `INSTREAM size limit exceeded`,
after which it may close the connection early: the reply is still read). `zPING` -> `PONG`,
`zVERSION` -> a version line. One connection per scan keeps the client thread-safe.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["Clamd", "ClamdError", "ClamdVerdict"]

MAX_REPLY = 64 * 1024  # one line of text; a peer that sends more is not clamd


class ClamdError(Exception):
    """clamd could not be reached or answered nonsense; the message names the address."""


@dataclass(frozen=True)
class ClamdVerdict:
    infected: bool
    signature: str | None = None
    error: str | None = None


class Clamd:
    def __init__(self, address: str, timeout: float = 30.0, chunk_size: int = 256 * 1024) -> None:
        self.address = address
        self.timeout = timeout
        self.chunk_size = chunk_size
        self._family, self._target = _parse(address)

    def _connect(self) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._target)
        except OSError as exc:
            sock.close()
            raise ClamdError(f"clamd at {self.address}: cannot connect ({exc.strerror or exc})") from None
        return sock

    def _reply(self, sock: socket.socket) -> str:
        """One line, bounded in size (MAX_REPLY) and in time: the whole answer must arrive within
        `timeout`, so a peer trickling bytes cannot hold the caller either."""
        data = bytearray()
        deadline = time.monotonic() + self.timeout
        try:
            while b"\0" not in data and b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                piece = sock.recv(4096)
                if not piece:
                    break
                data += piece
                if len(data) > MAX_REPLY:
                    raise ClamdError(f"clamd at {self.address}: reply longer than {MAX_REPLY} bytes")
        except TimeoutError:
            raise ClamdError(f"clamd at {self.address}: no answer within {self.timeout:g}s") from None
        except ConnectionResetError:
            # a peer that closes with our request still unread resets rather than ends the stream:
            # to the caller that is the same failure as a clean close without a reply
            if not data:
                raise ClamdError(f"clamd at {self.address}: empty answer (connection reset)") from None
        except OSError as exc:
            raise ClamdError(f"clamd at {self.address}: {exc.strerror or exc}") from None
        text = bytes(data).split(b"\0", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        if not text:
            raise ClamdError(f"clamd at {self.address}: empty answer")
        return text

    def _command(self, command: bytes) -> str:
        with self._connect() as sock:
            try:
                sock.sendall(b"z" + command + b"\0")
            except OSError as exc:
                raise ClamdError(f"clamd at {self.address}: {exc.strerror or exc}") from None
            return self._reply(sock)

    def ping(self) -> None:
        answer = self._command(b"PING")
        if answer != "PONG":
            raise ClamdError(f"clamd at {self.address}: answered {answer[:80]!r} to PING")

    def version(self) -> str:
        return self._command(b"VERSION")

    def scan_bytes(self, data: bytes) -> ClamdVerdict:
        return self.scan_stream([data])

    def scan_stream(self, stream: BinaryIO | Iterable[bytes]) -> ClamdVerdict:
        """Send the content in chunks; stop pulling from `stream` as soon as clamd stops taking it
        (its size limit), so the caller can drain the rest for its other engines."""
        with self._connect() as sock:
            try:
                sock.sendall(b"zINSTREAM\0")
                for piece in _pieces(stream, self.chunk_size):
                    for start in range(0, len(piece), self.chunk_size):
                        part = piece[start:start + self.chunk_size]
                        sock.sendall(struct.pack(">I", len(part)) + part)
                sock.sendall(struct.pack(">I", 0))
            except (BrokenPipeError, ConnectionResetError):
                pass  # clamd closed early (size limit): its reply says why
            except TimeoutError:
                raise ClamdError(f"clamd at {self.address}: stalled while receiving") from None
            except OSError as exc:
                raise ClamdError(f"clamd at {self.address}: {exc.strerror or exc}") from None
            return _verdict(self._reply(sock), self.address)


def _pieces(stream: BinaryIO | Iterable[bytes], size: int) -> Iterator[bytes]:
    if hasattr(stream, "read"):
        while True:
            piece = stream.read(size)
            if not piece:
                return
            yield piece
    else:
        yield from stream


def _verdict(answer: str, address: str) -> ClamdVerdict:
    body = answer.split(":", 1)[1].strip() if answer.startswith("stream:") else answer
    if body == "OK":
        return ClamdVerdict(infected=False)
    if body.endswith(" FOUND"):
        return ClamdVerdict(infected=True, signature=body[: -len(" FOUND")].strip())
    if body.endswith(" ERROR") or "limit" in body.lower():
        return ClamdVerdict(infected=False, error=body.removesuffix(" ERROR").strip())
    raise ClamdError(f"clamd at {address}: unexpected answer {answer[:120]!r}")


def _parse(address: str) -> tuple[int, str | tuple[str, int]]:
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[5:]
    if address.startswith("/") or os.path.exists(address):
        return socket.AF_UNIX, address
    spec = address.removeprefix("tcp://")
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address}: a clamd address is unix:/path, /path or tcp://host:port")
    return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, (host.strip("[]"), int(port))
