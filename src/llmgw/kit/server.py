"""One bootstrap for every gRPC service: interceptors, truthful health, reflection, graceful stop.

A service supplies its servicers and a readiness probe (is Redis/Kafka/the model reachable?).
Health starts NOT_SERVING, turns SERVING only once the probe passes, follows the probe while
running, and turns NOT_SERVING on SIGTERM before the server drains and stops.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from llmgw.kit import tracing
from llmgw.kit.errors import InvalidArgument, LlmgwError
from llmgw.kit.ids import new_request_id, valid_request_id
from llmgw.kit.logging import get_logger
from llmgw.kit.metrics import RPC_HANDLED, RPC_LATENCY, SERVING, child, start_metrics_server

__all__ = ["LIVENESS_SERVICE", "REQUEST_ID_KEY", "GrpcService", "RunningServer", "header", "request_id",
           "request_id_replaced", "serve_forever", "start_server"]

REQUEST_ID_KEY = "x-request-id"
# Health name for liveness probes: SERVING while the process runs, whatever its dependencies do,
# so a Redis outage makes pods unready (no traffic) without restarting them all.
LIVENESS_SERVICE = "liveness"
_log = get_logger(__name__)

Probe = Callable[[], Awaitable[bool]]


@dataclass
class GrpcService:
    """What a service hands to the bootstrap."""

    name: str  # short name for logs and metrics, e.g. "limiter"
    # (servicer, add_XServicer_to_server, full service name) triples.
    servicers: Sequence[tuple[Any, Callable[[Any, grpc.aio.Server], None], str]]
    ready: Probe
    probe_interval_s: float = 2.0
    on_stop: Callable[[], Awaitable[None]] | None = None
    # What else the service serves, for whoever started it (e.g. {"http": "127.0.0.1:8080"}).
    endpoints: dict[str, str] = field(default_factory=dict)


# This RPC's request id, set once by the interceptor: logs, replies and events all carry the same.
_REQUEST_ID: ContextVar[str] = ContextVar("llmgw_request_id", default="")
_REPLACED: ContextVar[bool] = ContextVar("llmgw_request_id_replaced", default=False)


def header(context: grpc.aio.ServicerContext, name: str) -> str | None:
    """The caller's metadata value ``name`` (lower case), if it sent one as text."""
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return None


def _request_id(context: grpc.aio.ServicerContext) -> str:
    given = header(context, REQUEST_ID_KEY)
    if valid_request_id(given):
        return given  # type: ignore[return-value]
    if given is not None:
        # Replaced, not refused: the reply's x-request-id (and the events) carry the new one,
        # and x-request-id-replaced says why the caller's is not there (logged by the scope).
        _REPLACED.set(True)
    return new_request_id()


def request_id_replaced() -> bool:
    """Whether this RPC's caller sent an x-request-id that could not be used (see _request_id)."""
    return _REPLACED.get()


def request_id() -> str:
    """The current RPC's request id: the caller's ``x-request-id`` (so its traces join ours), else
    one made up when the RPC began; the id this RPC's log lines are bound to. Outside an RPC of a
    server built here: a new id."""
    return _REQUEST_ID.get() or new_request_id()


class _Interceptor(grpc.aio.ServerInterceptor):
    """Binds the request id for logs, records metrics and maps LlmgwError to a gRPC status."""

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if method in ("Check", "Watch") and "grpc.health" in handler_call_details.method:
            return handler
        if "ServerReflection" in handler_call_details.method:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, handler_call_details.method),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, handler_call_details.method),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, behavior: Any, method: str, full: str) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _Scope(self._service, context, method, full):
                _decoded(request)
                return await behavior(request, context)

        return wrapped

    def _wrap_stream(self, behavior: Any, method: str, full: str) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _Scope(self._service, context, method, full):
                _decoded(request)
                async for item in behavior(request, context):
                    yield item

        return wrapped


class _Undecodable:
    """Stands for a request body that did not parse: the handler then answers INVALID_ARGUMENT.
    (Left to grpc, a parse failure is UNKNOWN with protobuf's exception text and a traceback
    logged per call.)"""


_UNDECODABLE = _Undecodable()


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # protobuf's DecodeError, or anything a custom deserializer raises
            return _UNDECODABLE

    return parse


def _decoded(request: Any) -> None:
    if request is _UNDECODABLE:
        raise InvalidArgument("request", "the request body is not a valid protobuf message of this method")


_RPC_SPANS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}


def _rpc_span(full: str, method: str) -> tuple[str, dict[str, str]]:
    """An RPC span's name (package.Service/Method, as RPC spans are named) and fixed attributes,
    made once per method."""
    known = _RPC_SPANS.get((full, method))
    if known is None:
        name = full.lstrip("/") or method
        known = _RPC_SPANS[(full, method)] = (name, {"rpc.system": "grpc", "rpc.service": name.rsplit("/", 1)[0],
                                                     "rpc.method": method})
    return known


