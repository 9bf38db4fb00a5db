"""Every Redis user of llmgw against a real Redis Cluster of three primaries started here (and a
Sentinel-managed primary): limits exact with their buckets on different shards, cache hits across
shards, keys, budgets, labels and drift baselines, and a whole stack serving a miss and a hit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError

from llmgw.domain import CacheEntry, KeyMaterial, Sampling, Usage
from llmgw.kit.embedded import LocalCluster, start_redis_cluster, start_redis_sentinel
from llmgw.kit.redis import Client, connect
from llmgw.kit.scripts import ScriptBatcher
from llmgw.services.cache.core import RedisCache
from llmgw.services.cache.near import NearCache
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import parse_rules
from tests.helpers import semantic_replica

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = start_redis_cluster(3)
    yield c
    c.stop()


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[Client]:
    c = connect(cluster.url)
    assert isinstance(c, RedisCluster)
    await c.initialize()  # the slot map, for _node_of
    yield c
    await c.aclose()


@pytest.fixture
async def limiter(client: Client) -> AsyncIterator[RedisLimiter]:
    lim = RedisLimiter(client, RULES, prefix=f"c-{uuid.uuid4().hex[:6]}", timeout_s=1.0)
    yield lim
    await lim.close()  # its give-backs finish before the client closes


def _node_of(client: Client, key: str) -> str:
    assert isinstance(client, RedisCluster)
    return client.nodes_manager.get_node_from_slot(client.keyslot(key)).name


RULES = parse_rules({"domains": {
    "gateway": [
        {"match": {"tenant": "*"}, "limits": [
            {"name": "tenant-rpm", "unit": "requests", "limit": 10, "per": "minute"},
            {"name": "tenant-tpm", "unit": "tokens", "limit": 10_000, "per": "minute"}]},
        {"match": {"route": "*"}, "limits": [
            {"name": "route-rpm", "unit": "requests", "limit": 100, "per": "minute"},
            {"name": "route-tpm", "unit": "tokens", "limit": 50_000, "per": "minute", "algorithm": "gcra",
             "burst": 50_000}]},
    ],
    "provider": [{"match": {"provider": "*"}, "limits": [
        {"name": "provider-rpm", "unit": "requests", "limit": 1000, "per": "minute"}]}],
}})


async def test_flat_multi_key_scripts_are_refused_by_a_cluster(client: Client) -> None:
    """What the hash tags are for: a script over keys of two slots is refused (CROSSSLOT)."""
    script = ScriptBatcher(client).register("return redis.call('MGET', KEYS[1], KEYS[2])")
    with pytest.raises(ClusterCrossSlotError):
        await script(["llmgw:rl:gateway:tenant-rpm:tenant=acme", "llmgw:rl:gateway:route-rpm:route=chat"], [])


async def test_limits_are_exact_with_their_buckets_on_different_shards(client: Client, limiter: RedisLimiter) -> None:
    plan = limiter._plan("gateway", (("tenant", "acme"), ("route", "chat")))
    assert len({_node_of(client, k) for k in plan.keys}) == 2, "tenant and route buckets on two shards"
    assert len(plan.groups) == 2
    acme = [("tenant", "acme"), ("route", "chat")]
    decisions = await asyncio.gather(*(limiter.check(acme) for _ in range(40)))
    assert sum(d.allowed for d in decisions) == 10  # the tenant's limit, exactly
    refused = next(d for d in decisions if not d.allowed)
    assert refused.limit_name == "tenant-rpm" and refused.retry_after_ms > 0
    # The 30 refused by the tenant's shard gave back what the route's shard charged them.
    for _ in range(100):
        other = await limiter.check([("tenant", "globex"), ("route", "chat")])
        route = next(s for s in other.statuses if s.name == "route-rpm")
        if route.remaining == 100 - 11:
            break
        await asyncio.sleep(0.02)
    assert route.remaining == 100 - 11, route


async def test_tokens_reserved_and_settled_on_every_shard(limiter: RedisLimiter) -> None:
    desc = [("tenant", "acme"), ("route", "chat")]
    d = await limiter.check(desc, tokens=4000)
    assert d.allowed and d.reservation_id.count("\n") == 1, "one reservation per shard"
    assert await limiter.settle(d.reservation_id, 1000) == 3000
    assert await limiter.settle(d.reservation_id, 1000) == 0  # at most once
    after = await limiter.check([("tenant", "acme"), ("route", "chat")], tokens=0)
    left = {s.name: s.remaining for s in after.statuses}
    assert left["tenant-tpm"] == 10_000 - 1000
    assert 50_000 - 1000 <= left["route-tpm"] <= 50_000 - 1000 + 100  # GCRA refills meanwhile


async def test_a_provider_pause_holds_on_a_cluster(limiter: RedisLimiter) -> None:
    desc = [("provider", "openai"), ("model", "gpt-4o")]
    assert (await limiter.check(desc, domain="provider")).allowed
    assert await limiter.pause(desc, seconds=5) > 0
    paused = await limiter.check(desc, domain="provider")
    assert not paused.allowed and paused.limit_name == "provider-pause"


def _key(tenant: str, n: int) -> KeyMaterial:
    return KeyMaterial(tenant=tenant, route="default", prompt="p", prompt_version="v1@x", variables={"n": str(n)},
                       sampling=Sampling(temperature=0))


ENTRY = CacheEntry(text="hello", provider="openai", model="m", usage=Usage(10, 5, 0.001), finish_reason="stop")


async def test_cache_hits_served_from_every_shard_and_counted(client: Client) -> None:
    cache = RedisCache(client, prefix=f"c-{uuid.uuid4().hex[:6]}", timeout_s=1.0)
    keys = [_key("acme", n) for n in range(30)]
    misses = await asyncio.gather(*(cache.lookup(k) for k in keys))
    assert all(m.leader for m in misses)
    assert len({_node_of(client, m.key) for m in misses}) == 3, "entries spread over every shard"
    assert all(await asyncio.gather(*(cache.store(m.key, ENTRY, tenant="acme", prompt="p", lock_token=m.lock_token)
                                      for m in misses)))
    hits = await asyncio.gather(*(cache.lookup(k) for k in keys))
    assert all(h.hit and h.entry is not None and h.entry.text == "hello" for h in hits)
    # Single flight across shards: a second caller of a fresh key waits, it does not lead.
    lead, follow = await asyncio.gather(cache.lookup(_key("acme", 99)), cache.lookup(_key("acme", 99)))
    assert sorted([lead.leader, follow.in_flight]) == [True, True] or lead.in_flight or follow.in_flight
    await cache.flush_stats()
    stats = await cache.stats("acme")
    assert stats["hits"] == 30 and stats["misses"] == 31 and stats["stores"] == 30 and stats["tokens_saved"] == 450


async def test_invalidation_reaches_every_shard_and_every_near_cache(client: Client, cluster: LocalCluster) -> None:
    prefix = f"c-{uuid.uuid4().hex[:6]}"
    other = connect(cluster.url)
    writer = RedisCache(client, prefix=prefix, timeout_s=1.0)
    reader = RedisCache(other, prefix=prefix, timeout_s=1.0, near=NearCache(max_entries=100, ttl_s=60))
    follower = asyncio.ensure_future(reader.follow_invalidations())
    try:
        keys = [_key("acme", n) for n in range(12)]
        for k in keys:
            miss = await writer.lookup(k)
            await writer.store(miss.key, ENTRY, tenant="acme", prompt="p", lock_token=miss.lock_token)
        await asyncio.sleep(0.3)  # the reader's subscription is up
        assert all([(await reader.lookup(k)).hit for k in keys])
        assert all(reader.peek(k) is not None for k in keys), "held in the reader's near cache"
        assert await writer.invalidate(tenant="acme") == 12
        for _ in range(50):
            if all(reader.peek(k) is None for k in keys):
                break
            await asyncio.sleep(0.02)
        assert all(reader.peek(k) is None for k in keys)
        assert not any([(await reader.lookup(k)).hit for k in keys])
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await other.aclose()


async def test_the_semantic_tier_on_a_cluster(client: Client, cluster: LocalCluster, embedder: Any) -> None:
    """A scope's hash, and a hit's list and counters, are single-slot: served across replicas,
    counted, and invalidated on a cluster."""
    from llmgw.domain import Message

    prefix = f"c-{uuid.uuid4().hex[:6]}"
    other = connect(cluster.url)
    a, b = semantic_replica(client, prefix, embedder), semantic_replica(other, prefix, embedder)

    def key(text: str) -> KeyMaterial:
        return KeyMaterial(tenant="acme", route="r", prompt="p", prompt_version="v1@x",
                           messages=(Message("user", text),), sampling=Sampling(temperature=0))
    try:
        miss = await a.lookup(key("How do I delete my account?"))
        assert await a.store(miss.key, ENTRY, tenant="acme", prompt="p", lock_token=miss.lock_token,
                             semantic=miss.semantic)
        hit = await b.lookup(key("How can I delete my account?"))
        assert hit.tier == "semantic" and hit.entry is not None and hit.entry.text == "hello"
        await asyncio.sleep(0.2)
        assert (await b.stats("acme"))["semantic_hits"] == 1
        assert [h["question"] for h in await b.semantic_hits("acme")] == ["How can I delete my account?"]
        assert await a.invalidate(tenant="acme") == 1
        assert not (await b.lookup(key("How can I delete my account?"))).hit
    finally:
        await other.aclose()


async def test_keys_budgets_labels_and_baselines_on_a_cluster(client: Client) -> None:
    from llmgw.keys.ledger import Hold, Refusal, SpendLedger
    from llmgw.keys.model import Budget
    from llmgw.keys.store import RedisKeyStore
    from llmgw.prompts.labels import LabelStore
    from llmgw.services.drift.baselines import BaselineStore

    prefix = f"c-{uuid.uuid4().hex[:6]}"
    store = RedisKeyStore(client, prefix=f"{prefix}:keys")
    record, secret = await store.create(tenant="acme", name="ci")
    _, loaded = await store.load()
    assert [k.id for k in loaded.keys] == [record.id] and secret.startswith("llmgw_")

    ledger = SpendLedger(client, prefix=f"{prefix}:spend")
    budgets = [("key", Budget(usd=1.0, per="day")), ("tenant", Budget(usd=1.0, per="day"))]
    hold = await ledger.reserve("acme", record.id, budgets, 600_000_000, timeout_s=1.0)
    assert isinstance(hold, Hold)
    refused = await ledger.reserve("acme", record.id, budgets, 600_000_000, timeout_s=1.0)
    assert isinstance(refused, Refusal), "the first reservation holds its worst case"
    assert await ledger.settle(hold, 250_000_000, timeout_s=1.0)
    assert await ledger.window_spend("acme", "key", record.id, "day") == 250_000_000
    assert await ledger.window_spend("acme", "tenant", "acme", "day") == 250_000_000

    labels = LabelStore(client, prefix=f"{prefix}:prompts")
    await labels.move("summarize", "production", "v2")
    await labels.move("classify", "production", "v1")
    assert await labels.get_all(["summarize", "classify"]) == {"summarize": {"production": "v2"},
                                                                "classify": {"production": "v1"}}
    baselines = BaselineStore(client, prefix=f"{prefix}:drift:")
    assert await baselines.segments() == []


async def test_a_sentinel_primary_serves_limits_and_cache() -> None:
    sentinel = start_redis_sentinel()
    client = connect(sentinel.url)
    try:
        limiter = RedisLimiter(client, RULES, prefix=f"s-{uuid.uuid4().hex[:6]}", timeout_s=1.0)
        decisions = [await limiter.check([("tenant", "acme"), ("route", "chat")]) for _ in range(12)]
        await limiter.close()
        assert sum(d.allowed for d in decisions) == 10
        cache = RedisCache(client, prefix=f"s-{uuid.uuid4().hex[:6]}", timeout_s=1.0)
        miss = await cache.lookup(_key("acme", 1))
        assert await cache.store(miss.key, ENTRY, tenant="acme", lock_token=miss.lock_token)
        assert (await cache.lookup(_key("acme", 1))).hit
    finally:
        await client.aclose()
        sentinel.stop()


async def test_a_whole_stack_on_a_cluster_serves_a_miss_then_a_hit(cluster: LocalCluster, topics_ready: str) -> None:
    from llmgw.stack import start_stack
    from tests.helpers import Client as GatewayClient
    from tests.helpers import prompt_request

    for colocate in ((), ("limiter", "cache")):
        # The cache hop's deadline is wall clock across services sharing this one process and
        # loop: a cold first lookup (slot map, script loads on every shard) must not time out
        # into an uncached miss on a busy machine.
        stack = await start_stack(redis_url=cluster.url, kafka_bootstrap=topics_ready, colocate=colocate,
                                  ingress_overrides={"cache_timeout_s": 2.0})
        gateway = GatewayClient(stack.ingress.address)
        try:
            first = await gateway.complete(prompt_request(f"clustered {colocate}"))
            for _ in range(50):  # the store happens after the reply
                second = await gateway.complete(prompt_request(f"clustered {colocate}"))
                if second.cache_hit:
                    break
                await asyncio.sleep(0.05)
            assert not first.cache_hit and second.cache_hit and second.text == first.text
            assert stack.fake.state.calls["openai"] == 1
        except grpc.aio.AioRpcError as exc:  # shows the status on failure
            pytest.fail(f"{colocate}: {exc.code()}: {exc.details()}")
        finally:
            await gateway.close()
            await stack.stop()
