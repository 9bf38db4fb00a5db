"""The one mapping between protobuf messages and ``llmgw.domain`` values."""

from __future__ import annotations

from collections.abc import Iterable

from llmgw.cache.v1 import cache_pb2
from llmgw.domain import (
    Attempt,
    CacheEntry,
    Completion,
    KeyMaterial,
    Message,
    Sampling,
    Usage,
)
from llmgw.gateway.v1 import gateway_pb2

__all__ = [
    "attempts_to_pb",
    "entry_from_pb",
    "entry_to_pb",
    "key_from_pb",
    "key_to_pb",
    "messages_from_pb",
    "messages_to_pb",
    "sampling_from_pb",
    "sampling_to_pb",
    "usage_from_pb",
    "usage_to_pb",
]


def messages_from_pb(msgs: Iterable[gateway_pb2.Message]) -> tuple[Message, ...]:
    return tuple(Message(role=m.role, content=m.content) for m in msgs)


def messages_to_pb(msgs: Iterable[Message]) -> list[gateway_pb2.Message]:
    return [gateway_pb2.Message(role=m.role, content=m.content) for m in msgs]


def sampling_from_pb(s: gateway_pb2.Sampling) -> Sampling:
    return Sampling(
        temperature=s.temperature if s.HasField("temperature") else None,
        max_tokens=s.max_tokens if s.HasField("max_tokens") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        stop=tuple(s.stop),
    )


def sampling_to_pb(s: Sampling) -> gateway_pb2.Sampling:
    pb = gateway_pb2.Sampling(stop=list(s.stop))
    if s.temperature is not None:
        pb.temperature = s.temperature
    if s.max_tokens is not None:
        pb.max_tokens = s.max_tokens
    if s.top_p is not None:
        pb.top_p = s.top_p
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
    )


def entry_to_pb(e: CacheEntry) -> cache_pb2.Entry:
    return cache_pb2.Entry(
        text=e.text,
        provider=e.provider,
        model=e.model,
        usage=usage_to_pb(e.usage),
        chunks=list(e.chunks),
        stored_at=e.stored_at,
        finish_reason=e.finish_reason,
    )


def entry_from_pb(e: cache_pb2.Entry) -> CacheEntry:
    return CacheEntry(
        text=e.text,
        provider=e.provider,
        model=e.model,
        usage=usage_from_pb(e.usage),
        chunks=tuple(e.chunks),
        stored_at=e.stored_at,
        finish_reason=e.finish_reason,
    )
