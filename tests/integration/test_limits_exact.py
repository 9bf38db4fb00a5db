"""Limits and reservations that mean exactly what they say: every descriptor a rule names is
sent, nothing stays charged after a cancel or an abort, and a Redis outage loses no settle.
Real Redis, real gRPC servers, the fake providers behind the SDKs."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from llmgw.gateway.v1 import gateway_pb2
from llmgw.keys.ring import bootstrap_id
from llmgw.kit.breaker import Breaker, State
from llmgw.kit.embedded import start_redis
from llmgw.kit.redis import connect
from llmgw.kit.tokens import count_tokens
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import load_rules, parse_rules
from llmgw.stack import Stack, start_stack
from tests.helpers import Client, auth

pytestmark = pytest.mark.integration


def _msg(text: str, **kw: object) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=text)], **kw)  # type: ignore[arg-type]


async def _stack(redis_url: str, kafka: str, tmp_path: Path, limits: str) -> tuple[Stack, Path]:
    f = tmp_path / "limits.yaml"
    f.write_text(limits)
    return await start_stack(redis_url=redis_url, kafka_bootstrap=kafka, limits_file=f), f


async def test_rules_on_route_and_api_key_refuse_what_they_should(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    other_key_id = bootstrap_id("other-key")
    stack, _ = await _stack(redis_url, topics_ready, tmp_path, f"""
domains:
  gateway:
    - match: {{route: anthropic-first}}
      limits: [{{name: af-rpm, unit: requests, limit: 2, per: minute}}]
    - match: {{api_key: {other_key_id}}}
      limits: [{{name: key-rpm, unit: requests, limit: 1, per: minute}}]
""")
    client = Client(stack.ingress.address)
    try:
        for i in range(2):
            await client.complete(_msg(f"af {i}", route="anthropic-first", cache_mode=1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.complete(_msg("af 3", route="anthropic-first", cache_mode=1))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "af-rpm" in err.value.details()
        await client.complete(_msg("other route is not limited", cache_mode=1))
        await client.complete(_msg("other key once", cache_mode=1), key="other-key")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.complete(_msg("other key twice", cache_mode=1), key="other-key")
        assert "key-rpm" in err.value.details()
        await client.complete(_msg("test-key is not that key", cache_mode=1))
    finally:
        await client.close()
        await stack.stop()


async def _tokens_used(redis_url: str, stack: Stack, limits: Path, descriptor: list[tuple[str, str]]) -> int:
    await stack.ingress.service.servicers[0][0]._core.drain()
    await asyncio.sleep(0.2)
    redis = connect(redis_url)
    try:
        d = await RedisLimiter(redis, load_rules(limits), prefix=f"{stack.prefix}:rl").check(descriptor, tokens=0)
    finally:
        await redis.aclose()
    s = next(s for s in d.statuses if s.unit == "tokens")
    return s.limit - s.remaining


TOKENS = """
domains:
  gateway:
    - match: {tenant: "*"}
      limits: [{name: tpd, unit: tokens, limit: 100000, per: day}]
