"""A lean OpenTelemetry tracer: the API's Tracer and Span, recorded cheaply on the request path,
turned into the SDK's ``ReadableSpan`` in the export thread.

Why not the SDK's own ``Span``: on this project's 2-core machine it costs about 25-35 µs to start
and end one (a lock per attribute write, a bounded attribute map built and copied, the span
copied again into a ``ReadableSpan`` when it ends, the processor chain walked twice), and a
request makes 5-10 spans across three processes on the same cores: 7-18 % of a zero-latency
request (docs/benchmarks.md). Here a span is a slotted object holding plain values; ending it
appends it to the export queue; this project's exporters (``kit.otlp``, the JSON lines) read it as
it is, and for any other (console, the SDK's in-memory one in tests) the exporting thread builds
the SDK's ``ReadableSpan``. The same care on the path every RPC takes, where in-process
measurement showed the public API's layers costing more than the spans: an RPC's server span is
made from the ids of the caller's ``traceparent`` (``LeanTracer.server_span``; no ``SpanContext``,
no context copied), a span of an unsampled trace is a ``LeanUnsampled`` (ints, nothing recorded),
and the current span is read and set on the API's context variable directly (``current_span``).

What is kept of the SDK: the samplers (``OTEL_TRACES_SAMPLER`` / ``_ARG``, decided for root spans
only: a child follows its parent, as the default parent-based samplers do), the resource, the
exporters and the propagator (W3C trace context). Not supported: span links, span limits (this
code sets few attributes, none unbounded) and ``record_exception`` stack traces (the exception's
type and message are recorded as the ``exception`` event with them).
"""

from __future__ import annotations

import abc
import contextvars
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
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

