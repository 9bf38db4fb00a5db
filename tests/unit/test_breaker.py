"""The router's failure-rate breaker (kit.breaker.RateBreaker), on a fake clock."""

from __future__ import annotations

import random

from llmgw.kit.breaker import RateBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _calls(b: RateBreaker, outcomes: list[bool]) -> None:
    for ok in outcomes:
        t = b.allow()
        assert t is not None
        b.record(t, ok)


def test_half_the_calls_failing_keeps_it_closed_at_the_default_rate() -> None:
    clock = Clock()
    b = RateBreaker(clock=clock)  # 80 % over 10 s, at least 20 calls
    rng = random.Random(3)
    for _ in range(2000):  # 50 % errors, 50 calls a second, for 40 s
        clock.now += 0.02
        _calls(b, [rng.random() >= 0.5])
        assert b.state == State.CLOSED


def test_opens_only_with_enough_calls_at_the_rate() -> None:
    clock = Clock()
    b = RateBreaker(failure_rate=0.5, min_calls=10, clock=clock)
    _calls(b, [False] * 9)
    assert b.state == State.CLOSED, "nine failures are fewer than min_calls"
    _calls(b, [False])
    assert b.state == State.OPEN
    assert b.allow() is None


def test_the_window_forgets_old_failures() -> None:
    clock = Clock()
    b = RateBreaker(failure_rate=0.5, min_calls=4, window_s=10, clock=clock)
    _calls(b, [False, False, False])
    clock.now += 11
    _calls(b, [True, True, True, False])  # the three old failures are out of the window
    assert b.state == State.CLOSED and b.window() == (4, 1)


def test_half_open_admits_its_probes_and_closes_by_their_rate() -> None:
    clock = Clock()
    b = RateBreaker(failure_rate=0.5, min_calls=2, open_s=5, half_open_probes=3, clock=clock)
    _calls(b, [False, False])
    clock.now += 5
    assert b.state == State.HALF_OPEN
    probes = [b.allow() for _ in range(4)]
    assert all(p is not None and p.probe for p in probes[:3]) and probes[3] is None
    b.record(probes[0], False)  # one unlucky probe does not re-open...
    assert b.state == State.HALF_OPEN
    b.record(probes[1], True)
    b.record(probes[2], True)  # ...two of three succeeded: closed
    assert b.state == State.CLOSED


def test_failing_probes_reopen_for_another_cool_down() -> None:
    clock = Clock()
    b = RateBreaker(failure_rate=0.5, min_calls=2, open_s=5, half_open_probes=3, clock=clock)
    _calls(b, [False, False])
    clock.now += 5
    p1, p2 = b.allow(), b.allow()
    assert p1 is not None and p2 is not None
    b.record(p1, False)
    b.record(p2, False)  # two of three failed: the rate is reached, no need for the third
    assert b.state == State.OPEN


def test_a_stale_success_does_not_close_an_open_breaker() -> None:
    clock = Clock()
    b = RateBreaker(failure_rate=0.5, min_calls=2, open_s=5, clock=clock)
    slow = b.allow()  # a call starts while closed...
    assert slow is not None
    _calls(b, [False, False])  # ...the breaker opens meanwhile...
    assert b.state == State.OPEN
    b.record(slow, True)  # ...and the slow call's late success changes nothing
    assert b.state == State.OPEN
    clock.now += 5
    probe = b.allow()
    assert probe is not None
    b.record(slow, False)  # nor does a stale failure count against the probes
    assert b.state == State.HALF_OPEN


def test_released_probes_free_their_slot() -> None:
    clock = Clock()
    b = RateBreaker(failure_rate=0.5, min_calls=2, open_s=5, half_open_probes=1, clock=clock)
    _calls(b, [False, False])
    clock.now += 5
    probe = b.allow()
    assert probe is not None and b.allow() is None
    b.release(probe)  # e.g. the caller's own fault, or a cancel: no verdict
    again = b.allow()
    assert again is not None and again.probe