class _Scope:
    """One RPC: request id bound for logs, LlmgwError mapped to its status, metrics recorded, and
    (traces on) the RPC's server span, child of the caller's ``traceparent``. A plain class, not
    a generator-based context manager: this wraps every RPC, cache hits included, and the
    generator machinery cost more than the scope's own work."""

    __slots__ = ("_context", "_full", "_method", "_service", "_span", "_start", "_token")

    def __init__(self, service: str, context: grpc.aio.ServicerContext, method: str, full: str = "") -> None:
        self._service, self._context, self._method, self._full = service, context, method, full
        self._start = 0.0
        self._span: Any = None
        self._token: Any = None

    async def __aenter__(self) -> None:
        self._start = time.perf_counter()
        _REPLACED.set(False)
        rid = _request_id(self._context)
        _REQUEST_ID.set(rid)
        structlog.contextvars.bind_contextvars(request_id=rid)
        if tracing.enabled():
            name, attributes = _rpc_span(self._full, self._method)
            self._span, self._token = tracing.server_span(name, self._context.invocation_metadata() or (),
                                                          {**attributes, "llmgw.request_id": rid})
        if _REPLACED.get():  # logged inside the span: the line carries the request's trace id
            _log.info("request_id_replaced", request_id=rid, reason="not 1-128 of [A-Za-z0-9._:/+=@-]")

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        code = grpc.StatusCode.OK
        try:
            if isinstance(exc, LlmgwError):
                code = exc.code
                await _abort(self._context, exc)  # raises: the RPC ends with exc's status
            elif isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
                # A bug of ours: the detail goes to the log, the caller gets our own words (grpc
                # would answer UNKNOWN with "Unexpected <class ...>", the exception's type).
                code = grpc.StatusCode.INTERNAL
                _log.error("unhandled_error", method=self._method, error=repr(exc), exc_info=exc)
                await self._context.abort(code, f"internal error (request id {_REQUEST_ID.get()})")
        finally:
            if self._span is not None:
                tracing.end_server_span(self._span, self._token, {"rpc.grpc.status_code": code.value[0]},
                                        error="" if code == grpc.StatusCode.OK else code.name, exc=exc)
            child(RPC_HANDLED, self._service, self._method, code.name).inc()
            child(RPC_LATENCY, self._service, self._method).observe(time.perf_counter() - self._start)


async def _abort(context: grpc.aio.ServicerContext, exc: LlmgwError) -> None:
    if exc.code == grpc.StatusCode.INTERNAL:
        _log.error("internal_error", error=exc.message)
    # The request id goes with every error too: a refused call is traced to its events by it.
    rid = _REQUEST_ID.get()
    await context.abort(exc.code, exc.message, trailing_metadata=(
        *exc.metadata.items(), *(((REQUEST_ID_KEY, rid),) if rid and REQUEST_ID_KEY not in exc.metadata else ())))


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service: GrpcService
    _names: list[str] = field(default_factory=list)
    _watch: asyncio.Task[None] | None = None
    _stopped: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._names]:
            await self.health.set(name, status)
        SERVING.labels(self.service.name).set(1 if serving else 0)

    async def _follow_probe(self) -> None:
        # Health tells the truth while running: a lost Redis or broker turns it NOT_SERVING.
        last: bool | None = None
        # Ends on _stopped too, not only on a cancel: a probe whose client library catches
        # CancelledError and answers anyway swallows stop()'s cancel (a CI teardown hung 300 s).
        while not self._stopped:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel and the
                # probe loop would outlive stop().
                async with asyncio.timeout(max(1.0, self.service.probe_interval_s)):
                    ok = await self.service.ready()
            except Exception as exc:  # a probe failing for any reason means "not ready"
                _log.warning("readiness_probe_failed", service=self.service.name, error=repr(exc))
                ok = False
            if ok != last:
                await self.set_serving(ok)
                _log.info("health", service=self.service.name, serving=ok)
                last = ok
            await asyncio.sleep(self.service.probe_interval_s if ok else min(0.5, self.service.probe_interval_s))

    async def stop(self, grace: float = 5.0) -> None:
        """Idempotent graceful stop: NOT_SERVING first, then drain for ``grace`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
            # Never past one more probe and its pause (see _follow_probe), and without swallowing
            # a cancel of stop() itself (awaiting the task under suppress(CancelledError) did).
            await asyncio.wait({self._watch}, timeout=2 * max(1.0, self.service.probe_interval_s) + 1.0)
        await self.health.enter_graceful_shutdown()
        SERVING.labels(self.service.name).set(0)
        await self.server.stop(grace)
        if self.service.on_stop is not None:
            await self.service.on_stop()


async def start_server(service: GrpcService, *, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start the gRPC server; health follows the service's readiness probe from here on."""
    server = grpc.aio.server(
        interceptors=[_Interceptor(service.name)],
        options=[("grpc.so_reuseport", 0)],
    )
    names = []
    for servicer, add, full_name in service.servicers:
        add(servicer, server)
        names.append(full_name)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    running = RunningServer(server=server, port=bound, health=health, service=service, _names=names)
    await running.set_serving(False)
    await health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    running._watch = asyncio.create_task(running._follow_probe(), name=f"{service.name}-health")
    _log.info("listening", service=service.name, port=bound)
    return running


async def serve_forever(service: GrpcService, *, host: str, port: int, metrics_port: int, grace: float) -> None:
    """Entry point for a service process: serve until SIGTERM/SIGINT, then stop gracefully."""
    start_metrics_server(metrics_port)
    running = await start_server(service, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _log.info("stopping", service=service.name, grace_s=grace)
    await running.stop(grace)
