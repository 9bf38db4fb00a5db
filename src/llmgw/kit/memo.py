"""A bounded memo for pure functions of hot, repeating inputs.

A gateway in front of a cache sees the same requests again and again; parsing, validating and
hashing each repeat anew is most of what a cache hit costs. A ``Memo`` keeps the results for the
most recent distinct inputs.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Memo"]

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """At most ``max_entries`` results; a full memo drops its oldest entry. First-in first-out
    rather than least-recently-used: a hit then costs one dict lookup and no bookkeeping, and a
    hot input that falls out is simply computed again once."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if self._max <= 0:
            return
        entries = self._entries
        if key not in entries and len(entries) >= self._max:
            del entries[next(iter(entries))]
        entries[key] = value

    def clear(self) -> None:
        self._entries.clear()
