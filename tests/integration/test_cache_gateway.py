"""The cache through the whole gateway: single-flight, limits on hits, label moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from llmgw.gateway.v1 import gateway_pb2
from llmgw.stack import Stack, start_stack
from tests.helpers import Client, prompt_request, ungated_prompts

pytestmark = pytest.mark.integration

# Every behaviour below holds in every topology: the ingress calling the limiter and cache
# services, the ingress running their cores in process (COLOCATE=limiter,cache), and the ingress
# running the router core too (a miss: app -> ingress -> provider).
TOPOLOGIES = {"split": (), "colocated": ("limiter", "cache"), "all-in-one": ("limiter", "cache", "router")}


@pytest.fixture(params=list(TOPOLOGIES))
def colocate(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return TOPOLOGIES[request.param]


@pytest.fixture
async def limited(redis_url: str, topics_ready: str, tmp_path: Path, colocate: tuple[str, ...]):
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        "domains: {gateway: [{match: {tenant: '*'}, limits: ["
        "{name: tenant-rpm, unit: requests, limit: 10, per: minute},"
        "{name: tenant-tpm, unit: tokens, limit: 2000, per: minute}]}]}"
    )
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits, colocate=colocate)
    yield s
    await s.stop()


def _drain(stack: Stack):  # type: ignore[no-untyped-def]
    return stack.ingress.service.servicers[0][0]._core.drain()


@pytest.fixture
async def roomy(redis_url: str, topics_ready: str, colocate: tuple[str, ...]):
    # 100 requests at once share this one process's event loop with every service. The cache's
    # 50 ms Redis budget stays: it counts from when a lookup is sent, so the burst's wait for the
    # CPU does not use it up. The ingress's 250 ms deadline on the cache hop (split topology) is
    # wall clock across two services in this one loop: give it room.
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready,
                          ingress_overrides={"cache_timeout_s": 2.0}, colocate=colocate)
    yield s
    await s.stop()


async def test_100_concurrent_identical_misses_make_one_provider_call(roomy: Stack) -> None:
    stack = roomy
    stack.fake.state.faults["openai"].latency_ms = 300
    client = Client(stack.ingress.address)
    # Many identical requests at once; the default limits allow 60/min per tenant, so use two.
    reqs = [client.complete(prompt_request("the same question"), key=k) for k in ["test-key"] * 50]
    other = [client.complete(prompt_request("the same question"), key="other-key") for _ in range(50)]
    results = await asyncio.gather(*reqs, *other)
    await client.close()
    assert len({r.text for r in results[:50]}) == 1
    # One call per tenant: entries are never shared across tenants.
    assert stack.fake.state.calls["openai"] == 2
    assert sum(r.cache_hit for r in results) == 98


async def test_a_failed_leader_releases_its_waiters(roomy: Stack) -> None:
    # On the roomy stack: a cache hop that outlived its wall-clock deadline on a starved CPU would
    # go on as an uncoordinated miss (by design) and make a third provider call.
    stack = roomy
    stack.fake.state.faults["openai"].latency_ms = 200
    stack.fake.state.faults["openai"].fail_next = 2  # both tries of each target (routes.yaml)
    stack.fake.state.faults["anthropic"].fail_next = 2
    client = Client(stack.ingress.address)
    results = await asyncio.gather(*(client.complete(prompt_request("leader fails")) for _ in range(10)),
                                   return_exceptions=True)
    await client.close()
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(failed) == 1 and failed[0].code() == grpc.StatusCode.UNAVAILABLE
    assert stack.fake.state.calls["openai"] == 3  # the failed leader's two tries and the new leader's


async def test_hits_count_against_the_request_limit_but_not_the_token_quota(limited: Stack) -> None:
    client = Client(limited.ingress.address)
    statuses = []
    for _ in range(11):
        try:
            r = await client.complete(prompt_request("counted"))
            statuses.append("hit" if r.cache_hit else "miss")
        except grpc.aio.AioRpcError as exc:
            statuses.append(dict(exc.trailing_metadata() or ()).get("x-ratelimit-limit-hit", "?"))
        await _drain(limited)
    await client.close()
    # 1 miss + 9 hits fit the 10 requests/minute; each reserved ~520 tokens, refunded for hits, so the
    # 2000-token quota never refused; the 11th is refused by the request limit.
    assert statuses == ["miss"] + ["hit"] * 9 + ["tenant-rpm"]


async def test_a_label_move_makes_the_old_versions_entries_unreachable(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:

    from llmgw.kit.redis import connect
    from llmgw.prompts.labels import LabelStore

    root = ungated_prompts(tmp_path / "prompts")
    src = (root / "classify-ticket" / "versions" / "v1.yaml").read_text()
    (root / "classify-ticket" / "versions" / "v2.yaml").write_text(src.replace("one word", "a single word"))
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, prompts_dir=root,
                              ingress_overrides={"labels_redis_url": redis_url, "labels_poll_s": 0.1})
    client = Client(stack.ingress.address)
    redis = connect(redis_url)
    store = LabelStore(redis)
    req = gateway_pb2.CompleteRequest(prompt="classify-ticket", variables={"ticket": "refund please"})
    try:
        first = await client.complete(req)
        await _drain(stack)
        assert (await client.complete(req)).cache_hit
        await store.move("classify-ticket", "production", "v2")
        await asyncio.sleep(0.5)
        moved = await client.complete(req)
        assert not moved.cache_hit and moved.prompt_version.startswith("v2@")
        await store.move("classify-ticket", "production", "v1")
        await asyncio.sleep(0.5)
        back = await client.complete(req)
        assert back.cache_hit and back.prompt_version == first.prompt_version
    finally:
        await redis.delete("llmgw:prompts:labels:classify-ticket")
        await redis.aclose()
        await client.close()
        await stack.stop()


async def test_cache_cli_invalidate_and_stats(redis_url: str, topics_ready: str, colocate: tuple[str, ...],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Colocated, the hit is answered and counted inside the ingress; the cache service's Stats and
    Invalidate see and drop the very same entries (same Redis keys)."""
    from llmgw.cli import main as cli

    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, colocate=colocate)
    client = Client(stack.ingress.address)
    await client.complete(prompt_request("cli"))
    await _drain(stack)
    assert (await client.complete(prompt_request("cli"))).cache_hit
    loop = asyncio.get_running_loop()
    addr = stack.cache.address
    counted = False
    for _ in range(30):  # hits from a near cache reach the shared counters in batches (0.5 s)
        assert await loop.run_in_executor(None, cli, ["cache", "stats", "--addr", addr, "--tenant", "acme",
                                                      "--prompt", "summarize"]) == 0
        if counted := "hits 1" in capsys.readouterr().out:
            break
        await asyncio.sleep(0.1)
    assert counted
    assert await loop.run_in_executor(None, cli, ["cache", "invalidate", "--addr", addr, "--prompt", "summarize",
                                                  "--version", "v1"]) == 0
    assert "invalidated 1 entries" in capsys.readouterr().out
    assert not (await client.complete(prompt_request("cli"))).cache_hit
    assert await loop.run_in_executor(None, cli, ["cache", "invalidate", "--addr", addr]) == 1
    await client.close()
    await stack.stop()


async def test_a_refused_request_leaves_no_single_flight_lock(limited: Stack, redis_url: str) -> None:
    from llmgw.kit.redis import connect

    client = Client(limited.ingress.address)
    for i in range(10):  # use up the 10 requests/minute with other questions
        await client.complete(prompt_request(f"filler {i}"))
    with pytest.raises(grpc.aio.AioRpcError):
        await client.complete(prompt_request("refused"))
    await client.close()
    await _drain(limited)
    await asyncio.sleep(0.1)
    redis = connect(redis_url)
    locks = [k async for k in redis.scan_iter(match=f"{limited.prefix}:cache!lock:*")]
    await redis.aclose()
    # Identical requests of this tenant would otherwise wait out the single-flight lock.
    assert locks == []
