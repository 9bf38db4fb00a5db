"""A router in the ingress's process readies a miss's first attempt during the gate: the target's
prompt rendered and its provider budget reserved beside the limiter check and cache lookup. What
must hold: one reservation per call (never a second one), and every readied reservation that no
call used goes back (a hit, a refusal, a target out by the time of the call, a cancel)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmgw.domain import Message, Prepared, RouteCall
from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit import tracing
from llmgw.prompts import Registry
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import load_rules, parse_rules
from llmgw.services.router.config import RouterConfig
from llmgw.services.router.core import Router
from llmgw.stack import Stack, start_stack
from llmgw.testing import ScriptedProvider
from tests.helpers import Client

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Per day: the bucket refills about 1 token a second, so a count read a few seconds later is
# within a few tokens of what was taken (a second reservation would be dozens off).
DAY = 86_400
SLACK = 8
PROVIDER_TOKENS = {"provider": [{"match": {"provider": "*", "model": "*"},
                                 "limits": [{"name": "tpd", "unit": "tokens", "limit": DAY, "per": "day"}]}]}
CONFIG = RouterConfig.model_validate({
    "providers": {"openai": {"api_key_env": "X"}, "anthropic": {"api_key_env": "Y"}},
    "breaker": {"min_calls": 1, "failure_rate": 0.5, "open_seconds": 60},
    "routes": {"default": {"defaults": {"temperature": 0, "max_tokens": 64},
                           "targets": [{"provider": "openai", "model": "gpt"},
                                       {"provider": "anthropic", "model": "claude"}]}},
})
CALL = RouteCall(route="default", request_id="r1", messages=(Message("user", "hello"),))


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


def _used(probe: RedisLimiter, provider: str, model: str, unit: str = "tokens") -> Callable[[], Awaitable[int]]:
    """What the target's provider budget has counted in ``unit`` (the probe itself counts nothing)."""
    async def used() -> int:
        d = await probe.check([("provider", provider), ("model", model)], requests=0, tokens=0, domain="provider")
        (status,) = [st for st in d.statuses if st.unit == unit]
        return status.limit - status.remaining
    return used


