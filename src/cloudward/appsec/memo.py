"""A bounded memo for verdicts that repeat from request to request.

Two generations of at most `size` entries each: a key found in the older one moves to the newer one,
and when the newer one is full it becomes the older one (the older one is dropped whole). So what keeps
being asked for (a browser's User-Agent, a session cookie) stays, a stream of new keys (a query value
that differs on every request) only ever costs an insertion, and forgetting is O(1) per insertion —
dropping the oldest key of a dict one at a time costs a scan over the dict's deleted slots each time.

The newer generation is the dict itself, so `memo[key]` is a plain dict lookup when it hits; it answers
None for a key in neither generation. Safe to share between threads: a lost insertion only costs a
later miss.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

V = TypeVar("V")


class Memo(dict[Hashable, V], Generic[V]):
    __slots__ = ("_old", "size")

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = max(1, size)
        self._old: dict[Hashable, V] = {}

    def __missing__(self, key: Hashable) -> V | None:
        found = self._old.get(key)
        if found is not None:
            self.put(key, found)
        return found

    def put(self, key: Hashable, value: V) -> None:
        if len(self) >= self.size:
            self._old = dict(self)  # one C-level copy per `size` insertions
            self.clear()
        self[key] = value