__all__ = ["LeanExporter", "LeanProvider", "LeanSpan", "LeanTracer", "LeanUnsampled", "RemoteParent", "attach_span",
           "current_span", "detach"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT

# The current span, read and set on the API's own context variable: every RPC reads it several
# times, and the public path (get_value -> get_current -> the runtime context -> the variable,
# an isinstance, a dict copied to set one key) was a good part of what tracing cost a hit. The
# names are the API's (stable since 1.0); if a release moves them, the public functions are used.
try:
    from opentelemetry.context import _RUNTIME_CONTEXT
    from opentelemetry.trace.propagation import _SPAN_KEY

    _VAR: contextvars.ContextVar[otel_context.Context] | None = _RUNTIME_CONTEXT._current_context  # type: ignore[attr-defined]
    if not isinstance(_VAR, contextvars.ContextVar):
        _VAR = None
except (ImportError, AttributeError):
    _VAR = None
_INVALID = trace.INVALID_SPAN


def current_span() -> trace.Span:
    """The current span (the API's ``get_current_span()``)."""
    if _VAR is None:
        return trace.get_current_span()
    return _VAR.get().get(_SPAN_KEY) or _INVALID  # type: ignore[return-value]


def attach_span(span: trace.Span, *, fresh: bool = False) -> object:
    """Make ``span`` current; a token for ``detach``. ``fresh``: in a context holding nothing else
    (an RPC's server span: what the caller meant to pass on came in its ``traceparent``)."""
    if _VAR is None:
        return otel_context.attach(trace.set_span_in_context(span, otel_context.Context() if fresh else None))
    if fresh:
        return _VAR.set(otel_context.Context({_SPAN_KEY: span}))
    return _VAR.set(otel_context.Context({**_VAR.get(), _SPAN_KEY: span}))


def detach(token: object) -> None:
    if _VAR is None:
        otel_context.detach(token)  # type: ignore[arg-type]
    else:
        _VAR.reset(token)  # type: ignore[arg-type]


class LeanSpan(trace.Span):
    """A recording (sampled) span: plain values until the export thread reads them. Its ids are
    ints; the API's ``SpanContext`` is made only when asked for (a child started under it reads
    the ints directly)."""

    __slots__ = ("_attributes", "_context", "_end", "_events", "_kind", "_parent", "_processor", "_start",
                 "_status", "_trace_state", "name", "span_id", "trace_id")

    def __init__(self, name: str, trace_id: int, span_id: int, trace_state: TraceState | None,
                 parent: LeanSpan | RemoteParent | SpanContext | None, kind: SpanKind, attributes: Attributes,
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
        parent = self._parent
        if isinstance(parent, LeanSpan | RemoteParent):
            parent = parent.get_span_context()
        return ReadableSpan(name=self.name, context=self.get_span_context(), parent=parent, resource=resource,
                            attributes=_frozen(self._attributes), events=events, kind=self._kind, status=self._status,
                            start_time=self._start, end_time=self._end, instrumentation_scope=scope)


class RemoteParent:
    """A caller's span, known by its ids from a ``traceparent`` (the API's ``SpanContext`` is made
    only for exporters that ask for it)."""

    __slots__ = ("sampled", "span_id", "trace_id")
    is_remote = True

    def __init__(self, trace_id: int, span_id: int, sampled: bool) -> None:
        self.trace_id, self.span_id, self.sampled = trace_id, span_id, sampled

    def get_span_context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, True, _SAMPLED if self.sampled else _NOT_SAMPLED)


class LeanUnsampled(trace.NonRecordingSpan):
    """A span of an unsampled trace: records nothing (the API's non-recording span), carries the
    trace on (its ids go into the ``traceparent`` of calls made under it and into log lines); its
    ``SpanContext`` is made only when asked for."""

    __slots__ = ("_trace_state", "span_id", "trace_id")

    def __init__(self, trace_id: int, span_id: int, trace_state: TraceState | None) -> None:
        self.trace_id, self.span_id, self._trace_state = trace_id, span_id, trace_state
        self._context: SpanContext | None = None  # type: ignore[assignment]

    def get_span_context(self) -> SpanContext:
        if self._context is None:
            self._context = SpanContext(self.trace_id, self.span_id, False, _NOT_SAMPLED, self._trace_state)
        return self._context


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

    def _sampled_root(self, trace_id: int, name: str, kind: SpanKind, attributes: Attributes,
                      context: otel_context.Context | None) -> bool:
        rule = self._root
        if rule is None:
            return self._sampler.should_sample(context, trace_id, name, kind, attributes).decision is \
                Decision.RECORD_AND_SAMPLE
        return rule if isinstance(rule, bool) else (trace_id & _ID_LIMIT) < rule

    def server_span(self, name: str, parent: tuple[int, int, bool] | None, kind: SpanKind,
                    attributes: Attributes) -> LeanSpan | LeanUnsampled:
        """An RPC's span: a child of the caller's (trace id, span id, sampled) from its
        ``traceparent``, or a new trace's root (sampled by the sampler)."""
        if parent is None:
            trace_id = self._ids(128)
            if not self._sampled_root(trace_id, name, kind, attributes, None):
                return LeanUnsampled(trace_id, self._ids(64), None)
            return LeanSpan(name, trace_id, self._ids(64), None, None, kind, attributes, self._processor)
        trace_id, span_id, sampled = parent
        if not sampled:
            return LeanUnsampled(trace_id, self._ids(64), None)
        return LeanSpan(name, trace_id, self._ids(64), None, RemoteParent(trace_id, span_id, True), kind, attributes,
                        self._processor)

    def start_span(self, name: str, context: otel_context.Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None, links: Any = None,
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace.Span:
        current = current_span() if context is None else trace.get_current_span(context)
        if isinstance(current, LeanSpan):  # the common case: a child of a sampled span of this process
            span = LeanSpan(name, current.trace_id, self._ids(64), current._trace_state, current, kind, attributes,
                            self._processor)
        elif isinstance(current, LeanUnsampled):
            return LeanUnsampled(current.trace_id, self._ids(64), current._trace_state)
        else:
            parent = current.get_span_context()
            if parent.is_valid:
                trace_id, sampled = parent.trace_id, parent.trace_flags.sampled
            else:
                trace_id = self._ids(128)
                sampled = self._sampled_root(trace_id, name, kind, attributes, context)
            state = parent.trace_state if parent.is_valid else None
            if not sampled:  # propagates the trace, records nothing
                return LeanUnsampled(trace_id, self._ids(64), state)
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
        self._token = attach_span(self.span)
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        if exc is not None and isinstance(span, LeanSpan) and not isinstance(exc, GeneratorExit):
            if self._record:
                span.record_exception(exc)
            if self._status:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        detach(self._token)
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
