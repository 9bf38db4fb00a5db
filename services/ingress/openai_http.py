"""The OpenAI-compatible dialect of the HTTP face: ``POST /v1/chat/completions`` (plain and SSE
streaming) and ``GET /v1/models``, converted at the edge to the one domain request the gRPC face
uses, and answered in OpenAI's shapes (docs/api.md says what is supported and what not yet).

``model`` names a route (``default``) or a ``provider/model`` that is the first target of a route.
Registry prompts are reachable through the ``llmgw`` extension field:
``{"llmgw": {"prompt": "summarize", "label": "production", "variables": {"text": "..."}}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from llmgw.domain import Completion, Message, Sampling
from llmgw.kit.errors import InvalidArgument, LlmgwError
from llmgw.services.ingress.core import Gateway, Reply, remaining_metadata
from llmgw.services.ingress.dialect import model_ids, number, read_body, reply_extension, request, sse, text_of
from llmgw.services.ingress.http import REQUEST_ID, STATUS, HttpFace, error_headers
from llmgw.services.ingress.request import GatewayRequest
from llmgw.services.router.config import RouterConfig

__all__ = ["add_openai_routes", "openai_error"]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Fields of the OpenAI request this release does not serve yet: refused with 400 naming the field
# (a silent drop would answer a different question than the one asked). docs/api.md.
_NOT_YET = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "logprobs",
            "top_logprobs", "audio", "modalities", "prediction", "logit_bias")
# Accepted only at their neutral value (what the SDKs send when the app sets nothing).
_NEUTRAL = {"n": 1, "presence_penalty": 0, "frequency_penalty": 0}
_FINISH = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
           "max_tokens": "length", "content_filter": "content_filter", "refusal": "content_filter",
           "tool_calls": "tool_calls", "tool_use": "tool_calls"}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error", 503: "service_unavailable",
          504: "timeout_error", 500: "internal_error"}


def openai_error(exc: LlmgwError, rid: str) -> web.Response:
    status = STATUS.get(exc.code, 500)
    param = exc.field if isinstance(exc, InvalidArgument) else None
    body = {"error": {"message": exc.message, "type": _TYPES.get(status, "api_error"), "param": param,
                      "code": exc.code.name.lower()}}
    return web.json_response(body, status=status, headers=error_headers(exc, rid))


def parse(body: Mapping[str, Any], routes: RouterConfig | None) -> tuple[GatewayRequest, bool, bool]:
    """(request, stream, include_usage) from an OpenAI chat-completions body."""
    for name in _NOT_YET:
        if body.get(name) not in (None, [], {}):
            raise InvalidArgument(name, "not supported yet (docs/api.md)")
    for name, neutral in _NEUTRAL.items():
        if body.get(name) not in (None, neutral):
            raise InvalidArgument(name, f"only {neutral} is supported yet")
    fmt = body.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise InvalidArgument("response_format", "only {'type': 'text'} is supported yet")
    raw = body.get("messages") or []
    if not isinstance(raw, list):
        raise InvalidArgument("messages", "must be a list")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidArgument(f"messages[{i}]", "must be an object")
        role = m.get("role")
        if role == "tool" or m.get("tool_calls"):
            raise InvalidArgument(f"messages[{i}].role", "tool calls and results are not supported yet")
        if role not in _ROLES:
            raise InvalidArgument(f"messages[{i}].role", f"must be one of {', '.join(_ROLES)}")
        messages.append(Message(_ROLES[role], text_of(m.get("content"), f"messages[{i}].content")))
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidArgument("stop", "must be a string or a list of strings")
    max_tokens = number(body, "max_completion_tokens", int) or number(body, "max_tokens", int)
    sampling = Sampling(temperature=number(body, "temperature"), max_tokens=max_tokens,
                        top_p=number(body, "top_p"), stop=tuple(stop or ()))
    metadata = body.get("metadata") or {}
    if isinstance(metadata, dict) and isinstance(body.get("user"), str):
        metadata = {**metadata, "user": body["user"]}
    options = body.get("stream_options") or {}
    return (request(body, routes, messages, sampling, metadata), body.get("stream") is True,
            bool(isinstance(options, dict) and options.get("include_usage")))


def _usage(c: Completion) -> dict[str, int]:
    u = c.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def _headers(reply: Reply) -> dict[str, str]:
    return {"x-request-id": reply.request_id, **remaining_metadata(reply.limits)}


def add_openai_routes(face: HttpFace, core: Gateway, routes: RouterConfig | None, *, max_request_bytes: int) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        rid = request[REQUEST_ID]
        auth = request.headers.get("authorization")
        body = await read_body(request, core, rid, max_request_bytes)
        req, stream, include_usage = parse(body, routes)
        if not stream:
            reply = await core.complete(auth, req, request_id=rid)
            c = reply.completion
            return web.json_response({
                "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()), "model": c.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                             "finish_reason": _FINISH.get(c.finish_reason, "stop"), "logprobs": None}],
                "usage": _usage(c), "llmgw": reply_extension(reply),
            }, headers=_headers(reply))
        return await _stream(request, core, auth, req, rid, include_usage)

    async def models(request: web.Request) -> web.StreamResponse:
        core.authenticate(request.headers.get("authorization"))
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "llmgw"} for i in model_ids(routes)]
        return web.json_response({"object": "list", "data": data})

    face.route("POST", "/v1/chat/completions", chat, openai_error)
    face.route("GET", "/v1/models", models, openai_error)


async def _stream(request: web.Request, core: Gateway, auth: str | None, req: GatewayRequest, rid: str,
                  include_usage: bool) -> web.StreamResponse:
    """SSE as OpenAI sends it: a role chunk, content deltas, the finish_reason chunk, the usage
    chunk when asked for, ``[DONE]``; an error after the first chunk is an ``error`` event."""
    created = int(time.time())

    def frame(delta: dict[str, Any], finish: str | None = None, model: str = "", **extra: Any) -> bytes:
        body = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body)}\n\n".encode()

    def closing(reply: Reply) -> list[bytes]:
        c = reply.completion
        frames = [frame({}, _FINISH.get(c.finish_reason, "stop"), c.model, llmgw=reply_extension(reply))]
        if include_usage:
            tail = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created,
                    "model": c.model, "choices": [], "usage": _usage(c)}
            frames.append(f"data: {json.dumps(tail)}\n\n".encode())
        return [*frames, b"data: [DONE]\n\n"]

    def failed(exc: LlmgwError) -> bytes:
        body = {"error": {"message": exc.message, "type": _TYPES.get(STATUS.get(exc.code, 500), "api_error"),
                          "code": exc.code.name.lower()}}
        return f"data: {json.dumps(body)}\n\n".encode()

    return await sse(request, core.stream(auth, req, request_id=rid), headers={"x-request-id": rid},
                     opening=lambda: [frame({"role": "assistant", "content": ""})],
                     chunk=lambda delta: frame({"content": delta}), closing=closing, failed=failed,
                     error=lambda exc: openai_error(exc, rid))
