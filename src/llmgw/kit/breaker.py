"""Circuit breaker: closed -> open after N consecutive failures -> half-open after a cool-down
(one probe call) -> closed on success, open again on failure.

Used by the router per provider+model (an open target is skipped without a call) and by the
limiter around Redis (while open, decisions are local instead of waiting on a dead Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

__all__ = ["Breaker", "State"]


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
