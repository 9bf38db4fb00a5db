"""OpenTelemetry traces for every service: off by default, on with the standard ``OTEL_*``
variables, never on the request path's critical work.

Turned on by (any of):
- ``OTEL_TRACES_EXPORTER=otlp`` or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP/protobuf, ``kit.otlp``, which reads the
  rest of the standard OTLP settings: headers, timeout, compression, TLS);
- ``OTEL_TRACES_EXPORTER=console`` (JSON spans on stdout);
- ``LLMGW_TRACES_DIR=<dir>`` (ours, for development and ``llmgw up --otel``): one JSON-lines file
  per service, ``<dir>/<service>.jsonl``.
``OTEL_TRACES_EXPORTER=none`` (or ``OTEL_SDK_DISABLED=true``) keeps it off whatever else is set.
Sampling is the SDK's, from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default:
parent-based, always on). The service name is ``OTEL_SERVICE_NAME``, else the service's own.

Spans are recorded by ``kit.spans`` (the API's Tracer and Span, kept lean on the request path; our
exporters read them as they are, the SDK's get a ``ReadableSpan`` built in the export thread) and
leave through ``BoundedSpanQueue``: a
bounded queue (``OTEL_BSP_MAX_QUEUE_SIZE``, 2048)
drained by one thread every ``OTEL_BSP_SCHEDULE_DELAY`` ms (200) in batches of
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (128): small and frequent, because encoding a batch holds the
GIL that the service's event loop needs. Ending a span appends to it and returns: a slow or dead
collector fills the queue, and what no longer fits is dropped and counted
(``llmgw_trace_spans_dropped_total``), never waited for.

Context travels as W3C ``traceparent`` / ``tracestate``: in gRPC metadata between services
(``inject`` in the clients, ``server_span`` in the server interceptor) and in HTTP headers on the
ingress's HTTP face.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

from llmgw.kit.spans import (
    LeanExporter,
    LeanProvider,
    LeanSpan,
    LeanTracer,
    LeanUnsampled,
    attach_span,
    current_span,
    detach,
)

__all__ = [
    "BoundedSpanQueue",
    "JsonLinesExporter",
    "SpanKind",
    "Status",
    "StatusCode",
    "after",
    "annotate",
    "carrier_pairs",
    "context_from",
    "current_context",
    "current_ids",
    "enabled",
    "end_server_span",
    "event",
    "finish",
    "server_span",
    "setup",
    "shutdown",
    "trace_id_of",
    "traced",
    "tracer",
]

P = ParamSpec("P")
R = TypeVar("R")
DROPPED = Counter("llmgw_trace_spans_dropped_total", "Spans dropped because the export queue was full")
EXPORTED = Counter("llmgw_trace_spans_exported_total", "Spans handed to the exporter")

# W3C trace context only (traceparent, tracestate): the default composite propagator also
# parses baggage, which nothing here reads, on every hop.
_PROPAGATOR = TraceContextTextMapPropagator()
_provider: LeanProvider | None = None
_SERVER = SpanKind.SERVER
_tracer: Tracer = trace.NoOpTracer()
_lean: LeanTracer | None = None  # the same tracer, typed for its own entry points


def enabled() -> bool:
    """Whether traces are on in this process (checked first on hot paths: off costs nothing)."""
    return _provider is not None


def tracer() -> Tracer:
    return _tracer


def _exporter(service: str, environ: Mapping[str, str], resource: Resource) -> SpanExporter | LeanExporter | None:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    kind = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if kind == "none":
        return None
    directory = environ.get("LLMGW_TRACES_DIR")
    if directory:
        return JsonLinesExporter(Path(directory) / f"{service}.jsonl", resource)
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp" or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from llmgw.kit.otlp import OtlpHttpExporter

        return OtlpHttpExporter(resource.attributes, environ)
    return None


def setup(service: str, environ: Mapping[str, str] | None = None, *,
          exporter: SpanExporter | LeanExporter | None = None) -> bool:
    """Turn traces on for this process when the environment asks for it (or an ``exporter`` is
    given: tests pass an in-memory one). Returns whether traces are on. Called once per process,
    by the service's entry point, never at import."""
    global _provider, _tracer, _lean
    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"llmgw-{service}"})
    chosen = exporter or _exporter(service, env, resource)
    if chosen is None:
        return False
    queue = BoundedSpanQueue(
        chosen, max_queue=int(env.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048")),
        delay_s=int(env.get("OTEL_BSP_SCHEDULE_DELAY", "200")) / 1000,
        batch=int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "128")))
    provider = LeanProvider(queue, resource)
    queue.readable = provider.readable
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    _tracer = _lean = provider.get_tracer("llmgw")
    return True


def shutdown() -> None:
    """Export what is queued and turn traces off (graceful stop; tests)."""
    global _provider, _tracer, _lean
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer, _lean = None, trace.NoOpTracer(), None


