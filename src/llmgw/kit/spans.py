"""A lean OpenTelemetry tracer: the API's Tracer and Span, recorded cheaply on the request path,
turned into the SDK's ``ReadableSpan`` in the export thread.

Why not the SDK's own ``Span``: on this project's 2-core machine it costs about 25-35 µs to start
and end one (a lock per attribute write, a bounded attribute map built and copied, the span
copied again into a ``ReadableSpan`` when it ends, the processor chain walked twice), and a
request makes 5-10 spans across three processes on the same cores: 7-18 % of a zero-latency
request (docs/benchmarks.md). Here a span is a slotted object holding plain values; ending it
appends it to the export queue; everything the SDK needs (resource, scope, events, status,
``ReadableSpan``) is built by the exporting thread, which the exporters (OTLP, console, our JSON
lines, the SDK's in-memory one in tests) consume unchanged.

What is kept of the SDK: the samplers (``OTEL_TRACES_SAMPLER`` / ``_ARG``, decided for root spans
only: a child follows its parent, as the default parent-based samplers do), the resource, the
exporters and the propagator (W3C trace context). Not supported: span links, span limits (this
code sets few attributes, none unbounded) and ``record_exception`` stack traces (the exception's
type and message are recorded as the ``exception`` event with them).
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
    _get_from_env_or_default,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

__all__ = ["LeanExporter", "LeanProvider", "LeanSpan", "LeanTracer"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT


class LeanSpan(trace.Span):
    """A recording (sampled) span: plain values until the export thread reads them. Its ids are
    ints; the API's ``SpanContext`` is made only when asked for (a child started under it reads
    the ints directly)."""

    __slots__ = ("_attributes", "_context", "_end", "_events", "_kind", "_parent", "_processor", "_start",
                 "_status", "_trace_state", "name", "span_id", "trace_id")

    def __init__(self, name: str, trace_id: int, span_id: int, trace_state: TraceState | None,
                 parent: LeanSpan | SpanContext | None, kind: SpanKind, attributes: Attributes,
                 processor: SpanProcessor) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self._trace_state = trace_state
        self._parent = parent
        self._context: SpanContext | None = None
        self._kind = kind
        self._attributes: dict[str, Any] = dict(attributes) if attributes else {}
        self._events: list[tuple[str, dict[str, Any], int]] | None = None
        self._status = _UNSET
        self._start = time.time_ns()
        self._end = 0
        self._processor = processor

    def get_span_context(self) -> SpanContext:
        if self._context is None:
            self._context = SpanContext(self.trace_id, self.span_id, False, _SAMPLED, self._trace_state)
        return self._context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._end:
            self._attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._end:
            self._attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self._end:
            return
        if self._events is None:
            self._events = []
        self._events.append((name, dict(attributes) if attributes else {}, timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        self.name = name

    def is_recording(self) -> bool:
        return not self._end

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if self._status.status_code is StatusCode.OK:
            return  # OK is final (the API's rule)
        self._status = status

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        self.add_event("exception", {"exception.type": type(exception).__name__,
                                     "exception.message": str(exception), **dict(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end:
            return
        self._end = end_time or time.time_ns()
        self._processor.on_end(self)  # type: ignore[arg-type]  # read as LeanSpan by _readable

    def readable(self, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
        """The SDK's view of this span (in the export thread)."""
        events = [Event(n, _frozen(a), t) for n, a, t in self._events] if self._events else ()
        parent = self._parent.get_span_context() if isinstance(self._parent, LeanSpan) else self._parent
        return ReadableSpan(name=self.name, context=self.get_span_context(), parent=parent, resource=resource,
                            attributes=_frozen(self._attributes), events=events, kind=self._kind, status=self._status,
                            start_time=self._start, end_time=self._end, instrumentation_scope=scope)


