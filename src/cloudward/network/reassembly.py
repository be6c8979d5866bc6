"""One direction of a TCP stream put back in order.

Policy, chosen once and documented because IDS evasion lives in the differences between
reassembly policies (Ptacek & Newsham; Suricata's `stream.reassembly` policies):

- **first wins**: where segments overlap, the bytes that arrived first are kept, like the BSD-
  derived stacks and Linux for data not yet delivered (and Suricata's "bsd" policy). Bytes already
  handed on are never replaced: a retransmission of them, with the same or different data, is
  dropped. Overlaps with different data are counted (`conflicts`): an evasion attempt, or a broken
  sender.
- **bounded**: out-of-order segments are held up to a byte and a segment budget per direction;
  the owner calls `skip()` when a budget is exceeded, which gives up on the hole before the first
  held segment (a *gap*) and moves on. A gap is also declared when the peer acknowledges data
  beyond a hole while later data is held: the receiver got what the capture lost.
- Sequence numbers wrap; offsets are kept as unbounded stream offsets (0 = the first byte after
  the SYN, or the first byte seen when the stream was picked up mid-way).

`add()` and friends append to `out`: `bytes` are new in-order data, an `int` is a gap of that
many bytes (the consumer resynchronises its parser there).
"""

from __future__ import annotations

_MOD = 0x100000000
_HALF = 0x80000000
_MAX_AHEAD = 1 << 30  # a segment claiming to be further ahead than this is garbage, not a hole


class Reassembler:
    __slots__ = (
        "base",
        "conflicts",
        "far",
        "gap_bytes",
        "gaps",
        "held",
        "offset",
        "overlaps",
        "retransmits",
        "segs",
    )

    def __init__(self) -> None:
        self.base = -1  # sequence number of stream offset 0; -1 until known
        self.offset = 0  # stream offset of the next byte expected
        self.segs: list[tuple[int, bytes]] = []  # held out-of-order data by offset, no overlaps
        self.held = 0  # bytes in segs
        self.retransmits = 0
        self.overlaps = 0
        self.conflicts = 0
        self.gaps = 0
        self.gap_bytes = 0
        self.far = 0

    def start(self, seq: int) -> None:
        """The stream's first byte has this sequence number (ISN + 1 after a SYN)."""
        if self.offset == 0 and not self.segs:
            self.base = seq % _MOD

    def offset_of(self, seq: int) -> int:
        """The stream offset of a sequence number near the current position."""
        if self.base < 0:
            return 0
        delta = (seq - self.base - self.offset) % _MOD
        return self.offset + (delta - _MOD if delta >= _HALF else delta)

    def add(self, seq: int, data: bytes, out: list[bytes | int]) -> None:
        if self.base < 0:
            self.base = seq
        delta = (seq - self.base - self.offset) % _MOD
        if delta == 0 and not self.segs:
            out.append(data)
            self.offset += len(data)
            return
        if delta >= _HALF:  # starts before what was already handed on
            back = _MOD - delta
            if back >= len(data):
                self.retransmits += 1
                return
            self.overlaps += 1
            data = data[back:]
            delta = 0
        elif delta > _MAX_AHEAD:
            self.far += 1
            return
        self._insert(self.offset + delta, data)
        self._drain(out)

    def skip(self, out: list[bytes | int]) -> None:
        """Give up on the hole before the first held segment."""
        if self.segs:
            self._gap(self.segs[0][0] - self.offset, out)
            self._drain(out)

    def flush(self, out: list[bytes | int]) -> None:
        """Give up on every hole: hand on all that is held (the stream is ending)."""
        while self.segs:
            self.skip(out)

    def acked(self, ack: int, out: list[bytes | int]) -> None:
        """The peer acknowledged up to `ack`: holes before that with data held after them are gaps."""
        if not self.segs or self.base < 0:
            return
        target = self.offset_of(ack)
        while self.segs and self.segs[0][0] < target:
            self.skip(out)

    def _gap(self, size: int, out: list[bytes | int]) -> None:
        if size > 0:
            self.gaps += 1
            self.gap_bytes += size
            self.offset += size
            out.append(size)

    def _insert(self, off: int, data: bytes) -> None:
        added, overlaps, conflicts = insert_first_wins(self.segs, off, data)
        self.held += added
        self.overlaps += overlaps
        self.conflicts += conflicts

    def _drain(self, out: list[bytes | int]) -> None:
        segs = self.segs
        while segs and segs[0][0] <= self.offset:
            start, data = segs.pop(0)
            self.held -= len(data)
            if start + len(data) <= self.offset:
                continue
            piece = data[self.offset - start:]
            out.append(piece)
            self.offset += len(piece)


def insert_first_wins(segs: list[tuple[int, bytes]], off: int, data: bytes) -> tuple[int, int, int]:
    """Put `data` at `off` into `segs` (sorted, non-overlapping) keeping bytes already there where
    they overlap. Returns (bytes added, overlaps, overlaps whose bytes differed)."""
    end = off + len(data)
    i = 0
    n = len(segs)
    while i < n and segs[i][0] + len(segs[i][1]) <= off:
        i += 1
    pieces: list[tuple[int, bytes]] = []
    overlaps = conflicts = 0
    cur = off
    j = i
    while j < n and segs[j][0] < end:
        start, held = segs[j]
        if start > cur:
            pieces.append((cur, data[cur - off:start - off]))
        lo, hi = max(cur, start), min(end, start + len(held))
        if hi > lo:
            overlaps += 1
            if data[lo - off:hi - off] != held[lo - start:hi - start]:
                conflicts += 1
        cur = max(cur, start + len(held))
        j += 1
    if cur < end:
        pieces.append((cur, data[cur - off:]))
    if pieces:
        segs[i:j] = sorted(segs[i:j] + pieces)
    return sum(len(piece) for _, piece in pieces), overlaps, conflicts
