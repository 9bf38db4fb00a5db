"""The cache core: lookup and store of compressed entries, policy, single-flight, invalidation,
stats. Never fails a request: Redis slow or down is a miss."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import uuid
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from redis.exceptions import RedisError

from llmgw.cache.v1 import cache_pb2
from llmgw.convert import entry_from_pb, entry_to_pb
from llmgw.domain import CacheEntry, KeyMaterial, LookupResult, Usage
from llmgw.kit import tracing
from llmgw.kit.breaker import Breaker, State
from llmgw.kit.logging import get_logger
from llmgw.kit.metrics import child
from llmgw.kit.redis import Client, is_cluster
from llmgw.kit.scripts import ScriptBatcher
from llmgw.kit.tasks import Background
from llmgw.services.cache.keys import cache_key, entry_pattern, lock_key, semantic_pattern, stats_key
from llmgw.services.cache.near import NearCache
from llmgw.services.cache.policy import CachePolicy
from llmgw.services.cache.semantic.pending import Found, Pending, pending_for

if TYPE_CHECKING:  # numpy and the model: imported only where a policy turns the tier on (app.py)
    from llmgw.services.cache.semantic.tier import SemanticTier

__all__ = ["RedisCache"]

_log = get_logger(__name__)
LOOKUPS = Counter("llmgw_cache_lookups_total", "Cache lookups", ["tenant", "prompt", "result"])
TOKENS_SAVED = Counter("llmgw_cache_tokens_saved_total", "Provider tokens not spent thanks to hits",
                       ["tenant", "prompt"])
COST_SAVED = Counter("llmgw_cache_cost_saved_usd_total", "Provider dollars not spent thanks to hits",
                     ["tenant", "prompt"])
COALESCED = Counter("llmgw_cache_coalesced_total", "Misses answered by another request's provider call")
SKIPPED = Counter("llmgw_cache_redis_skipped_total",
                  "Lookups answered as a miss without asking Redis while its breaker is open")
ERRORS = Counter("llmgw_cache_redis_errors_total", "Cache operations that gave up on Redis", ["op"])

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class _Saved:
    hits: Any
    misses: Any
    tokens: Any
    cost: Any


@dataclass(slots=True)
class _Tally:
    """Counts of one (tenant, prompt) not yet in the shared counters: hits and what they saved, and
    (on a Redis Cluster, where the counters live on another shard than the entry) misses and stores."""

    hits: int = 0
    tokens: int = 0
    cost: float = 0.0
    priced: bool = False  # any hit of a priced model (an unpriced saving is never reported as $0)
    misses: int = 0
    stores: int = 0

    def add_hit(self, usage: Usage) -> _Tally:
        self.hits += 1
        self.tokens += usage.total_tokens
        if usage.cost_usd is not None:
            self.cost += usage.cost_usd
            self.priced = True
        return self

    def add(self, other: _Tally) -> None:
        self.hits += other.hits
        self.tokens += other.tokens
        self.cost += other.cost
        self.priced = self.priced or other.priced
        self.misses += other.misses
        self.stores += other.stores


def _tally_in(tallies: dict[tuple[str, str], _Tally], tenant: str, prompt: str) -> _Tally:
    """The (tenant, prompt) tally of ``tallies``, made on first use (no allocation on a hot hit)."""
    tally = tallies.get((tenant, prompt))
    if tally is None:
        tally = tallies[(tenant, prompt)] = _Tally()
    return tally


def _count_saved(tenant: str, prompt: str, tally: _Tally) -> None:
    saved = _saved(tenant, prompt or "-")
    saved.hits.inc(tally.hits)
    saved.tokens.inc(tally.tokens)
    if tally.priced:
        saved.cost.inc(tally.cost)


@functools.lru_cache(maxsize=4096)
def _saved(tenant: str, prompt: str) -> _Saved:
    return _Saved(child(LOOKUPS, tenant, prompt, "hit"), child(LOOKUPS, tenant, prompt, "miss"),
                  child(TOKENS_SAVED, tenant, prompt), child(COST_SAVED, tenant, prompt))

# One round trip, atomic with the leader's store (entry + lock release in MULTI): the entry, else
# the single-flight lock if it is free (leader), else "in flight". No window in which a caller
# sees neither the entry nor the lock and starts a second provider call. The tenant's and the
# prompt's counters are bumped in the same script, so accounting costs no extra round trip (on a
# Redis Cluster the counters are on another shard: the script gets only KEYS 1-2 and the counts are
# tallied in process and flushed with the near hits).
# An entry is a hash: e = compressed protobuf, t = tokens it saves, c = dollars it saves.
#   KEYS: entry, lock, tenant stats, tenant+prompt stats
#   ARGV: lock token, lock ttl ms
# A miss is counted by whoever takes the lock (it calls the provider); a request that waits for
# another's call counts once, as a hit when the entry arrives.
_LOOKUP = """
local v = redis.call('HMGET', KEYS[1], 'e', 't', 'c')
if v[1] then
  for i = 3, #KEYS do
    redis.call('HINCRBY', KEYS[i], 'hits', 1)
    redis.call('HINCRBY', KEYS[i], 'tokens_saved', v[2])
    redis.call('HINCRBYFLOAT', KEYS[i], 'cost_saved_usd', v[3])
  end
  return {1, v[1]}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  for i = 3, #KEYS do redis.call('HINCRBY', KEYS[i], 'misses', 1) end
  return {2}
