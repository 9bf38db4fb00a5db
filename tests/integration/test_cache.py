"""The cache core against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from llmgw.domain import CacheEntry, Chunk, KeyMaterial, Sampling, ToolCall, ToolCallDelta, Usage
from llmgw.kit.embedded import free_port
from llmgw.services.cache.core import RedisCache
from llmgw.services.cache.policy import CachePolicy

pytestmark = pytest.mark.integration

KEY = KeyMaterial(tenant="acme", route="default", prompt="p", prompt_version="v1@x", variables={"a": "1"},
                  sampling=Sampling(temperature=0))
ENTRY = CacheEntry(text="hello world", provider="openai", model="m", usage=Usage(10, 5, 0.001),
                   chunks=(Chunk("hello"), Chunk(" world", tool_calls=(ToolCallDelta(0, "c1", "f", "{}"),))),
                   finish_reason="stop", tool_calls=(ToolCall("c1", "f", "{}"),))


def _cache(redis: aioredis.Redis) -> RedisCache:
    return RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}")


async def test_store_then_hit_with_chunks_and_stats(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    miss = await cache.lookup(KEY)
    assert not miss.hit and miss.cacheable
    assert await cache.store(miss.key, ENTRY, tenant="acme", lock_token=miss.lock_token)
    hit = await cache.lookup(KEY)
    assert hit.hit and hit.entry is not None and hit.entry.chunks == ENTRY.chunks
    assert hit.entry.tool_calls == ENTRY.tool_calls
    assert hit.entry.usage == Usage(10, 5, 0.001)
    await asyncio.sleep(0.05)  # stats are written after the reply
    stats = await cache.stats("acme")
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["tokens_saved"] == 15


async def test_never_served_across_tenants(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    res = await cache.lookup(KEY)
    await cache.store(res.key, ENTRY, tenant="acme", lock_token=res.lock_token)
    other = replace(KEY, tenant="globex")
    assert not (await cache.lookup(other)).hit


async def test_sampled_requests_are_not_cacheable(redis: aioredis.Redis) -> None:
    res = await _cache(redis).lookup(replace(KEY, sampling=Sampling(temperature=0.7)))
    assert not res.cacheable and not res.hit


async def test_redis_down_is_a_miss_not_an_error() -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.05)
    cache = RedisCache(dead, prefix="x")
    res = await cache.lookup(KEY)
    assert not res.hit
    assert not await cache.store(res.key, ENTRY, tenant="acme", lock_token=res.lock_token)
    await dead.aclose()


async def test_single_flight_lock_of_a_crashed_leader_expires(redis: aioredis.Redis) -> None:
    cache = RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}", lock_ttl_s=0.2)
    leader = await cache.lookup(KEY)
    assert leader.leader and not leader.in_flight
    follower = await cache.lookup(KEY)
    assert follower.in_flight and not follower.leader
    # The leader never stores nor releases (it crashed): the follower takes over after the TTL.
    took_over = await cache.wait(KEY, timeout_s=3)
    assert took_over.leader and not took_over.hit


async def test_waiters_get_the_leaders_entry(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    leader = await cache.lookup(KEY)
    waiter = asyncio.create_task(cache.wait(KEY, timeout_s=3))
    await asyncio.sleep(0.05)
    await cache.store(leader.key, ENTRY, tenant="acme", prompt="p", lock_token=leader.lock_token)
    got = await waiter
    assert got.hit and got.entry is not None and got.entry.text == ENTRY.text


async def test_invalidate_by_tenant_prompt_and_version(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    keys = {
        "a1": replace(KEY, tenant="a", prompt="p", prompt_version="v1@111"),
        "a2": replace(KEY, tenant="a", prompt="p", prompt_version="v2@222"),
        "aq": replace(KEY, tenant="a", prompt="q", prompt_version="v1@333"),
        "b1": replace(KEY, tenant="b", prompt="p", prompt_version="v1@111"),
    }
    for k in keys.values():
        first = await cache.lookup(k)
        await cache.store(first.key, ENTRY, tenant=k.tenant, prompt=k.prompt, lock_token=first.lock_token)

    async def hits() -> set[str]:
        return {name for name, k in keys.items() if (await cache.lookup(k)).hit}

    assert await hits() == set(keys)
    assert await cache.invalidate(prompt="p", version="v1") == 2
    assert await hits() == {"a2", "aq"}
    assert await cache.invalidate(tenant="a") == 2
    assert await hits() == set()


async def test_policy_per_prompt_and_route(redis: aioredis.Redis) -> None:
    from llmgw.services.cache.policy import CachePolicy

    policy = CachePolicy.model_validate({
        "default": {"ttl_s": 100},
        "rules": [{"match": {"route": "creative"}, "cacheable": "never"},
                  {"match": {"prompt": "p"}, "ttl_s": 5000, "cacheable": "always"}],
    })
    cache = RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}", policy=policy)
    assert not (await cache.lookup(replace(KEY, route="creative"))).cacheable
    sampled = replace(KEY, sampling=Sampling(temperature=0.9))
    res = await cache.lookup(sampled)
    assert res.cacheable  # "always" for prompt p
    await cache.store(res.key, ENTRY, tenant="acme", prompt="p", route="default", lock_token=res.lock_token)
    assert 4000 < await redis.ttl(res.key) <= 5000


async def test_stats_per_prompt(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    res = await cache.lookup(KEY)
    await cache.store(res.key, ENTRY, tenant="acme", prompt="p", lock_token=res.lock_token)
    await cache.lookup(KEY)
    await cache.lookup(replace(KEY, prompt="other"))
    await asyncio.sleep(0.05)
    assert (await cache.stats("acme", "p"))["hits"] == 1
    assert (await cache.stats("acme", "other"))["misses"] == 1
    assert (await cache.stats("acme"))["misses"] == 2


async def _until(check, timeout_s: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_near_caches_answer_from_memory_count_in_redis_and_drop_on_invalidate(
    redis: aioredis.Redis,
) -> None:
    """Two replicas with near caches on one Redis: B's repeat is answered from memory (no lookup
    script), still counted in the shared stats; an invalidate on A reaches B's memory at once."""
    from llmgw.services.cache.near import NearCache

    prefix = f"t-{uuid.uuid4().hex[:8]}"
    a = RedisCache(redis, prefix=prefix, near=NearCache(max_entries=100, ttl_s=30))
    b = RedisCache(redis, prefix=prefix, near=NearCache(max_entries=100, ttl_s=30))
    follower = asyncio.ensure_future(b.follow_invalidations())
    counter = asyncio.ensure_future(b.count_stats(0.05))
    try:
        await asyncio.sleep(0.2)  # B subscribed
        miss = await a.lookup(KEY)
        await a.store(miss.key, ENTRY, tenant="acme", prompt="p", lock_token=miss.lock_token)
        assert b.peek(KEY) is None  # B has not seen it yet
        assert (await b.lookup(KEY)).hit  # from Redis, now kept in B's memory
        near = b.peek(KEY)
        assert near is not None and near.entry is not None and near.entry.chunks == ENTRY.chunks

        async def counted() -> bool:
            return (await a.stats("acme")).get("hits") == 2.0
        assert await _until(counted)  # the near hit reached the shared counters
        assert (await a.stats("acme", "p"))["tokens_saved"] == 30

        assert await a.invalidate(tenant="acme") == 1

        async def dropped() -> bool:
            return b.peek(KEY) is None
        assert await _until(dropped)
        assert not (await b.lookup(KEY)).hit
    finally:
        follower.cancel()
        counter.cancel()
        await asyncio.gather(follower, counter, return_exceptions=True)


