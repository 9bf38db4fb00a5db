"""The limiter core against a real Redis: exact GCRA counts, atomicity, shadow, reserve/settle."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmgw.kit.embedded import free_port
from llmgw.kit.reload import FileWatcher
from llmgw.kit.scripts import ScriptBatcher
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import load_rules, parse_rules

pytestmark = pytest.mark.integration


def _limiter(redis: aioredis.Redis, rules: dict, **kw) -> RedisLimiter:  # type: ignore[type-arg]
    return RedisLimiter(redis, parse_rules(rules), prefix=f"t-{uuid.uuid4().hex[:8]}", **kw)


def _counting_batcher(redis: aioredis.Redis) -> tuple[ScriptBatcher, list[int]]:
    """A real batcher that also records the size of every pipeline it sends to Redis."""
    batcher = ScriptBatcher(redis)
    sizes: list[int] = []
    lane = batcher._single
    assert lane is not None
    real = lane._pipeline

    async def counting(batch, preload=()):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return await real(batch, preload)

    lane._pipeline = counting  # type: ignore[method-assign]
    return batcher, sizes


def _rule(match: dict, *limits: dict) -> dict:  # type: ignore[type-arg]
    return {"domains": {"gateway": [{"match": match, "limits": list(limits)}]}}


async def test_admits_exactly_the_limit_then_refuses_with_retry_after(redis: aioredis.Redis) -> None:
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 5, "per": "minute"}))
    decisions = [await lim.check([("tenant", "acme")]) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.statuses[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[5]
    # A window limit: the five stay in the window for a minute (one sub-bucket more, at most).
    assert refused.limit_name == "rpm" and 59_000 <= refused.retry_after_ms <= 61_000
    # Buckets are per value of the wildcard key.
    assert (await lim.check([("tenant", "globex")])).allowed


async def test_gcra_admits_its_burst_then_refuses_until_the_next_emission(redis: aioredis.Redis) -> None:
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 5, "per": "minute",
                                                  "algorithm": "gcra", "burst": 5}))
    decisions = [await lim.check([("tenant", "acme")]) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.statuses[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 0 < decisions[5].retry_after_ms <= 12_000  # one emission interval


async def test_all_limits_decided_atomically(redis: aioredis.Redis) -> None:
    lim = _limiter(redis, _rule(
        {"tenant": "*"},
        {"name": "burst", "unit": "requests", "limit": 100, "per": "hour"},
        {"name": "daily", "unit": "requests", "limit": 2, "per": "day"},
    ))
    for _ in range(2):
        assert (await lim.check([("tenant", "a")])).allowed
    refused = await lim.check([("tenant", "a")])
    assert not refused.allowed and refused.limit_name == "daily"
    # The refused check charged nothing: the burst bucket still has 98 left.
    burst = next(s for s in refused.statuses if s.name == "burst")
    assert burst.remaining == 98


async def test_shadow_limits_report_but_never_refuse(redis: aioredis.Redis) -> None:
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "s", "unit": "requests", "limit": 1, "per": "hour",
                                                  "shadow": True}))
    assert all([(await lim.check([("tenant", "a")])).allowed for _ in range(3)])


async def test_tokens_are_reserved_then_settled(redis: aioredis.Redis) -> None:
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "tpm", "unit": "tokens", "limit": 1000, "per": "minute"}))
    d = await lim.check([("tenant", "a")], tokens=600, request_id="r1")
    assert d.allowed and d.reservation_id and d.statuses[0].remaining == 400
    assert not (await lim.check([("tenant", "a")], tokens=600)).allowed
    assert await lim.settle(d.reservation_id, 100) == 500  # refund the over-estimate
    d2 = await lim.check([("tenant", "a")], tokens=600)
    assert d2.allowed and d2.statuses[0].remaining == 300
    assert await lim.settle(d.reservation_id, 100) == 0  # settling twice does nothing


async def test_redis_down_decides_per_limit_policy_without_stalling() -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.05)
    rules = {"domains": {"gateway": [
        {"match": {"tenant": "*"}, "limits": [{"name": "local", "unit": "requests", "limit": 4, "per": "minute"}]},
        {"match": {"route": "*"}, "limits": [{"name": "open", "unit": "requests", "limit": 1, "per": "minute",
                                              "on_redis_failure": "open"}]},
    ]}}
    lim = _limiter(dead, rules, replicas=2)
    got = [(await lim.check([("tenant", "a"), ("route", "r")])).allowed for _ in range(4)]
    # "local": 4 per minute over 2 replicas = 2 here; "open": ignored while Redis is out.
    assert got == [True, True, False, False]
    closed = _limiter(dead, _rule({"tenant": "*"}, {"name": "c", "unit": "requests", "limit": 100, "per": "minute",
                                                    "on_redis_failure": "closed"}))
    assert not (await closed.check([("tenant", "a")])).allowed
    await dead.aclose()


async def test_redis_stopped_mid_run_and_restarted() -> None:
    from llmgw.kit.embedded import start_redis

    proc = start_redis()
    port = proc.port
    redis = aioredis.Redis(port=port, socket_connect_timeout=0.05, socket_timeout=0.05)
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 6, "per": "minute"}),
                   replicas=3)
    assert [(await lim.check([("tenant", "a")])).allowed for _ in range(2)] == [True, True]
    proc.stop()
    # Redis gone: the breaker opens after a few failures; each process admits 6 / 3 = 2 locally.
    local = [(await lim.check([("tenant", "a")])).allowed for _ in range(4)]
    assert local == [True, True, False, False]
    proc2 = start_redis(port)
    try:
        await asyncio.sleep(2.2)  # the breaker's cool-down: the next check probes Redis again
        back = await lim.check([("tenant", "a")])
        assert back.allowed and back.statuses[0].limit == 6  # decided by Redis again (fresh server)
    finally:
        await redis.aclose()
        proc2.stop()


async def test_reload_keeps_old_rules_when_new_file_is_bad(redis: aioredis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: a, unit: requests, limit: 1, per: minute}]}]}")
    lim = RedisLimiter(redis, load_rules(path), prefix=f"t-{uuid.uuid4().hex[:8]}")
    watcher = FileWatcher(path, load_rules, lim.replace_rules)
    path.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: a, unit: requests, limit: 0}]}]}")
    os.utime(path, (1, 1))
    assert watcher.poll() is False and lim.rules.domains["gateway"][0].limits[0].limit == 1
    path.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: a, unit: requests, limit: 9, per: minute}]}]}")
    os.utime(path, (2, 2))
    assert watcher.poll() is True and lim.rules.domains["gateway"][0].limits[0].limit == 9


async def test_concurrent_decisions_share_pipelines_and_survive_a_script_flush(redis: aioredis.Redis) -> None:
    """Decisions in flight together go out as one pipeline; after Redis loses its scripts
    (restart, SCRIPT FLUSH) the batch reloads the script and reruns only what did not run:
    exactly the limit is admitted, nothing is charged twice."""
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 50, "per": "minute"}))
    first = await asyncio.gather(*(lim.check([("tenant", "a")]) for _ in range(30)))
    await redis.script_flush()
    second = await asyncio.gather(*(lim.check([("tenant", "a")]) for _ in range(30)))
    assert sum(d.allowed for d in first + second) == 50
    remaining = sorted(d.statuses[0].remaining for d in first + second if d.allowed)
    assert remaining == list(range(50))  # every admitted decision charged exactly once


async def test_a_decision_abandoned_while_queued_charges_nothing(redis: aioredis.Redis) -> None:
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 10, "per": "minute"}))
    task = asyncio.ensure_future(lim.check([("tenant", "a")]))
    await asyncio.sleep(0)  # the decision is queued for the next batch ...
    task.cancel()  # ... and its caller gives up before the batch leaves
    with pytest.raises(asyncio.CancelledError):
        await task
    d = await lim.check([("tenant", "a")])
    assert d.allowed and d.statuses[0].remaining == 9


async def test_limiter_and_cache_share_one_pipeline_and_both_survive_a_script_flush(redis: aioredis.Redis) -> None:
    """A colocated ingress hands both cores one batcher: the check and the lookup a request makes
    at once leave in one write. After a SCRIPT FLUSH each script is reloaded and each call runs once."""
    from llmgw.domain import KeyMaterial
    from llmgw.services.cache.core import RedisCache

    batcher, pipelines = _counting_batcher(redis)
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 5, "per": "minute"}),
                   batcher=batcher)
    cache = RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}", batcher=batcher)
    key = KeyMaterial(tenant="a", route="r", prompt="p", prompt_version="v1@x", variables={"q": "same"})
    decision, lookup = await asyncio.gather(lim.check([("tenant", "a")]), cache.lookup(key))
    assert pipelines[0] == 2  # one exchange carried both scripts (then a rerun: first use loads them)
    assert decision.allowed and lookup.leader and not lookup.hit
    await redis.script_flush()
    pipelines.clear()
    decision, waiting = await asyncio.gather(lim.check([("tenant", "a")]), cache.lookup(key))
    # Both got NOSCRIPT, both scripts were loaded, each call ran once: the second request counts
    # 2 of 5 and sees the first one's single-flight lock.
    assert pipelines == [2, 2]  # the batch, and the rerun of both after loading both scripts
    assert decision.statuses[0].remaining == 3 and waiting.in_flight


class _Clock:
    """Process time for leases, moved by the test (the buckets keep Redis's own TIME)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_leased_admissions_never_exceed_the_limit_across_replicas(redis: aioredis.Redis) -> None:
    """Two replicas admitting a steady stream of cache hits with leases of up to 8: never more
    than the limit, and most admissions answered without Redis."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    rules = parse_rules(_rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 300, "per": "minute"}))
    clock = _Clock()
    replicas = [RedisLimiter(redis, rules, prefix=prefix, lease_max=8, lease_ttl_s=1.0, clock=clock)
                for _ in range(2)]
    from llmgw.services.limiter.core import DECISIONS

    leased = DECISIONS.labels("gateway", "leased")
    leased_before = leased._value.get()
    decisions = []
    for _ in range(200):  # one hit per replica every 50 ms of process time
        decisions += await asyncio.gather(*(r.admit([("tenant", "acme")]) for r in replicas))
        clock.now += 0.05
    admitted = sum(d.allowed for d in decisions)
    assert 300 - 2 * 7 <= admitted <= 300
    probe = RedisLimiter(redis, rules, prefix=prefix)
    assert (await probe.check([("tenant", "acme")], requests=0)).statuses[0].remaining == 0
    assert leased._value.get() - leased_before > 150  # most admitted hits never asked Redis


async def test_near_a_limit_every_admission_is_exact(redis: aioredis.Redis) -> None:
    clock = _Clock()
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 10, "per": "minute"}),
                   lease_max=8, clock=clock)
    results = []
    for _ in range(12):
        results.append((await lim.admit([("tenant", "a")])).allowed)
        clock.now += 0.1
    # A tenth of 10 is less than 2: no lease, each admission is its own check.
    assert results == [True] * 10 + [False] * 2


async def test_a_tenant_sending_a_hit_now_and_then_is_charged_for_each_hit_only(redis: aioredis.Redis) -> None:
    """Leases follow demand: one hit every 2 s never takes a lease, so nothing is charged unused."""
    rules = _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 600, "per": "minute"})
    clock = _Clock()
    lim = _limiter(redis, rules, lease_max=8, clock=clock)
    for _ in range(30):
        d = await lim.admit([("tenant", "a")])
        clock.now += 2.0
    # 30 charged, plus what Redis's clock refilled meanwhile (10/s); leases of 5 would leave ~450.
    assert d.allowed and 570 <= d.statuses[0].remaining <= 575


async def test_a_lease_saves_round_trips(redis: aioredis.Redis) -> None:

    batcher, sent = _counting_batcher(redis)
    clock = _Clock()
    lim = _limiter(redis, _rule({"tenant": "*"}, {"name": "rpm", "unit": "requests", "limit": 10_000, "per": "minute"}),
                   lease_max=8, batcher=batcher, clock=clock)
    for _ in range(200):  # 20 hits per lease window
        assert (await lim.admit([("tenant", "a")])).allowed
        clock.now += 0.05
    # The first window asks Redis every time (no demand known yet); after it, one call in eight.
    assert len(sent) <= 20 + 180 // 8 + 10


async def test_steady_hits_never_wait_on_redis_once_leases_are_charged_ahead(redis: aioredis.Redis) -> None:
    """With demand for two leases a window, the next lease is charged in the background while the
    current one still admits: after the first window no admission waits on Redis, and every
    admitted hit was charged (the limit's count matches)."""
    # Per day: Redis's own clock refills next to nothing while the test runs, so the count is exact.
    rules = _rule({"tenant": "*"}, {"name": "rpd", "unit": "requests", "limit": 100_000, "per": "day"})
    clock = _Clock()
    lim = _limiter(redis, rules, lease_max=8, clock=clock)
    waited = []
    for _ in range(100):  # 20 hits per lease window of process time, 5 ms apart in real time
        admission = asyncio.ensure_future(lim.admit([("tenant", "a")]))
        await asyncio.sleep(0)  # one loop turn: an admission from a lease is done by now
        waited.append(not admission.done())
        assert (await admission).allowed
        await asyncio.sleep(0.005)
        clock.now += 0.05
    assert all(waited[:5]) and not any(waited[25:])
    await lim.close()
    probe = RedisLimiter(redis, parse_rules(rules), prefix=lim._prefix)
    charged = 100_000 - (await probe.check([("tenant", "a")], requests=0)).statuses[0].remaining
    assert 100 <= charged <= 100 + 8 + 2 + 1  # unused: at most the lease ahead and a quarter of one


async def test_a_lease_charged_ahead_and_left_to_expire_does_not_stop_charging_ahead(redis: aioredis.Redis) -> None:
    """Demand stops right after a lease was charged ahead; that lease expires unused. When steady
    hits resume, leases are charged ahead again and no admission waits on Redis."""
    rules = _rule({"tenant": "*"}, {"name": "rpd", "unit": "requests", "limit": 100_000, "per": "day"})
    clock = _Clock()
    lim = _limiter(redis, rules, lease_max=8, clock=clock)

    async def steady(hits: int) -> list[bool]:
        waited = []
        for _ in range(hits):  # 20 hits per lease window of process time, 5 ms apart in real time
            admission = asyncio.ensure_future(lim.admit([("tenant", "a")]))
            await asyncio.sleep(0)
            waited.append(not admission.done())
            assert (await admission).allowed
            await asyncio.sleep(0.005)
            clock.now += 0.05
        return waited

    await steady(40)
    lease = lim._leases[("gateway", (("tenant", "a"),))]  # setup only: stop right after a charge ahead
    while lease.ahead is None:
        await steady(1)
    clock.now += 10  # the lease charged ahead expires unused
    waited = await steady(80)
    assert not any(waited[25:])
    await lim.close()


async def test_the_order_of_a_rules_match_keys_changes_neither_its_buckets_nor_its_overrides(
        redis: aioredis.Redis) -> None:
    """The same rules re-saved with their keys in another order (a YAML tool that sorts keys, a
    second replica fed another copy) count in the same buckets, and a per-value override written
    in one order still replaces the wildcard rule written in the other."""
    rpm = {"name": "rpm", "unit": "requests", "limit": 3, "per": "minute"}
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    written = RedisLimiter(redis, parse_rules({"domains": {"provider": [
        {"match": {"provider": "openai", "model": "*"}, "limits": [rpm]}]}}), prefix=prefix)
    resaved = RedisLimiter(redis, parse_rules({"domains": {"provider": [
        {"match": {"model": "*", "provider": "openai"}, "limits": [rpm]}]}}), prefix=prefix)
    desc = [("provider", "openai"), ("model", "gpt-4o")]
    assert [(await written.check(desc, domain="provider")).allowed for _ in range(2)] == [True, True]
    assert [(await resaved.check(desc, domain="provider")).allowed for _ in range(2)] == [True, False]

    rules = parse_rules({"domains": {"provider": [
        {"match": {"provider": "*", "model": "*"}, "limits": [{**rpm, "name": "default", "limit": 1}]},
        {"match": {"model": "gpt-4o", "provider": "openai"}, "limits": [{**rpm, "name": "gpt-4o", "limit": 100}]}]}})
    assert [limit.name for _, limit in rules.matching("provider", dict(desc))] == ["gpt-4o"]
