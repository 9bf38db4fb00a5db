"""The ingress's HTTP face: aiohttp's server in the ingress process, on the same core as gRPC (no
extra hop, the same limits, cache, router and events). One module per dialect converts at the edge
(``openai_http``); this one owns the server, request ids, body limits and the error mapping.

Why aiohttp: it is already the project's HTTP stack (the fake providers, the SDKs' faster
transport), it streams SSE natively, and it runs on the ingress's own event loop, so a request
reaches the core with no thread or process hop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from llmgw.kit import tracing
from llmgw.kit.errors import BudgetExceeded, InvalidArgument, LlmgwError, RateLimited
from llmgw.kit.ids import new_request_id, valid_request_id
from llmgw.kit.logging import get_logger

__all__ = ["OPENAPI", "REQUEST_ID", "STATUS", "HttpFace", "HttpRequest", "error_headers", "read_json", "request_id_of"]

_log = get_logger(__name__)

# The HTTP API's OpenAPI document, checked in and served at /openapi.json.
OPENAPI = Path(__file__).with_name("openapi.json")

# Our status -> the HTTP status both dialects use for it.
STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

HttpRequest = web.Request
# The request id a handler answers under (the caller's when usable).
REQUEST_ID = web.RequestKey("request_id", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (error, request id) -> the dialect's error response.
ErrorShape = Callable[[LlmgwError, str], web.Response]


def request_id_of(request: web.Request) -> str:
    """The caller's x-request-id when usable, else a new one (never forwarded as it came)."""
    given = request.headers.get("x-request-id")
    return given if given is not None and valid_request_id(given) else new_request_id()


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or InvalidArgument naming what is wrong with it."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise InvalidArgument("request", f"{request.content_length} bytes is over the limit of {max_bytes} bytes "
                                         "(MAX_REQUEST_BYTES)")
    try:
        raw = await request.read()  # the whole body (a single stream read may return only a part)
    except web.HTTPRequestEntityTooLarge:
        raw = b""
    if len(raw) > max_bytes or (not raw and (request.content_length or 0) > 0):
        raise InvalidArgument("request", f"over the limit of {max_bytes} bytes (MAX_REQUEST_BYTES)")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidArgument("request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("request", "the body must be a JSON object")
    return body


def error_headers(exc: LlmgwError, rid: str) -> dict[str, str]:
    headers = {"x-request-id": rid}
    if isinstance(exc, RateLimited | BudgetExceeded):
        headers.update({k: v for k, v in exc.metadata.items()
                        if k == "retry-after" or k.startswith(("x-ratelimit", "x-llmgw-budget"))})
    return headers


class HttpFace:
    """One aiohttp server for the ingress's HTTP routes; every handler's errors go through the
    dialect's error shape (no exception text or traceback reaches a caller)."""

    def __init__(self, *, max_request_bytes: int) -> None:
        self.app = web.Application(client_max_size=max_request_bytes + 1024)
        self._runner: web.AppRunner | None = None
        self.address = ""

    def serve_document(self, path: str, document: Path) -> None:
        """A static JSON document (the OpenAPI description of the HTTP API), read once."""
        body = document.read_bytes()

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        self.app.router.add_get(path, handler)

    def route(self, method: str, path: str, handler: Handler, errors: ErrorShape) -> None:
        async def answer(request: web.Request, rid: str) -> web.StreamResponse:
            try:
                return await handler(request)
            except LlmgwError as exc:
                return errors(exc, rid)
            except web.HTTPException:
                raise
            except Exception as exc:  # a bug of ours: logged with its traceback, answered in our words
                _log.error("unhandled_http_error", path=path, request_id=rid, error=repr(exc), exc_info=exc)
                return errors(LlmgwError(f"internal error (request id {rid})"), rid)

        async def guarded(request: web.Request) -> web.StreamResponse:
            rid = request_id_of(request)
            request[REQUEST_ID] = rid
            if not tracing.enabled():
                return await answer(request, rid)
            # The caller's W3C traceparent, if it sent one, is the parent of this request's trace.
            span, token = tracing.server_span(f"{method} {path}", request.headers.items(), {
                "http.request.method": method, "url.path": path, "llmgw.request_id": rid})
            response: web.StreamResponse | None = None
            try:
                response = await answer(request, rid)
                return response
            finally:
                status = response.status if response is not None else 500
                tracing.end_server_span(span, token, {"http.response.status_code": status},
                                        error=str(status) if status >= 500 else "")

        self.app.router.add_route(method, path, guarded)

    async def start(self, host: str, port: int) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.address = f"{bound[0]}:{bound[1]}"
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