async def test_near_hits_kept_while_redis_is_down_and_counted_once_it_is_back() -> None:
    """Hits from memory are tallied and flushed in batches: into the metrics at once, into Redis
    once it takes them (a flush that cannot reach Redis keeps them for the next one). Late, never
    lost, never counted twice."""
    from prometheus_client import REGISTRY

    from llmgw.kit.embedded import start_redis
    from llmgw.kit.redis import connect
    from llmgw.services.cache.near import NearCache

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    key = replace(KEY, tenant=tenant)

    def metrics() -> tuple[float | None, ...]:
        labels = {"tenant": tenant, "prompt": "p"}
        return (REGISTRY.get_sample_value("llmgw_cache_lookups_total", {**labels, "result": "hit"}),
                REGISTRY.get_sample_value("llmgw_cache_tokens_saved_total", labels),
                REGISTRY.get_sample_value("llmgw_cache_cost_saved_usd_total", labels))

    port = free_port()
    redis = connect(f"redis://127.0.0.1:{port}/0")  # nothing listens there yet
    cache = RedisCache(redis, near=NearCache(max_entries=10, ttl_s=30))
    miss = await cache.lookup(key)  # Redis down: a miss, as designed; the key is all we need
    cache._near.put(miss.key, ENTRY, ttl_left_s=30, generation=0)  # type: ignore[union-attr]  # as a store does
    assert cache.peek(key) is not None and cache.peek(key) is not None
    await cache.flush_stats()  # Redis fails quietly and keeps both; the metrics have them
    assert metrics() == (2, 30, pytest.approx(0.002))
    server = start_redis(port)
    try:
        await cache.flush_stats()
        stats = await cache.stats(tenant, "p")
        assert (stats["hits"], stats["tokens_saved"]) == (2, 30)
        await cache.flush_stats()  # nothing left over
        assert (await cache.stats(tenant))["hits"] == 2
        assert metrics() == (2, 30, pytest.approx(0.002))  # the retry did not count them again
    finally:
        await redis.aclose()
        server.stop()


