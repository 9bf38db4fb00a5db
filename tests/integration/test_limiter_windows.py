"""What each algorithm guarantees, read off admission times against real Redis: a window limit
never admits more than L in any window of its length; GCRA admits at most L + burst."""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import pytest
import redis.asyncio as aioredis

from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import parse_rules

pytestmark = pytest.mark.integration

# Client-side admission times lag Redis's decision by the round trip; a client window this much
# shorter than the period maps into one Redis window of the period.
SKEW_S = 0.05


def _rules(**limit: object) -> object:
    return parse_rules({"domains": {"gateway": [{"match": {"tenant": "*"}, "limits": [
        {"name": "l", "unit": "requests", "per": "second", **limit}]}]}})


async def _hammer(limiter: RedisLimiter, seconds: float, workers: int = 16) -> list[float]:
    admitted: list[float] = []
    end = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < end:
            d = await limiter.check([("tenant", "acme")], requests=1)
            if d.allowed:
                admitted.append(time.monotonic())
            else:
                await asyncio.sleep(min(0.02, d.retry_after_ms / 1000))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return sorted(admitted)


def _most_in_any_window(times: list[float], length: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - length:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_a_window_limit_never_admits_more_than_its_limit_in_any_window(redis: aioredis.Redis) -> None:
    limiter = RedisLimiter(redis, _rules(limit=50), prefix=f"t-{os.urandom(4).hex()}")  # type: ignore[arg-type]
    times = await _hammer(limiter, 3.0)
    assert _most_in_any_window(times, 1.0 - SKEW_S) <= 50
    assert len(times) >= 100, "and it does admit its limit, window after window"


async def test_gcra_admits_at_most_its_rate_plus_its_burst(redis: aioredis.Redis) -> None:
    limiter = RedisLimiter(redis, _rules(limit=50, algorithm="gcra", burst=1),  # type: ignore[arg-type]
                           prefix=f"t-{os.urandom(4).hex()}")
    times = await _hammer(limiter, 3.0)
    assert _most_in_any_window(times, 1.0 - SKEW_S) <= 50 + 1
    # A burst of 1 means a steady rate: no two admissions much closer than the interval (20 ms).
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sorted(gaps)[len(gaps) // 10] > 0.01


async def test_the_old_default_gcra_burst_admitted_double_in_a_window(redis: aioredis.Redis) -> None:
    """Why the default changed: GCRA with a burst of the whole limit (the old default) admits a
    full burst and then the steady rate — close to 2L in one window. Kept as a measured fact."""
    limiter = RedisLimiter(redis, _rules(limit=50, algorithm="gcra", burst=50),  # type: ignore[arg-type]
                           prefix=f"t-{os.urandom(4).hex()}")
    times = await _hammer(limiter, 1.5)
    assert _most_in_any_window(times, 1.0) > 80


async def test_a_token_window_settles_in_the_sub_bucket_it_charged(redis: aioredis.Redis) -> None:
    rules = parse_rules({"domains": {"gateway": [{"match": {"tenant": "*"}, "limits": [
        {"name": "tpm", "unit": "tokens", "limit": 1000, "per": "minute"}]}]}})
    limiter = RedisLimiter(redis, rules, prefix=f"t-{os.urandom(4).hex()}")
    d = await limiter.check([("tenant", "acme")], tokens=600)
    assert d.allowed and d.statuses[0].remaining == 400
    refused = await limiter.check([("tenant", "acme")], tokens=600)
    assert not refused.allowed and 0 < refused.retry_after_ms <= 61_000
    assert await limiter.settle(d.reservation_id, 100) == 500
    after = await limiter.check([("tenant", "acme")], tokens=600)
    assert after.allowed and after.statuses[0].remaining == 300