end
return {3, redis.call('PTTL', KEYS[2])}
"""

# KEYS: the lock. ARGV: the owner's token. Deletes the lock only if that owner still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: entry, lock, tenant stats, tenant+prompt stats. ARGV: blob, tokens, cost, ttl s, token.
# Only the lock's owner stores (or anyone when the lock is gone: the answer is complete); a lock
# taken over by another leader since is left to that leader.
_STORE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 't', ARGV[2], 'c', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if holder then redis.call('DEL', KEYS[2]) end
for i = 3, #KEYS do redis.call('HINCRBY', KEYS[i], 'stores', 1) end
return 1
"""


# Counts tallied in process: hits answered from the near cache (they never ran the lookup script)
# and, on a Redis Cluster, every lookup's and store's counts.
#   KEYS: tenant stats, tenant+prompt stats; ARGV: hits, tokens saved, dollars saved, misses, stores
_STATS = """
for i = 1, 2 do
  redis.call('HINCRBY', KEYS[i], 'hits', ARGV[1])
  redis.call('HINCRBY', KEYS[i], 'tokens_saved', ARGV[2])
  redis.call('HINCRBYFLOAT', KEYS[i], 'cost_saved_usd', ARGV[3])
  if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[i], 'misses', ARGV[4]) end
  if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[i], 'stores', ARGV[5]) end
end
return 1
"""


