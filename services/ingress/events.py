"""Builds the llm.requests / llm.responses events (protobuf, key = request id)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from prometheus_client import Counter

from llmgw.convert import attempts_to_pb, messages_to_pb, output_fields, sampling_to_pb, tool_calls_to_pb, usage_to_pb
from llmgw.domain import Attempt, Message, Part, ToolCall, Usage
from llmgw.events.v1 import events_pb2
from llmgw.inputs import embedding_text, input_sha256
from llmgw.kit.kafka import RESPONSES_TOPIC
from llmgw.services.ingress.request import GatewayRequest

__all__ = ["MAX_EVENT_BYTES", "SCHEMA_VERSION", "request_event", "response_event"]

SCHEMA_VERSION = 1
TRUNCATED = Counter("llmgw_events_truncated_total", "Events whose fields were cut to fit the broker", ["topic"])
# Under Kafka's default max message size (1 MiB) with room for the record's overhead. A request is
# capped at MAX_REQUEST_BYTES before any event is built; an answer can still be larger: its text
# is then cut and the event names the field (``truncated_fields``).
MAX_EVENT_BYTES = 900 * 1024


def request_event(req: GatewayRequest, *, request_id: str, tenant: str, at: float, prompt_version: str, route: str,
                  stream: bool, redact: Callable[[str], str], raw_input: bool = True, trace_id: str = "",
                  key_id: str = "") -> bytes:
    """The admission event (``at``: wall clock of the admission); every free text passes
    ``redact`` first. Without ``raw_input`` the event carries a hash and the redacted embedding
    text instead of variables and messages."""
    messages = [_event_message(m, redact) for m in req.messages]
    variables = {k: redact(v) for k, v in req.variables.items()}
    extra: dict[str, Any] = {}
    if not raw_input:
        pairs = [(m.role, m.text) for m in req.messages]
        extra = {"input_sha256": input_sha256(req.variables, pairs),
                 "input_text": redact(embedding_text(req.variables, pairs))}
        messages, variables = [], {}
    return events_pb2.RequestEvent(
        schema_version=SCHEMA_VERSION,
        request_id=request_id,
        tenant=tenant,
        time=at,
        prompt=req.prompt,
        prompt_version=prompt_version,
        label=req.label,
        route=route,
        variables=variables,
        messages=messages_to_pb(messages),
        sampling=sampling_to_pb(req.sampling),
        metadata={k: redact(v) for k, v in req.metadata.items()},
        stream=stream,
        model=req.model,
        trace_id=trace_id,
        key_id=key_id,
        **output_fields(req.output),
        **extra,
    ).SerializeToString()


def _event_message(m: Message, redact: Callable[[str], str]) -> Message:
    """A message as an event carries it: free text redacted, an image's bytes replaced by their
    digest (an analyst needs to know an image was there, not the megabytes)."""
    parts = tuple(
        Part(p.type, redact(p.text)) if p.type == "text"
        else Part(p.type, url=_image_ref(p.url) if p.url else "", media_type=p.media_type,
                  data=f"sha256:{hashlib.sha256(p.data.encode()).hexdigest()}" if p.data else "")
        for p in m.parts)
    return replace(m, content=redact(m.content), parts=parts,
                   tool_calls=tuple(ToolCall(c.id, c.name, redact(c.arguments)) for c in m.tool_calls))


def _image_ref(url: str) -> str:
    if url.startswith("data:"):
        return f"data:sha256:{hashlib.sha256(url.encode()).hexdigest()}"
    return url


def response_event(
    *,
    request_id: str,
    tenant: str,
    at: float,
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
    finish_reason: str = "",
    tool_calls: tuple[ToolCall, ...] = (),
    redact: Callable[[str], str],
    trace_id: str = "",
    key_id: str = "",
    charged_nanousd: int = 0,
    cache_tier: str = "",
    cache_similarity: float = 0.0,
) -> bytes:
    event = events_pb2.ResponseEvent(
        schema_version=SCHEMA_VERSION,
        request_id=request_id,
        tenant=tenant,
        time=at,
        prompt=prompt,
        prompt_version=prompt_version,
        route=route,
        text=redact(text),
        provider=provider,
        model=model,
        status=status,
        error=redact(error),
        latency_ms=latency_ms,
        usage=usage_to_pb(usage or Usage()),
        cache_hit=cache_hit,
        attempts=attempts_to_pb(Attempt(a.provider, a.model, a.status, redact(a.error), a.latency_ms)
                                for a in attempts),
        finish_reason=finish_reason,
        tool_calls=tool_calls_to_pb(ToolCall(c.id, c.name, redact(c.arguments)) for c in tool_calls),
        trace_id=trace_id,
        key_id=key_id,
        charged_nanousd=charged_nanousd,
        cache_tier=cache_tier,
        cache_similarity=cache_similarity,
    )
    wire = event.SerializeToString()
    if len(wire) > MAX_EVENT_BYTES:
        over = len(wire) - MAX_EVENT_BYTES
        text_bytes = event.text.encode()
        event.text = text_bytes[: max(0, len(text_bytes) - over - 64)].decode(errors="ignore")
        event.truncated_fields.append("text")
        wire = event.SerializeToString()
        TRUNCATED.labels(RESPONSES_TOPIC).inc()
    return wire