"""  # refills about 1 token a second: a few seconds of test blur the count by a few tokens


async def test_a_cancelled_complete_releases_its_lock_and_its_reservation(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    stack, limits = await _stack(redis_url, topics_ready, tmp_path, TOKENS)
    client = Client(stack.ingress.address)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for provider in ("openai", "anthropic"):
            stack.fake.state.faults[provider].latency_ms = 3000
        with pytest.raises(grpc.aio.AioRpcError) as err:  # the deadline cancels the handler mid-flight
            await client.stub.Complete(_msg("cancel me"), metadata=auth(), timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await _tokens_used(redis_url, stack, limits, [("tenant", "acme")]) <= 1, "reservation left charged"
        locks = [k async for k in redis.scan_iter(match=f"{stack.prefix}:cache!lock:*")]
        assert locks == [], "single-flight lock left held"
    finally:
        await redis.aclose()
        await client.close()
        await stack.stop()


async def test_a_stream_aborted_after_99_of_100_chunks_pays_for_them(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    stack, limits = await _stack(redis_url, topics_ready, tmp_path, TOKENS)
    client = Client(stack.ingress.address)
    words = " ".join(f"w{i}" for i in range(100))
    try:
        stack.fake.state.faults["openai"].reply = words  # 100 chunks, one word each
        stack.fake.state.faults["openai"].chunk_delay_ms = 20
        call = client.stub.StreamComplete(_msg("long answer please", cache_mode=1), metadata=auth(), timeout=30)
        got: list[str] = []
        async for chunk in call:
            got.append(chunk.delta)
            if len(got) == 99:
                call.cancel()
                break
        used = await _tokens_used(redis_url, stack, limits, [("tenant", "acme")])
        assert used >= count_tokens("".join(got)), (used, count_tokens("".join(got)))
    finally:
        await client.close()
        await stack.stop()


RULES = parse_rules({"domains": {"gateway": [{"match": {"tenant": "*"}, "limits": [
    {"name": "tpd", "unit": "tokens", "limit": 100000, "per": "day"}]}]}})


async def test_two_requests_with_the_same_request_id_keep_separate_reservations(
    redis: aioredis.Redis,
) -> None:
    limiter = RedisLimiter(redis, RULES, prefix=f"t-{os.urandom(4).hex()}")
    a = await limiter.check([("tenant", "acme")], tokens=1000, request_id="same")
    b = await limiter.check([("tenant", "acme")], tokens=1000, request_id="same")
    assert a.reservation_id and b.reservation_id and a.reservation_id != b.reservation_id
    assert ":acme:" in a.reservation_id  # namespaced by tenant
    assert await limiter.settle(a.reservation_id, 0) == 1000
    assert await limiter.settle(b.reservation_id, 0) == 1000, "the second reservation was overwritten"


async def test_a_cancelled_breaker_probe_leaves_the_limiter_able_to_recover(redis: aioredis.Redis) -> None:
    breaker = Breaker(failure_threshold=1, open_seconds=0.1)
    limiter = RedisLimiter(redis, RULES, prefix=f"t-{os.urandom(4).hex()}", breaker=breaker)
    breaker.failure()  # open
    await asyncio.sleep(0.15)
    assert breaker.state == State.HALF_OPEN
    probe = asyncio.create_task(limiter.check([("tenant", "acme")], tokens=10))
    await asyncio.sleep(0)  # the probe is on its way to Redis...
    probe.cancel()  # ...and cancelled there
    with pytest.raises(asyncio.CancelledError):
        await probe
    local = REGISTRY.get_sample_value("llmgw_limiter_local_decisions_total") or 0
    d = await limiter.check([("tenant", "acme")], tokens=10)
    assert d.allowed and d.reservation_id, "decided by Redis again, not in process"
    assert (REGISTRY.get_sample_value("llmgw_limiter_local_decisions_total") or 0) == local
    assert breaker.state == State.CLOSED


def breaker_closed(limiter: RedisLimiter) -> bool:
    return limiter._breaker.state == State.CLOSED


async def test_settles_made_while_redis_is_out_are_applied_when_it_is_back() -> None:
    proc = start_redis()
    redis = aioredis.Redis.from_url(f"redis://{proc.address}/0")
    try:
        limiter = RedisLimiter(redis, RULES, prefix="t-settle", breaker=Breaker(failure_threshold=1, open_seconds=0.3))
        d = await limiter.check([("tenant", "acme")], tokens=5000)
        late = REGISTRY.get_sample_value("llmgw_limiter_settles_deferred_total", {"result": "applied_late"}) or 0
        os.kill(proc.popen.pid, signal.SIGSTOP)  # Redis hangs
        try:
            assert await limiter.settle(d.reservation_id, 100) == 0  # gave up: queued, not lost
            await limiter.check([("tenant", "acme")], tokens=0)  # opens the breaker (local decision)
        finally:
            os.kill(proc.popen.pid, signal.SIGCONT)
        # Applied in the background once Redis answers: 100 charged, not the 5 000 reserved (the
        # bucket refills about a token a second meanwhile).
        for _ in range(50):
            await asyncio.sleep(0.1)
            await limiter.check([("tenant", "acme")], tokens=0)  # Redis answers again: the queue drains
            if (REGISTRY.get_sample_value("llmgw_limiter_settles_deferred_total",
                                          {"result": "applied_late"}) or 0) > late and breaker_closed(limiter):
                break
        probe = await limiter.check([("tenant", "acme")], tokens=0)
        assert breaker_closed(limiter) and probe.statuses
        assert 100000 - 100 <= probe.statuses[0].remaining <= 100000 - 100 + 30, probe.statuses
    finally:
        await redis.aclose()
        proc.stop()
