"""The semantic tier against a real Redis and the real MiniLM model: two cache replicas serve each
other's entries, invalidation and TTL reach both, tenants and prompt versions never mix, and a
slow lookup is a miss."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest
import redis.asyncio as aioredis

from llmgw.cli import main as cli
from llmgw.domain import CacheEntry, KeyMaterial, Message, Sampling, Usage
from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit.embed import Embedder
from llmgw.services.cache.core import RedisCache
from llmgw.stack import Stack, start_stack
from tests.helpers import Client, read_topic, semantic_replica

pytestmark = pytest.mark.integration


def _key(text: str, tenant: str = "acme", version: str = "v1@abc", system: str = "be brief") -> KeyMaterial:
    return KeyMaterial(tenant=tenant, route="default", prompt="faq", prompt_version=version,
                       messages=(Message("system", system), Message("user", text)), sampling=Sampling(temperature=0))


def _answer(text: str) -> CacheEntry:
    return CacheEntry(text=text, provider="openai", model="m", usage=Usage(20, 10, 0.002), finish_reason="stop")


def _replica(redis: aioredis.Redis, prefix: str, embedder: Embedder, **semantic: object) -> RedisCache:
    return semantic_replica(redis, prefix, embedder, **semantic)


async def _ask_and_answer(cache: RedisCache, key: KeyMaterial, answer: str) -> None:
    miss = await cache.lookup(key)
    assert not miss.hit and miss.leader and miss.semantic, miss
    assert await cache.store(miss.key, _answer(answer), tenant=key.tenant, prompt=key.prompt,
                             lock_token=miss.lock_token, semantic=miss.semantic)


@pytest.fixture
def prefix() -> str:
    return f"sem-{uuid.uuid4().hex[:8]}"


async def test_a_paraphrase_is_served_by_another_replica_and_a_different_question_is_not(
        redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    a, b = _replica(redis, prefix, embedder), _replica(redis, prefix, embedder)
    await _ask_and_answer(a, _key("How do I reset my password?"), "Settings > Security > Reset.")

    hit = await b.lookup(_key("How can I reset my password?"))
    assert hit.hit and hit.tier == "semantic" and hit.entry is not None
    assert hit.entry.text == "Settings > Security > Reset." and 0.8 <= hit.similarity <= 1.0
    assert not hit.leader  # nothing to store: the answer came from the other question's entry

    for other in ("How do I reset my router?", "How do I not reset my password?", "Why do I reset my password?"):
        res = await b.lookup(_key(other))
        assert not res.hit and res.leader and res.semantic, other
        await b.release(res.key, res.lock_token)

    # The listing an analyst reads, and the counters.
    hits = await b.semantic_hits("acme")
    assert [(h["question"], h["matched"]) for h in hits] == [("How can I reset my password?",
                                                              "How do I reset my password?")]
    await asyncio.sleep(0.1)
    stats = await b.stats("acme")
    assert stats["semantic_hits"] == 1 and stats["tokens_saved"] == 30


async def test_tenants_versions_and_system_prompts_never_share_a_semantic_entry(
        redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    cache = _replica(redis, prefix, embedder)
    await _ask_and_answer(cache, _key("How do I cancel my subscription?"), "acme's answer")
    for key in (_key("How can I cancel my subscription?", tenant="globex"),
                _key("How can I cancel my subscription?", version="v2@def"),
                _key("How can I cancel my subscription?", system="answer in French")):
        res = await cache.lookup(key)
        assert not res.hit, key
        await cache.release(res.key, res.lock_token)
    assert (await cache.lookup(_key("How can I cancel my subscription?"))).tier == "semantic"


async def test_invalidation_reaches_every_replica(redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    a, b = _replica(redis, prefix, embedder), _replica(redis, prefix, embedder)
    await _ask_and_answer(a, _key("How long does shipping take?"), "3 days")
    assert (await b.lookup(_key("How long does it take for shipping?"))).tier == "semantic"  # b has it indexed
    assert await a.invalidate(tenant="acme", prompt="faq") >= 1
    res = await b.lookup(_key("How long does it take for shipping?"))
    assert not res.hit and res.leader


async def test_ttl_reaches_every_replica(redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    a, b = _replica(redis, prefix, embedder, ttl_s=1), _replica(redis, prefix, embedder, ttl_s=1)
    await _ask_and_answer(a, _key("Do you ship to Canada?"), "yes")
    assert (await b.lookup(_key("Do you deliver to Canada?"))).tier == "semantic"
    await asyncio.sleep(1.3)
    res = await b.lookup(_key("Do you deliver to Canada?"))
    assert not res.hit


async def test_an_expired_exact_entry_is_never_served_semantically(
        redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    """The semantic record may outlive the answer it points to (its own TTL is longer): the
    answer's own expiry still wins."""
    a = _replica(redis, prefix, embedder, ttl_s=3600, exact_ttl_s=1)
    await _ask_and_answer(a, _key("Is there a free trial?"), "14 days")
    await asyncio.sleep(1.3)
    assert not (await a.lookup(_key("Do you offer a free trial?"))).hit


