"""Routing through the real gRPC stack and the fake providers driven by the official SDKs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
import yaml

from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit.redis import connect
from llmgw.prompts.labels import LabelStore
from llmgw.prompts.workflow import move_label, rollback_target
from llmgw.stack import Stack, start_stack
from tests.helpers import Client, auth, ungated_prompts

pytestmark = pytest.mark.integration

ROUTES = {
    "providers": {"openai": {"api_key_env": "OPENAI_API_KEY", "fallback_api_key": "fake"},
                  "anthropic": {"api_key_env": "ANTHROPIC_API_KEY", "fallback_api_key": "fake"}},
    "breaker": {"min_calls": 3, "failure_rate": 0.5, "open_seconds": 60},
    "routes": {"default": {"defaults": {"temperature": 0},
                           "targets": [{"provider": "openai", "model": "gpt-4o-mini", "attempts": 2,
                                        "backoff_base_s": 0.01, "max_retry_wait_s": 1.0},
                                       {"provider": "anthropic", "model": "claude-3-5-haiku-latest"}]}},
}


# The router as its own service, and its core inside the ingress (COLOCATE=router): the same
# retries, fallbacks, breakers and deadlines either way.
ROUTER_PLACEMENTS = {"router-service": (), "router-in-ingress": ("router",)}


@pytest.fixture(params=list(ROUTER_PLACEMENTS))
async def routed(redis_url: str, topics_ready: str, tmp_path: Path, request: pytest.FixtureRequest):
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(ROUTES))
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, routes_file=routes,
                          colocate=ROUTER_PLACEMENTS[request.param])
    c = Client(s.ingress.address)
    yield s, c
    await c.close()
    await s.stop()


def _msg(text: str) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=text)],
                                       cache_mode=gateway_pb2.CompleteRequest.BYPASS)


async def test_primary_down_all_succeed_and_open_breaker_stops_its_traffic(routed: tuple[Stack, Client]) -> None:
    stack, client = routed
    stack.fake.state.faults["openai"].error_rate = 1.0
    stack.fake.state.faults["openai"].status = 500
    for i in range(12):
        resp = await client.complete(_msg(f"q{i}"))
        assert resp.provider == "anthropic"
    # Threshold 3 with 2 attempts per request: the circuit opened during the second request;
    # after that the primary saw no traffic at all.
    assert stack.fake.state.calls["openai"] == 3
    last = await client.complete(_msg("after"))
    first = last.attempts[0]
    assert (first.provider, first.status, first.error) == ("openai", "skipped", "circuit open")


async def test_429_with_long_retry_after_moves_on_without_waiting(routed: tuple[Stack, Client]) -> None:
    stack, client = routed
    f = stack.fake.state.faults["openai"]
    f.fail_next, f.status, f.retry_after = 1, 429, 30
    resp = await client.complete(_msg("busy"))
    assert resp.provider == "anthropic" and stack.fake.state.calls["openai"] == 1  # no wasted retry
    assert resp.attempts[0].latency_ms < 5_000


async def test_retryable_error_is_retried_on_the_same_target_first(routed: tuple[Stack, Client]) -> None:
    stack, client = routed
    f = stack.fake.state.faults["openai"]
    f.fail_next, f.status, f.retry_after = 1, 429, 0.05
    resp = await client.complete(_msg("retry me"))
    assert resp.provider == "openai" and [a.status for a in resp.attempts] == ["error", "ok"]


async def test_400_is_not_retried_nor_fallen_back(routed: tuple[Stack, Client]) -> None:
    stack, client = routed
    f = stack.fake.state.faults["openai"]
    f.fail_next, f.status = 1, 400
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.complete(_msg("bad"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stack.fake.state.calls == {"openai": 1, "anthropic": 0}


async def test_the_callers_deadline_bounds_the_provider_call(routed: tuple[Stack, Client]) -> None:
    stack, client = routed
    for name in ("openai", "anthropic"):
        stack.fake.state.faults[name].latency_ms = 3000
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.Complete(_msg("slow"), metadata=auth(), timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Not a wall-time assertion on speed: the call must not have waited for the 3 s provider.
    assert time.monotonic() - start < 3.0


async def test_stream_falls_back_before_the_first_chunk(routed: tuple[Stack, Client]) -> None:
    stack, client = routed
    f = stack.fake.state.faults["openai"]
    f.fail_next, f.status = 2, 503  # both of its attempts
    chunks = await client.stream(_msg("stream please"))
    assert chunks[-1].final and chunks[-1].provider == "anthropic"
    assert "stream please" in "".join(c.delta for c in chunks)


async def test_fallback_only_to_providers_with_a_variant(redis_url: str, topics_ready: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts" / "only-openai" / "versions"
    prompts.mkdir(parents=True)
    (prompts / "v1.yaml").write_text(
        "variables: {q: {}}\nvariants:\n  openai:\n    messages: [{role: user, content: '{{ q }}'}]\n")
    (prompts.parent / "labels.yaml").write_text("production: v1\n")
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, prompts_dir=tmp_path / "prompts")
    client = Client(stack.ingress.address)
    try:
        stack.fake.state.faults["openai"].error_rate = 1.0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.complete(gateway_pb2.CompleteRequest(prompt="only-openai", variables={"q": "hi"}))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no variant for anthropic" in err.value.details()
        assert stack.fake.state.calls["anthropic"] == 0
    finally:
        await client.close()
        await stack.stop()


async def test_rollback_under_load_switches_versions_without_failures(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    root = ungated_prompts(tmp_path / "prompts")
    v2 = (root / "summarize" / "versions" / "v1.yaml").read_text().replace(
        "Summarize in one sentence:", "Summarize briefly:")
    (root / "summarize" / "versions" / "v2.yaml").write_text(v2)
    limits = tmp_path / "limits.yaml"
    limits.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: rps, unit: requests, limit: 100000, per: second}]}]}")
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, prompts_dir=root, limits_file=limits,
                              ingress_overrides={"labels_redis_url": redis_url, "labels_poll_s": 0.2})
    client = Client(stack.ingress.address)
    store = LabelStore(connect(redis_url))
    seen: list[tuple[float, str]] = []
    failures: list[Exception] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = await client.complete(gateway_pb2.CompleteRequest(
                    prompt="summarize", variables={"text": f"w{worker} r{i}"},
                    cache_mode=gateway_pb2.CompleteRequest.BYPASS))
                seen.append((time.monotonic(), r.prompt_version.split("@")[0]))
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)

    async def until(version: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < 5:
            if seen and seen[-1][1] == version and all(v == version for t, v in seen[-3:]):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(f"{version} not served within 5 s")

    try:
        workers = [asyncio.create_task(load(w)) for w in range(4)]
        await asyncio.sleep(0.3)
        assert seen and seen[-1][1] == "v1"
        move = move_label(root, "summarize@v2", "production", actor="test")
        await store.move(move.prompt, move.label, move.version)
        await until("v2")
        target = rollback_target(root, "summarize", "production")
        assert target == "summarize@v1"
        back = move_label(root, target, "production", reason="rollback", actor="test")
        await store.move(back.prompt, back.label, back.version)
        await until("v1")
        stop.set()
        await asyncio.gather(*workers)
    finally:
        stop.set()
        await client.close()
        await stack.stop()
        await store._redis.delete("llmgw:prompts:labels:summarize")
        await store._redis.aclose()
    assert failures == []
    assert len(seen) > 20
    assert (root / "summarize" / "labels.yaml").read_text().strip() == "production: v1"


@pytest.mark.parametrize("colocate", [(), ("router",), ("limiter", "cache", "router")],
                         ids=["split", "router-in-ingress", "all-in-one"])
async def test_outbound_shaping_moves_on_instead_of_earning_a_provider_429(
    redis_url: str, topics_ready: str, tmp_path: Path, colocate: tuple[str, ...]
) -> None:
    """Provider budgets hold wherever the router runs: a router in the ingress shapes through the
    ingress's limiter (the service, or the core beside it)."""
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        "domains:\n"
        "  gateway: [{match: {tenant: '*'}, limits: [{name: rpm, unit: requests, limit: 1000, per: minute}]}]\n"
        "  provider: [{match: {provider: openai, model: '*'}, limits: [{name: openai-rpm, unit: requests, limit: 2, per: minute}]}]\n"
    )
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits,
                              router_overrides={"provider_budget_wait_s": 0.1}, colocate=colocate)
    client = Client(stack.ingress.address)
    try:
        if "router" in colocate:
            await stack.router.stop(grace=0)  # nothing may depend on the router service
        got = [await client.complete(_msg(f"shaped {i}")) for i in range(3)]
    finally:
        await client.close()
        await stack.stop()
    assert [r.provider for r in got] == ["openai", "openai", "anthropic"], [[(x.provider, x.status, x.error) for x in r.attempts] for r in got]
    assert stack.fake.state.calls["openai"] == 2  # the third never reached OpenAI
    skipped = got[2].attempts[0]
    assert skipped.status == "skipped" and "provider budget spent (openai-rpm" in skipped.error


