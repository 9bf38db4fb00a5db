"""OpenTelemetry traces across the request path, with an in-memory exporter under the project's
own span queue: every service a real gRPC server (one process, one tracer provider), real Redis,
broker and fake providers. One request is one trace: the ingress's server span, the peers'
server spans joined through ``traceparent`` metadata, the cores' and Redis scripts' spans, each
provider attempt with GenAI attributes, and the work done after the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit import tracing
from llmgw.stack import Stack, start_stack
from tests.helpers import Client, read_topic

pytestmark = pytest.mark.integration

GATEWAY = "llmgw.gateway.v1.Gateway/Complete"


@pytest.fixture
async def traced(redis_url: str, topics_ready: str) -> AsyncIterator[tuple[Stack, InMemorySpanExporter, Client]]:
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", {}, exporter=exporter)
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready)
    client = Client(s.ingress.address)
    try:
        yield s, exporter, client
    finally:
        await client.close()
        await s.stop()
        tracing.shutdown()


async def _trace(stack: Stack, exporter: InMemorySpanExporter, root_name: str) -> list[ReadableSpan]:
    """The spans of the last trace whose root is ``root_name``, once the after-reply work is done."""
    await stack.ingress.service.servicers[0][0]._core.drain()
    assert tracing._provider is not None and tracing._provider.force_flush()
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == root_name and (s.parent is None or s.parent.is_remote)]
    assert roots, [s.name for s in spans]
    trace_id = roots[-1].context.trace_id
    return [s for s in spans if s.context.trace_id == trace_id]


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _parent_of(spans: list[ReadableSpan], child: ReadableSpan) -> ReadableSpan:
    assert child.parent is not None
    return next(s for s in spans if s.context.span_id == child.parent.span_id)


async def test_a_miss_is_one_trace_across_every_service(traced: tuple[Stack, InMemorySpanExporter, Client]) -> None:
    stack, exporter, client = traced
    req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="trace me")])
    await client.complete(req)
    spans = await _trace(stack, exporter, GATEWAY)
    (root,) = _named(spans, GATEWAY)
    assert root.kind == tracing.SpanKind.SERVER and root.attributes is not None
    assert root.attributes["llmgw.tenant"] == "acme" and root.attributes["llmgw.cache_hit"] is False
    assert root.attributes["gen_ai.provider.name"] == "openai" and root.attributes["gen_ai.usage.output_tokens"] > 0
    for peer in ("llmgw.limiter.v1.Limiter/Check", "llmgw.cache.v1.Cache/Lookup", "llmgw.router.v1.Router/Route"):
        called = [s for s in _named(spans, peer) if _parent_of(spans, s) is root]
        assert len(called) == 1, peer  # joined through traceparent metadata
    # The router asks the limiter for the provider's budget: that check is the router's child.
    (route,) = _named(spans, "llmgw.router.v1.Router/Route")
    assert [_parent_of(spans, s) for s in _named(spans, "llmgw.limiter.v1.Limiter/Check")].count(route) == 1
    # A core called by its own servicer has no span of its own (the server span is the
    # operation); its Redis scripts are the server span's children.
    assert not _named(spans, "limiter.check") and not _named(spans, "cache.lookup")
    scripts = {_parent_of(spans, s).name for s in _named(spans, "redis EVALSHA")}
    assert "llmgw.limiter.v1.Limiter/Check" in scripts
    (attempt,) = _named(spans, "chat gpt-4o-mini")
    assert attempt.kind == tracing.SpanKind.CLIENT and attempt.attributes is not None
    assert _parent_of(spans, attempt).name == "llmgw.router.v1.Router/Route"
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attempt.attributes["gen_ai.usage.input_tokens"] > 0
    (after,) = _named(spans, "ingress.settle_and_store")
    assert _parent_of(spans, after) is root  # after the reply, still in the request's trace
    (store,) = _named(spans, "llmgw.cache.v1.Cache/Store")
    assert _parent_of(spans, store) is after
    assert not any("trace me" in str(s.attributes) for s in spans)  # no prompt text in spans


async def test_a_colocated_ingress_traces_the_cores_it_runs(redis_url: str, topics_ready: str) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", {}, exporter=exporter)
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, colocate=("limiter", "cache"))
    client = Client(stack.ingress.address)
    try:
        await client.complete(gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="c")]))
        spans = await _trace(stack, exporter, GATEWAY)
    finally:
        await client.close()
        await stack.stop()
        tracing.shutdown()
    (root,) = _named(spans, GATEWAY)
    for core in ("limiter.check", "cache.lookup"):
        (span,) = _named(spans, core)
        assert _parent_of(spans, span) is root, core
        assert any(_parent_of(spans, s) is span for s in _named(spans, "redis EVALSHA")), core
    assert not [s for s in _named(spans, "llmgw.cache.v1.Cache/Lookup") if _parent_of(spans, s) is root]


async def test_a_hit_never_reaches_the_router(traced: tuple[Stack, InMemorySpanExporter, Client]) -> None:
    stack, exporter, client = traced
    req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="twice")])
    await client.complete(req)
    await stack.ingress.service.servicers[0][0]._core.drain()
    hit = await client.complete(req)
    assert hit.cache_hit
    spans = await _trace(stack, exporter, GATEWAY)
    (root,) = _named(spans, GATEWAY)
    assert root.attributes is not None and root.attributes["llmgw.cache_hit"] is True
    assert not _named(spans, "llmgw.router.v1.Router/Route") and not _named(spans, "chat gpt-4o-mini")


async def test_a_fallback_shows_each_attempt_and_the_decisions(
    traced: tuple[Stack, InMemorySpanExporter, Client],
) -> None:
    stack, exporter, client = traced
    stack.fake.state.faults["openai"].fail_next = 2
    stack.fake.state.faults["openai"].status = 503
    resp = await client.complete(gateway_pb2.CompleteRequest(
        messages=[gateway_pb2.Message(role="user", content="fall back")],
        cache_mode=gateway_pb2.CompleteRequest.BYPASS))
    assert resp.provider == "anthropic"
    spans = await _trace(stack, exporter, GATEWAY)
    failed = _named(spans, "chat gpt-4o-mini")
    assert len(failed) == 2 and all(s.status.status_code == tracing.StatusCode.ERROR for s in failed)
    assert all(s.attributes is not None and s.attributes["error.type"] == "retryable" for s in failed)
    (served,) = _named(spans, "chat claude-3-5-haiku-latest")
    assert served.status.status_code != tracing.StatusCode.ERROR
    (route,) = _named(spans, "llmgw.router.v1.Router/Route")
    names = [e.name for e in route.events]
    assert names.count("llmgw.retry") == 1 and names[-1] == "llmgw.fallback"


async def test_http_continues_the_callers_trace_into_the_events(
    traced: tuple[Stack, InMemorySpanExporter, Client], topics_ready: str,
) -> None:
    stack, exporter, _ = traced
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = openai.AsyncOpenAI(base_url=f"{stack.http}/v1", api_key="test-key", max_retries=0)
    try:
        stream = await client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "from my app's trace"}], stream=True,
            extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        rid = stream.headers["x-request-id"]
        chunks: list[Any] = [c async for c in stream.parse()]
        assert chunks
    finally:
        await client.close()
    spans = await _trace(stack, exporter, "POST /v1/chat/completions")
    (root,) = _named(spans, "POST /v1/chat/completions")
    assert format(root.context.trace_id, "032x") == trace_id and root.parent is not None
    assert root.attributes is not None and root.attributes["http.response.status_code"] == 200
    assert "rpc.grpc.status_code" not in root.attributes  # an HTTP span says HTTP's status
    assert format(root.parent.span_id, "016x") == parent
    (attempt,) = _named(spans, "chat gpt-4o-mini")
    assert [e.name for e in attempt.events] == ["gen_ai.first_token"]
    assert _named(spans, "llmgw.router.v1.Router/StreamRoute")
    request = events_pb2.RequestEvent.FromString((await read_topic(topics_ready, "llm.requests", [rid]))[rid])
    response = events_pb2.ResponseEvent.FromString((await read_topic(topics_ready, "llm.responses", [rid]))[rid])
    assert request.trace_id == response.trace_id == trace_id


async def test_a_full_export_queue_drops_and_counts_instead_of_waiting() -> None:
    class Stuck(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:  # a collector that never answers in time
            import time

            time.sleep(0.5)
            return super().export(spans)

    queue = tracing.BoundedSpanQueue(Stuck(), max_queue=5, delay_s=0.01, batch=1)
    before = tracing.DROPPED._value.get()
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", {}, exporter=exporter)
    try:
        assert tracing._provider is not None
        for i in range(50):
            with tracing._provider.get_tracer("t").start_as_current_span(f"s{i}") as s:
                queue.on_end(s)  # type: ignore[arg-type]
        assert tracing.DROPPED._value.get() - before >= 40  # most dropped at once, none waited for
    finally:
        tracing.shutdown()
        queue.shutdown()


async def test_input_text_reaches_a_span_only_for_a_tenant_that_opted_in_and_redacted(
    traced: tuple[Stack, InMemorySpanExporter, Client],
) -> None:
    from llmgw.kit.redact import RedactionConfig, Redactor

    stack, exporter, client = traced
    core = stack.ingress.service.servicers[0][0]._core
    core._redactor = Redactor(RedactionConfig.model_validate({"tenants": {"acme": {"trace_input": True}}}))
    await client.complete(gateway_pb2.CompleteRequest(
        messages=[gateway_pb2.Message(role="user", content="mail me at ann@example.com")]))
    (root,) = _named(await _trace(stack, exporter, GATEWAY), GATEWAY)
    assert root.attributes is not None and root.attributes["llmgw.input_text"] == "mail me at [EMAIL]"
    core._redactor = Redactor()
    await client.complete(gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="quiet")]))
    (root,) = _named(await _trace(stack, exporter, GATEWAY), GATEWAY)
    assert root.attributes is not None and "llmgw.input_text" not in root.attributes
