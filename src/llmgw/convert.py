"""The one mapping between protobuf messages and ``llmgw.domain`` values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmgw.cache.v1 import cache_pb2
from llmgw.domain import (
    Attempt,
    CacheEntry,
    Chunk,
    Completion,
    KeyMaterial,
    Message,
    Output,
    Part,
    ResponseFormat,
    Sampling,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from llmgw.gateway.v1 import gateway_pb2

__all__ = [
    "attempts_to_pb",
    "deltas_from_pb",
    "deltas_to_pb",
    "entry_from_pb",
    "entry_to_pb",
    "key_from_pb",
    "key_to_pb",
    "messages_from_pb",
    "messages_to_pb",
    "output_fields",
    "output_from_pb",
    "sampling_from_pb",
    "sampling_to_pb",
    "tool_calls_from_pb",
    "tool_calls_to_pb",
    "usage_from_pb",
    "usage_to_pb",
]


def tool_calls_from_pb(calls: Iterable[gateway_pb2.ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(c.id, c.name, c.arguments) for c in calls)


def tool_calls_to_pb(calls: Iterable[ToolCall]) -> list[gateway_pb2.ToolCall]:
    return [gateway_pb2.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]


def deltas_from_pb(deltas: Iterable[gateway_pb2.ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    return tuple(ToolCallDelta(d.index, d.id, d.name, d.arguments) for d in deltas)


def deltas_to_pb(deltas: Iterable[ToolCallDelta]) -> list[gateway_pb2.ToolCallDelta]:
    return [gateway_pb2.ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments=d.arguments) for d in deltas]


def messages_from_pb(msgs: Iterable[gateway_pb2.Message]) -> tuple[Message, ...]:
    return tuple(
        Message(role=m.role, content=m.content,
                parts=tuple(Part(p.type, p.text, p.url, p.media_type, p.data) for p in m.parts),
                tool_calls=tool_calls_from_pb(m.tool_calls), tool_call_id=m.tool_call_id)
        for m in msgs
    )


def messages_to_pb(msgs: Iterable[Message]) -> list[gateway_pb2.Message]:
    return [
        gateway_pb2.Message(
            role=m.role, content=m.content, tool_call_id=m.tool_call_id, tool_calls=tool_calls_to_pb(m.tool_calls),
            parts=[gateway_pb2.ContentPart(type=p.type, text=p.text, url=p.url, media_type=p.media_type, data=p.data)
                   for p in m.parts])
        for m in msgs
    ]


def output_from_pb(tools: Iterable[gateway_pb2.Tool], choice: gateway_pb2.ToolChoice,
                   fmt: gateway_pb2.ResponseFormat) -> Output:
    """From the three fields every message carrying an Output has (``tools``, ``tool_choice``,
    ``response_format``); an unset message field is None."""
    return Output(
        tools=tuple(Tool(t.name, t.description, t.parameters, t.strict) for t in tools),
        tool_choice=ToolChoice(choice.mode or "auto", choice.name) if choice.ByteSize() else None,
        response_format=(ResponseFormat(fmt.type or "text", fmt.name, fmt.schema, fmt.strict)
                         if fmt.ByteSize() else None),
    )


def output_fields(o: Output) -> dict[str, Any]:
    """The ``tools`` / ``tool_choice`` / ``response_format`` keyword arguments of a message."""
    out: dict[str, Any] = {"tools": [gateway_pb2.Tool(name=t.name, description=t.description,
                                                      parameters=t.parameters, strict=t.strict) for t in o.tools]}
    if o.tool_choice is not None:
        out["tool_choice"] = gateway_pb2.ToolChoice(mode=o.tool_choice.mode, name=o.tool_choice.name)
    if o.response_format is not None:
        f = o.response_format
        out["response_format"] = gateway_pb2.ResponseFormat(type=f.type, name=f.name, schema=f.schema, strict=f.strict)
    return out


_OPTIONAL_SAMPLING = ("temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty")


def sampling_from_pb(s: gateway_pb2.Sampling) -> Sampling:
    values = {name: getattr(s, name) if s.HasField(name) else None for name in _OPTIONAL_SAMPLING}
    return Sampling(stop=tuple(s.stop), **values)


def sampling_to_pb(s: Sampling) -> gateway_pb2.Sampling:
    pb = gateway_pb2.Sampling(stop=list(s.stop))
    for name in _OPTIONAL_SAMPLING:
        value = getattr(s, name)
        if value is not None:
            setattr(pb, name, value)
    return pb


def usage_from_pb(u: gateway_pb2.Usage) -> Usage:
    return Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cost_usd=u.cost_usd if u.HasField("cost_usd") else None,
    )


def usage_to_pb(u: Usage) -> gateway_pb2.Usage:
    pb = gateway_pb2.Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens)
    if u.cost_usd is not None:
        pb.cost_usd = u.cost_usd
    return pb


def attempts_from_pb(items: Iterable[gateway_pb2.Attempt]) -> tuple[Attempt, ...]:
    return tuple(
        Attempt(provider=a.provider, model=a.model, status=a.status, error=a.error, latency_ms=a.latency_ms)
        for a in items
    )


def attempts_to_pb(items: Iterable[Attempt]) -> list[gateway_pb2.Attempt]:
    return [
        gateway_pb2.Attempt(
            provider=a.provider, model=a.model, status=a.status, error=a.error, latency_ms=a.latency_ms
        )
        for a in items
    ]


def completion_fields(c: Completion) -> dict[str, object]:
    """The fields a RouteResponse / RouteChunk shares with a Completion."""
    return {
        "text": c.text,
        "provider": c.provider,
        "model": c.model,
        "usage": usage_to_pb(c.usage),
        "attempts": attempts_to_pb(c.attempts),
        "finish_reason": c.finish_reason,
        "tool_calls": tool_calls_to_pb(c.tool_calls),
    }


def key_to_pb(k: KeyMaterial) -> cache_pb2.KeyMaterial:
    return cache_pb2.KeyMaterial(
        tenant=k.tenant,
        prompt=k.prompt,
        prompt_version=k.prompt_version,
        variables=dict(k.variables),
        messages=messages_to_pb(k.messages),
        route=k.route,
        sampling=sampling_to_pb(k.sampling),
        targets=k.targets,
        **output_fields(k.output),
    )


def key_from_pb(k: cache_pb2.KeyMaterial) -> KeyMaterial:
    return KeyMaterial(
        tenant=k.tenant,
        route=k.route,
        prompt=k.prompt,
        prompt_version=k.prompt_version,
        variables=dict(k.variables),
        messages=messages_from_pb(k.messages),
        sampling=sampling_from_pb(k.sampling),
        targets=k.targets,
        output=output_from_pb(k.tools, k.tool_choice, k.response_format),
    )


def entry_to_pb(e: CacheEntry) -> cache_pb2.Entry:
    return cache_pb2.Entry(
        text=e.text,
        provider=e.provider,
        model=e.model,
        usage=usage_to_pb(e.usage),
        pieces=[cache_pb2.Piece(text=c.delta, tool_calls=deltas_to_pb(c.tool_calls)) for c in e.chunks],
        stored_at=e.stored_at,
        finish_reason=e.finish_reason,
        tool_calls=tool_calls_to_pb(e.tool_calls),
    )


def entry_from_pb(e: cache_pb2.Entry) -> CacheEntry:
    return CacheEntry(
        text=e.text,
        provider=e.provider,
        model=e.model,
        usage=usage_from_pb(e.usage),
        # Entries written before pieces existed carry text chunks only.
        chunks=tuple(Chunk(delta=p.text, tool_calls=deltas_from_pb(p.tool_calls)) for p in e.pieces)
        or tuple(Chunk(delta=c) for c in e.chunks),
        stored_at=e.stored_at,
        finish_reason=e.finish_reason,
        tool_calls=tool_calls_from_pb(e.tool_calls),
    )