class TestRouterCore:
    """The router core with a real limiter on real Redis; the providers are scripted."""

    @staticmethod
    def _parts(redis: aioredis.Redis, rules: dict) -> tuple[Router, ScriptedProvider, ScriptedProvider, RedisLimiter]:  # type: ignore[type-arg]
        prefix = f"t-{uuid.uuid4().hex[:8]}"
        shaper = RedisLimiter(redis, parse_rules({"domains": rules}), prefix=prefix)
        o, a = ScriptedProvider("openai", []), ScriptedProvider("anthropic", [])
        router = Router(CONFIG, {"openai": o, "anthropic": a}, Registry.load(REPO / "prompts"), shaper=shaper)
        return router, o, a, RedisLimiter(redis, parse_rules({"domains": rules}), prefix=prefix)

    @pytest.fixture
    async def warm(self, redis: aioredis.Redis) -> tuple[Router, ScriptedProvider, ScriptedProvider, RedisLimiter]:
        """After one call: the router has seen the target's limits (tokens only)."""
        router, o, a, probe = self._parts(redis, PROVIDER_TOKENS)
        first = await router.prepare(CALL)
        # Not known before the target's first decision: nothing is asked ahead.
        assert first is not None and not first.granted
        await router.route(RouteCall(**{**_fields(CALL), "prepared": first}))
        return router, o, a, probe

    async def test_a_prepared_call_reserves_once_and_settles_to_the_real_usage(self, warm) -> None:  # type: ignore[no-untyped-def]
        router, o, _, probe = warm
        prepared, used, before = await _ready(router, probe)
        assert prepared.reservation and prepared.provider == "openai"
        assert await _is(used, before + prepared.prompt_tokens + 64)  # the worst case, held
        done = await router.route(RouteCall(**{**_fields(CALL), "prepared": prepared}))
        assert done.provider == "openai" and len(o.calls) == 2
        real = before + done.usage.input_tokens + done.usage.output_tokens
        await _until(lambda: _is(used, real))  # settled to the real usage: one reservation, not two
        router.unprepare(prepared)  # the router took it: giving it back now changes nothing
        await asyncio.sleep(0.1)
        assert await _is(used, real)

    async def test_an_unused_preparation_goes_back(self, warm) -> None:  # type: ignore[no-untyped-def]
        router, _, _, probe = warm
        prepared, used, before = await _ready(router, probe)
        router.unprepare(prepared)
        router.unprepare(prepared)  # once only
        await _until(lambda: _is(used, before))

    async def test_a_target_out_by_the_time_of_the_call_gives_its_reservation_back(self, warm) -> None:  # type: ignore[no-untyped-def]
        router, o, a, probe = warm
        prepared, used, before = await _ready(router, probe)
        # The first target's circuit opens meanwhile (another request's failure).
        breaker = router.breaker(CONFIG.routes["default"].targets[0])
        ticket = breaker.allow()
        assert ticket is not None
        breaker.record(ticket, ok=False)
        a.script.append(None)
        done = await router.route(RouteCall(**{**_fields(CALL), "prepared": prepared}))
        assert done.provider == "anthropic" and len(o.calls) == 1
        await _until(lambda: _is(used, before))

    async def test_a_budget_that_counts_requests_gets_its_requests_back_too(self, redis: aioredis.Redis) -> None:
        """A request counted for a call that never happens goes back with the tokens: the limiter
        core voids the whole grant (a remote limiter can't: then only the rendering is readied,
        see test_routing's outbound shaping with the limiter service)."""
        both = {"provider": [{"match": {"provider": "*", "model": "*"}, "limits": [
            {"name": "rpd", "unit": "requests", "limit": 1000, "per": "day"},
            {"name": "tpd", "unit": "tokens", "limit": DAY, "per": "day"}]}]}
        router, _, _, probe = self._parts(redis, both)
        await router.route(CALL)
        calls, used = _used(probe, "openai", "gpt", "requests"), _used(probe, "openai", "gpt")
        before = await used()
        for _ in range(3):
            prepared = await router.prepare(CALL)
            assert prepared is not None and prepared.granted and prepared.void is not None
            router.unprepare(prepared)
        await _until(lambda: _exactly(calls, 1))  # the one call only
        await _until(lambda: _is(used, before))


async def _ready(router: Router, probe: RedisLimiter) -> tuple[Prepared, Callable[[], Awaitable[int]], int]:
    """The first attempt readied with its budget granted; the budget's reader and its count before."""
    used = _used(probe, "openai", "gpt")
    before = await used()
    prepared = await router.prepare(CALL)
    assert prepared is not None and prepared.granted
    return prepared, used, before


def _fields(call: RouteCall) -> dict[str, object]:
    return {f: getattr(call, f) for f in call.__dataclass_fields__}


async def _is(read: Callable[[], Awaitable[int]], want: int) -> bool:
    return abs(await read() - want) <= SLACK


async def _exactly(read: Callable[[], Awaitable[int]], want: int) -> bool:
    return await read() == want


# As the chart ships them: the provider's requests and tokens.
PROVIDER_BOTH = {"provider": [{"match": {"provider": "*", "model": "*"}, "limits": [
    {"name": "rpd", "unit": "requests", "limit": 100000, "per": "day"},
    {"name": "tpd", "unit": "tokens", "limit": DAY, "per": "day"}]}]}
LIMITS = {"domains": {"gateway": [
    {"match": {"tenant": "acme"}, "limits": [{"name": "rpd", "unit": "requests", "limit": 100000, "per": "day"}]},
    {"match": {"tenant": "globex"}, "limits": [{"name": "one", "unit": "requests", "limit": 1, "per": "day"}]}],
    **PROVIDER_BOTH}}


