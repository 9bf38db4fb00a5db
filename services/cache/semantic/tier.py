"""The semantic tier: after an exact miss, a question asked another way finds the answer stored
for the first wording — when the verifier agrees they are the same question.

Where things live:

- **Redis** holds every semantic entry, so every replica serves the same answers. One hash per
  scope (``keys.semantic_key``: tenant x prompt version x everything but the compared text):
  ``~epoch`` (a random id of this incarnation of the scope), ``~n`` (entries added) and field
  ``1..n``, each a record: the float16 embedding, the question, the exact entry's key and when
  it stops answering. The hash expires with its newest entry; a scope that reaches
  ``max_entries`` starts over (new epoch).
- **Each replica** keeps an index per scope in memory: a float32 matrix searched exactly (a
  dot product over the scope's rows). Scopes are small — one prompt version of one tenant with
  one system prompt, sampling and tool set — and at 5,000 rows of 384 dimensions a search is
  about 0.3 ms of numpy, exact, with nothing to build or tune; an approximate graph index
  (hnswlib, usearch) pays off only past about 10^5 rows per scope, which ``max_entries`` bounds.
- **Every lookup syncs its scope in one round trip** (``_SYNC``): the epoch and the records
  added since this replica last looked. An entry another replica stored is served at once; an
  invalidation (the hash deleted) or a restart of the scope (new epoch) drops the local index.
  TTL is checked twice: the record's own deadline, and the exact entry it points to must still
  be in Redis (it carries the exact tier's TTL and is what invalidation deletes).

The answer itself is never copied: a semantic entry points at the exact entry, so a hit serves
exactly what the first request stored, and what the exact tier's policy allowed to store.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter
from redis.exceptions import RedisError

from llmgw.domain import KeyMaterial
from llmgw.kit.embed import Embedder
from llmgw.kit.logging import get_logger
from llmgw.kit.metrics import child
from llmgw.kit.redis import Client
from llmgw.kit.scripts import ScriptBatcher
from llmgw.services.cache.keys import semantic_hits_key, semantic_key, stats_key
from llmgw.services.cache.policy import SemanticPolicy
from llmgw.services.cache.semantic.pending import Found, Pending
from llmgw.services.cache.semantic.verify import Parsed, parse, verify

__all__ = ["SEMANTIC", "SemanticTier"]

_log = get_logger(__name__)
SEMANTIC = Counter("llmgw_cache_semantic_total", "Semantic-tier lookups after an exact miss",
                   ["tenant", "prompt", "result"])  # hit, miss, refused (verifier), timeout, busy, error

# KEYS: scope. ARGV: epoch known here, entries seen here, most records to return.
# Returns {epoch, last record number returned, records...}; {""} when the scope does not exist.
_SYNC = """
local epoch = redis.call('HGET', KEYS[1], '~epoch')
if not epoch then return {''} end
local n = tonumber(redis.call('HGET', KEYS[1], '~n') or '0')
local from = tonumber(ARGV[2])
if epoch ~= ARGV[1] or from > n then from = 0 end
local upto = math.min(n, from + tonumber(ARGV[3]))
local out = {epoch, upto}
for i = from + 1, upto do out[#out + 1] = redis.call('HGET', KEYS[1], tostring(i)) or '' end
return out
"""

# KEYS: scope. ARGV: record, ttl s, max entries, a new epoch (used if the scope starts over).
_ADD = """
local epoch = redis.call('HGET', KEYS[1], '~epoch')
local n = tonumber(redis.call('HGET', KEYS[1], '~n') or '0')
if not epoch or n >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '~epoch', ARGV[4])
  n = 0
