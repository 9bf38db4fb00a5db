"""The same GCRA as the Lua script, in process: decides while Redis is unreachable, and is the
algorithm's reference implementation for unit tests with an injected clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bucket", "LocalGcra"]


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    interval_ms: float  # T = period / limit
    period_ms: float
    cost: int
    shadow: bool = False


class LocalGcra:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    def check(self, buckets: Sequence[Bucket]) -> tuple[bool, int, int, list[tuple[bool, int, int]]]:
        """(allowed, retry_after_ms, index of the refusing bucket or -1, per bucket (admitted,
        remaining, reset_ms)). All buckets are charged, or none."""
        now = self._clock() * 1000
        news, olds, oks = [], [], []
        denied, retry, deny_idx = False, 0.0, -1
        for i, b in enumerate(buckets):
            tat = max(self._tat.get(b.key, now), now)
            new = tat + b.cost * b.interval_ms
            allow_at = new - b.period_ms
            ok = allow_at <= now
            news.append(new)
            olds.append(tat)
            oks.append(ok)
            if not ok and not b.shadow:
                denied = True
                wait = b.period_ms if b.cost * b.interval_ms > b.period_ms else allow_at - now
                if wait > retry:
                    retry, deny_idx = wait, i
        out = []
        for i, b in enumerate(buckets):
            charged = not denied and oks[i]
            used = news[i] if charged else olds[i]
            if charged and b.cost:
                self._tat[b.key] = news[i]
            remaining = max(0, math.floor((b.period_ms - (used - now)) / b.interval_ms))
            out.append((oks[i], remaining, math.ceil(used - now)))
        return not denied, math.ceil(retry), deny_idx, out