@pytest.fixture
async def all_in_one(redis_url: str, topics_ready: str, tmp_path: Path) -> Stack:
    import yaml

    limits = tmp_path / "limits.yaml"
    limits.write_text(yaml.safe_dump(LIMITS))
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits,
                          colocate=("limiter", "cache", "router"))
    try:
        yield s  # type: ignore[misc]
    finally:
        await s.stop()


def _req(text: str) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=text)])


async def test_hits_and_refusals_give_readied_budget_back(all_in_one: Stack, redis_url: str, tmp_path: Path) -> None:
    """Through the ingress, with the provider's requests and tokens limited (as the chart ships):
    a miss holds its provider budget until settled to the real usage; a hit answered from Redis
    (by another replica: nothing in its memory) and a refused request leave it as they found it,
    requests included."""
    from llmgw.kit.redis import connect

    stack = all_in_one
    redis = connect(redis_url)
    # The stack's own rules file (the fixture's): the buckets' keys follow the rules as written.
    probe = RedisLimiter(redis, load_rules(tmp_path / "limits.yaml"), prefix=f"{stack.prefix}:rl")
    used, calls = _used(probe, "openai", "gpt-4o-mini"), _used(probe, "openai", "gpt-4o-mini", "requests")
    client = Client(stack.ingress.address)
    replica = await stack.add_ingress()
    other = Client(replica.address)
    try:
        miss = await client.complete(_req("readied"))
        real = miss.usage.input_tokens + miss.usage.output_tokens
        assert not miss.cache_hit and real > 0
        await _until(lambda: _is(used, real))
        warm = await other.complete(_req("the replica learns the target's limits"))
        real += warm.usage.input_tokens + warm.usage.output_tokens
        await _until(lambda: _is(used, real))
        hit = await other.complete(_req("readied"))
        assert hit.cache_hit
        await _until(lambda: _is(used, real))
        first = await client.complete(_req("globex once"), key="other-key")
        real += first.usage.input_tokens + first.usage.output_tokens
        for _ in range(3):
            with pytest.raises(Exception, match="rate limit"):
                await client.complete(_req("globex again"), key="other-key")
        await asyncio.sleep(0.2)
        await _until(lambda: _is(used, real))
        await _until(lambda: _exactly(calls, 3))  # the three misses: no hit or refusal kept a request
    finally:
        await client.close()
        await other.close()
        await redis.aclose()


async def test_a_miss_reserves_its_provider_budget_beside_the_gate(all_in_one: Stack) -> None:
    """The provider budget's check starts with the limiter check and the cache lookup, not after
    them (one round trip to Redis for the three), and the call asks no second time."""
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", {}, exporter=exporter)
    client = Client(all_in_one.ingress.address)
    try:
        await client.complete(_req("first: the router learns the target's limits"))
        await all_in_one.ingress.service.servicers[0][0]._core.drain()
        assert tracing._provider is not None and tracing._provider.force_flush()
        exporter.clear()
        await client.complete(_req("beside the gate"))
        await all_in_one.ingress.service.servicers[0][0]._core.drain()
        assert tracing._provider is not None and tracing._provider.force_flush()
    finally:
        await client.close()
        tracing.shutdown()
    every = exporter.get_finished_spans()
    (root,) = [s for s in every if s.name == "llmgw.gateway.v1.Gateway/Complete"]
    spans = [s for s in every if s.context.trace_id == root.context.trace_id]
    checks = [s for s in spans if s.name == "limiter.check"]
    (lookup,) = [s for s in spans if s.name == "cache.lookup"]
    (chat,) = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(checks) == 2  # the tenant's check and the provider budget's: no second reservation
    assert all(c.start_time is not None and lookup.end_time is not None and c.start_time < lookup.end_time
               for c in checks), "the provider budget was asked after the gate"
    assert chat.start_time is not None and all(c.end_time is not None and c.end_time <= chat.start_time
                                               for c in checks)