def _frozen(attributes: dict[str, Any]) -> dict[str, Any]:
    """Sequences as tuples, as the SDK's attribute map keeps them (exporters and readers expect it)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}


def _root_rule(sampler: Sampler) -> bool | int | None:
    """The root decision of the samplers the ``OTEL_TRACES_SAMPLER`` variable makes, read once:
    True / False (always / never), an int (a trace-id ratio's bound), None (ask the sampler)."""
    root = sampler._root if isinstance(sampler, ParentBased) else sampler
    if isinstance(root, StaticSampler):
        return root._decision is Decision.RECORD_AND_SAMPLE
    if isinstance(root, TraceIdRatioBased):
        return root.bound
    return None


class LeanTracer(trace.Tracer):
    def __init__(self, processor: SpanProcessor, sampler: Sampler) -> None:
        self._processor = processor
        self._sampler = sampler
        # The env samplers' root decision without a call per request (a child follows its parent).
        self._root = _root_rule(sampler)
        # Python's generator, as the SDK's RandomIdGenerator (one call is atomic under the GIL).
        self._bits = random.getrandbits

    def _ids(self, bits: int) -> int:
        return self._bits(bits) or 1

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None, links: Any = None,
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace.Span:
        current = trace.get_current_span(context)
        if type(current) is LeanSpan:  # the common case: a child of a sampled span of this process
            span = LeanSpan(name, current.trace_id, self._ids(64), current._trace_state, current, kind, attributes,
                            self._processor)
        else:
            parent = current.get_span_context()
            if parent.is_valid:
                trace_id, sampled = parent.trace_id, parent.trace_flags.sampled
            else:
                trace_id = self._ids(128)
                rule = self._root
                if rule is None:
                    decision = self._sampler.should_sample(context, trace_id, name, kind, attributes).decision
                    sampled = decision is Decision.RECORD_AND_SAMPLE
                else:
                    sampled = rule if isinstance(rule, bool) else (trace_id & _ID_LIMIT) < rule
            state = parent.trace_state if parent.is_valid else None
            if not sampled:  # propagates the trace, records nothing
                return NonRecordingSpan(SpanContext(trace_id, self._ids(64), False, _NOT_SAMPLED, state))
            span = LeanSpan(name, trace_id, self._ids(64), state, parent if parent.is_valid else None, kind,
                            attributes, self._processor)
        if start_time:
            span._start = start_time
        return span

    def start_as_current_span(  # type: ignore[override]  # a plain context manager: cheaper
            self, name: str, context: otel_context.Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
            attributes: Attributes = None, links: Any = None, start_time: int | None = None,
            record_exception: bool = True, set_status_on_exception: bool = True,
            end_on_exit: bool = True) -> _Current:
        return _Current(self.start_span(name, context, kind, attributes, links, start_time), record_exception,
                        set_status_on_exception, end_on_exit)


class _Current:
    """The span, current for the ``with`` block, ended after it (errors recorded on it)."""

    __slots__ = ("_end", "_record", "_status", "_token", "span")

    def __init__(self, span: trace.Span, record: bool, status: bool, end: bool) -> None:
        self.span, self._record, self._status, self._end = span, record, status, end
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        if exc is not None and isinstance(span, LeanSpan) and not isinstance(exc, GeneratorExit):
            if self._record:
                span.record_exception(exc)
            if self._status:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        otel_context.detach(self._token)  # type: ignore[arg-type]
        if self._end:
            span.end()


class LeanExporter(abc.ABC):
    """An exporter that reads lean spans as they are (no ``ReadableSpan`` built): this project's
    OTLP and JSON-lines exporters. The span queue hands any other (the SDK's) ``ReadableSpan``s."""

    @abc.abstractmethod
    def export_lean(self, spans: Sequence[LeanSpan]) -> bool:
        """Export a batch; whether it was taken."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release what the exporter holds (the queue calls it once, after its last batch)."""


class LeanProvider:
    """What ``kit.tracing`` keeps of a TracerProvider: one tracer, one processor, flush, shutdown."""

    def __init__(self, processor: SpanProcessor, resource: Resource, sampler: Sampler | None = None) -> None:
        self.resource = resource
        self.scope = InstrumentationScope("llmgw")
        self._processor = processor
        self._tracer = LeanTracer(processor, sampler or _get_from_env_or_default())

    def get_tracer(self, *_: Any, **__: Any) -> LeanTracer:
        return self._tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._processor.shutdown()

    def readable(self, spans: Sequence[LeanSpan]) -> list[ReadableSpan]:
        return [s.readable(self.resource, self.scope) for s in spans]
