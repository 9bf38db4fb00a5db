"""The OpenAI-compatible HTTP face, called by the real ``openai`` SDK as an unmodified app would:
``base_url`` and ``api_key`` changed, nothing else. Real gRPC peers, Redis and broker behind it."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from llmgw.stack import Stack, start_stack
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def http(redis_url: str, topics_ready: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, openai.AsyncOpenAI]]:
    limits = tmp_path / "limits.yaml"
    limits.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: rpm, unit: requests, limit: 30, per: minute}]},"
                      " {match: {tenant: globex}, limits: [{name: globex-rpm, unit: requests, limit: 1, per: minute}]}]}")
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits)
    client = openai.AsyncOpenAI(base_url=f"{s.http}/v1", api_key="test-key", max_retries=0)
    yield s, client
    await client.close()
    await s.stop()


async def test_a_completion_then_the_same_from_cache(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    stack, client = http
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is Kafka?"}]
    first = await client.chat.completions.create(model="default", messages=msgs)  # type: ignore[arg-type]
    assert first.choices[0].message.content == "[openai:gpt-4o-mini] You said: What is Kafka?"
    assert first.choices[0].finish_reason == "stop" and first.usage and first.usage.total_tokens > 0
    assert first.model == "gpt-4o-mini"
    await stack.ingress.service.servicers[0][0]._core.drain()
    again = await client.chat.completions.with_raw_response.create(model="default", messages=msgs)  # type: ignore[arg-type]
    hit = again.parse()
    assert hit.choices[0].message.content == first.choices[0].message.content
    assert hit.model_extra and hit.model_extra["llmgw"]["cache_hit"] is True
    assert again.headers["x-request-id"] == hit.model_extra["llmgw"]["request_id"]
    assert stack.fake.state.calls["openai"] == 1


async def test_streaming_with_usage_and_the_events_on_kafka(
    http: tuple[Stack, openai.AsyncOpenAI], topics_ready: str
) -> None:
    stack, client = http
    stream = await client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": [{"type": "text", "text": "stream me"}]}],
        stream=True, stream_options={"include_usage": True}, extra_body={"llmgw": {"cache_mode": "bypass"}})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[openai:gpt-4o-mini] You said: stream me"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    rid = chunks[0].id.removeprefix("chatcmpl-")
    await stack.ingress.service.servicers[0][0]._core.drain()
    assert rid in await read_topic(topics_ready, "llm.requests", [rid])  # the same pipeline as gRPC


async def test_a_registry_prompt_through_the_extension_field(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    _, client = http
    reply = await client.chat.completions.create(
        model="", messages=[], extra_body={"llmgw": {"prompt": "summarize", "variables": {"text": "Kafka is a log."}}})
    assert "Summarize in one sentence: Kafka is a log." in (reply.choices[0].message.content or "")
    assert reply.model_extra and reply.model_extra["llmgw"]["prompt_version"].startswith("v")


async def test_models_lists_routes_and_their_first_targets(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    _, client = http
    ids = [m.id async for m in client.models.list()]
    assert "default" in ids and "openai/gpt-4o-mini" in ids and "anthropic-first" in ids


async def test_errors_have_openais_shape_and_status(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    stack, client = http
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        bad = openai.AsyncOpenAI(base_url=f"{stack.http}/v1", api_key="nope", max_retries=0)
        try:
            await bad.chat.completions.create(model="default", messages=msgs)  # type: ignore[arg-type]
        finally:
            await bad.close()
    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="no-such-model", messages=msgs)  # type: ignore[arg-type]
    assert "no-such-model" in nf.value.message
    with pytest.raises(openai.BadRequestError) as br:
        await client.chat.completions.create(model="default", messages=msgs, temperature=5)  # type: ignore[arg-type]
    assert br.value.body["param"] == "sampling.temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as br:
        await client.chat.completions.create(  # type: ignore[call-overload]
            model="default", messages=msgs, tool_choice={"type": "function", "function": {"name": "g"}},
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert br.value.body["param"] == "tool_choice" and "'g'" in br.value.message  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as br:
        await client.chat.completions.create(  # type: ignore[call-overload]
            model="default", messages=msgs, functions=[{"name": "f", "parameters": {"type": "object"}}])
    assert br.value.body["param"] == "functions" and "not supported yet" in br.value.message  # type: ignore[index]
    limited = openai.AsyncOpenAI(base_url=f"{stack.http}/v1", api_key="other-key", max_retries=0)
    try:
        await limited.chat.completions.create(model="default", messages=msgs)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as rl:
            await limited.chat.completions.create(model="default", messages=msgs)  # type: ignore[arg-type]
        assert int(rl.value.response.headers["retry-after"]) >= 1
    finally:
        await limited.close()
    for fault in ("openai", "anthropic"):
        stack.fake.state.faults[fault].error_rate = 1.0
    with pytest.raises(openai.InternalServerError) as down:
        await client.chat.completions.create(model="default", messages=[{"role": "user", "content": "down"}])  # type: ignore[arg-type]
    assert down.value.status_code == 503


async def test_bad_bodies_get_400_with_no_exception_text(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    stack, _ = http
    async with aiohttp.ClientSession() as session:
        for body in (b"not json", b"[1, 2]", json.dumps({"model": "default", "messages": "x"}).encode(),
                     json.dumps({"model": 3, "messages": []}).encode(), b"\xff\xfe"):
            async with session.post(f"{stack.http}/v1/chat/completions", data=body,
                                    headers={"authorization": "Bearer test-key"}) as resp:
                assert resp.status == 400, body
                err = (await resp.json())["error"]
                assert err["type"] == "invalid_request_error" and "Error" not in err["message"]
        async with session.post(f"{stack.http}/v1/chat/completions", data=b"x" * (400 * 1024),
                                headers={"authorization": "Bearer test-key"}) as resp:
            assert resp.status in (400, 413)


async def test_a_stream_cut_after_its_first_chunk_ends_with_an_error_event(
    http: tuple[Stack, openai.AsyncOpenAI],
) -> None:
    stack, client = http
    stack.fake.state.faults["openai"].fault = "disconnect_after_first"
    stream = await client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "cut"}], stream=True,
        extra_body={"llmgw": {"cache_mode": "bypass"}})
    got = []
    with pytest.raises(openai.APIError) as err:
        async for c in stream:
            got.append(c)
    assert got and "cut off" in err.value.message


async def test_concurrent_calls_share_the_core(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    _, client = http
    replies = await asyncio.gather(*(client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(10)))  # type: ignore[arg-type]
    assert [r.choices[0].message.content for r in replies] == [
        f"[openai:gpt-4o-mini] You said: q{i}" for i in range(10)]


async def test_a_large_body_under_the_limit_is_read_whole(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    _, client = http
    text = "word " * 40_000  # 200 KB: arrives in many TCP reads
    reply = await client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": text}], extra_body={"llmgw": {"cache_mode": "bypass"}})
    assert reply.choices[0].message.content and reply.choices[0].message.content.startswith("[openai:")


async def test_the_openapi_document_is_served_and_describes_the_answers(
    http: tuple[Stack, openai.AsyncOpenAI],
) -> None:
    import jsonschema

    from llmgw.services.ingress.http import OPENAPI

    stack, client = http
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.http}/openapi.json") as resp:
            served = await resp.json()
        checked_in = json.loads(OPENAPI.read_text())
        assert served == checked_in and served["openapi"].startswith("3.")
        for path in served["paths"]:  # every documented path is routed
            method = "post" if "post" in served["paths"][path] else "get"
            async with session.request(method, f"{stack.http}{path}", json={},
                                       headers={"authorization": "Bearer test-key"}) as r:
                assert r.status != 404 or path == "/v1/chat/completions", path

        def check(instance: object, schema: str) -> None:
            jsonschema.validate(instance, {"$ref": f"#/components/schemas/{schema}", "components": served["components"]})

        reply = await client.chat.completions.create(model="default", messages=[{"role": "user", "content": "doc"}])
        check(reply.model_dump(exclude_none=True), "ChatCompletion")
        async with session.post(f"{stack.http}/v1/messages", headers={"x-api-key": "test-key"},
                                json={"model": "anthropic-first", "max_tokens": 50,
                                      "messages": [{"role": "user", "content": "doc"}]}) as r:
            check(await r.json(), "Message")
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        called = await client.chat.completions.create(model="anthropic-first", tools=[tool],  # type: ignore[list-item]
                                                      messages=[{"role": "user", "content": "doc"}])
        check(called.model_dump(exclude_none=True), "ChatCompletion")
        assert called.choices[0].message.tool_calls
        async with session.post(f"{stack.http}/v1/messages", headers={"x-api-key": "test-key"},
                                json={"model": "default", "max_tokens": 50, "tools": [
                                    {"name": "f", "input_schema": {"type": "object"}}],
                                      "messages": [{"role": "user", "content": "doc"}]}) as r:
            used = await r.json()
            check(used, "Message")
            assert used["content"][0]["type"] == "tool_use"
        async with session.post(f"{stack.http}/v1/chat/completions", headers={"authorization": "Bearer test-key"},
                                json={"model": "default", "messages": [], "tools": [{"type": "function"}]}) as r:
            assert r.status == 400
            check(await r.json(), "OpenAIError")


def _fuzz_values(rng: random.Random, depth: int = 0) -> object:
    choices: list[object] = [None, True, 0, -1, 2**40, 1.5, -0.0, 1e308, "", "x" * rng.randint(1, 50), "é\x00\t",
                             [], {}, ["a"], {"type": "text"}, {"type": "image_url"}, {"type": "function"},
                             {"type": "tool_use", "id": "t", "name": "f"}, {"type": "tool_result"},
                             {"type": "json_schema"}, {"type": "image", "source": {"type": "base64"}}]
    if depth < 2:
        choices += [[_fuzz_values(rng, depth + 1) for _ in range(rng.randint(1, 3))],
                    {rng.choice(["role", "content", "type", "text", "x", "function", "name", "parameters", "tool_calls",
                                "tool_call_id", "image_url", "url", "input", "json_schema", "schema"]):
                     _fuzz_values(rng, depth + 1)}]
    return rng.choice(choices)


async def test_fuzzed_bodies_never_get_a_5xx_other_than_503(http: tuple[Stack, openai.AsyncOpenAI]) -> None:
    """Bodies built from the OpenAPI document's field names with values of every wrong (and some
    right) kind: answers are 2xx/4xx (or 503 when no provider could answer), never a crash."""
    from llmgw.services.ingress.http import OPENAPI

    stack, _ = http
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]
    rng = random.Random(int(os.environ.get("LLMGW_FUZZ_SEED", "1234")))  # another seed: another 300 bodies
    seen: set[int] = set()
    async with aiohttp.ClientSession() as session:
        for i in range(300):
            path, schema = rng.choice([("/v1/chat/completions", "ChatRequest"), ("/v1/messages", "MessagesRequest")])
            fields = list(schemas[schema]["properties"])
            body = {f: _fuzz_values(rng) for f in rng.sample(fields, rng.randint(0, len(fields)))}
            if rng.random() < 0.5:  # often a mostly valid request with one bad field
                body = {"model": "default", "max_tokens": 20, "messages": [{"role": "user", "content": f"f{i}"}],
                        **{k: v for k, v in body.items() if rng.random() < 0.3}}
            async with session.post(f"{stack.http}{path}", json=body,
                                    headers={"authorization": "Bearer test-key", "x-api-key": "test-key"}) as resp:
                seen.add(resp.status)
                assert resp.status < 500 or resp.status == 503, (path, body, resp.status, await resp.text())
                if resp.status >= 400:
                    text = await resp.text()
                    assert "Traceback" not in text and "Error(" not in text, text
    assert 200 in seen and 400 in seen  # the fuzz reached both sides