class RedisCache:
    """Implements ``llmgw.ports.CachePort``."""

    def __init__(
        self,
        redis: Client,
        *,
        prefix: str = "llmgw:cache",
        policy: CachePolicy | None = None,
        timeout_s: float = 0.05,
        unset_temperature_is_deterministic: bool = True,
        lock_ttl_s: float = 30.0,
        batcher: ScriptBatcher | None = None,
        near: NearCache | None = None,
        breaker: Breaker | None = None,
        semantic: SemanticTier | None = None,
    ) -> None:
        self._redis = redis
        self._semantic = semantic
        # As the limiter's: while Redis hangs, lookups skip it at once (a miss, counted) instead of
        # each waiting out the timeout, so a hung Redis costs at most its budget, once.
        self._breaker = breaker or Breaker(failure_threshold=3, open_seconds=2.0)
        self._prefix = prefix
        self._policy = policy or CachePolicy()
        self._timeout = timeout_s
        self._unset_ok = unset_temperature_is_deterministic
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        # Pipelined with the other lookups of this loop turn (and, in a colocated ingress, with
        # the limiter's check): a caller that gave up while queued is never sent, so it never
        # takes a single-flight lock it would not use.
        batcher = batcher or ScriptBatcher(redis)
        self._lookup_script = batcher.register(_LOOKUP)
        self._release_script = batcher.register(_RELEASE)
        self._store_script = batcher.register(_STORE)
        self._stats_script = batcher.register(_STATS)
        # On a Redis Cluster an entry (tagged by its digest) and its tenant's counters live on
        # different shards: counts are tallied here and flushed, not bumped inside the scripts.
        self._counts_in_scripts = not is_cluster(redis)
        self._near = near
        self._invalidations = f"{prefix}!invalidations"
        # Hits answered from memory per (tenant, prompt), not yet counted anywhere.
        # ``count_stats`` adds them to the metrics and (one pipeline) to the shared counters
        # every few hundred ms, so a hit from memory takes no Redis round trip and no metric lock.
        self._tally: dict[tuple[str, str], _Tally] = {}
        # On a cluster: every lookup's and store's counts, in the metrics, not yet in Redis.
        self._counted: dict[tuple[str, str], _Tally] = {}
        # Already in the metrics, not yet taken by Redis: retried at the next flush.
        self._unsent: dict[tuple[str, str], _Tally] = {}
        self._pending = Background()  # fire-and-forget stat updates

    def cacheable(self, key: KeyMaterial) -> bool:
        return self._policy.allows(key, unset_temperature_is_deterministic=self._unset_ok)

    def _generation(self) -> int:
        """Read before fetching an entry from Redis: the near cache refuses it if an invalidation
        came in between (see NearCache.put)."""
        return self._near.generation if self._near is not None else -1

    def _stats_keys(self, tenant: str, prompt: str) -> list[str]:
        return [stats_key(tenant, prefix=self._prefix), stats_key(tenant, prompt or "-", prefix=self._prefix)]

    def _script_keys(self, k: str, tenant: str, prompt: str) -> list[str]:
        """The lookup's and store's keys: the entry and its lock, then (unless on a cluster) the
        counters they bump."""
        keys = [k, lock_key(k, prefix=self._prefix)]
        return [*keys, *self._stats_keys(tenant, prompt)] if self._counts_in_scripts else keys


    def _hit(self, key: KeyMaterial, k: str, raw: bytes, generation: int = -1) -> LookupResult:
        entry = entry_from_pb(cache_pb2.Entry.FromString(zlib.decompress(raw)))
        if self._near is not None:
            ttl_s = self._policy.for_request(key.prompt, key.route).ttl_s
            self._near.put(k, entry, ttl_left_s=entry.stored_at + ttl_s - time.time(), generation=generation)
        _count_saved(key.tenant, key.prompt, _Tally().add_hit(entry.usage))
        if not self._counts_in_scripts:
            self._count(key.tenant, key.prompt).add_hit(entry.usage)
        return LookupResult(key=k, hit=True, entry=entry, cacheable=True, tier="exact")

    def peek(self, key: KeyMaterial) -> LookupResult | None:
        """A hit from process memory, without Redis; ``None``: ask ``lookup``."""
        if self._near is None or not self.cacheable(key):
            return None
        k = cache_key(key, prefix=self._prefix)
        entry = self._near.get(k)
        if entry is None:
            return None
        _tally_in(self._tally, key.tenant, key.prompt).add_hit(entry.usage)
        return LookupResult(key=k, hit=True, entry=entry, cacheable=True, tier="exact")

    async def flush_stats(self) -> None:
        """Add the hits answered from memory since the last flush to the metrics and, in one
        pipeline, every count tallied here to the shared counters. A group Redis did not take is
        kept for the next flush: late, never lost, and in the metrics once."""
        near, self._tally = self._tally, {}
        for (tenant, prompt), tally in near.items():
            _count_saved(tenant, prompt, tally)
        self._keep(list(near.items()))
        counted, self._counted = self._counted, {}  # already in the metrics when they happened
        self._keep(list(counted.items()))
        groups, self._unsent = list(self._unsent.items()), {}
        if not groups:
            return
        try:
            results = await asyncio.gather(*(
                self._stats_script(keys=self._stats_keys(tenant, prompt),
                                   args=[t.hits, t.tokens, repr(t.cost), t.misses, t.stores],
                                   timeout_s=max(1.0, self._timeout * 4))
                for (tenant, prompt), t in groups
            ), return_exceptions=True)
        except BaseException:  # cancelled mid-flush (a stop): the final flush takes them all
            self._keep(groups)
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            ERRORS.labels("stats").inc()
            _log.debug("cache_stats_flush_failed", groups=len(errors), error=repr(errors[0]))
            self._keep([g for g, r in zip(groups, results, strict=True) if isinstance(r, BaseException)])

    def _keep(self, groups: list[tuple[tuple[str, str], _Tally]]) -> None:
        """Hold groups for Redis until a flush gets them through. (A script whose reply was lost
        may have run: the retry can count it twice. Stats are for accounting trends; keeping every
        hit matters more than the rare double count.)"""
        for group, tally in groups:
            self._unsent.setdefault(group, _Tally()).add(tally)

    def _count(self, tenant: str, prompt: str) -> _Tally:
        """Where a lookup or store counts on a cluster (already in the metrics: flushed to Redis only)."""
        return _tally_in(self._counted, tenant, prompt)

    async def count_stats(self, every_s: float) -> None:
        """Flush the tallies every ``every_s``; runs until cancelled (the owner flushes at stop)."""
        while True:
            await asyncio.sleep(every_s)
            await self.flush_stats()

    async def _probe(self, key: KeyMaterial, k: str) -> tuple[bytes | None, str, int]:
        """(entry, lock token, lock ms left): the entry if stored; else this caller's owner token
        if it took the lock, or how long the leader's lock still holds."""
        # The budget counts from when the lookup is sent (kit/scripts.py): it bounds Redis, not
        # the wait for this process in a burst.
        token = uuid.uuid4().hex
        res = await self._lookup_script(
            keys=self._script_keys(k, key.tenant, key.prompt), args=[token, self._lock_ttl_ms], timeout_s=self._timeout,
        )
        code = int(res[0])
        if code == 2 and not self._counts_in_scripts:
            self._count(key.tenant, key.prompt).misses += 1
        if code == 1:
            return res[1], "", 0
        return None, (token if code == 2 else ""), (max(0, int(res[1])) if code == 3 else 0)

    @tracing.traced("cache.lookup", unless_under="llmgw.cache.")
    async def lookup(self, key: KeyMaterial, *, read: bool = True) -> LookupResult:
        """A hit; or a miss that says whether this caller leads the provider call (``leader``) or
        another identical request already does (``in_flight``: call ``wait``)."""
        k = cache_key(key, prefix=self._prefix)
        if not self.cacheable(key):
            return LookupResult(key=k, cacheable=False)
        if not read:  # REFRESH/BYPASS: neither read nor wait for others; REFRESH still stores
            return LookupResult(key=k, cacheable=True)
        near = self.peek(key)
        if near is not None:
            return near
        generation = self._generation()
        if not self._breaker.allow():
            SKIPPED.inc()
            return LookupResult(key=k, cacheable=False)  # no store either: Redis is out
        try:
            raw, token, ttl_ms = await self._probe(key, k)
        except _REDIS_ERRORS as exc:
            ERRORS.labels("lookup").inc()
            self._breaker.failure()
            _log.warning("cache_lookup_gave_up", error=repr(exc))
            return LookupResult(key=k, cacheable=True)
        except BaseException:
            self._breaker.release()  # cancelled: no verdict, and a probe slot must not stay taken
            raise
        self._breaker.success()
        if raw is not None:
            return self._hit(key, k, raw, generation)
        if token:
            _saved(key.tenant, key.prompt or "-").misses.inc()
            return await self._semantic_lookup(key, k, token)
        return LookupResult(key=k, cacheable=True, in_flight=True, lock_ttl_ms=ttl_ms)

    async def _semantic_lookup(self, key: KeyMaterial, k: str, token: str) -> LookupResult:
        """An exact miss this caller leads: the same question asked another way may be answered
        (docs/cache.md "Semantic tier"). Only the leader looks: waiters get its answer."""
        miss = LookupResult(key=k, cacheable=True, leader=True, lock_token=token)
        if self._semantic is None:
            return miss
        policy = self._policy.for_request(key.prompt, key.route).semantic
        pending = pending_for(key, policy)
        if pending is None:
            return miss
        try:
            found = await self._semantic.lookup(key, k, pending, policy)
        except BaseException:
            self._later(self.release(k, token))  # cancelled: the lock must not wait out its TTL
            raise
        if found is None:
            return dataclasses.replace(miss, semantic=pending.token())
        # Served from another question's entry: this one stores nothing, its waiters go on.
        self._later(self.release(k, token))
        return self._semantic_hit(key, k, pending, found)

    def _semantic_hit(self, key: KeyMaterial, k: str, pending: Pending, found: Found) -> LookupResult:
        entry = entry_from_pb(cache_pb2.Entry.FromString(zlib.decompress(found.raw)))
        saved = _saved(key.tenant, key.prompt or "-")
        saved.tokens.inc(entry.usage.total_tokens)
        if entry.usage.cost_usd is not None:
            saved.cost.inc(entry.usage.cost_usd)
        assert self._semantic is not None
        self._semantic.record_hit(key, pending, found, entry.usage.total_tokens, entry.usage.cost_usd or 0.0)
        return LookupResult(key=k, hit=True, entry=entry, cacheable=True, tier="semantic",
                            similarity=found.similarity)

    async def wait(self, key: KeyMaterial, *, timeout_s: float) -> LookupResult:
        """Wait (bounded) for the leader's entry. If the leader gave up or died, the first waiter
        to notice becomes the new leader; on timeout the caller goes on alone (and counts a miss)."""
        k = cache_key(key, prefix=self._prefix)
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            generation = self._generation()
            if self._breaker.state == State.OPEN:
                SKIPPED.inc()
                return LookupResult(key=k, cacheable=False)  # Redis is out: no leader to wait for
            try:
                raw, token, _ = await self._probe(key, k)
            except _REDIS_ERRORS as exc:  # one slow poll is not the end of the wait
                ERRORS.labels("wait").inc()
                self._breaker.failure()
                _log.debug("cache_wait_poll_failed", error=repr(exc))
                continue
            if raw is not None:
                COALESCED.inc()
                return self._hit(key, k, raw, generation)
            if token:  # the leader gave up or died: this caller leads now, and looks as a leader does
                _saved(key.tenant, key.prompt or "-").misses.inc()
                return await self._semantic_lookup(key, k, token)
        _log.warning("cache_wait_timed_out", key=k)
        _saved(key.tenant, key.prompt or "-").misses.inc()
        self._count_miss(key)
        return LookupResult(key=k, cacheable=True)

    async def release(self, key: str, lock_token: str = "") -> None:
        """The leader will not store (failure, uncacheable answer): let waiters go at once. Only
        the owner's token releases: a leader slower than its lock must not free its successor's."""
        if not lock_token:
            return
        try:
            await self._release_script(keys=[lock_key(key, prefix=self._prefix)], args=[lock_token],
                                       timeout_s=self._timeout * 4)
        except _REDIS_ERRORS as exc:
            ERRORS.labels("release").inc()
            _log.warning("cache_release_gave_up", error=repr(exc))

    @tracing.traced("cache.store", unless_under="llmgw.cache.")
    async def store(self, key: str, entry: CacheEntry, *, tenant: str, prompt: str = "", route: str = "",
                    lock_token: str = "", semantic: str = "") -> bool:
        """Store a complete answer and free its waiters; ``lock_token``: the leader's (a store
        while another leader holds the lock is left to that leader); ``semantic``: the lookup's
        ``LookupResult.semantic``, to index the answer under its question too."""
        policy = self._policy.for_request(prompt, route)
        if not policy.stores(entry.finish_reason):
            _log.info("cache_entry_incomplete", finish_reason=entry.finish_reason)
            await self.release(key, lock_token)
            return False
        if not entry.stored_at:
            entry = dataclasses.replace(entry, stored_at=time.time())
        blob = zlib.compress(entry_to_pb(entry).SerializeToString(), 6)
        if len(blob) > policy.max_entry_bytes:
            _log.info("cache_entry_too_large", bytes=len(blob), max_bytes=policy.max_entry_bytes)
            await self.release(key, lock_token)
            return False
        generation = self._generation()
        try:
            stored = await self._store_script(
                keys=self._script_keys(key, tenant, prompt),
                args=[blob, entry.usage.total_tokens, repr(entry.usage.cost_usd or 0.0), policy.ttl_s,
                      lock_token or "-"],
                timeout_s=self._timeout * 4,
            )
        except _REDIS_ERRORS as exc:
            ERRORS.labels("store").inc()
            _log.warning("cache_store_gave_up", error=repr(exc))
            return False
        if not int(stored):
            _log.info("cache_store_left_to_the_lock_owner", key=key)
            return False
        if not self._counts_in_scripts:
            self._count(tenant, prompt).stores += 1
        if self._near is not None:
            self._near.put(key, entry, ttl_left_s=policy.ttl_s, generation=generation)
        pending = Pending.of(semantic) if semantic else None
        if self._semantic is not None and pending is not None and policy.semantic.enabled:
            try:
                await self._semantic.add(key, pending, policy.semantic, policy.ttl_s)
            except _REDIS_ERRORS as exc:
                ERRORS.labels("semantic_store").inc()
                _log.warning("cache_semantic_store_gave_up", error=repr(exc))
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
        # The semantic scopes of the same entries: replicas see them gone at their next lookup.
        async for k in self._redis.scan_iter(match=semantic_pattern(pattern, prefix=self._prefix), count=1000):
            await self._redis.unlink(k)
        if self._near is not None:
            self._near.drop(pattern)
        # Every near cache (colocated ingresses, cache replicas) drops what matches at once.
        await self._redis.publish(self._invalidations, pattern)
        _log.info("cache_invalidated", pattern=pattern, entries=deleted)
        return deleted

    async def follow_invalidations(self, *, retry_s: float = 1.0) -> None:
        """Keep the near cache in step with ``invalidate`` anywhere; runs until cancelled. While
        not subscribed the near cache is emptied (a missed invalidation must not be served)."""
        if self._near is None:
            return
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._invalidations)
                self._near.clear()  # whatever was published while we were away
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        data = message["data"]
                        self._near.drop(data.decode() if isinstance(data, bytes) else str(data))
            except _REDIS_ERRORS as exc:
                self._near.clear()
                _log.warning("cache_invalidations_lost", error=repr(exc), retry_in_s=retry_s)
            finally:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(retry_s)

    def _later(self, coro: Coroutine[Any, Any, Any]) -> None:
        # Bookkeeping off the request path: fire and forget, failures counted and logged.
        async def guarded() -> None:
            try:
                await coro
            except _REDIS_ERRORS as exc:
                ERRORS.labels("stats").inc()
                _log.debug("cache_stats_failed", error=repr(exc))

        self._pending.spawn(guarded())

    def _count_miss(self, key: KeyMaterial) -> None:
        # Only a timed-out wait counts outside the lookup script.
        self._later(self._incr_misses(key))

    async def _incr_misses(self, key: KeyMaterial) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for stats in self._stats_keys(key.tenant, key.prompt):
            pipe.hincrby(stats, "misses", 1)
        await pipe.execute()

    async def stats(self, tenant: str, prompt: str | None = None) -> dict[str, float]:
        raw = await self._redis.hgetall(stats_key(tenant, prompt, prefix=self._prefix))
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def ready(self) -> bool:
        return bool(await self._redis.ping())

    async def semantic_hits(self, tenant: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self._semantic.recent_hits(tenant, limit) if self._semantic is not None else []

    async def close(self) -> None:
        if self._semantic is not None:
            self._semantic.close()
        await self._redis.aclose()
