"""The router under the faults real providers show, through the ingress: the fault-injecting
fakes (fakeproviders/faults.py) behind the official SDKs, real gRPC, Redis and broker."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest
import yaml

from llmgw.domain import Message, RouteCall
from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit.breaker import State
from llmgw.prompts import Registry
from llmgw.services.limiter.server import LimiterClient
from llmgw.services.router.config import load_router_config
from llmgw.services.router.core import Router
from llmgw.services.router.providers import make_provider
from llmgw.stack import REPO, Stack, start_stack
from tests.helpers import HIGH_LIMITS, Client, auth

pytestmark = pytest.mark.integration

# A Python exception's name or repr in a status message: internal detail leaking to a caller.
LEAK = re.compile(r"[A-Z][A-Za-z]+(Error|Exception)\b|<class |Traceback")


def _msg(text: str, *, cache: bool = True) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(
        messages=[gateway_pb2.Message(role="user", content=text)],
        cache_mode=gateway_pb2.CompleteRequest.DEFAULT if cache else gateway_pb2.CompleteRequest.BYPASS)


def _routes(tmp_path: Path, **target: object) -> Path:
    """The shipped routes with every target's settings overridden (e.g. a short timeout)."""
    cfg = yaml.safe_load((REPO / "services/router/routes.yaml").read_text())
    for route in cfg["routes"].values():
        for t in route["targets"]:
            t.update(target)
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
async def gateway(redis_url: str, topics_ready: str, tmp_path: Path):
    limits = tmp_path / "limits.yaml"  # the load here is the providers' problem, not the tenant's
    limits.write_text(HIGH_LIMITS)
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits)
    c = Client(s.ingress.address)
    yield s, c
    await c.close()
    await s.stop()


def _fault(stack: Stack, provider: str, **faults: object) -> None:
    f = stack.fake.state.faults[provider]
    for k, v in faults.items():
        setattr(f, k, v)


def _router_core(stack: Stack) -> Router:
    return stack.router.service.servicers[0][0]._core  # type: ignore[no-any-return]


@pytest.mark.parametrize("route", ["default", "anthropic-first"])
async def test_a_truncated_answer_is_never_ok_and_never_cached(gateway: tuple[Stack, Client], route: str) -> None:
    stack, client = gateway
    for provider in ("openai", "anthropic"):
        _fault(stack, provider, fault="truncate")
    req = _msg(f"truncate me on {route}")
    req.route = route
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.complete(req)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cut off" in err.value.details() and not LEAK.search(err.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stream(req)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cut off" in err.value.details() and not LEAK.search(err.value.details())
    await stack.ingress.service.servicers[0][0]._core.drain()
    for provider in ("openai", "anthropic"):
        _fault(stack, provider, fault="")
    again = await client.complete(req)
    assert not again.cache_hit, "a partial answer was cached"
    assert again.finish_reason in ("stop", "end_turn")
    assert again.text.endswith(f"You said: truncate me on {route}")
    await stack.ingress.service.servicers[0][0]._core.drain()
    replay = await client.stream(req)  # now a hit: of the complete answer, with its finish reason
    assert replay[-1].cache_hit and replay[-1].finish_reason == again.finish_reason
    assert "".join(c.delta for c in replay) == again.text


@pytest.mark.parametrize("fault", ["malformed_before_first", "disconnect_before_first"])
@pytest.mark.parametrize("primary", ["openai", "anthropic"])
async def test_a_broken_stream_before_its_first_chunk_falls_back(
    gateway: tuple[Stack, Client], fault: str, primary: str
) -> None:
    stack, client = gateway
    _fault(stack, primary, fault=fault)
    req = _msg(f"{fault} {primary}", cache=False)
    req.route = "default" if primary == "openai" else "anthropic-first"
    secondary = "anthropic" if primary == "openai" else "openai"
    chunks = await client.stream(req)
    assert chunks[-1].final and chunks[-1].provider == secondary
    assert "".join(c.delta for c in chunks).endswith(f"You said: {fault} {primary}")
    errors = [a.error for a in chunks[-1].attempts if a.status == "error"]
    assert errors and not any(LEAK.search(e) for e in errors)
    unary = await client.complete(req)  # the unary path: the same fault in a plain response
    assert unary.provider == secondary and unary.finish_reason


