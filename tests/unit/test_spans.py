"""The lean tracer (kit/spans.py) hands the SDK's exporters the same spans the SDK's own tracer
would: names, parent links, kinds, attributes, events, status, resource; sampling is the SDK's."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from llmgw.kit import tracing


@pytest.fixture
def exporter():  # type: ignore[no-untyped-def]
    exp = InMemorySpanExporter()
    assert tracing.setup("unit", {"OTEL_SERVICE_NAME": "svc"}, exporter=exp)
    yield exp
    tracing.shutdown()


def _flush() -> None:
    assert tracing._provider is not None and tracing._provider.force_flush()


def test_a_span_tree_reaches_the_exporter_as_the_sdk_would_give_it(exporter: InMemorySpanExporter) -> None:
    t = tracing.tracer()
    with t.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1}) as root:
        root.set_attribute("b", "x")
        with t.start_as_current_span("child") as child:
            child.add_event("retry", {"attempt": 2})
        tracing.annotate({"c": 2.5, "skipped": None})
    _flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"root", "child"}
    r, c = spans["root"], spans["child"]
    assert r.parent is None and c.parent is not None and c.parent.span_id == r.context.span_id
    assert c.context.trace_id == r.context.trace_id and c.context.trace_flags.sampled
    assert r.kind is SpanKind.SERVER and dict(r.attributes or {}) == {"a": 1, "b": "x", "c": 2.5}
    assert [(e.name, dict(e.attributes or {})) for e in c.events] == [("retry", {"attempt": 2})]
    assert r.resource.attributes["service.name"] == "svc"
    assert r.start_time is not None and r.end_time is not None and r.start_time <= r.end_time


def test_an_error_in_a_current_span_is_recorded_and_raised(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.tracer().start_as_current_span("failing"):
        raise ValueError("bad input")
    _flush()
    (s,) = exporter.get_finished_spans()
    assert s.status.status_code is StatusCode.ERROR and "bad input" in (s.status.description or "")
    assert s.events[0].name == "exception" and s.events[0].attributes["exception.type"] == "ValueError"


def test_an_unsampled_parent_records_nothing_downstream(exporter: InMemorySpanExporter) -> None:
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    span = tracing.tracer().start_span("downstream", context=ctx)
    assert not span.is_recording() and span.get_span_context().trace_id == 0xABC
    span.end()
    _flush()
    assert exporter.get_finished_spans() == ()


def test_the_sdk_sampler_decides_root_spans() -> None:
    from opentelemetry.sdk.resources import Resource

    from llmgw.kit.spans import LeanProvider

    exp = InMemorySpanExporter()
    queue = tracing.BoundedSpanQueue(exp, delay_s=0.01)
    provider = LeanProvider(queue, Resource.create({}), ParentBased(ALWAYS_OFF))
    queue.readable = provider.readable
    with provider.get_tracer().start_as_current_span("root") as root:
        assert not root.is_recording()
        assert not provider.get_tracer().start_span("child").is_recording()
    assert provider.force_flush() and exp.get_finished_spans() == ()
    provider.shutdown()


@pytest.mark.parametrize(("pairs", "trace_id"), [
    ((("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),), 0x0af7651916cd43dd8448eb211c80319c),
    ((("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), ("tracestate", "k=v")),
     0x0af7651916cd43dd8448eb211c80319c),
    ((("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"),), 0),  # all zeros: invalid
    ((("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"),), 0),  # a field short
    ((("traceparent", "zz-not-a-header"),), 0),
    ((("x-request-id", "r1"),), 0),
])
def test_a_callers_traceparent_is_read_as_the_sdk_reads_it(pairs: tuple[tuple[str, str], ...], trace_id: int) -> None:
    ctx = trace.get_current_span(tracing.context_from(pairs)).get_span_context()
    assert ctx.trace_id == trace_id and (ctx.is_remote or not trace_id)
    if any(k == "tracestate" for k, _ in pairs):
        assert ctx.trace_state.get("k") == "v"


def test_the_traceparent_written_is_the_current_span(exporter: InMemorySpanExporter) -> None:
    with tracing.tracer().start_as_current_span("s") as s:
        (name, value), = tracing.carrier_pairs()
        c = s.get_span_context()
        assert (name, value) == ("traceparent", f"00-{c.trace_id:032x}-{c.span_id:016x}-01")
        back = trace.get_current_span(tracing.context_from([(name, value)])).get_span_context()
        assert (back.trace_id, back.span_id) == (c.trace_id, c.span_id)


_CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"


@pytest.mark.parametrize(("pairs", "sampled", "state"), [
    ((("traceparent", f"{_CALLER}-01"),), True, None),
    ((("TRACEPARENT", f" {_CALLER}-01 "),), True, None),  # header names and padding as HTTP allows
    ((("traceparent", f"{_CALLER}-00"),), False, None),
    ((("traceparent", f"{_CALLER}-01"), ("tracestate", "k=v")), True, "v"),  # the SDK's propagator's path
    ((("traceparent", f"01-{_CALLER[3:]}-01-extra"),), True, None),  # a later version: read by the SDK's rules
])
def test_a_server_span_joins_the_callers_trace_and_passes_it_on(exporter: InMemorySpanExporter,
                                                                 pairs: tuple[tuple[str, str], ...], sampled: bool,
                                                                 state: str | None) -> None:
    span, token = tracing.server_span("svc/Method", pairs, {"rpc.method": "Method"})
    ctx = span.get_span_context()
    assert ctx.trace_id == 0x0AF7651916CD43DD8448EB211C80319C and ctx.span_id != 0xB7AD6B7169203331
    assert span.is_recording() is sampled and ctx.trace_flags.sampled is sampled
    # What a call made under it sends on, and what a log line inside it carries.
    (_, value), *rest = tracing.carrier_pairs()
    assert value == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{'01' if sampled else '00'}"
    assert (rest[0][1] == "k=v") if state else rest == []
    assert tracing.current_ids() == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    with tracing.tracer().start_as_current_span("child") as child:
        assert child.is_recording() is sampled and child.get_span_context().trace_id == ctx.trace_id
    tracing.end_server_span(span, token, {"rpc.grpc.status_code": 0})
    assert tracing.current_ids() == ("", "")  # the context it replaced is back
    _flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    if not sampled:
        assert spans == {}
        return
    server = spans["svc/Method"]
    assert server.parent is not None and server.parent.span_id == 0xB7AD6B7169203331 and server.parent.is_remote
    assert spans["child"].parent is not None and spans["child"].parent.span_id == ctx.span_id
    assert dict(server.attributes or {}) == {"rpc.method": "Method", "rpc.grpc.status_code": 0}


@pytest.mark.parametrize("pairs", [(), (("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"),),
                                   (("traceparent", "garbage"),)])
def test_a_server_span_without_a_usable_caller_starts_a_trace(exporter: InMemorySpanExporter,
                                                              pairs: tuple[tuple[str, str], ...]) -> None:
    span, token = tracing.server_span("svc/Method", pairs, {})
    assert span.is_recording() and span.get_span_context().trace_id not in (0, 0x0AF7651916CD43DD8448EB211C80319C)
    tracing.end_server_span(span, token, {})
    _flush()
    (s,) = exporter.get_finished_spans()
    assert s.parent is None
