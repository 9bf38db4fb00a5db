"""The domain request in OpenAI's Chat Completions words, and OpenAI's answer back in ours.

Pure functions over plain dicts and the SDK's response objects, so each mapping is tested
without a server. The Anthropic side is ``anthropic_wire``; a field added to the domain request is
translated once in each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgw.domain import Message, Output, Part, Sampling, ToolCall, ToolCallDelta, schema_object

__all__ = ["params", "reply_tool_calls", "stream_deltas"]


def _part(p: Part) -> dict[str, Any]:
    if p.type == "text":
        return {"type": "text", "text": p.text}
    # OpenAI takes images as a URL only: base64 travels as a data: URL.
    url = p.url or f"data:{p.media_type};base64,{p.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text}
    out: dict[str, Any] = {"role": m.role}
    if m.parts:
        out["content"] = ([{"type": "text", "text": m.content}] if m.content else []) + [_part(p) for p in m.parts]
    else:
        # An assistant turn that only called tools has no content (null, as OpenAI writes it).
        out["content"] = m.content if m.content or not m.tool_calls else None
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in m.tool_calls]
    return out


def _output(o: Output) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if o.tools:
        params["tools"] = [
            {"type": "function", "function": {
                "name": t.name, "parameters": schema_object(t.parameters),
                **({"description": t.description} if t.description else {}),
                **({"strict": True} if t.strict else {})}}
            for t in o.tools
        ]
    c = o.tool_choice
    if c is not None:
        params["tool_choice"] = ({"type": "function", "function": {"name": c.name}} if c.mode == "tool" else c.mode)
    f = o.response_format
    if f is not None and f.type == "json_schema":
        params["response_format"] = {"type": "json_schema", "json_schema": {
            "name": f.name or "response", "schema": schema_object(f.schema), **({"strict": True} if f.strict else {})}}
    elif f is not None:
        params["response_format"] = {"type": f.type}
    return params


def params(model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, output: Output
           ) -> dict[str, Any]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [_message(m) for m in messages]
    out: dict[str, Any] = {"model": model, "messages": msgs, **_output(output)}
    if sampling.max_tokens is not None:
        out["max_completion_tokens"] = sampling.max_tokens
    if sampling.stop:
        out["stop"] = list(sampling.stop)
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(sampling, name)
        if value is not None:
            out[name] = value
    return out


def reply_tool_calls(message: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    """The tool calls of a chat completion's message, as JSON (function calls only; custom tools
    are not ours)."""
    return tuple(ToolCall(c.get("id") or "", fn.get("name") or "", fn.get("arguments") or "{}")
                 for c in (message.get("tool_calls") or ()) if isinstance(fn := c.get("function"), dict))


def stream_deltas(delta: Any) -> tuple[ToolCallDelta, ...]:
    """The tool-call pieces of one streamed choice delta."""
    out = []
    for c in delta.tool_calls or ():
        fn = c.function
        name, arguments = ((fn.name or ""), (fn.arguments or "")) if fn else ("", "")
        out.append(ToolCallDelta(c.index, c.id or "", name, arguments))
    return tuple(out)
