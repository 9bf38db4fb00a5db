"""Load shedding: when inputs arrive faster than the embedding model can take them, embed a
deterministic sample (by request id, so a replay samples the same events) and say so in every
record, instead of letting consumer lag grow without bound."""

from __future__ import annotations

import hashlib

__all__ = ["Shedder"]


class Shedder:
    def __init__(self, *, utilization: float = 0.8, min_rate: float = 0.02, smoothing: float = 0.3) -> None:
        # Aim below full capacity: the job also decodes, publishes and runs detectors.
        self._utilization = utilization
        self._min_rate = min_rate
        self._a = smoothing
        self.capacity = 0.0  # texts embedded per second
        self.arrival = 0.0  # events produced per second (from their timestamps)
        self.rate = 1.0

    @staticmethod
    def _ewma(old: float, new: float, a: float) -> float:
        return new if old == 0 else (1 - a) * old + a * new

    def observe_arrivals(self, timestamps: list[float]) -> None:
        """Producer-side rate of a batch, from the events' own timestamps (not from when we got
        to them, which would only measure our own speed)."""
        if len(timestamps) >= 2:
            span = max(timestamps) - min(timestamps)
            if span > 0:
                self.arrival = self._ewma(self.arrival, (len(timestamps) - 1) / span, self._a)
        self._update()

    def observe_embedding(self, n: int, seconds: float) -> None:
        if n > 0 and seconds > 0:
            self.capacity = self._ewma(self.capacity, n / seconds, self._a)
        self._update()

    def _update(self) -> None:
        if self.capacity <= 0 or self.arrival <= 0:
            return
        self.rate = max(self._min_rate, min(1.0, self._utilization * self.capacity / self.arrival))

    def keep(self, request_id: str) -> bool:
        if self.rate >= 1.0:
            return True
        bucket = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=4).digest(), "big") / 2**32
        return bucket < self.rate
