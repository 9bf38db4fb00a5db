"""The near cache's rules, with a fake clock: bounded, never past its TTL, invalidations win."""

from __future__ import annotations

from llmgw.domain import CacheEntry, Usage
from llmgw.services.cache.near import NearCache

E = CacheEntry(text="x", provider="openai", model="m", usage=Usage(1, 1))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_expires_at_the_sooner_of_its_ttl_and_the_entrys_redis_ttl() -> None:
    clock = Clock()
    near = NearCache(max_entries=10, ttl_s=30, clock=clock)
    near.put("a", E, ttl_left_s=5, generation=near.generation)
    near.put("b", E, ttl_left_s=500, generation=near.generation)
    clock.now = 6
    assert near.get("a") is None and near.get("b") is E
    clock.now = 31
    assert near.get("b") is None


def test_least_recently_used_goes_first() -> None:
    near = NearCache(max_entries=2, ttl_s=30, clock=Clock())
    for k in ("a", "b"):
        near.put(k, E, ttl_left_s=60, generation=near.generation)
    assert near.get("a") is E  # a is now the most recent
    near.put("c", E, ttl_left_s=60, generation=near.generation)
    assert near.get("b") is None and near.get("a") is E and near.get("c") is E


def test_invalidation_drops_matches_and_refuses_fills_read_before_it() -> None:
    near = NearCache(max_entries=10, ttl_s=30, clock=Clock())
    gen = near.generation
    near.put("llmgw:cache:acme:p:v1@x:1", E, ttl_left_s=60, generation=gen)
    near.put("llmgw:cache:globex:p:v1@x:2", E, ttl_left_s=60, generation=gen)
    assert near.drop("llmgw:cache:acme:*:*:*") == 1
    assert near.get("llmgw:cache:globex:p:v1@x:2") is E
    # A lookup that read Redis before the invalidation must not put its (maybe stale) entry back.
    near.put("llmgw:cache:acme:p:v1@x:1", E, ttl_left_s=60, generation=gen)
    assert near.get("llmgw:cache:acme:p:v1@x:1") is None


def test_bounded_by_bytes_too_least_recently_used_out() -> None:
    from dataclasses import replace

    big = replace(E, text="y" * 10_000)  # about 10 KB each, kept decompressed
    near = NearCache(max_entries=1000, ttl_s=30, max_bytes=35_000)
    for i in range(5):
        near.put(f"k{i}", big, ttl_left_s=30, generation=0)
    assert len(near) == 3 and near.bytes <= 35_000  # the count would have kept all five
    assert near.get("k0") is None and near.get("k4") is not None
    near.put("huge", replace(E, text="z" * 100_000), ttl_left_s=30, generation=0)
    assert near.get("huge") is None and len(near) == 3  # larger than the budget: left to Redis
    near.drop("k*")
    assert len(near) == 0 and near.bytes == 0
