"""The cache core: lookup and store of compressed entries, policy, single-flight, invalidation,
stats. Never fails a request: Redis slow or down is a miss."""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from llmgw.cache.v1 import cache_pb2
from llmgw.convert import entry_from_pb, entry_to_pb
from llmgw.domain import CacheEntry, KeyMaterial, LookupResult
from llmgw.kit.logging import get_logger
from llmgw.services.cache.keys import cache_key, entry_pattern, lock_key, stats_key
from llmgw.services.cache.policy import CachePolicy

__all__ = ["RedisCache"]

_log = get_logger(__name__)
LOOKUPS = Counter("llmgw_cache_lookups_total", "Cache lookups", ["tenant", "prompt", "result"])
TOKENS_SAVED = Counter("llmgw_cache_tokens_saved_total", "Provider tokens not spent thanks to hits",
                       ["tenant", "prompt"])
COST_SAVED = Counter("llmgw_cache_cost_saved_usd_total", "Provider dollars not spent thanks to hits",
                     ["tenant", "prompt"])
COALESCED = Counter("llmgw_cache_coalesced_total", "Misses answered by another request's provider call")
ERRORS = Counter("llmgw_cache_redis_errors_total", "Cache operations that gave up on Redis", ["op"])

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# One round trip, atomic with the leader's store (SET entry + DEL lock in MULTI): the entry, else
# the single-flight lock if it is free (leader), else "in flight". No window in which a caller
# sees neither the entry nor the lock and starts a second provider call.
_LOOKUP = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}
"""


class RedisCache:
    """Implements ``llmgw.ports.CachePort``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "llmgw:cache",
        policy: CachePolicy | None = None,
        timeout_s: float = 0.05,
        unset_temperature_is_deterministic: bool = True,
        lock_ttl_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._policy = policy or CachePolicy()
        self._timeout = timeout_s
        self._unset_ok = unset_temperature_is_deterministic
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        self._lookup_script = redis.register_script(_LOOKUP)
        # Strong references to fire-and-forget stat updates (the loop only keeps weak ones).
        self._pending: set[asyncio.Task[None]] = set()

    def cacheable(self, key: KeyMaterial) -> bool:
        return self._policy.allows(key, unset_temperature_is_deterministic=self._unset_ok)

    def _hit(self, key: KeyMaterial, k: str, raw: bytes) -> LookupResult:
        entry = entry_from_pb(cache_pb2.Entry.FromString(zlib.decompress(raw)))
        labels = (key.tenant, key.prompt or "-")
        LOOKUPS.labels(*labels, "hit").inc()
        TOKENS_SAVED.labels(*labels).inc(entry.usage.total_tokens)
        if entry.usage.cost_usd is not None:
            COST_SAVED.labels(*labels).inc(entry.usage.cost_usd)
        self._count(key.tenant, key.prompt, hits=1, tokens_saved=entry.usage.total_tokens,
                    cost_saved_usd=entry.usage.cost_usd or 0.0)
        return LookupResult(key=k, hit=True, entry=entry, cacheable=True)

    async def _probe(self, k: str) -> tuple[bytes | None, bool]:
        """(entry, leader): the entry if stored; else whether this caller took the lock."""
        async with asyncio.timeout(self._timeout):
            res = await self._lookup_script(keys=[k, lock_key(k, prefix=self._prefix)],
                                            args=[uuid.uuid4().hex, self._lock_ttl_ms])
        code = int(res[0])
        return (res[1] if code == 1 else None), code == 2

    async def lookup(self, key: KeyMaterial, *, read: bool = True) -> LookupResult:
        """A hit; or a miss that says whether this caller leads the provider call (``leader``) or
        another identical request already does (``in_flight``: call ``wait``)."""
        k = cache_key(key, prefix=self._prefix)
        if not self.cacheable(key):
            return LookupResult(key=k, cacheable=False)
        if not read:  # REFRESH/BYPASS: neither read nor wait for others; REFRESH still stores
            return LookupResult(key=k, cacheable=True)
        try:
            raw, leader = await self._probe(k)
        except _REDIS_ERRORS as exc:
            ERRORS.labels("lookup").inc()
            _log.warning("cache_lookup_gave_up", error=repr(exc))
            return LookupResult(key=k, cacheable=True)
        if raw is not None:
            return self._hit(key, k, raw)
        LOOKUPS.labels(key.tenant, key.prompt or "-", "miss").inc()
        self._count(key.tenant, key.prompt, misses=1)
        return LookupResult(key=k, cacheable=True, leader=leader, in_flight=not leader)

    async def wait(self, key: KeyMaterial, *, timeout_s: float) -> LookupResult:
        """Wait (bounded) for the leader's entry. If the leader gave up or died, the first waiter
        to notice becomes the new leader; on timeout the caller goes on alone."""
        k = cache_key(key, prefix=self._prefix)
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            try:
                raw, leader = await self._probe(k)
            except _REDIS_ERRORS as exc:  # one slow poll is not the end of the wait
                ERRORS.labels("wait").inc()
                _log.debug("cache_wait_poll_failed", error=repr(exc))
                continue
            if raw is not None:
                COALESCED.inc()
                return self._hit(key, k, raw)
            if leader:
                return LookupResult(key=k, cacheable=True, leader=True)
        _log.warning("cache_wait_timed_out", key=k)
        return LookupResult(key=k, cacheable=True)

    async def release(self, key: str) -> None:
        """The leader will not store (failure, uncacheable answer): let waiters go at once."""
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._redis.delete(lock_key(key, prefix=self._prefix))
        except _REDIS_ERRORS as exc:
            ERRORS.labels("release").inc()
            _log.warning("cache_release_gave_up", error=repr(exc))

    async def store(self, key: str, entry: CacheEntry, *, tenant: str, prompt: str = "", route: str = "") -> bool:
        policy = self._policy.for_request(prompt, route)
        if not entry.stored_at:
            entry = CacheEntry(text=entry.text, provider=entry.provider, model=entry.model, usage=entry.usage,
                               chunks=entry.chunks, stored_at=time.time())
        blob = zlib.compress(entry_to_pb(entry).SerializeToString(), 6)
        if len(blob) > policy.max_entry_bytes:
            _log.info("cache_entry_too_large", bytes=len(blob), max_bytes=policy.max_entry_bytes)
            await self.release(key)
            return False
        try:
            async with asyncio.timeout(self._timeout * 4):
                pipe = self._redis.pipeline(transaction=True)  # atomic with the lookup script
                pipe.set(key, blob, ex=policy.ttl_s)
                pipe.delete(lock_key(key, prefix=self._prefix))
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            ERRORS.labels("store").inc()
            _log.warning("cache_store_gave_up", error=repr(exc))
            return False
        self._count(tenant, prompt, stores=1)
        return True

    async def invalidate(self, *, tenant: str | None = None, prompt: str | None = None,
                         version: str | None = None) -> int:
        """Delete the entries matching; returns how many. Scans, never KEYS (no Redis stall)."""
        pattern = entry_pattern(prefix=self._prefix, tenant=tenant, prompt=prompt, version=version)
        deleted = 0
        batch: list[bytes] = []
        async for k in self._redis.scan_iter(match=pattern, count=1000):
            batch.append(k)
            if len(batch) >= 500:
                deleted += await self._redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await self._redis.unlink(*batch)
        _log.info("cache_invalidated", pattern=pattern, entries=deleted)
        return deleted

    def _count(self, tenant: str, prompt: str, **fields: float) -> None:
        # Stats are bookkeeping: fire and forget, never on the request's critical path.
        task = asyncio.get_running_loop().create_task(self._incr(tenant, prompt, fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _incr(self, tenant: str, prompt: str, fields: dict[str, float]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in (stats_key(tenant, prefix=self._prefix), stats_key(tenant, prompt or "-", prefix=self._prefix)):
                for name, value in fields.items():
                    if isinstance(value, float):
                        pipe.hincrbyfloat(key, name, value)
                    else:
                        pipe.hincrby(key, name, int(value))
            await pipe.execute()
        except _REDIS_ERRORS as exc:
            ERRORS.labels("stats").inc()
            _log.debug("cache_stats_failed", error=repr(exc))

    async def stats(self, tenant: str, prompt: str | None = None) -> dict[str, float]:
        raw = await self._redis.hgetall(stats_key(tenant, prompt, prefix=self._prefix))
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def ready(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
