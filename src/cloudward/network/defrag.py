"""IP fragments (IPv4 and IPv6) put back into whole datagrams before transport decoding.

Fragmenting a datagram so that no single packet holds a signature's pattern is an old evasion, so
fragments are reassembled rather than skipped. Overlaps are resolved like TCP's: **first wins**
(the bytes that arrived first are kept; differing overlaps are counted). Bounds: at most
`max_datagrams` datagrams in progress (the oldest is dropped first), `max_bytes` held by all of
them, no datagram beyond 65,535 bytes, and a datagram not completed within `timeout` seconds of
capture time is dropped. A fragment cut short by the capture's snapshot length spoils its
datagram (it can never be whole).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from cloudward.network.layers import Fragment
from cloudward.network.reassembly import insert_first_wins

_MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Datagram:
    first_ts: float
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    held: int = 0
    total: int = -1  # payload length, once the last fragment (no "more" flag) is seen
    spoiled: bool = False


@dataclass(slots=True)
class DefragStats:
    fragments: int = 0
    reassembled: int = 0  # whole datagrams handed on
    dropped: int = 0  # datagrams given up: timed out, evicted, oversized or cut by the capture
    conflicts: int = 0  # overlapping fragments whose bytes differed


class Defragmenter:
    def __init__(self, *, max_datagrams: int = 4096, max_bytes: int = 32 * 1024 * 1024,
                 timeout: float = 30.0) -> None:
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.pending: OrderedDict[tuple[object, ...], _Datagram] = OrderedDict()
        self.held = 0
        self.stats = DefragStats()

    def add(self, fragment: Fragment, ts: float) -> bytes | None:
        """The whole datagram's payload if this fragment completed it, else None."""
        self.stats.fragments += 1
        self._expire(ts)
        key = fragment.key
        datagram = self.pending.get(key)
        if datagram is None:
            while len(self.pending) >= self.max_datagrams:
                self._drop(next(iter(self.pending)))
            datagram = _Datagram(ts)
            self.pending[key] = datagram
        end = fragment.offset + len(fragment.data)
        if fragment.missing or end > _MAX_DATAGRAM or (datagram.total >= 0 and end > datagram.total):
            datagram.spoiled = True
        if datagram.spoiled:
            return None
        if not fragment.more:
            last = datagram.pieces[-1] if datagram.pieces else (0, b"")
            if (datagram.total >= 0 and datagram.total != end) or last[0] + len(last[1]) > end:
                datagram.spoiled = True
                return None
            datagram.total = end
        added, _, conflicts = insert_first_wins(datagram.pieces, fragment.offset, fragment.data)
        datagram.held += added
        self.held += added
        self.stats.conflicts += conflicts
        while self.held > self.max_bytes and self.pending:
            oldest = next(iter(self.pending))
            self._drop(oldest)
            if oldest == key:
                return None
        # the pieces never overlap and all lie below the total: as many bytes as the total is all of it
        if datagram.total < 0 or datagram.held != datagram.total:
            return None
        pieces = datagram.pieces
        del self.pending[key]
        self.held -= datagram.held
        self.stats.reassembled += 1
        return b"".join(piece for _, piece in pieces)

    def _expire(self, now: float) -> None:
        while self.pending:
            key, datagram = next(iter(self.pending.items()))
            if now - datagram.first_ts <= self.timeout:
                return
            self._drop(key)

    def _drop(self, key: tuple[object, ...]) -> None:
        datagram = self.pending.pop(key)
        self.held -= datagram.held
        self.stats.dropped += 1
