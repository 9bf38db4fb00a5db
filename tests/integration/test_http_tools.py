"""What modern apps send, through both HTTP dialects and both providers: tool calls (plain and
streamed, and across a fallback between providers mid-conversation), structured output, images,
and cache hits that replay tool-call deltas chunk for chunk. The real ``openai`` and
``anthropic`` SDKs are the clients; the router calls the fake providers through the same SDKs,
and the fakes refuse what the real APIs refuse (a tool result answering no call, a system role
in Anthropic's messages), so a wrong translation fails here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from llmgw.events.v1 import events_pb2
from llmgw.stack import Stack, start_stack
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
ROUTES = [("default", "openai"), ("anthropic-first", "anthropic")]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
OPENAI_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                       "parameters": SCHEMA}}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "description": "Weather in a city", "input_schema": SCHEMA}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
async def clients(redis_url: str, topics_ready: str
                  ) -> AsyncIterator[tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic]]:
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready)
    oa = openai.AsyncOpenAI(base_url=f"{s.http}/v1", api_key="test-key", max_retries=0)
    an = anthropic.AsyncAnthropic(base_url=s.http, api_key="test-key", max_retries=0)
    yield s, oa, an
    await oa.close()
    await an.close()
    await s.stop()


async def _drain(stack: Stack) -> None:
    await stack.ingress.service.servicers[0][0]._core.drain()


@pytest.mark.parametrize(("model", "provider"), ROUTES)
async def test_openai_tool_round_trip_on_either_provider(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str, provider: str,
) -> None:
    _, client, _ = clients
    msgs: list[Any] = [{"role": "user", "content": "Paris"}]
    first = await client.chat.completions.create(model=model, messages=msgs, tools=OPENAI_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and first.model_extra
    assert first.model_extra["llmgw"]["provider"] == provider
    call = (choice.message.tool_calls or [])[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 42}
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}]
    second = await client.chat.completions.create(model=model, messages=msgs, tools=OPENAI_TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == f"[{provider}:{MODEL[provider]}] The tool said: 18 C and sunny"


@pytest.mark.parametrize(("model", "provider"), ROUTES)
async def test_openai_streamed_tool_call_deltas_make_the_same_call(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str, provider: str,
) -> None:
    _, client, _ = clients
    msgs: Any = [{"role": "user", "content": "Oslo"}]
    plain = await client.chat.completions.create(model=model, messages=msgs, tools=OPENAI_TOOLS,
                                                 extra_body={"llmgw": {"cache_mode": "bypass"}})
    stream = await client.chat.completions.create(model=model, messages=msgs, tools=OPENAI_TOOLS, stream=True,
                                                  stream_options={"include_usage": True},
                                                  extra_body={"llmgw": {"cache_mode": "bypass"}})
    calls: dict[int, dict[str, str]] = {}
    finish = []
    pieces = 0
    async for chunk in stream:
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                pieces += 1
                got = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                got["id"] += d.id or ""
                got["name"] += (d.function.name or "") if d.function else ""
                got["arguments"] += (d.function.arguments or "") if d.function else ""
            if c.finish_reason:
                finish.append(c.finish_reason)
    assert finish == ["tool_calls"] and pieces > 1  # streamed in pieces, not whole
    want = (plain.choices[0].message.tool_calls or [])[0]
    assert calls == {0: {"id": want.id, "name": "get_weather", "arguments": want.function.arguments}}


@pytest.mark.parametrize(("model", "provider"), ROUTES)
async def test_anthropic_tool_round_trip_plain_and_streamed_on_either_provider(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str, provider: str,
) -> None:
    _, _, client = clients
    msgs: Any = [{"role": "user", "content": "Rome"}]
    msg = await client.messages.create(model=model, max_tokens=200, system="Be brief.", tools=ANTHROPIC_TOOLS,
                                       messages=msgs)
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Rome", "days": 42}
    # The SDK's own stream accumulator rebuilds the input from input_json_delta events.
    async with client.messages.stream(model=model, max_tokens=200, tools=ANTHROPIC_TOOLS, messages=msgs,
                                      extra_body={"llmgw": {"cache_mode": "bypass"}}) as stream:
        streamed = await stream.get_final_message()
    s_use = next(b for b in streamed.content if b.type == "tool_use")
    assert (s_use.id, s_use.input, streamed.stop_reason) == (use.id, use.input, "tool_use")
    follow = [*msgs, {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}]}]
    done = await client.messages.create(model=model, max_tokens=200, tools=ANTHROPIC_TOOLS, messages=follow)
    assert done.stop_reason == "end_turn"
    assert done.content[0].type == "text"
    assert done.content[0].text == f"[{provider}:{MODEL[provider]}] The tool said: 21 C"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fallback_mid_conversation_keeps_tool_semantics(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], stream: bool,
) -> None:
    """OpenAI asks for the tool; OpenAI is then down, so Anthropic gets the conversation: the
    OpenAI tool call and result reach it as tool_use / tool_result (the fake refuses a result that
    answers no call) and it finishes the answer."""
    stack, client, _ = clients
    msgs: Any = [{"role": "user", "content": "Berlin"}]
    first = await client.chat.completions.create(model="default", messages=msgs, tools=OPENAI_TOOLS)
    assert first.model_extra and first.model_extra["llmgw"]["provider"] == "openai"
    call = (first.choices[0].message.tool_calls or [])[0]
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "12 C"}]
    stack.fake.state.faults["openai"].error_rate = 1.0
    if stream:
        chunks = [c async for c in await client.chat.completions.create(
            model="default", messages=msgs, tools=OPENAI_TOOLS, stream=True)]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        extension = next(c.model_extra["llmgw"] for c in chunks if c.model_extra and "llmgw" in c.model_extra)
    else:
        reply = await client.chat.completions.create(model="default", messages=msgs, tools=OPENAI_TOOLS)
        text, extension = reply.choices[0].message.content or "", (reply.model_extra or {})["llmgw"]
    assert text == "[anthropic:claude-3-5-haiku-latest] The tool said: 12 C"
    assert extension["provider"] == "anthropic"
    assert [a["status"] for a in extension["attempts"]][:2] == ["error", "error"]


@pytest.mark.parametrize(("model", "provider"), ROUTES)
async def test_structured_output_in_both_dialects_on_either_provider(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str, provider: str,
) -> None:
    _, oa, an = clients
    reply = await oa.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Lima"}],
        response_format={"type": "json_schema", "json_schema": {"name": "forecast", "schema": SCHEMA, "strict": True}})
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Lima", "days": 42}
    anything = await oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "Lima"}],
                                                response_format={"type": "json_object"})
    assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)
    msg = await an.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": "Quito"}],
                                   extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}})
    assert msg.content[0].type == "text" and json.loads(msg.content[0].text) == {"city": "Quito", "days": 42}
    assert (reply.model_extra or {})["llmgw"]["provider"] == provider


@pytest.mark.parametrize(("model", "provider"), ROUTES)
async def test_images_reach_either_provider_in_its_own_form(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str, provider: str,
) -> None:
    _, oa, an = clients
    reply = await oa.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert reply.choices[0].message.content == (f"[{provider}:{MODEL[provider]}] You said: What is this? "
                                                "[image: image/png base64] [image: url]")
    msg = await an.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "And this?"}]}])
    assert msg.content[0].type == "text" and msg.content[0].text.endswith("And this? [image: image/png base64]")
    with pytest.raises(anthropic.BadRequestError) as bad:
        await an.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": PNG}}]}])
    assert "messages[0].parts[0]" in bad.value.message


async def _sse_frames(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every data frame of a raw SSE answer, without what differs between two answers by design
    (ids, creation time, the llmgw extension that says hit or miss)."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        raw = (await resp.read()).decode()
    frames = []
    for block in raw.split("\n\n"):
        data = "".join(line[6:] for line in block.splitlines() if line.startswith("data: "))
        if not data or data == "[DONE]":
            continue
        frame = json.loads(data)
        for noise in ("id", "created", "llmgw"):
            frame.pop(noise, None)
        frame.get("message", {}).pop("id", None)
        frames.append(frame)
    return frames


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_a_cache_hit_replays_tool_call_deltas_chunk_for_chunk(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], dialect: str,
) -> None:
    stack, _, _ = clients
    if dialect == "openai":
        url, headers = f"{stack.http}/v1/chat/completions", {"authorization": "Bearer test-key"}
        body: dict[str, Any] = {"model": "anthropic-first", "stream": True, "tools": OPENAI_TOOLS,
                                "messages": [{"role": "user", "content": "Cairo"}]}
    else:
        url, headers = f"{stack.http}/v1/messages", {"x-api-key": "test-key"}
        body = {"model": "default", "stream": True, "max_tokens": 100, "tools": ANTHROPIC_TOOLS,
                "messages": [{"role": "user", "content": "Cairo"}]}
    miss = await _sse_frames(url, body, headers)
    await _drain(stack)
    calls = dict(stack.fake.state.calls)
    hit = await _sse_frames(url, body, headers)
    assert stack.fake.state.calls == calls  # answered from the cache
    assert hit == miss and len(miss) > 4
    kinds = json.dumps(miss)
    assert ("input_json_delta" in kinds) if dialect == "anthropic" else ('"tool_calls"' in kinds)
    # Another tool set is another question: not answered from this entry.
    other = json.loads(json.dumps(body))
    tools = other["tools"]
    (tools[0]["function"] if dialect == "openai" else tools[0])["description"] = "Weather, in another words"
    await _sse_frames(url, other, headers)
    assert sum(stack.fake.state.calls.values()) == sum(calls.values()) + 1


async def test_tools_and_tool_calls_are_in_the_events(
    clients: tuple[Stack, openai.AsyncOpenAI, anthropic.AsyncAnthropic], topics_ready: str,
) -> None:
    stack, client, _ = clients
    reply = await client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", tools=OPENAI_TOOLS, tool_choice="required",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Kyiv"},
                                               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    rid = reply.headers["x-request-id"]
    await _drain(stack)
    request = events_pb2.RequestEvent.FromString((await read_topic(topics_ready, "llm.requests", [rid]))[rid])
    assert [t.name for t in request.tools] == ["get_weather"] and request.tool_choice.mode == "required"
    assert json.loads(request.tools[0].parameters) == SCHEMA and request.model == "openai/gpt-4o-mini"
    image = request.messages[0].parts[1]
    assert image.type == "image" and image.url.startswith("data:sha256:") and PNG not in image.url  # bytes kept out
    response = events_pb2.ResponseEvent.FromString((await read_topic(topics_ready, "llm.responses", [rid]))[rid])
    assert [c.name for c in response.tool_calls] == ["get_weather"] and response.finish_reason == "tool_calls"