@pytest.mark.parametrize("fault", ["not_json", "no_choices"])
@pytest.mark.parametrize("primary", ["openai", "anthropic"])
async def test_a_200_without_an_answer_falls_back_and_is_never_cached(
    gateway: tuple[Stack, Client], fault: str, primary: str
) -> None:
    """A proxy's HTML page with status 200, or a JSON answer without choices / content: a failed
    attempt (retried, then the next provider), never an empty OK, never a crash."""
    stack, client = gateway
    _fault(stack, primary, fault=fault)
    req = _msg(f"{fault} {primary}")
    req.route = "default" if primary == "openai" else "anthropic-first"
    secondary = "anthropic" if primary == "openai" else "openai"
    reply = await client.complete(req)
    assert reply.provider == secondary and reply.text.endswith(f"You said: {fault} {primary}")
    errors = [a.error for a in reply.attempts if a.provider == primary]
    assert errors and all(any(why in e for why in ("malformed response", "answer was cut off")) for e in errors), errors
    assert not any(LEAK.search(e) for e in errors)


@pytest.mark.parametrize("fault", ["malformed_after_first", "disconnect_after_first", "truncate"])
@pytest.mark.parametrize("primary", ["openai", "anthropic"])
async def test_a_stream_broken_after_its_first_chunk_ends_unavailable(
    gateway: tuple[Stack, Client], fault: str, primary: str
) -> None:
    stack, client = gateway
    _fault(stack, primary, fault=fault)
    req = _msg(f"cut {fault} please", cache=False)
    req.route = "default" if primary == "openai" else "anthropic-first"
    got: list[gateway_pb2.CompleteChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for c in client.stub.StreamComplete(req, metadata=auth(), timeout=10):
            got.append(c)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cut off" in err.value.details() and not LEAK.search(err.value.details())
    assert got and not any(c.final for c in got)
    assert stack.fake.state.calls["anthropic" if primary == "openai" else "openai"] == 0  # no fallback once sent


async def test_half_failing_providers_still_answer_with_the_default_policy(gateway: tuple[Stack, Client]) -> None:
    stack, client = gateway
    for provider in ("openai", "anthropic"):
        _fault(stack, provider, status_rates={"500": 0.5})
    ok = failed = 0
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        nonlocal ok, failed
        async with sem:
            try:
                await client.complete(_msg(f"half {i}", cache=False))
                ok += 1
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1

    await asyncio.gather(*(one(i) for i in range(300)))
    # Two tries on each of two targets: 1 - 0.5**4 = 94 % expected; the old consecutive-failure
    # breaker opened both circuits within seconds and served 13-39 %.
    assert ok / (ok + failed) >= 0.85, (ok, failed)
    router = _router_core(stack)
    cfg = load_router_config(REPO / "services/router/routes.yaml").routes["default"]
    assert all(router.breaker(t).state == State.CLOSED for t in cfg.targets)


async def test_429s_at_the_providers_rpm_pause_the_target_without_opening_its_breaker(
    gateway: tuple[Stack, Client],
) -> None:
    stack, client = gateway
    _fault(stack, "openai", rpm=5)
    replies = [await client.complete(_msg(f"rpm {i}", cache=False)) for i in range(40)]
    assert [r.provider for r in replies[:5]] == ["openai"] * 5
    assert {r.provider for r in replies[5:]} == {"anthropic"}
    # The sixth call met the 429 and paused OpenAI for its retry-after: no call after that.
    assert stack.fake.state.calls["openai"] == 6
    assert "rate limited by the provider" in replies[-1].attempts[0].error
    target = load_router_config(REPO / "services/router/routes.yaml").routes["default"].targets[0]
    assert _router_core(stack).breaker(target).state == State.CLOSED

    # Another replica of the router, sharing only the limiter, keeps out too: the pause is shared.
    cfg = load_router_config(REPO / "services/router/routes.yaml")
    providers = {name: make_provider(name, pcfg.model_copy(update={
        "base_url": stack.fake.openai_url if name == "openai" else stack.fake.anthropic_url,
        "fallback_api_key": "fake"})) for name, pcfg in cfg.providers.items()}
    shaper = LimiterClient(stack.limiter.address)
    replica = Router(cfg, providers, Registry.load(REPO / "prompts"), shaper=shaper)
    try:
        c = await replica.route(RouteCall(route="default", messages=(Message("user", "other replica"),)))
    finally:
        await shaper.close()
        for p in providers.values():
            await p.close()
    assert c.provider == "anthropic" and stack.fake.state.calls["openai"] == 6
    assert c.attempts[0].status == "skipped" and "rate limited by the provider" in c.attempts[0].error


async def test_retry_after_ms_is_honoured(gateway: tuple[Stack, Client]) -> None:
    stack, client = gateway
    _fault(stack, "openai", fail_next=1, status=503, retry_after_ms=50)
    reply = await client.complete(_msg("ms please", cache=False))
    # Retried on OpenAI after 50 ms (without it: a backoff or, with retry-after, whole seconds).
    assert reply.provider == "openai" and [a.status for a in reply.attempts] == ["error", "ok"]


async def test_a_slow_primary_leaves_time_for_the_secondary_within_the_callers_deadline(
    gateway: tuple[Stack, Client],
) -> None:
    stack, client = gateway
    _fault(stack, "openai", latency_ms=5000)
    # Answered within the 3 s deadline (else the call raises DEADLINE_EXCEEDED), by the secondary.
    reply = await client.stub.Complete(_msg("deadline", cache=False), metadata=auth(), timeout=3.0)
    assert reply.provider == "anthropic"
    assert reply.attempts[0].status == "error" and "no answer within" in reply.attempts[0].error
    chunks = [c async for c in client.stub.StreamComplete(_msg("deadline stream", cache=False), metadata=auth(),
                                                         timeout=3.0)]
    assert chunks[-1].provider == "anthropic"


async def test_a_stream_is_bounded_by_its_total_timeout(redis_url: str, topics_ready: str, tmp_path: Path) -> None:
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready,
                              routes_file=_routes(tmp_path, timeout_s=1.0, attempts=1))
    client = Client(stack.ingress.address)
    try:
        # Each chunk in time for a per-read timeout; all of them far past the 1 s total.
        # (Each chunk comes in time for a per-read timeout; the whole stream would take ~4.4 s and
        # end OK if only reads were bounded.)
        _fault(stack, "openai", chunk_delay_ms=400)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stream(_msg("a slow stream of many words here", cache=False))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not finished within 1.0 s" in err.value.details()
        # A slow first token falls back instead (nothing was sent yet).
        _fault(stack, "openai", chunk_delay_ms=0, first_token_ms=3000)
        chunks = await client.stream(_msg("slow first token", cache=False))
        assert chunks[-1].provider == "anthropic"
    finally:
        await client.close()
        await stack.stop()


