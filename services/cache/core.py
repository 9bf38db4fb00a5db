"""The cache core: lookup and store of compressed entries, policy, stats. Never fails a request."""

from __future__ import annotations

import asyncio
import time
import zlib

import redis.asyncio as aioredis
from llmgw.services.cache.keys import cache_key
from prometheus_client import Counter
from redis.exceptions import RedisError

from llmgw.cache.v1 import cache_pb2
from llmgw.convert import entry_from_pb, entry_to_pb
from llmgw.domain import CacheEntry, KeyMaterial, LookupResult
from llmgw.kit.logging import get_logger

__all__ = ["RedisCache"]

_log = get_logger(__name__)
LOOKUPS = Counter("llmgw_cache_lookups_total", "Cache lookups", ["tenant", "result"])
TOKENS_SAVED = Counter("llmgw_cache_tokens_saved_total", "Provider tokens not spent thanks to hits", ["tenant"])
COST_SAVED = Counter("llmgw_cache_cost_saved_usd_total", "Provider dollars not spent thanks to hits", ["tenant"])
ERRORS = Counter("llmgw_cache_redis_errors_total", "Cache operations that gave up on Redis", ["op"])


class RedisCache:
    """Implements ``llmgw.ports.CachePort``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "llmgw:cache",
        ttl_s: int = 3600,
        max_entry_bytes: int = 256 * 1024,
        timeout_s: float = 0.05,
        unset_temperature_is_deterministic: bool = True,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._max_bytes = max_entry_bytes
        self._timeout = timeout_s
        self._unset_ok = unset_temperature_is_deterministic
        # Strong references to fire-and-forget stat updates (the loop only keeps weak ones).
        self._pending: set[asyncio.Task[None]] = set()

    def cacheable(self, key: KeyMaterial) -> bool:
        """Only deterministic requests are cached: a sampled answer is not 'the same answer'."""
        t = key.sampling.temperature
        return (t is None and self._unset_ok) or t == 0

    def _stats_key(self, tenant: str) -> str:
        return f"{self._prefix}:stats:{tenant}"

    async def lookup(self, key: KeyMaterial, *, read: bool = True) -> LookupResult:
        k = cache_key(key, prefix=self._prefix)
        cacheable = self.cacheable(key)
        if not (read and cacheable):
            return LookupResult(key=k, cacheable=cacheable)
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.get(k)
        except (TimeoutError, RedisError, OSError) as exc:
            ERRORS.labels("lookup").inc()
            _log.warning("cache_lookup_gave_up", error=repr(exc))
            return LookupResult(key=k, cacheable=cacheable)
        if raw is None:
            LOOKUPS.labels(key.tenant, "miss").inc()
            self._count(key.tenant, misses=1)
            return LookupResult(key=k, cacheable=cacheable)
        entry = entry_from_pb(cache_pb2.Entry.FromString(zlib.decompress(raw)))
        LOOKUPS.labels(key.tenant, "hit").inc()
        TOKENS_SAVED.labels(key.tenant).inc(entry.usage.total_tokens)
        if entry.usage.cost_usd is not None:
            COST_SAVED.labels(key.tenant).inc(entry.usage.cost_usd)
        self._count(
            key.tenant, hits=1, tokens_saved=entry.usage.total_tokens, cost_saved_usd=entry.usage.cost_usd or 0.0
        )
        return LookupResult(key=k, hit=True, entry=entry, cacheable=cacheable)

    async def store(self, key: str, entry: CacheEntry, *, tenant: str, prompt: str = "") -> bool:
        if not entry.stored_at:
            entry = CacheEntry(
                text=entry.text, provider=entry.provider, model=entry.model, usage=entry.usage,
                chunks=entry.chunks, stored_at=time.time(),
            )
        blob = zlib.compress(entry_to_pb(entry).SerializeToString(), 6)
        if len(blob) > self._max_bytes:
            _log.info("cache_entry_too_large", bytes=len(blob))
            return False
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._redis.set(key, blob, ex=self._ttl_s)
        except (TimeoutError, RedisError, OSError) as exc:
            ERRORS.labels("store").inc()
            _log.warning("cache_store_gave_up", error=repr(exc))
            return False
        self._count(tenant, stores=1)
        return True

    def _count(self, tenant: str, **fields: float) -> None:
        # Stats are bookkeeping: fire and forget, never on the request's critical path.
        task = asyncio.get_running_loop().create_task(self._incr(tenant, fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _incr(self, tenant: str, fields: dict[str, float]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name, value in fields.items():
                if isinstance(value, float):
                    pipe.hincrbyfloat(self._stats_key(tenant), name, value)
                else:
                    pipe.hincrby(self._stats_key(tenant), name, int(value))
            await pipe.execute()
        except (RedisError, OSError) as exc:
            ERRORS.labels("stats").inc()
            _log.debug("cache_stats_failed", error=repr(exc))

    async def stats(self, tenant: str) -> dict[str, float]:
        raw = await self._redis.hgetall(self._stats_key(tenant))
        return {k.decode(): float(v) for k, v in raw.items()}

    async def ready(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