def carrier_pairs() -> tuple[tuple[str, str], ...]:
    """``traceparent`` (and ``tracestate``) of the current span, as gRPC metadata pairs. Written
    here, not by the propagator: this runs on every hop, and the header is one format string."""
    if _provider is None:
        return ()
    span = current_span()
    if isinstance(span, LeanSpan | LeanUnsampled) and not span._trace_state:
        # Ours: the ids are ints, no SpanContext to make.
        flags = "01" if type(span) is LeanSpan else "00"
        return (("traceparent", f"00-{span.trace_id:032x}-{span.span_id:016x}-{flags}"),)
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ()
    parent = ("traceparent", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}")
    return (parent, ("tracestate", ctx.trace_state.to_header())) if ctx.trace_state else (parent,)


# Version 00 of W3C trace context, the only one written today; anything else (a later version,
# extra fields, odd case) goes through the SDK's propagator, which knows the rules for those.
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _caller(pairs: Iterable[tuple[str, Any]]) -> tuple[str | None, str | None]:
    """The ``traceparent`` and ``tracestate`` a caller sent (metadata or HTTP headers)."""
    parent = state = None
    for k, v in pairs:
        if isinstance(v, str):
            name = k.lower()
            if name == "traceparent":
                parent = v
            elif name == "tracestate":
                state = v
    return parent, state


def _ids_00(parent: str) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) of a version-00 ``traceparent``; None when it is not one (the
    SDK's propagator reads the rest) or has all-zero ids (invalid: the request starts a trace)."""
    m = _TRACEPARENT_00.fullmatch(parent.strip())
    if m is None:
        raise ValueError(parent)
    trace_id, span_id = int(m[1], 16), int(m[2], 16)
    return (trace_id, span_id, bool(int(m[3], 16) & 1)) if trace_id and span_id else None


def context_from(pairs: Iterable[tuple[str, Any]]) -> otel_context.Context:
    """The remote parent a caller sent (metadata or HTTP headers), as an OpenTelemetry context."""
    parent, state = _caller(pairs)
    if parent is None:
        return otel_context.Context()
    try:
        if state is not None:
            raise ValueError(state)
        ids = _ids_00(parent)
    except ValueError:  # another version, odd case, a tracestate: the SDK's propagator knows the rules
        carrier = {"traceparent": parent, **({"tracestate": state} if state is not None else {})}
        return _PROPAGATOR.extract(carrier)
    if ids is None:
        return otel_context.Context()
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if ids[2] else trace.TraceFlags.DEFAULT)
    return trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(ids[0], ids[1], True, flags)))


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span in hex, or ("", "") outside a recorded span."""
    span = current_span()
    if isinstance(span, LeanSpan | LeanUnsampled):
        return format(span.trace_id, "032x"), format(span.span_id, "016x")
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def server_span(name: str, carrier: Iterable[tuple[str, Any]], attributes: Mapping[str, Any]
                ) -> tuple[Span, object]:
    """Start a request's server span under the caller's context and make it current; returns
    (span, token) for ``end_server_span``. The common cases (no ``traceparent``, or a version-00
    one without ``tracestate``) go straight to the lean tracer: this runs on every RPC."""
    assert _lean is not None, "tracing.server_span with traces off"
    pairs = tuple(carrier)
    parent, state = _caller(pairs)
    s: Span
    try:
        if parent is not None and state is not None:
            raise ValueError(parent)
        s = _lean.server_span(name, None if parent is None else _ids_00(parent), _SERVER, attributes)
    except ValueError:  # another version, odd case, a tracestate: the SDK's propagator knows the rules
        s = _lean.start_span(name, context=context_from(pairs), kind=_SERVER, attributes=attributes)
    return s, attach_span(s, fresh=True)


def finish(s: Span, attributes: Mapping[str, Any] | None = None, *, error: str = "",
           exc: BaseException | None = None) -> None:
    """End a span with its outcome: attributes, and an error status when ``error`` says why."""
    if attributes:
        s.set_attributes(attributes)
    if error:
        s.set_status(Status(StatusCode.ERROR, error))
        if exc is not None:
            s.record_exception(exc)
    s.end()


def end_server_span(s: Span, token: object, attributes: Mapping[str, Any], *, error: str = "",
                    exc: BaseException | None = None) -> None:
    """``finish`` a span from ``server_span`` and restore the context it replaced."""
    finish(s, attributes, error=error, exc=exc)
    detach(token)


def current_context() -> trace.SpanContext | None:
    """The current span's context, to parent work done later (None when traces are off)."""
    if _provider is None:
        return None
    ctx = current_span().get_span_context()
    return ctx if ctx.is_valid else None


def trace_id_of(ctx: trace.SpanContext | None) -> str:
    return format(ctx.trace_id, "032x") if ctx is not None else ""


def after(parent: trace.SpanContext | None, name: str) -> Any:
    """A span for work done after the reply (settle, store), in the request's trace: its parent is
    the request's span, which may have ended by then."""
    if _provider is None or parent is None:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, context=trace.set_span_in_context(trace.NonRecordingSpan(parent)))


def annotate(attributes: Mapping[str, Any]) -> None:
    """Attributes on the current span (the request's server span at the ingress)."""
    if _provider is not None:
        current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})


