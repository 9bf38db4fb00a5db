"""Hot entries in process memory, in front of Redis.

A colocated ingress answers a repeat from here without a Redis round trip. Correctness rests on
three rules: the key already names tenant, prompt version and every input (a label move or
rollback changes the key, so it needs no invalidation); an entry never outlives its Redis TTL;
``llmgw cache invalidate`` deletes in Redis and publishes the pattern, and every near cache drops
what matches at once (one that loses its subscription clears itself). A generation number stops a
lookup that read Redis before an invalidation from putting the stale entry back afterwards.
"""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict
from collections.abc import Callable

from llmgw.domain import CacheEntry

__all__ = ["NearCache"]


# Per entry beyond its text: the dataclass, the usage, the dict slot (an estimate: what matters is
# that the bound follows the answers' size, which a count of entries does not).
_OVERHEAD = 400


def _size(entry: CacheEntry) -> int:
    chunks = sum(len(c.delta.encode()) + 60 + sum(len(d.arguments) + 80 for d in c.tool_calls) for c in entry.chunks)
    calls = sum(len(c.arguments) + 80 for c in entry.tool_calls)
    return _OVERHEAD + len(entry.text.encode()) + chunks + calls


class NearCache:
    """At most ``max_entries`` entries and about ``max_bytes`` of them (entries are kept
    decompressed: ten thousand long answers would not fit a small pod), least recently used out."""

    def __init__(self, *, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self._max = max_entries
        self._max_bytes = max_bytes
        self._ttl = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CacheEntry, float, int]] = OrderedDict()
        self.bytes = 0
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CacheEntry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        entry, expires, _ = found
        if self._clock() >= expires:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry, *, ttl_left_s: float, generation: int) -> None:
        """``ttl_left_s``: what the entry has left in Redis; ``generation``: read before the entry
        was fetched (an invalidation since then means it may be stale: not kept)."""
        if generation != self.generation or ttl_left_s <= 0 or self._max <= 0:
            return
        size = _size(entry)
        if size > self._max_bytes:
            return  # larger than the whole budget: Redis serves it
        self._remove(key)
        self._entries[key] = (entry, self._clock() + min(self._ttl, ttl_left_s), size)
        self.bytes += size
        while len(self._entries) > self._max or self.bytes > self._max_bytes:
            _, (_, _, gone) = self._entries.popitem(last=False)
            self.bytes -= gone

    def _remove(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= found[2]

    def drop(self, pattern: str) -> int:
        """Drop the entries a SCAN pattern of ``llmgw cache invalidate`` matches."""
        self.generation += 1
        doomed = [k for k in self._entries if fnmatch.fnmatchcase(k, pattern)]
        for k in doomed:
            self._remove(k)
        return len(doomed)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self.bytes = 0