async def test_a_lookup_over_its_budget_is_a_miss(redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    slow = _replica(redis, prefix, embedder, budget_ms=1)
    res = await slow.lookup(_key("A question this process never embedded before " + uuid.uuid4().hex))
    assert not res.hit and res.leader  # the exact tier's miss stands: the caller goes to the provider


async def test_requests_without_plain_user_text_stay_exact(redis: aioredis.Redis, prefix: str,
                                                           embedder: Embedder) -> None:
    cache = _replica(redis, prefix, embedder)
    sampled = replace(_key("How do I reset my password?"), sampling=Sampling(temperature=0.9))
    assert not (await cache.lookup(sampled)).cacheable
    assistant_last = replace(_key("x"), messages=(Message("user", "hi"), Message("assistant", "hello")))
    res = await cache.lookup(assistant_last)
    assert res.leader and not res.semantic


def test_semantic_hits_command_lists_both_questions(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"sem-{uuid.uuid4().hex[:8]}"
    row = {"at": 1_700_000_000, "tenant": "acme", "prompt": "faq", "version": "v1", "route": "default",
           "question": "How can I reset my password?", "matched": "How do I reset my password?", "similarity": 0.97}

    async def seed() -> None:
        r = aioredis.from_url(redis_url)
        await r.lpush(f"{prefix}!semhits:{{acme}}", json.dumps(row))
        await r.aclose()

    asyncio.run(seed())
    assert cli(["cache", "semantic-hits", "--tenant", "acme", "--redis-url", redis_url, "--prefix", prefix]) == 0
    out = capsys.readouterr().out
    assert "asked:    How can I reset my password?" in out
    assert "answered: How do I reset my password?" in out and "0.970" in out


# ---- through the whole gateway ----

@pytest.fixture(params=["split", "colocated"])
async def semantic_stack(request: pytest.FixtureRequest, redis_url: str, topics_ready: str,
                         tmp_path: Path) -> AsyncIterator[Stack]:
    policy = tmp_path / "cache-policy.yaml"
    policy.write_text("rules:\n  - match: {route: default}\n    semantic: {enabled: true, threshold: 0.8}\n")
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, cache_overrides={"policy_file": policy},
                          colocate=("limiter", "cache") if request.param == "colocated" else ())
    yield s
    await s.stop()


async def test_the_gateway_serves_a_paraphrase_and_says_which_tier_answered(
        semantic_stack: Stack, topics_ready: str) -> None:
    stack = semantic_stack
    core = stack.ingress.service.servicers[0][0]._core
    client = openai.AsyncOpenAI(base_url=f"{stack.http}/v1", api_key="test-key", max_retries=0)
    grpc_client = Client(stack.ingress.address)
    try:
        def ask(text: str):  # type: ignore[no-untyped-def]
            return client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}])

        first = await ask("How do I reset my password?")
        assert first.headers["x-llmgw-cache"] == "miss"
        await core.drain()
        await asyncio.sleep(0.2)  # the store (and its semantic record) is written after the reply
        raw = await ask("How can I reset my password?")
        again = raw.parse()
        assert raw.headers["x-llmgw-cache"] == "semantic" and float(raw.headers["x-llmgw-cache-similarity"]) >= 0.8
        assert again.choices[0].message.content == first.parse().choices[0].message.content  # the stored answer
        assert again.model_extra and again.model_extra["llmgw"]["cache_tier"] == "semantic"
        assert stack.fake.state.calls["openai"] == 1

        other = await ask("How do I reset my router?")  # close in meaning, another question
        assert other.headers["x-llmgw-cache"] == "miss" and stack.fake.state.calls["openai"] == 2

        reply = await grpc_client.complete(gateway_pb2.CompleteRequest(route="default", messages=[
            gateway_pb2.Message(role="system", content="Be brief."),
            gateway_pb2.Message(role="user", content="how can I reset my password")]))
        assert reply.cache_hit and reply.cache_tier == "semantic" and reply.cache_similarity >= 0.8
        chunks = await grpc_client.stream(gateway_pb2.CompleteRequest(route="default", messages=[
            gateway_pb2.Message(role="system", content="Be brief."),
            gateway_pb2.Message(role="user", content="How can I reset my password, please?")]))
        assert "".join(c.delta for c in chunks) == reply.text  # the stored answer, replayed
        assert chunks[-1].final and chunks[-1].cache_tier == "semantic"
        assert stack.fake.state.calls["openai"] == 2

        rid = again.model_extra["llmgw"]["request_id"]
        await core.drain()
        events = await read_topic(topics_ready, "llm.responses", [rid])
        event = events_pb2.ResponseEvent.FromString(events[rid])
        assert event.cache_hit and event.cache_tier == "semantic" and event.cache_similarity >= 0.8
    finally:
        await client.close()
        await grpc_client.close()