async def test_no_status_message_names_an_exception(gateway: tuple[Stack, Client]) -> None:
    stack, client = gateway
    for fault in ("malformed_before_first", "disconnect_before_first", "truncate", "malformed_after_first"):
        for provider in ("openai", "anthropic"):
            _fault(stack, provider, fault=fault)
        for call in (client.complete, client.stream):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(_msg(f"leak? {fault}", cache=False))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert not LEAK.search(err.value.details()), err.value.details()


async def test_a_cut_off_stream_settles_its_provider_budget_to_what_was_sent(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    from llmgw.kit.redis import connect
    from llmgw.services.limiter.core import RedisLimiter
    from llmgw.services.limiter.rules import load_rules

    limits = tmp_path / "limits.yaml"
    limits.write_text(
        "domains:\n"
        "  gateway: [{match: {tenant: '*'}, limits: [{name: rps, unit: requests, limit: 100000, per: second}]}]\n"
        "  provider: [{match: {provider: '*', model: '*'}, limits: [{name: ptok, unit: tokens, limit: 100000, per: day}]}]\n"
    )
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits)
    client = Client(stack.ingress.address)
    redis = connect(redis_url)
    probe = RedisLimiter(redis, load_rules(limits), prefix=f"{stack.prefix}:rl")
    descriptor = [("provider", "openai"), ("model", "gpt-4o-mini")]
    try:
        _fault(stack, "openai", fault="disconnect_after_first")
        with pytest.raises(grpc.aio.AioRpcError):
            await client.stream(_msg("one two three four five six seven", cache=False))
        await asyncio.sleep(0.3)  # the router settles in the background
        d = await probe.check(descriptor, tokens=0, domain="provider")
        used = 100000 - d.statuses[0].remaining
        # Reserved: the prompt plus max_tokens (512). Settled: the prompt plus the one chunk sent.
        assert 0 < used < 50, used
    finally:
        await redis.aclose()
        await client.close()
        await stack.stop()
