"""The hand-written OTLP encoder (kit/otlp.py) writes what the SDK's own encoder writes, and its
exporter delivers it to a real HTTP server with the standard settings (headers, gzip, retries)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from llmgw.kit import tracing
from llmgw.kit.otlp import OtlpEncoder, OtlpHttpExporter, otlp_settings
from llmgw.kit.spans import LeanExporter, LeanProvider, LeanSpan
from tests.helpers import OtlpReceiver, otlp_receiver


class Kept(LeanExporter):
    def __init__(self) -> None:
        self.spans: list[LeanSpan] = []

    def export_lean(self, spans: Sequence[LeanSpan]) -> bool:
        self.spans += spans
        return True

    def shutdown(self) -> None:
        pass


def _spans() -> tuple[LeanProvider, list[LeanSpan]]:
    """A span of every shape the services make: a remote parent with a trace state, children,
    events, an error, each attribute type."""
    kept = Kept()
    queue = tracing.BoundedSpanQueue(kept, delay_s=0.01)
    provider = LeanProvider(queue, Resource.create({"service.name": "llmgw-test"}))
    t = provider.get_tracer()
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "x1")]))
    with t.start_as_current_span("llm.request", context=trace.set_span_in_context(NonRecordingSpan(remote)),
                                 kind=SpanKind.SERVER, attributes={"llmgw.route": "default", "n": 3}) as root:
        root.set_attributes({"neg": -7, "ratio": 0.25, "ok": True, "off": False, "tags": ["a", "b"],
                             "sizes": [1, 2, 3], "unicode": "żółw ✓", "big": 2**62})
        with t.start_as_current_span("cache.lookup", kind=SpanKind.CLIENT) as child:
            child.add_event("retry", {"attempt": 2, "reason": "timeout"})
            child.add_event("plain")
        with pytest.raises(ValueError), t.start_as_current_span("provider.attempt"):
            raise ValueError("bad answer")
        leaf = t.start_span("redis.script", kind=SpanKind.CLIENT)
        leaf.set_status(Status(StatusCode.OK))
        leaf.end()
    # An RPC's server span, its caller known by the ids of its traceparent.
    t.server_span("llmgw.limiter.v1.Limiter/Check", (remote.trace_id, remote.span_id, True), SpanKind.SERVER,
                  {"rpc.system": "grpc"}).end()
    assert provider.force_flush()
    provider.shutdown()
    assert len(kept.spans) == 5
    return provider, kept.spans


def test_the_encoder_writes_what_the_sdk_encoder_writes() -> None:
    provider, spans = _spans()
    ours = ExportTraceServiceRequest.FromString(OtlpEncoder(provider.resource.attributes, "llmgw").request(spans))
    theirs = encode_spans(provider.readable(spans))
    assert ours == theirs
    decoded = ours.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in decoded] == ["cache.lookup", "provider.attempt", "redis.script", "llm.request",
                                         "llmgw.limiter.v1.Limiter/Check"]
    assert decoded[3].trace_state == "vendor=x1" and decoded[3].flags == 0x300  # remote parent
    assert decoded[4].parent_span_id == (0xB7AD6B7169203331).to_bytes(8, "big") and decoded[4].flags == 0x300


def test_attributes_and_names_seen_before_encode_the_same() -> None:
    provider, spans = _spans()
    encoder = OtlpEncoder(provider.resource.attributes, "llmgw")
    first = encoder.request(spans)
    assert encoder.request(spans) == first  # the second time from the memo
    # Equal values of different types are different attributes (1 == 1.0 == True in Python).
    for value in (1, 1.0, True, 1, True):
        spans[0]._attributes = {"x": value}
        (kv,) = ExportTraceServiceRequest.FromString(encoder.request(spans[:1])).resource_spans[0].scope_spans[0].spans[
            0].attributes
        assert kv.value.WhichOneof("value") == {int: "int_value", float: "double_value", bool: "bool_value"}[
            type(value)], value


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


def test_a_service_sends_its_spans_to_the_collector_with_the_standard_settings(collector: OtlpReceiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret,x-team=ops",
           "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip", "OTEL_SERVICE_NAME": "svc"}
    assert tracing.setup("unit", env)
    try:
        with tracing.tracer().start_as_current_span("root", attributes={"a": "b"}), \
                tracing.tracer().start_as_current_span("child"):
            pass
        assert tracing._provider is not None and tracing._provider.force_flush()
    finally:
        tracing.shutdown()
    ((headers, _),) = collector.received
    assert headers["content-type"] == "application/x-protobuf" and headers["content-encoding"] == "gzip"
    assert headers["api-key"] == "s=cret" and headers["x-team"] == "ops"
    (svc, child), (_, root) = collector.spans()
    assert svc == "svc" and (child.name, root.name) == ("child", "root") and child.parent_span_id == root.span_id


def test_a_collector_busy_then_back_gets_the_batch_once_and_a_refusal_is_not_retried(
        collector: OtlpReceiver) -> None:
    _, spans = _spans()
    exporter = OtlpHttpExporter({"service.name": "svc"}, {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.url}/v1/traces", "OTEL_EXPORTER_OTLP_TIMEOUT": "5"})
    collector.replies = [503, 200]
    assert exporter.export_lean(spans)
    assert len(collector.received) == 2  # the 503, then the same batch taken
    assert collector.received[0][1] == collector.received[1][1]
    collector.replies = [400]
    assert not exporter.export_lean(spans)  # a malformed-request refusal: retrying can't help
    assert len(collector.received) == 3
    exporter.shutdown()


def test_a_collector_that_is_down_fails_the_batch_within_the_timeout() -> None:
    exporter = OtlpHttpExporter({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                     "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    _, spans = _spans()
    assert not exporter.export_lean(spans)
    exporter.shutdown()


def test_settings_follow_the_standard_variables() -> None:
    assert otlp_settings({})["endpoint"] == "http://localhost:4318/v1/traces"
    s = otlp_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318/", "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
                       "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2.5", "OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"})
    assert s["endpoint"] == "https://c:4318/v1/traces" and s["timeout"] == 2.5 and not s["gzip"]
    with pytest.raises(ValueError, match="ENDPOINT"):
        OtlpHttpExporter({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"})
