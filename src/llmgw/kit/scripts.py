"""Coalesce concurrent Lua script calls into shared Redis pipelines.

Under load many decisions are in flight at once; sending each EVALSHA on its own costs a write, a
read and a connection checkout per call in the process and a round trip each on Redis. Here at
most ``max_inflight`` pipelines are outstanding: calls arriving meanwhile queue up and leave
together as the next non-transactional pipeline when one returns (no timer, so an idle process
adds no latency: a lone call goes out at the end of the current loop turn). Every script still
runs atomically on its own; a pipeline is not a transaction and needs none.

A call's time budget (``timeout_s``) counts from the moment its pipeline is written to Redis
(a connection to open is bounded by the same budget), not from when it was queued: what it
bounds is Redis being slow or gone. Time spent waiting for this process (a burst of hundreds of
requests on a starved CPU, or the exchange ahead) is not Redis's fault and must not turn healthy
lookups into misses or trip the limiter's breaker; nor must a reply that came in time but that a
busy loop read late (see ``_Budgets``). An exchange whose calls have all run out of budget is
abandoned and its connection replaced, so a stalled Redis holds a queued call up at most one
budget before its own begins.

One batcher serves any number of scripts: the ingress with colocated cores hands the limiter's
check and the cache's lookup the same batcher, so the two calls a request makes at once leave in
one write and come back in one read.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from llmgw.kit import tracing
from llmgw.kit.redis import Client

__all__ = ["BatchedScript", "ScriptBatcher"]

try:  # hiredis packs a command in C; redis-py's own packer is Python and shows in profiles
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency; kept optional for redis-py alone
    _hiredis_pack = None  # type: ignore[assignment]


def _pack(commands: list[tuple[Any, ...]], conn: Any) -> bytes | list[bytes]:
    if _hiredis_pack is not None:
        return b"".join(_hiredis_pack(c) for c in commands)
    return list(conn.pack_commands(commands))


# (script, keys, args, the caller's future, its budget in seconds once sent or None)
_Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]", float | None]


class BatchedScript:
    """One registered script; ``await script(keys, args)`` like redis-py's own Script."""

    def __init__(self, batcher: ScriptBatcher, script: AsyncScript) -> None:
        self._batcher = batcher
        self.script = script

    @tracing.traced("redis EVALSHA", tracing.SpanKind.CLIENT, leaf=True,
                    **{"db.system.name": "redis", "db.operation.name": "EVALSHA"})
    async def __call__(self, keys: list[Any], args: list[Any], *, timeout_s: float | None = None) -> Any:
        return await self._batcher.call(self.script, keys, args, timeout_s=timeout_s)


