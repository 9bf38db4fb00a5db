"""The Anthropic-compatible HTTP face, called by the real ``anthropic`` SDK as an unmodified app
would (``base_url`` and ``api_key`` changed). Both providers serve either dialect: the route
decides, the dialect is only the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest

from llmgw.stack import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def http(redis_url: str, topics_ready: str) -> AsyncIterator[tuple[Stack, anthropic.AsyncAnthropic]]:
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready)
    client = anthropic.AsyncAnthropic(base_url=s.http, api_key="test-key", max_retries=0)
    yield s, client
    await client.close()
    await s.stop()


@pytest.mark.parametrize(("model", "provider"), [("anthropic-first", "anthropic"), ("default", "openai")])
async def test_a_message_from_either_provider(http: tuple[Stack, anthropic.AsyncAnthropic], model: str,
                                             provider: str) -> None:
    _, client = http
    msg = await client.messages.create(model=model, max_tokens=100, system="Be brief.",
                                       messages=[{"role": "user", "content": "What is Redis?"}])
    assert msg.content[0].type == "text" and msg.content[0].text.endswith("You said: What is Redis?")
    assert msg.content[0].text.startswith(f"[{provider}:")
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    assert msg.model_extra and msg.model_extra["llmgw"]["provider"] == provider


async def test_streaming_as_anthropic_streams(http: tuple[Stack, anthropic.AsyncAnthropic]) -> None:
    _, client = http
    async with client.messages.stream(model="anthropic-first", max_tokens=100,
                                      messages=[{"role": "user", "content": [{"type": "text", "text": "stream it"}]}],
                                      extra_body={"llmgw": {"cache_mode": "bypass"}}) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "[anthropic:claude-3-5-haiku-latest] You said: stream it"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.content[0].text == text  # type: ignore[union-attr]


async def test_errors_have_anthropics_shape_and_status(http: tuple[Stack, anthropic.AsyncAnthropic]) -> None:
    stack, client = http
    msgs = [{"role": "user", "content": "hi"}]
    bad = anthropic.AsyncAnthropic(base_url=stack.http, api_key="nope", max_retries=0)
    try:
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.create(model="default", max_tokens=10, messages=msgs)  # type: ignore[arg-type]
    finally:
        await bad.close()
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.create(model="nope", max_tokens=10, messages=msgs)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError) as br:
        await client.messages.create(model="default", max_tokens=10, messages=msgs,  # type: ignore[arg-type]
                                     tools=[{"name": "f", "input_schema": {"type": "object"}}],
                                     thinking={"type": "enabled", "budget_tokens": 1024})
    assert br.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "thinking" in br.value.message and "not supported yet" in br.value.message
    with pytest.raises(anthropic.BadRequestError) as br:
        await client.messages.create(model="default", max_tokens=10, messages=msgs,  # type: ignore[arg-type]
                                     tools=[{"name": "bad name!", "input_schema": {"type": "object"}}])
    assert "tools[0].name" in br.value.message
    for provider in ("openai", "anthropic"):
        stack.fake.state.faults[provider].error_rate = 1.0
    with pytest.raises(anthropic.InternalServerError) as down:
        await client.messages.create(model="default", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert down.value.status_code == 503
