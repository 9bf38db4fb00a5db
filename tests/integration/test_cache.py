"""The cache core against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from llmgw.services.cache.core import RedisCache

from llmgw.domain import CacheEntry, KeyMaterial, Sampling, Usage
from llmgw.kit.embedded import free_port

pytestmark = pytest.mark.integration

KEY = KeyMaterial(tenant="acme", route="default", prompt="p", prompt_version="v1@x", variables={"a": "1"},
                  sampling=Sampling(temperature=0))
ENTRY = CacheEntry(text="hello world", provider="openai", model="m", usage=Usage(10, 5, 0.001),
                   chunks=("hello", " world"))


def _cache(redis: aioredis.Redis) -> RedisCache:
    return RedisCache(redis, prefix=f"t-{uuid.uuid4().hex[:8]}")


async def test_store_then_hit_with_chunks_and_stats(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    miss = await cache.lookup(KEY)
    assert not miss.hit and miss.cacheable
    assert await cache.store(miss.key, ENTRY, tenant="acme")
    hit = await cache.lookup(KEY)
    assert hit.hit and hit.entry is not None and hit.entry.chunks == ("hello", " world")
    assert hit.entry.usage == Usage(10, 5, 0.001)
    await asyncio.sleep(0.05)  # stats are written after the reply
    stats = await cache.stats("acme")
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["tokens_saved"] == 15


async def test_never_served_across_tenants(redis: aioredis.Redis) -> None:
    cache = _cache(redis)
    res = await cache.lookup(KEY)
    await cache.store(res.key, ENTRY, tenant="acme")
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
    assert not await cache.store(res.key, ENTRY, tenant="acme")
    await dead.aclose()
