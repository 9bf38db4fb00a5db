"""Circuit breakers.

``Breaker``: closed -> open after N consecutive failures -> half-open after a cool-down (one
probe call) -> closed on success, open again on failure. The limiter and cache use it around
Redis (while open, decisions are local instead of waiting on a dead Redis): there any failure is
the same failure, and a run of them is the signal.

``RateBreaker``: the router's, per provider+model. Providers fail a share of calls all the time;
a run of five failures at a 50 % error rate is luck, not an outage, so it measures the failure
*rate* over a sliding window with a minimum number of calls, and half-open admits several probes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Breaker", "RateBreaker", "State", "Ticket"]


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self._threshold = failure_threshold
        self._open_s = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        if self._state == State.OPEN and self._clock() - self._opened_at >= self._open_s:
            self._set(State.HALF_OPEN)
        return self._state

    def _set(self, state: State) -> None:
        if state != self._state:
            self._state = state
            if state == State.OPEN:
                self._opened_at = self._clock()
            if self._on_change is not None:
                self._on_change(state)

    def allow(self) -> bool:
        """May a call go to this target now? In half-open, exactly one probe at a time."""
        state = self.state
        if state == State.CLOSED:
            return True
        if state == State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self._set(State.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        was_probe, self._probing = self._probing, False
        if was_probe or self._failures >= self._threshold:
            if self._state == State.OPEN:
                self._opened_at = self._clock()
            self._set(State.OPEN)

    def release(self) -> None:
        """A call ended with neither verdict (e.g. the caller's fault): free the probe slot."""
        self._probing = False


@dataclass(frozen=True, slots=True)
class Ticket:
    """Permission for one call, stamped with the breaker's generation when it was given: an
    outcome is counted only while the breaker is still in the state that let the call through,
    so a slow call that started before the circuit opened can neither close nor re-open it."""

    generation: int
    probe: bool = False


@dataclass(slots=True)
class _Bucket:
    second: int
    calls: int = 0
    failures: int = 0


class RateBreaker:
    """A failure-*rate* breaker over a sliding time window (the model of Envoy's outlier
    detection and resilience4j): it opens when at least ``min_calls`` outcomes in the last
    ``window_s`` seconds include at least ``failure_rate`` of failures; after ``open_s`` it is
    half-open and lets ``half_open_probes`` calls through, closing or re-opening by their
    failure rate (one unlucky probe does not re-open a provider that mostly works).

    ``allow`` hands out a ``Ticket``; every ticket ends in exactly one of ``record`` (a verdict)
    or ``release`` (no verdict: the caller's fault, a rate limit, a cancel)."""

    def __init__(
        self,
        *,
        failure_rate: float = 0.8,
        min_calls: int = 20,
        window_s: float = 10.0,
        open_s: float = 10.0,
        half_open_probes: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self._rate = failure_rate
        self._min_calls = max(1, min_calls)
        self._window = max(1, int(window_s))
        self._open_s = open_s
        self._probes = max(1, half_open_probes)
        # Probe failures that re-open; fewer close (the same rate as the closed state's).
        self._probe_failures_to_open = max(1, math.ceil(failure_rate * self._probes))
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._buckets: deque[_Bucket] = deque()
        self._probes_out = 0
        self._probe_ok = 0
        self._probe_failed = 0

    @property
    def state(self) -> State:
        if self._state == State.OPEN and self._clock() - self._opened_at >= self._open_s:
            self._set(State.HALF_OPEN)
        return self._state

    @property
    def generation(self) -> int:
        return self._generation

    def _set(self, state: State) -> None:
        self._state = state
        self._generation += 1
        self._buckets.clear()
        self._probes_out = self._probe_ok = self._probe_failed = 0
        if state == State.OPEN:
            self._opened_at = self._clock()
        if self._on_change is not None:
            self._on_change(state)

    def allow(self) -> Ticket | None:
        state = self.state
        if state == State.CLOSED:
            return Ticket(self._generation)
        if state == State.HALF_OPEN and self._probes_out + self._probe_ok + self._probe_failed < self._probes:
            self._probes_out += 1
            return Ticket(self._generation, probe=True)
        return None

    def window(self) -> tuple[int, int]:
        """(calls, failures) in the sliding window, as the closed state sees them."""
        self._expire()
        return sum(b.calls for b in self._buckets), sum(b.failures for b in self._buckets)

    def _expire(self) -> None:
        oldest = int(self._clock()) - self._window + 1
        while self._buckets and self._buckets[0].second < oldest:
            self._buckets.popleft()

    def record(self, ticket: Ticket, ok: bool) -> None:
        if ticket.generation != self._generation:
            return  # decided under an earlier state: stale
        if ticket.probe:
            self._probes_out -= 1
            if ok:
                self._probe_ok += 1
            else:
                self._probe_failed += 1
            if self._probe_failed >= self._probe_failures_to_open:
                self._set(State.OPEN)
            elif self._probe_ok > self._probes - self._probe_failures_to_open:
                self._set(State.CLOSED)
            return
        second = int(self._clock())
        if not self._buckets or self._buckets[-1].second != second:
            self._buckets.append(_Bucket(second))
        bucket = self._buckets[-1]
        bucket.calls += 1
        bucket.failures += 0 if ok else 1
        if not ok:
            calls, failures = self.window()
            if calls >= self._min_calls and failures >= self._rate * calls:
                self._set(State.OPEN)

    def release(self, ticket: Ticket) -> None:
        if ticket.probe and ticket.generation == self._generation:
            self._probes_out -= 1
