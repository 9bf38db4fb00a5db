"""Coalesce concurrent Lua script calls into shared Redis pipelines.

Under load many decisions are in flight at once; sending each EVALSHA on its own costs a write, a
read and a connection checkout per call in the process and a round trip each on Redis. Here at
most ``max_inflight`` pipelines are outstanding: calls arriving meanwhile queue up and leave
together as the next non-transactional pipeline when one returns (no timer, so an idle process
adds no latency: a lone call goes out at the end of the current loop turn). Every script still
runs atomically on its own; a pipeline is not a transaction and needs none.

One batcher serves any number of scripts: the ingress with colocated cores hands the limiter's
check and the cache's lookup the same batcher, so the two calls a request makes at once leave in
one write and come back in one read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["BatchedScript", "ScriptBatcher"]

try:  # hiredis packs a command in C; redis-py's own packer is Python and shows in profiles
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency; kept optional for redis-py alone
    _hiredis_pack = None  # type: ignore[assignment]


def _pack(commands: list[tuple[Any, ...]], conn: Any) -> bytes | list[bytes]:
    if _hiredis_pack is not None:
        return b"".join(_hiredis_pack(c) for c in commands)
    return list(conn.pack_commands(commands))


_Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]


class BatchedScript:
    """One registered script; ``await script(keys, args)`` like redis-py's own Script."""

    def __init__(self, batcher: ScriptBatcher, script: AsyncScript) -> None:
        self._batcher = batcher
        self.script = script

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        return await self._batcher.call(self.script, keys, args)


class ScriptBatcher:
    def __init__(self, redis: aioredis.Redis, *, max_batch: int = 256, max_inflight: int = 1) -> None:
        self._redis = redis
        self._max = max_batch
        self._max_inflight = max_inflight
        self._queue: list[_Call] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._lock = asyncio.Lock()
        self._conn: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    def register(self, source: str) -> BatchedScript:
        return BatchedScript(self, self._redis.register_script(source))

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
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
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, fut), result in zip(batch, results, strict=True):
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
            # Redis restarted or flushed its scripts: load each once and rerun only the calls
            # that got NOSCRIPT (the others did run and must not run twice).
            for source in {batch[i][0].script for i in retry}:
                await self._redis.script_load(source)
            for i, r in zip(retry, await self._pipeline([batch[i] for i in retry]), strict=True):
                results[i] = r
        return results

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        """One write of every command, then their replies in order, on a connection kept for the
        batcher (no pool checkout or pipeline object per batch). An error reply (NOSCRIPT, a
        script error) belongs to its call; a broken connection fails the batch and is replaced."""
        async with self._lock:
            if self._conn is None:
                # Checked out for good: the pool still owns it, so closing the client closes it.
                self._conn = await self._redis.connection_pool.get_connection()
            conn = self._conn
            try:
                commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _ in batch]
                await conn.send_packed_command(_pack(commands, conn), check_health=False)
                results: list[Any] = []
                for _ in batch:
                    try:
                        results.append(await conn.read_response())
                    except ResponseError as exc:
                        results.append(exc)
            except BaseException:
                self._conn = None
                await conn.disconnect()
                await self._redis.connection_pool.release(conn)
                raise
            return results