async def test_long_texts_stay_exact_and_a_backlog_of_embeddings_is_a_miss_at_once(
        redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    from llmgw.services.cache.semantic.tier import SEMANTIC

    cache = _replica(redis, prefix, embedder, max_chars=200)
    long = await cache.lookup(_key("Why " + "really " * 60 + "is the sky blue?"))
    assert long.leader and not long.semantic  # over max_chars: the exact tier only

    busy = SEMANTIC.labels("acme", "faq", "busy")
    before = busy._value.get()
    # Twenty new questions at once against one model thread: those past its queue do not wait.
    results = await asyncio.gather(*(cache.lookup(_key(f"Question number {i} about {uuid.uuid4().hex}?"))
                                     for i in range(20)))
    assert all(not r.hit and r.leader for r in results)
    assert busy._value.get() - before >= 20 - 8


async def test_a_waiter_that_takes_over_from_a_dead_leader_looks_in_the_semantic_tier_too(
        redis: aioredis.Redis, prefix: str, embedder: Embedder) -> None:
    cache = _replica(redis, prefix, embedder, lock_ttl_s=0.2)
    await _ask_and_answer(cache, _key("How do I change my username?"), "Profile > Name.")
    question = _key("How can I change my username?")
    # A leader takes the paraphrase's exact lock and dies without storing or releasing it.
    _, dead_token, _ = await cache._probe(question, (await cache.lookup(question, read=False)).key)
    assert dead_token
    follower = await cache.lookup(question)
    assert follower.in_flight
    took_over = await cache.wait(question, timeout_s=3)
    assert took_over.hit and took_over.tier == "semantic" and took_over.entry is not None
    assert took_over.entry.text == "Profile > Name."