async def test_a_near_entry_never_outlives_its_redis_ttl(redis: aioredis.Redis) -> None:
    from llmgw.services.cache.near import NearCache
    from llmgw.services.cache.policy import CachePolicy, Policy

    near = NearCache(max_entries=10, ttl_s=30)
    cache = RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}", near=near,
                       policy=CachePolicy(default=Policy(ttl_s=1)))
    miss = await cache.lookup(KEY)
    await cache.store(miss.key, ENTRY, tenant="acme", prompt="p", lock_token=miss.lock_token)
    assert cache.peek(KEY) is not None
    await asyncio.sleep(1.1)
    assert cache.peek(KEY) is None


@pytest.mark.parametrize("finish", ["", "content_filter", "length"])
async def test_only_complete_answers_are_stored(redis: aioredis.Redis, finish: str) -> None:
    cache = _cache(redis)
    first = await cache.lookup(KEY)
    assert first.leader
    assert not await cache.store(first.key, replace(ENTRY, finish_reason=finish), tenant="acme", prompt="p", lock_token=first.lock_token)
    again = await cache.lookup(KEY)
    assert not again.hit and again.leader, "refused, and the single-flight lock was released"


async def test_answers_cut_by_max_tokens_are_stored_only_where_the_policy_opts_in(redis: aioredis.Redis) -> None:
    policy = CachePolicy.model_validate({"rules": [{"match": {"prompt": "p"}, "cache_length": True}]})
    cache = RedisCache(redis, policy=policy, prefix=f"t-{uuid.uuid4().hex[:8]}")
    first = await cache.lookup(KEY)
    assert await cache.store(first.key, replace(ENTRY, finish_reason="length"), tenant="acme", prompt="p", lock_token=first.lock_token)
    hit = await cache.lookup(KEY)
    assert hit.hit and hit.entry is not None and hit.entry.finish_reason == "length"


async def test_a_hung_redis_is_waited_for_a_few_times_then_skipped_until_it_answers() -> None:
    """With Redis frozen (SIGSTOP), only the lookups that open the breaker wait out the budget;
    after that every lookup is a miss without a Redis call (counted), so what a hung Redis costs a
    request is bounded by the budget, once — shown by counting calls, not by timing them."""
    import os
    import signal

    from prometheus_client import REGISTRY

    from llmgw.kit.breaker import Breaker
    from llmgw.kit.embedded import start_redis

    proc = start_redis()
    redis = aioredis.Redis.from_url(f"redis://{proc.address}/0")
    cache = RedisCache(redis, prefix="t-hung", breaker=Breaker(failure_threshold=3, open_seconds=0.5))

    def count(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0

    try:
        assert (await cache.lookup(KEY)).leader
        os.kill(proc.popen.pid, signal.SIGSTOP)
        try:
            gave_up, skipped = count("llmgw_cache_redis_errors_total", {"op": "lookup"}), \
                count("llmgw_cache_redis_skipped_total")
            results = [await cache.lookup(KEY) for _ in range(20)]
            assert all(not r.hit and not r.leader for r in results)
            assert count("llmgw_cache_redis_errors_total", {"op": "lookup"}) - gave_up == 3
            assert count("llmgw_cache_redis_skipped_total") - skipped == 17
            assert not results[-1].cacheable, "nothing is stored while Redis is out"
        finally:
            os.kill(proc.popen.pid, signal.SIGCONT)
        await asyncio.sleep(0.6)  # the breaker's cool-down: the next lookup probes Redis again
        back = await cache.lookup(replace(KEY, variables={"a": "2"}))
        assert back.cacheable and back.leader
    finally:
        await redis.aclose()
        proc.stop()


async def test_only_the_lock_owner_releases_or_stores_and_waiters_wait_as_long_as_the_lock(
    redis: aioredis.Redis,
) -> None:
    cache = RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}", lock_ttl_s=0.3)
    old = await cache.lookup(KEY)
    assert old.leader and old.lock_token
    waiter = await cache.lookup(KEY)
    assert waiter.in_flight and 0 < waiter.lock_ttl_ms <= 300  # wait exactly as long as the lock holds
    await asyncio.sleep(0.35)  # the old leader is slow: its lock expired...
    new = await cache.wait(KEY, timeout_s=waiter.lock_ttl_ms / 1000 + 0.1)
    assert new.leader and new.lock_token != old.lock_token  # ...and the waiter took over at once
    await cache.release(old.key, old.lock_token)  # the old leader's late release changes nothing
    assert (await cache.lookup(KEY)).in_flight, "the new leader's lock survived the old one's release"
    assert not await cache.store(old.key, ENTRY, tenant="acme", lock_token=old.lock_token)  # nor its store
    assert await cache.store(new.key, ENTRY, tenant="acme", lock_token=new.lock_token)
    assert (await cache.lookup(KEY)).hit