end
n = n + 1
redis.call('HSET', KEYS[1], '~n', n, tostring(n), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
"""

# A hit: kept for `llmgw cache semantic-hits` and counted with what it saved (all three keys carry
# the tenant's hash tag: one slot on a Redis Cluster).
#   KEYS: the tenant's hit list, tenant stats, tenant+prompt stats
#   ARGV: json, list cap, list ttl s, tokens saved, dollars saved
_HIT = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 2, 3 do
  redis.call('HINCRBY', KEYS[i], 'semantic_hits', 1)
  redis.call('HINCRBY', KEYS[i], 'tokens_saved', ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[i], 'cost_saved_usd', ARGV[5])
end
return 1
"""

_REDIS_ERRORS = (RedisError, OSError)
_MAX_QUEUED = 8  # embeddings waiting for the model thread; past it a lookup is a miss at once


class _Busy(Exception):
    """The embedding queue is full."""

_MAX_SCOPES = 2000  # scopes indexed in memory, least recently looked up out
_SYNC_BATCH = 2000  # records per sync round trip (a cold replica catches up over a few lookups)
_CANDIDATES = 8  # nearest rows the verifier looks at, best first
_HITS_KEPT = 1000
_HITS_TTL_S = 7 * 86400
_VECTORS_MEMO = 4096  # texts whose embedding is kept (repeats and the store after a miss)


@dataclass(frozen=True, slots=True)
class _Record:
    number: int
    entry_key: str
    question: str
    expires_at: float
    parsed: Parsed


@dataclass(slots=True)
class _Scope:
    epoch: str = ""
    seen: int = 0
    records: list[_Record] = field(default_factory=list)
    vectors: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


def _pack(vector: NDArray[np.float32], entry_key: str, question: str, expires_at: float) -> bytes:
    head = json.dumps({"k": entry_key, "q": question, "x": round(expires_at, 3)}, ensure_ascii=False).encode()
    return len(head).to_bytes(4, "big") + head + vector.astype(np.float16).tobytes()


def _unpack(number: int, raw: bytes) -> tuple[_Record, NDArray[np.float32]] | None:
    try:
        size = int.from_bytes(raw[:4], "big")
        head = json.loads(raw[4:4 + size])
        vector = np.frombuffer(raw[4 + size:], dtype=np.float16).astype(np.float32)
        return _Record(number, head["k"], head["q"], float(head["x"]), parse(head["q"])), vector
    except (ValueError, KeyError, TypeError):
        return None  # a record this version cannot read: skipped, never served


class SemanticTier:
    def __init__(self, batcher: ScriptBatcher, embedder: Callable[[], Embedder], *, prefix: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis: Client = batcher.redis
        self._embedder_factory = embedder
        self._embedder: Embedder | None = None
        self._prefix = prefix
        self._clock = clock
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        # One thread: the model is not made faster by two callers at once on a small pod, and the
        # event loop never runs it.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-embed")
        self._queued = 0
        self._sync = batcher.register(_SYNC)
        self._add = batcher.register(_ADD)
        self._hit = batcher.register(_HIT)

    async def warm(self) -> None:
        """Load the model (seconds) before the first lookup needs it; then put what it loaded out
        of the garbage collector's reach (a full collection scanning the model's objects is a
        pause every request of this process would see)."""
        await self._embed("warm up")
        gc.collect()
        gc.freeze()

    def _model(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    async def _embed(self, text: str) -> NDArray[np.float32]:
        vector = self._vectors.get(text)
        if vector is not None:
            self._vectors.move_to_end(text)
            return vector
        if self._queued >= _MAX_QUEUED:
            # The model is behind (a burst of misses, or long texts): a lookup that would wait
            # for a place in the queue is a miss now, not a timeout later for every one after it.
            raise _Busy
        self._queued += 1
        work = asyncio.get_running_loop().run_in_executor(self._pool, lambda: self._model().encode([text]))
        # Kept when it arrives even if the lookup that asked gave up (its budget ran out): the
        # answer's store, after the provider call, then finds the vector here.
        work.add_done_callback(lambda done: self._embedded(text, done))
        return (await asyncio.shield(work))[0]

    def _embedded(self, text: str, done: asyncio.Future[NDArray[np.float32]]) -> None:
        self._queued -= 1
        if done.cancelled() or done.exception() is not None:
            return
        self._vectors[text] = done.result()[0]
        while len(self._vectors) > _VECTORS_MEMO:
            self._vectors.popitem(last=False)

    async def lookup(self, key: KeyMaterial, entry_key: str, pending: Pending, policy: SemanticPolicy) -> Found | None:
        """The best verified entry of the scope, within ``policy.budget_ms``; ``None``: a miss."""
        labels = (key.tenant, key.prompt or "-")
        try:
            async with asyncio.timeout(policy.budget_ms / 1000):
                found, refused = await self._lookup(entry_key, pending, policy)
        except TimeoutError:
            child(SEMANTIC, *labels, "timeout").inc()
            return None
        except _Busy:
            child(SEMANTIC, *labels, "busy").inc()
            return None
        except _REDIS_ERRORS as exc:
            child(SEMANTIC, *labels, "error").inc()
            _log.warning("cache_semantic_lookup_failed", error=repr(exc))
            return None
        child(SEMANTIC, *labels, "hit" if found else ("refused" if refused else "miss")).inc()
        return found

    async def _lookup(self, entry_key: str, pending: Pending, policy: SemanticPolicy) -> tuple[Found | None, bool]:
        vector = await self._embed(pending.text)
        scope = await self._synced(semantic_key(entry_key, pending.scope, prefix=self._prefix))
        if scope is None or not scope.records:
            return None, False
        sims = scope.vectors @ vector
        order = np.argsort(-sims)[:_CANDIDATES]
        query = parse(pending.text)
        now = self._clock()
        refused = False
        for i in order:
            similarity = float(sims[i])
            if similarity < policy.threshold:
                break
            record = scope.records[int(i)]
            if record.expires_at <= now:
                continue
            if not verify(query, record.parsed).same:
                refused = True
                continue
            raw = await self._redis.hget(record.entry_key, "e")
            if isinstance(raw, bytes):  # None: gone (expired or invalidated in the exact tier)
                return Found(raw, record.entry_key, similarity, record.question), False
        return None, refused

    async def _synced(self, scope_key: str) -> _Scope | None:
        known = self._scopes.get(scope_key) or _Scope()
        base = (known.epoch, known.seen)
        reply = await self._sync(keys=[scope_key], args=[known.epoch, known.seen, _SYNC_BATCH])
        epoch = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if not epoch:
            self._scopes.pop(scope_key, None)  # invalidated or expired everywhere
            return None
        local = self._scopes.get(scope_key) or _Scope()
        if (local.epoch, local.seen) != base and local.epoch == epoch:
            return local  # a concurrent lookup of this scope applied these records already
        if epoch != base[0]:
            local = _Scope(epoch=epoch)  # the scope started over (or is new here): read from 1
        rows = [_unpack(local.seen + 1 + j, raw) for j, raw in enumerate(reply[2:]) if raw]
        fresh = [r for r in rows if r is not None]
        if fresh:
            now = self._clock()
            kept = [(r, local.vectors[i]) for i, r in enumerate(local.records) if r.expires_at > now]
            local.records = [r for r, _ in kept] + [r for r, _ in fresh]
            local.vectors = np.vstack([v for _, v in kept] + [v for _, v in fresh]).astype(np.float32)
        local.seen = int(reply[1])
        self._scopes[scope_key] = local
        self._scopes.move_to_end(scope_key)
        while len(self._scopes) > _MAX_SCOPES:
            self._scopes.popitem(last=False)
        return local

    async def add(self, entry_key: str, pending: Pending, policy: SemanticPolicy, ttl_s: int) -> None:
        """Index a stored answer under its question (after the exact store succeeded); with the
        model's queue full, not indexed (the exact entry serves its own repeats)."""
        try:
            vector = await self._embed(pending.text)
        except _Busy:
            _log.debug("cache_semantic_index_skipped_busy")
            return
        ttl = min(policy.ttl_s, ttl_s)
        scope_key = semantic_key(entry_key, pending.scope, prefix=self._prefix)
        record = _pack(vector, entry_key, pending.text, self._clock() + ttl)
        await self._add(keys=[scope_key], args=[record, ttl, policy.max_entries, uuid.uuid4().hex])

    def record_hit(self, key: KeyMaterial, pending: Pending, found: Found, tokens: int, cost_usd: float) -> None:
        """Off the request path: the hit joins the tenant's recent list and its counters."""
        doc = json.dumps({"at": round(self._clock(), 3), "tenant": key.tenant, "prompt": key.prompt,
                          "version": key.prompt_version, "route": key.route, "question": pending.text,
                          "matched": found.question, "similarity": round(found.similarity, 4)},
                         ensure_ascii=False)
        keys = [semantic_hits_key(key.tenant, prefix=self._prefix), stats_key(key.tenant, prefix=self._prefix),
                stats_key(key.tenant, key.prompt or "-", prefix=self._prefix)]
        task = asyncio.ensure_future(self._hit(keys=keys, args=[doc, _HITS_KEPT, _HITS_TTL_S, tokens, repr(cost_usd)]))
        task.add_done_callback(_quiet)

    async def recent_hits(self, tenant: str, limit: int = 50) -> list[dict[str, object]]:
        rows = await self._redis.lrange(semantic_hits_key(tenant, prefix=self._prefix), 0, max(0, limit - 1))
        return [json.loads(r) for r in rows]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _quiet(task: asyncio.Future[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.debug("cache_semantic_hit_log_failed", error=repr(task.exception()))
