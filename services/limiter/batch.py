"""Coalesce concurrent script calls into one Redis pipeline per event-loop turn.

Under load many decisions are in flight at once; sending each EVALSHA on its own costs a write, a
read and a reply parse per decision on the limiter and a round trip each on Redis. Calls queued in
the same loop turn go out as one non-transactional pipeline instead: every script still runs
atomically on its own (a pipeline is not a transaction and needs none), only the I/O is shared.
A lone call waits for nothing but the current turn to end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

__all__ = ["ScriptBatcher"]


class ScriptBatcher:
    def __init__(self, redis: aioredis.Redis, script: str, *, max_batch: int = 256) -> None:
        self._redis = redis
        self._script = redis.register_script(script)
        self._max = max_batch
        self._queue: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, future))
        if len(self._queue) == 1:
            # First of this turn: flush once everything queued in the same turn has joined.
            loop.call_soon(self._start_flush)
        elif len(self._queue) >= self._max:
            self._start_flush()
        return await future

    def _start_flush(self) -> None:
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.ensure_future(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute(batch)
        except BaseException as exc:  # the connection failed: every caller gets the error
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, fut), result in zip(batch, results, strict=True):
            if fut.done():  # the caller gave up (its timeout): nothing to deliver
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def _execute(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        results = await self._pipeline(batch)
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            # Redis restarted or flushed its scripts: load once and rerun only the calls that got
            # NOSCRIPT (the others did run and must not run twice).
            await self._redis.script_load(self._script.script)
            for i, r in zip(retry, await self._pipeline([batch[i] for i in retry]), strict=True):
                results[i] = r
        return results

    async def _pipeline(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))
