"""The shared script batcher's time budget: it bounds Redis, not the wait for this process."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from llmgw.kit.redis import connect
from llmgw.kit.scripts import ScriptBatcher

pytestmark = pytest.mark.integration


async def test_a_busy_process_does_not_use_up_the_redis_budget(redis: aioredis.Redis) -> None:
    """A burst on a starved CPU keeps the loop away for longer than the budget before the call is
    even sent; Redis itself answers at once, so the call must succeed (it used to time out)."""
    script = ScriptBatcher(redis).register("return ARGV[1]")
    call = asyncio.ensure_future(script(keys=[], args=["ok"], timeout_s=0.05))
    await asyncio.sleep(0)  # queued, its pipeline scheduled for the end of this loop turn
    time.sleep(0.15)  # the process is busy for three budgets: not Redis's doing
    assert await call == b"ok"


async def test_a_late_budget_timer_gives_the_loop_turns_to_read_a_reply_that_came_in_time() -> None:
    """The loop was busy past a call's budget; the reply had come in and its reader runs a couple of
    loop turns later. The call gets it (the loop, not Redis, was late). The stalled-Redis test
    below shows an on-time timer failing its call at once."""
    from llmgw.kit.scripts import _Budgets

    loop = asyncio.get_running_loop()
    call: asyncio.Future[str] = loop.create_future()
    budgets = _Budgets([(None, [], [], call, 0.01)])  # type: ignore[list-item]

    def reader(turns: int) -> None:  # stands for the Redis reply's reader, woken by I/O
        if turns:
            loop.call_soon(reader, turns - 1)
        elif not call.done():
            call.set_result("reply")

    time.sleep(0.05)  # busy: the budget timer will run 40 ms late
    reader(2)
    assert await call == "reply"
    budgets.cancel()


async def test_a_stalled_redis_fails_calls_within_their_budget_and_the_connection_is_replaced() -> None:
    """A server that accepts and never answers: a call fails one budget after it was sent, one
    queued behind it at most a budget later, and the abandoned connection is not reused."""
    connections = 0

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while await reader.read(4096):
                pass  # read everything, answer nothing
        finally:
            writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0")
    client.connection_pool.connection_kwargs["protocol"] = 2  # no HELLO: the stall starts at the call
    script = ScriptBatcher(client).register("return 1")
    try:
        start = time.perf_counter()
        first = asyncio.ensure_future(script(keys=[], args=[], timeout_s=0.1))
        await asyncio.sleep(0.02)  # the first exchange is out: the second queues behind it
        second = asyncio.ensure_future(script(keys=[], args=[], timeout_s=0.1))
        results = await asyncio.gather(first, second, return_exceptions=True)
        elapsed = time.perf_counter() - start
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert elapsed < 0.6  # about two budgets (0.2 s), never the 1 s socket timeout or more
        assert connections == 2  # the second exchange did not reuse the abandoned connection
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
