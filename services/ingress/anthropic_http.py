"""The Anthropic-compatible dialect of the HTTP face: ``POST /v1/messages`` (plain and streamed
as Anthropic streams it), converted at the edge to the domain request both faces run, answered in
Anthropic's shapes. Auth: ``x-api-key`` (what the ``anthropic`` SDK sends) or a bearer token.
``model``, the ``llmgw`` extension and what is not supported yet: as the OpenAI dialect (docs/api.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from llmgw.domain import Completion, Message, Sampling
from llmgw.kit.errors import InvalidArgument, LlmgwError
from llmgw.services.ingress.core import Gateway, Reply, remaining_metadata
from llmgw.services.ingress.dialect import extension, number, read_body, reply_extension, request, sse, text_of
from llmgw.services.ingress.http import REQUEST_ID, STATUS, HttpFace, error_headers
from llmgw.services.ingress.request import GatewayRequest
from llmgw.services.router.config import RouterConfig

__all__ = ["add_anthropic_routes", "anthropic_error"]

_NOT_YET = ("tools", "tool_choice", "thinking", "top_k", "container", "mcp_servers")
_STOP = {"stop": "end_turn", "end_turn": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens",
         "max_tokens": "max_tokens", "content_filter": "refusal", "refusal": "refusal", "tool_calls": "tool_use",
         "tool_use": "tool_use"}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error",
          504: "timeout_error", 500: "api_error"}


def _error_body(exc: LlmgwError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _TYPES.get(STATUS.get(exc.code, 500), "api_error"),
                                       "message": exc.message}}


def anthropic_error(exc: LlmgwError, rid: str) -> web.Response:
    return web.json_response(_error_body(exc), status=STATUS.get(exc.code, 500), headers=error_headers(exc, rid))


def _auth(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    return f"Bearer {key}" if key else request.headers.get("authorization")


def parse(body: Mapping[str, Any], routes: RouterConfig | None) -> tuple[GatewayRequest, bool]:
    for name in _NOT_YET:
        if body.get(name) not in (None, [], {}):
            raise InvalidArgument(name, "not supported yet (docs/api.md)")
    max_tokens = number(body, "max_tokens", int)
    if max_tokens is None and not extension(body).prompt:
        raise InvalidArgument("max_tokens", "required")
    raw = body.get("messages") or []
    if not isinstance(raw, list):
        raise InvalidArgument("messages", "must be a list")
    system = body.get("system")
    messages = [Message("system", text_of(system, "system"))] if system else []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidArgument(f"messages[{i}]", "must be an object")
        if m.get("role") not in ("user", "assistant"):
            raise InvalidArgument(f"messages[{i}].role", "must be user or assistant")
        content = m.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in ("tool_use", "tool_result")
                                             for p in content):
            raise InvalidArgument(f"messages[{i}].content", "tool_use and tool_result blocks are not supported yet")
        messages.append(Message(m["role"], text_of(content, f"messages[{i}].content")))
    stop = body.get("stop_sequences") or []
    if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidArgument("stop_sequences", "must be a list of strings")
    sampling = Sampling(temperature=number(body, "temperature"), max_tokens=max_tokens, top_p=number(body, "top_p"),
                        stop=tuple(stop))
    meta = body.get("metadata") or {}
    return request(body, routes, messages, sampling, meta if isinstance(meta, dict) else {}), body.get("stream") is True


def _usage(c: Completion) -> dict[str, int]:
    return {"input_tokens": c.usage.input_tokens, "output_tokens": c.usage.output_tokens}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def add_anthropic_routes(face: HttpFace, core: Gateway, routes: RouterConfig | None, *,
                         max_request_bytes: int) -> None:
    async def messages(http_request: web.Request) -> web.StreamResponse:
        rid = http_request[REQUEST_ID]
        body = await read_body(http_request, core, rid, max_request_bytes)
        req, stream = parse(body, routes)
        auth = _auth(http_request)
        if not stream:
            reply = await core.complete(auth, req, request_id=rid)
            c = reply.completion
            return web.json_response({
                "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": c.model,
                "content": [{"type": "text", "text": c.text}], "stop_reason": _STOP.get(c.finish_reason, "end_turn"),
                "stop_sequence": None, "usage": _usage(c), "llmgw": reply_extension(reply),
            }, headers={"x-request-id": rid, **remaining_metadata(reply.limits)})
        return await _stream(http_request, core, auth, req, rid, str(body.get("model") or ""))

    face.route("POST", "/v1/messages", messages, anthropic_error)


async def _stream(http_request: web.Request, core: Gateway, auth: str | None, req: GatewayRequest, rid: str,
                  model: str) -> web.StreamResponse:
    """Events as Anthropic sends them: message_start, content_block_start, text deltas,
    content_block_stop, message_delta (stop_reason, usage), message_stop; an ``error`` event
    after the first chunk. (The usage comes with message_delta: input tokens are known at the end.)"""

    def opening() -> list[bytes]:
        return [
            _event("message_start", {"type": "message_start", "message": {
                "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
        ]

    def chunk(delta: str) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": delta}})

    def closing(reply: Reply) -> list[bytes]:
        c = reply.completion
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": _STOP.get(c.finish_reason, "end_turn"),
                                               "stop_sequence": None},
                                     "usage": _usage(c), "llmgw": reply_extension(reply)}),
            _event("message_stop", {"type": "message_stop"}),
        ]

    return await sse(http_request, core.stream(auth, req, request_id=rid), headers={"x-request-id": rid},
                     opening=opening, chunk=chunk, closing=closing,
                     failed=lambda exc: _event("error", _error_body(exc)),
                     error=lambda exc: anthropic_error(exc, rid))
