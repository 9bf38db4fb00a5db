"""The domain request in Anthropic's Messages words, and Anthropic's answer back in ours.

What differs from OpenAI's shape, and where it is handled here:
- the system prompt is a top-level field, never a message;
- a tool's result is a ``tool_result`` block in a *user* turn (consecutive results and the user
  text after them share one turn), a call is a ``tool_use`` block with ``input`` as an object;
- images are ``image`` blocks with a base64 or URL source (a data: URL becomes base64);
- ``tool_choice`` "required" is ``{"type": "any"}``;
- ``response_format`` json_schema / json_object is Anthropic's structured output
  (``output_config.format``, a JSON schema; json_object asks for any object), answered as text;
- seed and the penalties have no Anthropic equivalent and are dropped (docs/api.md).
"""

from __future__ import annotations

import json
from typing import Any

from llmgw.domain import Message, Output, Part, Sampling, ToolCall, ToolCallDelta, schema_object

__all__ = ["DEFAULT_MAX_TOKENS", "StreamState", "params", "reply_tool_calls"]

# Anthropic requires max_tokens; used when neither the caller nor the route sets one.
DEFAULT_MAX_TOKENS = 1024


def _image(p: Part) -> dict[str, Any]:
    if p.url.startswith("data:") and ";base64," in p.url:
        head, data = p.url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": head, "data": data}}
    if p.url:
        return {"type": "image", "source": {"type": "url", "url": p.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": p.media_type, "data": p.data}}


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks += [{"type": "text", "text": p.text} if p.type == "text" else _image(p) for p in m.parts]
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in m.tool_calls]
    return blocks


def _turns(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "user" if m.role == "tool" else m.role
        plain = not (m.parts or m.tool_calls) and m.role != "tool"
        if turns and turns[-1]["role"] == role and (m.role == "tool" or isinstance(turns[-1]["content"], list)):
            last = turns[-1]
            if isinstance(last["content"], str):
                last["content"] = [{"type": "text", "text": last["content"]}]
            last["content"] += _blocks(m)
            continue
        # Plain text stays a string, as Anthropic's own examples send it.
        turns.append({"role": role, "content": m.content if plain else _blocks(m)})
    return turns


_CHOICE = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}


def _output(o: Output) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if o.tools:
        params["tools"] = [{"name": t.name, "input_schema": schema_object(t.parameters),
                            **({"description": t.description} if t.description else {}),
                            **({"strict": True} if t.strict else {})} for t in o.tools]
    c = o.tool_choice
    if c is not None:
        params["tool_choice"] = {"type": "tool", "name": c.name} if c.mode == "tool" else dict(_CHOICE[c.mode])
    f = o.response_format
    if f is not None and f.json:
        schema = schema_object(f.schema) if f.type == "json_schema" else {"type": "object"}
        params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return params


def params(model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, output: Output
           ) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": _turns(messages),
                           "max_tokens": sampling.max_tokens or DEFAULT_MAX_TOKENS, **_output(output)}
    full_system = "\n\n".join(s for s in [system, *(m.text for m in messages if m.role == "system")] if s)
    if full_system:
        out["system"] = full_system
    # The current Messages API takes no temperature/top_p (the SDK rejects them): they are
    # dropped here, and the cache keys on the caller's request, not on what a provider accepts.
    if sampling.stop:
        out["stop_sequences"] = list(sampling.stop)
    return out


def reply_tool_calls(content: Any) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(b.id, b.name, json.dumps(b.input, ensure_ascii=False))
                 for b in content if getattr(b, "type", "") == "tool_use")


class StreamState:
    """Anthropic numbers content blocks (text and tool_use alike); the domain numbers tool calls.
    Tracks which block is which call, across one stream."""

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}

    def deltas(self, event: Any) -> tuple[ToolCallDelta, ...]:
        if event.type == "content_block_start" and getattr(event.content_block, "type", "") == "tool_use":
            index = self._calls[event.index] = len(self._calls)
            block = event.content_block
            return (ToolCallDelta(index, block.id, block.name, ""),)
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            known = self._calls.get(event.index)
            if known is not None and event.delta.partial_json:
                return (ToolCallDelta(known, arguments=event.delta.partial_json),)
        return ()
