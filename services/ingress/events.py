"""Builds the llm.requests / llm.responses events (protobuf, key = request id)."""

from __future__ import annotations

import time

from llmgw.services.ingress.request import GatewayRequest

from llmgw.convert import attempts_to_pb, messages_to_pb, sampling_to_pb, usage_to_pb
from llmgw.domain import Attempt, Usage
from llmgw.events.v1 import events_pb2

__all__ = ["SCHEMA_VERSION", "request_event", "response_event"]

SCHEMA_VERSION = 1


def request_event(req: GatewayRequest, *, request_id: str, tenant: str, prompt_version: str, route: str,
                  stream: bool) -> bytes:
    return events_pb2.RequestEvent(
        schema_version=SCHEMA_VERSION,
        request_id=request_id,
        tenant=tenant,
        time=time.time(),
        prompt=req.prompt,
        prompt_version=prompt_version,
        label=req.label,
        route=route,
        variables=dict(req.variables),
        messages=messages_to_pb(req.messages),
        sampling=sampling_to_pb(req.sampling),
        metadata=dict(req.metadata),
        stream=stream,
    ).SerializeToString()


def response_event(
    *,
    request_id: str,
    tenant: str,
    prompt: str,
    prompt_version: str,
    route: str,
    status: str,
    latency_ms: float,
    text: str = "",
    provider: str = "",
    model: str = "",
    error: str = "",
    usage: Usage | None = None,
    cache_hit: bool = False,
    attempts: tuple[Attempt, ...] = (),
) -> bytes:
    return events_pb2.ResponseEvent(
        schema_version=SCHEMA_VERSION,
        request_id=request_id,
        tenant=tenant,
        time=time.time(),
        prompt=prompt,
        prompt_version=prompt_version,
        route=route,
        text=text,
        provider=provider,
        model=model,
        status=status,
        error=error,
        latency_ms=latency_ms,
        usage=usage_to_pb(usage or Usage()),
        cache_hit=cache_hit,
        attempts=attempts_to_pb(attempts),
    ).SerializeToString()

