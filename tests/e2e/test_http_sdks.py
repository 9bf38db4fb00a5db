"""End to end over HTTP: the real ``openai`` and ``anthropic`` SDKs against the system as
``llmgw up`` starts it (limiter, cache, router and ingress each their own process, the fake
providers a process too): completion, streaming, a tool round trip in each dialect on each
provider, structured output, an image, and every documented error with its status and shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio

from llmgw.demo import DEMO_KEY, LIMITED_KEY
from llmgw.kit.embedded import free_port
from llmgw.up import System, start_system

# One system for the module (starting it takes seconds): its fixtures and tests share one loop.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL: Any = {"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    workdir: Path = tmp_path_factory.mktemp("http-e2e")
    s = await start_system(workdir, ingress_port=free_port(), http_port=free_port(), with_drift=False)
    try:
        yield s
    finally:
        s.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def sdks(system: System) -> AsyncIterator[tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]]:
    assert system.fake_url
    async with aiohttp.ClientSession() as http:
        await http.post(f"{system.fake_url}/_control/reset")
    oa = openai.AsyncOpenAI(base_url=f"http://{system.http_addr}/v1", api_key=DEMO_KEY, max_retries=0)
    an = anthropic.AsyncAnthropic(base_url=f"http://{system.http_addr}", api_key=DEMO_KEY, max_retries=0)
    yield oa, an
    await oa.close()
    await an.close()


@pytest.mark.parametrize("model", ["default", "anthropic-first"])
async def test_tool_round_trip_structured_output_and_an_image_in_both_dialects(
    sdks: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str,
) -> None:
    oa, an = sdks
    msgs: list[Any] = [{"role": "user", "content": "Accra"}]
    first = await oa.chat.completions.create(model=model, messages=msgs, tools=[TOOL])
    call = (first.choices[0].message.tool_calls or [])[0]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Accra"}
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "31 C"}]
    done = await oa.chat.completions.create(model=model, messages=msgs, tools=[TOOL])
    assert (done.choices[0].message.content or "").endswith("The tool said: 31 C")

    a_tools: Any = [{"name": "lookup", "input_schema": SCHEMA}]
    async with an.messages.stream(model=model, max_tokens=100, tools=a_tools,
                                  messages=[{"role": "user", "content": "Dakar"}]) as stream:
        msg = await stream.get_final_message()
    use = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and use.input == {"city": "Dakar"}
    after = await an.messages.create(model=model, max_tokens=100, tools=a_tools, messages=[
        {"role": "user", "content": "Dakar"}, {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "29 C"}]}])
    assert after.content[0].type == "text" and after.content[0].text.endswith("The tool said: 29 C")

    structured = await oa.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Nairobi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}})
    assert json.loads(structured.choices[0].message.content or "") == {"city": "Nairobi"}
    seen = await oa.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert (seen.choices[0].message.content or "").endswith("What is it? [image: image/png base64]")


async def test_streaming_and_every_documented_error(sdks: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic],
                                                   system: System) -> None:
    oa, an = sdks
    stream = await oa.chat.completions.create(model="default", messages=[{"role": "user", "content": "go"}],
                                              stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("You said: go")
    assert chunks[-1].usage is not None
    bad_key = openai.AsyncOpenAI(base_url=f"http://{system.http_addr}/v1", api_key="nope", max_retries=0)
    limited = anthropic.AsyncAnthropic(base_url=f"http://{system.http_addr}", api_key=LIMITED_KEY, max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await bad_key.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.NotFoundError):
            await oa.chat.completions.create(model="openai/gpt-0", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.chat.completions.create(model="default", messages=[{"role": "tool", "content": "x"}])
        assert bad.value.body["param"] == "messages[0].tool_call_id"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad_a:
            await an.messages.create(model="default", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                                     tool_choice={"type": "tool", "name": "missing"},
                                     tools=[{"name": "lookup", "input_schema": SCHEMA}])
        assert bad_a.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        for i in range(2):  # the limited tenant: 2 requests a minute
            await limited.messages.create(model="default", max_tokens=10,
                                          messages=[{"role": "user", "content": f"n{i}"}])
        with pytest.raises(anthropic.RateLimitError) as limit:
            await limited.messages.create(model="default", max_tokens=10, messages=[{"role": "user", "content": "n"}])
        assert int(limit.value.response.headers["retry-after"]) >= 1
        assert limit.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    finally:
        await bad_key.close()
        await limited.close()