async def test_token_reservations_settle_to_real_usage_for_streams_and_failures(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    from llmgw.kit.redis import connect
    from llmgw.services.limiter.core import RedisLimiter
    from llmgw.services.limiter.rules import load_rules

    limits = tmp_path / "limits.yaml"
    # Per day: the bucket refills ~1 token/s, so a slow first request on a busy machine does not
    # blur the count (per hour it refilled ~28 tokens/s, several tokens during a cold first call).
    limits.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: tpm, unit: tokens, limit: 100000, per: day}]}]}")
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits)
    client = Client(stack.ingress.address)
    redis = connect(redis_url)
    probe = RedisLimiter(redis, load_rules(limits), prefix=f"{stack.prefix}:rl")

    async def used() -> int:
        await stack.ingress.service.servicers[0][0]._core.drain()
        d = await probe.check([("tenant", "acme")], tokens=0)
        return 100000 - d.statuses[0].remaining

    try:
        chunks = await client.stream(_msg("stream and settle"))
        usage = chunks[-1].usage
        after_stream = await used()
        # The reservation (prompt + 512 max tokens) was replaced by the real usage.
        assert abs(after_stream - (usage.input_tokens + usage.output_tokens)) <= 1
        for name in ("openai", "anthropic"):
            stack.fake.state.faults[name].fail_next = 2  # both tries of each target
        with pytest.raises(grpc.aio.AioRpcError):
            await client.complete(_msg("fails"))
        assert abs(await used() - after_stream) <= 1  # a failed call is refunded entirely
    finally:
        await redis.aclose()
        await client.close()
        await stack.stop()