def event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """A span event on the current span (retry, fallback, breaker decisions)."""
    if _provider is not None:
        current_span().add_event(name, dict(attributes or {}))


def traced(name: str, kind: SpanKind = SpanKind.INTERNAL, *, unless_under: str = "", leaf: bool = False,
           **attributes: Any) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """A coroutine function run in a child span ``name`` when traces are on; off, one check.
    ``unless_under``: no span of its own when the current span's name starts so (a core called by
    its own gRPC servicer: the server span already is this operation; a colocated ingress calling
    the core directly gets the span). ``leaf``: nothing below starts spans, so the span is not made
    current (no context switch). Under an unsampled request no span is made at all: its children
    could only be unsampled too."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if _provider is None:
                return await fn(*args, **kwargs)
            current = current_span()
            if isinstance(current, LeanSpan):
                # Ended (work a request left running): no span, as under any non-recording span.
                skip = bool(current._end) or (bool(unless_under) and current.name.startswith(unless_under))
            else:  # unsampled (ours or a caller's): no span; outside any span: a root of its own
                skip = isinstance(current, LeanUnsampled) or (
                    not current.is_recording() and current.get_span_context().is_valid)
            if skip:
                return await fn(*args, **kwargs)
            if leaf:
                span = _tracer.start_span(name, kind=kind, attributes=attributes)
                try:
                    return await fn(*args, **kwargs)
                except BaseException as exc:
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                finally:
                    span.end()
            with _tracer.start_as_current_span(name, kind=kind, attributes=attributes):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


class BoundedSpanQueue(SpanProcessor):
    """Ended spans go into a bounded queue that one daemon thread exports in batches; when the
    queue is full a span is dropped and counted, so ending a span never waits on the exporter."""

    def __init__(self, exporter: SpanExporter | LeanExporter, *, max_queue: int = 2048, delay_s: float = 1.0,
                 batch: int = 512) -> None:
        self._exporter, self._max, self._delay, self._batch = exporter, max_queue, delay_s, batch
        self._queue: deque[LeanSpan] = deque()
        # Lean spans -> the SDK's ReadableSpans, in this queue's thread (set by ``setup``).
        self.readable: Callable[[Sequence[LeanSpan]], Sequence[ReadableSpan]] = lambda spans: []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="llmgw-span-export", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        # Only sampled spans record (kit.spans): nothing to check here.
        with self._lock:
            if len(self._queue) >= self._max:
                DROPPED.inc()
                return
            self._queue.append(span)  # type: ignore[arg-type]  # a LeanSpan (kit.spans)
            full = len(self._queue) >= self._batch
        if full:
            self._wake.set()

    def _take(self) -> list[LeanSpan]:
        with self._lock:
            n = min(self._batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            while batch := self._take():
                try:
                    exporter = self._exporter
                    if isinstance(exporter, LeanExporter):
                        taken = exporter.export_lean(batch)
                    else:
                        taken = exporter.export(self.readable(batch)) == SpanExportResult.SUCCESS
                    if taken:
                        EXPORTED.inc(len(batch))
                    else:
                        DROPPED.inc(len(batch))
                except Exception:  # an exporter bug must not kill the thread
                    DROPPED.inc(len(batch))
                # Encoding holds the GIL: short batches with a pause between them keep the
                # service's event loop from waiting a whole switch interval behind this thread.
                time.sleep(0.001)
            self._idle.set()
            if self._stopped:
                return

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._idle.clear()
        self._wake.set()
        return self._idle.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(5)
        self._exporter.shutdown()


class JsonLinesExporter(LeanExporter):
    """One JSON object per span, appended to a file (``LLMGW_TRACES_DIR``; for development)."""

    def __init__(self, path: Path, resource: Resource) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        # What every line repeats, encoded once.
        self._resource = json.dumps({"attributes": {"service.name": resource.attributes.get("service.name")}},
                                    separators=(",", ":"))
        self._dumps = json.JSONEncoder(separators=(",", ":"), default=list).encode

    def export_lean(self, spans: Sequence[LeanSpan]) -> bool:
        # A small dict per span read from the lean span (no ReadableSpan, not the SDK's to_json:
        # indented, every field, several times the CPU): this runs in the traced service's process.
        dumps, lines = self._dumps, []
        for s in spans:
            parent = s._parent
            line = dumps({
                "name": s.name, "kind": s._kind.name,
                "context": {"trace_id": f"0x{s.trace_id:032x}", "span_id": f"0x{s.span_id:016x}"},
                "parent_id": f"0x{parent.span_id:016x}" if parent is not None else None,
                "start_time": s._start, "end_time": s._end, "status": s._status.status_code.name,
                "attributes": s._attributes,
                "events": [{"name": n, "timestamp": t, "attributes": a} for n, a, t in s._events or ()],
            })
            lines.append(f'{line[:-1]},"resource":{self._resource}}}')
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        return True

    def shutdown(self) -> None:
        self._file.close()