class ScriptBatcher:
    """Batches script calls per Redis server: one lane for a single server (or a Sentinel-managed
    primary); against a Redis Cluster, a lane per primary, each call routed by its keys' slot (the
    keys of one call must share a hash tag). A shard that answers MOVED (a resharding, a failover)
    refreshes the slot map and the call goes again to the new owner: MOVED means it did not run."""

    def __init__(self, redis: Client, *, max_batch: int = 256, max_inflight: int = 1) -> None:
        self._redis = redis
        self._max = max_batch
        self._max_inflight = max_inflight
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._single = None if isinstance(redis, RedisCluster) else _Lane(_PoolConnections(redis), max_batch,
                                                                           max_inflight)
        self._lanes: dict[str, _Lane] = {}

    @property
    def redis(self) -> Client:
        return self._redis

    def register(self, source: str) -> BatchedScript:
        return BatchedScript(self, self._redis.register_script(source))

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any], *,
                   timeout_s: float | None = None) -> Any:
        """The script's reply; ``TimeoutError`` if Redis has not answered ``timeout_s`` after the
        call was sent (see the module doc)."""
        if self._single is not None:
            return await self._single.call(script, keys, args, timeout_s=timeout_s)
        return await self._call_cluster(script, keys, args, timeout_s)

    async def _call_cluster(self, script: AsyncScript, keys: list[Any], args: list[Any],
                            timeout_s: float | None) -> Any:
        cluster = self._cluster
        assert cluster is not None
        if not keys:
            raise ValueError("a script call on a Redis Cluster needs a key to route by")
        slot = cluster.keyslot(keys[0])
        for attempt in range(_CLUSTER_ATTEMPTS):
            await cluster.initialize()  # a no-op once the slot map is known
            node = cluster.nodes_manager.get_node_from_slot(slot)
            lane = self._lanes.get(node.name)
            if lane is None:
                lane = self._lanes[node.name] = _Lane(_NodeConnections(node), self._max, self._max_inflight)
            try:
                return await lane.call(script, keys, args, timeout_s=timeout_s)
            except (MovedError, AskError, TryAgainError, ClusterDownError):
                # Not run: the slot moved (or is moving) or the cluster is electing a primary.
                if attempt == _CLUSTER_ATTEMPTS - 1:
                    raise
                await cluster.nodes_manager.initialize()
                await asyncio.sleep(0.01 * attempt)
            except (ConnectionError, OSError):
                # Maybe run: never sent twice. The next call finds the new topology.
                with contextlib.suppress(RedisError, OSError):
                    await cluster.nodes_manager.initialize()
                raise
        raise AssertionError("unreachable")


# A call whose slot moves is tried again on its new owner at most this many times in all.
_CLUSTER_ATTEMPTS = 3


class _PoolConnections:
    """A single server's connections, from the client's own pool (closed with the client)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._pool = redis.connection_pool

    async def acquire(self) -> Any:
        return await self._pool.get_connection()

    async def discard(self, conn: Any) -> None:
        await conn.disconnect()
        await self._pool.release(conn)


class _NodeConnections:
    """One cluster node's connections, from the cluster client's node (closed with the client)."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    async def acquire(self) -> Any:
        conn = self._node.acquire_connection()
        await conn.connect()
        return conn

    async def discard(self, conn: Any) -> None:
        await conn.disconnect()
        self._node.release(conn)


