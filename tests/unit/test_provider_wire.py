"""The dialect translation, written once per provider: the domain request in OpenAI's and
Anthropic's words, and their answers (whole and streamed) back in ours. Each mapping both ways."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest

from llmgw.domain import (
    CacheEntry,
    Chunk,
    Message,
    Output,
    Part,
    ResponseFormat,
    Sampling,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    assemble_tool_calls,
)
from llmgw.services.router import anthropic_wire, openai_wire

WEATHER = Tool("get_weather", "Weather in a city",
               '{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}')
CONVERSATION = (
    Message("system", "Be brief."),
    Message("user", "", parts=(Part("text", "What is here, and the weather in Paris?"),
                               Part("image", media_type="image/png", data="iVBORw0KGgo="),
                               Part("image", url="https://example.com/cat.jpg"))),
    Message("assistant", "Let me look.", tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                                                     ToolCall("call_2", "get_weather", '{"city":"Lyon"}'))),
    Message("tool", "18 C", tool_call_id="call_1"),
    Message("tool", "20 C", tool_call_id="call_2"),
    Message("user", "Thanks. Which is warmer?"),
)


def test_openai_request_carries_parts_tool_calls_results_and_output() -> None:
    out = Output((WEATHER,), ToolChoice("tool", "get_weather"), ResponseFormat("json_schema", "w", '{"type":"object"}',
                                                                               True))
    p = openai_wire.params("gpt", "Sys", CONVERSATION, Sampling(seed=7, presence_penalty=0.5, max_tokens=9), out)
    msgs = p["messages"]
    assert [m["role"] for m in msgs] == ["system", "system", "user", "assistant", "tool", "tool", "user"]
    assert msgs[2]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert msgs[2]["content"][2]["image_url"]["url"] == "https://example.com/cat.jpg"
    assert msgs[3]["tool_calls"][1] == {"id": "call_2", "type": "function",
                                        "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}
    assert msgs[4] == {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}
    assert p["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert p["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert p["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"},
                                                                           "strict": True}}
    assert (p["seed"], p["presence_penalty"], p["max_completion_tokens"]) == (7, 0.5, 9)


def test_anthropic_request_moves_system_merges_results_and_sources_images() -> None:
    out = Output((WEATHER,), ToolChoice("required"), ResponseFormat("json_object"))
    p = anthropic_wire.params("claude", "Sys", CONVERSATION, Sampling(seed=7, presence_penalty=0.5), out)
    assert p["system"] == "Sys\n\nBe brief."
    turns = p["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    image, url = turns[0]["content"][1], turns[0]["content"][2]
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert url == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    assert turns[1]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Lyon"}},
    ]
    # Both results, then the user's next question, in the one user turn after the calls.
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert turns[2]["content"][1] == {"type": "tool_result", "tool_use_id": "call_2", "content": "20 C"}
    assert p["tools"] == [{"name": "get_weather", "description": "Weather in a city",
                           "input_schema": json.loads(WEATHER.parameters)}]
    assert p["tool_choice"] == {"type": "any"}
    assert p["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert "seed" not in p and "presence_penalty" not in p  # no Anthropic equivalent: dropped


def test_anthropic_data_url_images_become_base64_and_plain_text_stays_a_string() -> None:
    msgs = (Message("user", "", parts=(Part("image", url="data:image/jpeg;base64,/9j/"), Part("text", "what?"))),
            Message("assistant", "A cat."), Message("user", "Sure?"))
    turns = anthropic_wire.params("claude", "", msgs, Sampling(), Output())["messages"]
    assert turns[0]["content"][0]["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}
    assert turns[1] == {"role": "assistant", "content": "A cat."} and turns[2]["content"] == "Sure?"


@pytest.mark.parametrize(("choice", "openai", "anthropic"), [
    (ToolChoice("auto"), "auto", {"type": "auto"}),
    (ToolChoice("none"), "none", {"type": "none"}),
    (ToolChoice("required"), "required", {"type": "any"}),
])
def test_tool_choice_both_ways(choice: ToolChoice, openai: object, anthropic: object) -> None:
    out = Output((WEATHER,), choice)
    msgs = (Message("user", "hi"),)
    assert openai_wire.params("m", "", msgs, Sampling(), out)["tool_choice"] == openai
    assert anthropic_wire.params("m", "", msgs, Sampling(), out)["tool_choice"] == anthropic


def test_openai_answers_back_in_our_words() -> None:
    message = {"tool_calls": [{"id": "call_9", "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
                              {"id": "ct_1", "type": "custom", "custom": {"name": "grammar", "input": "x"}}]}
    assert openai_wire.reply_tool_calls(message) == (ToolCall("call_9", "get_weather", '{"city":"Oslo"}'),)
    assert openai_wire.reply_tool_calls({"content": "hi", "tool_calls": None}) == ()
    first = NS(tool_calls=[NS(index=0, id="call_9", function=NS(name="get_weather", arguments=""))])
    more = NS(tool_calls=[NS(index=0, id=None, function=NS(name=None, arguments='{"ci'))])
    assert openai_wire.stream_deltas(first) == (ToolCallDelta(0, "call_9", "get_weather", ""),)
    assert openai_wire.stream_deltas(more) == (ToolCallDelta(0, "", "", '{"ci'),)


def test_anthropic_stream_numbers_tool_calls_not_blocks() -> None:
    state = anthropic_wire.StreamState()
    events = [
        NS(type="content_block_start", index=0, content_block=NS(type="text")),
        NS(type="content_block_delta", index=0, delta=NS(type="text_delta", text="Hi")),
        NS(type="content_block_start", index=1, content_block=NS(type="tool_use", id="toolu_1", name="a")),
        NS(type="content_block_delta", index=1, delta=NS(type="input_json_delta", partial_json='{"x":')),
        NS(type="content_block_delta", index=1, delta=NS(type="input_json_delta", partial_json="1}")),
        NS(type="content_block_start", index=2, content_block=NS(type="tool_use", id="toolu_2", name="b")),
    ]
    deltas = [d for e in events for d in state.deltas(e)]
    assert [d.index for d in deltas] == [0, 0, 0, 1]
    assert assemble_tool_calls(deltas) == (ToolCall("toolu_1", "a", '{"x":1}'), ToolCall("toolu_2", "b", "{}"))
    content = [NS(type="text", text="Hi"), NS(type="tool_use", id="toolu_1", name="a", input={"x": 1})]
    assert anthropic_wire.reply_tool_calls(content) == (ToolCall("toolu_1", "a", '{"x": 1}'),)


def test_a_plain_cache_entry_replays_its_text_and_each_call_whole() -> None:
    entry = CacheEntry(text="", provider="p", model="m", tool_calls=(ToolCall("c1", "a", '{"x":1}'),))
    assert entry.replay() == (Chunk(tool_calls=(ToolCallDelta(0, "c1", "a", '{"x":1}'),)),)
    assert CacheEntry(text="hi", provider="p", model="m").replay() == (Chunk(delta="hi"),)