class _Lane:
    """The calls for one server: at most ``max_inflight`` exchanges at a time on connections kept
    for the lane, calls arriving meanwhile leaving together as the next one."""

    def __init__(self, connections: _PoolConnections | _NodeConnections, max_batch: int, max_inflight: int) -> None:
        self._connections = connections
        self._max = max_batch
        self._max_inflight = max_inflight
        self._queue: list[_Call] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._lock = asyncio.Lock()
        self._conn: Any = None

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any], *,
                   timeout_s: float | None = None) -> Any:
        """The script's reply; ``TimeoutError`` if Redis has not answered ``timeout_s`` after the
        call was sent (see the module doc)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future, timeout_s))
        if not self._scheduled and len(self._flushing) < self._max_inflight:
            # Let the rest of this loop turn join, then go.
            self._scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._scheduled = False
        # One exchange at a time on the batcher's connection: calls arriving meanwhile form the
        # next batch.
        while self._queue and len(self._flushing) < self._max_inflight:
            batch, self._queue = self._queue[: self._max], self._queue[self._max:]
            task = asyncio.ensure_future(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def _flush(self, batch: list[_Call]) -> None:
        # A caller that gave up while queued (its timeout) is not sent: an abandoned decision
        # must not charge its buckets, an abandoned lookup must not take a lock.
        batch = [b for b in batch if not b[3].done()]
        if not batch:
            return
        try:
            results = await self._execute(batch)
        except BaseException as exc:  # the connection failed: every caller gets the error
            for _, _, _, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, _, fut, _), result in zip(batch, results, strict=True):
            if fut.done():  # the caller gave up (its timeout): nothing to deliver
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        results = await self._pipeline(batch)
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            # Redis restarted or flushed its scripts (or this is a shard's first call): load each
            # once, on the same connection, and rerun only the calls that got NOSCRIPT (the others
            # did run and must not run twice).
            sources = tuple({batch[i][0].script: None for i in retry})
            for i, r in zip(retry, await self._pipeline([batch[i] for i in retry], preload=sources), strict=True):
                results[i] = r
        return results

    async def _pipeline(self, batch: list[_Call], preload: tuple[Any, ...] = ()) -> list[Any]:
        """One write of every command, then their replies in order, on a connection kept for the
        batcher (no pool checkout or pipeline object per batch). An error reply (NOSCRIPT, a
        script error) belongs to its call; a broken or abandoned exchange fails the batch and its
        connection is replaced (late replies would otherwise be read as the next batch's)."""
        async with self._lock:
            budgets: _Budgets | None = None
            try:
                if self._conn is None:
                    # Connecting is talking to Redis too: within the longest budget of the batch.
                    # Checked out for good: the pool still owns it, so closing the client closes it.
                    async with asyncio.timeout(_longest(batch)):
                        self._conn = await self._connections.acquire()
                conn = self._conn
                commands = [("SCRIPT", "LOAD", source) for source in preload]
                commands += [("EVALSHA", call[0].sha, len(call[1]), *call[1], *call[2]) for call in batch]
                await conn.send_packed_command(_pack(commands, conn), check_health=False)
                budgets = _Budgets(batch)  # sent: from here on, only Redis can be late
                for _ in preload:
                    await conn.read_response()  # the sha, which the script already knows
                results: list[Any] = []
                for _ in batch:
                    try:
                        results.append(await conn.read_response())
                    except ResponseError as exc:
                        results.append(exc)
            except BaseException:
                broken, self._conn = self._conn, None
                if broken is not None:
                    await self._connections.discard(broken)
                raise
            finally:
                if budgets is not None:
                    budgets.cancel()
            return results


def _longest(batch: list[_Call]) -> float | None:
    """The longest budget in the batch; None when a call has none (it waits however long)."""
    budgets = [call[4] for call in batch]
    return None if None in budgets else max(b for b in budgets if b is not None)


# A budget timer that runs more than _LATE_S after its time shows a loop that was busy (or a process
# the OS did not run): a reply that came in time may be waiting, unread. The call then fails only
# if it is still unanswered _GRACE_TURNS loop turns later: enough for the loop to poll the socket
# and run the reader (asyncio polls I/O before it runs due timers, uvloop after).
_LATE_S = 0.002
_GRACE_TURNS = 3


class _Budgets:
    """The budgets of one exchange's calls, from when it was sent. A call whose budget runs out
    fails with ``TimeoutError``, unless the loop, not Redis, held the reply up (see _LATE_S).
    Once every call has failed, nobody waits for the exchange: it is cancelled (and its
    connection replaced)."""

    def __init__(self, batch: list[_Call]) -> None:
        loop = asyncio.get_running_loop()
        self._exchange = asyncio.current_task()
        self._futures = [call[3] for call in batch]
        self._open_ended = any(call[4] is None for call in batch)
        now = loop.time()
        self._timers = [loop.call_at(now + budget, self._expire, fut, budget, now + budget)
                        for _, _, _, fut, budget in batch if budget is not None]

    def _expire(self, fut: asyncio.Future[Any], budget: float, due: float) -> None:
        if fut.done():
            return
        late = asyncio.get_running_loop().time() - due > _LATE_S
        self._fail(fut, budget, _GRACE_TURNS if late else 0)

    def _fail(self, fut: asyncio.Future[Any], budget: float, turns: int) -> None:
        if fut.done():
            return
        if turns:
            asyncio.get_running_loop().call_soon(self._fail, fut, budget, turns - 1)
            return
        fut.set_exception(TimeoutError(f"no reply from Redis within {budget * 1000:.0f} ms of sending"))
        if not self._open_ended and self._exchange is not None and all(f.done() for f in self._futures):
            self._exchange.cancel()

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
