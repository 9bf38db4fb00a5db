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

from llmgw.domain import Chunk, Completion, Message, Output, Part, ResponseFormat, Sampling, Tool, ToolCall, ToolChoice
from llmgw.kit.errors import BudgetExceeded, InvalidArgument, LlmgwError
from llmgw.services.ingress.core import Gateway, Reply, cache_metadata, remaining_metadata
from llmgw.services.ingress.dialect import (
    image_from_url,
    json_text,
    model_ids,
    number,
    plain_or_parts,
    read_body,
    reply_extension,
    request,
    sse,
    text_of,
)
from llmgw.services.ingress.http import REQUEST_ID, STATUS, HttpFace, error_headers
from llmgw.services.ingress.request import GatewayRequest
from llmgw.services.router.config import RouterConfig

__all__ = ["add_openai_routes", "openai_error"]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
# Fields of the OpenAI request this release does not serve yet: refused with 400 naming the field
# (a silent drop would answer a different question than the one asked). docs/api.md.
_NOT_YET = ("functions", "function_call", "logprobs", "top_logprobs", "audio", "modalities", "prediction",
            "logit_bias", "web_search_options")
# Accepted only at their neutral value (what the SDKs send when the app sets nothing).
_NEUTRAL = {"n": 1, "parallel_tool_calls": True}
_FINISH = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
           "max_tokens": "length", "content_filter": "content_filter", "refusal": "content_filter",
           "tool_calls": "tool_calls", "tool_use": "tool_calls"}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error", 503: "service_unavailable",
          504: "timeout_error", 500: "internal_error"}


def openai_error(exc: LlmgwError, rid: str) -> web.Response:
    status = STATUS.get(exc.code, 500)
    param = exc.field if isinstance(exc, InvalidArgument) else None
    # A spent budget is OpenAI's own "insufficient_quota" (apps already tell it from a rate limit).
    kind = "insufficient_quota" if isinstance(exc, BudgetExceeded) else _TYPES.get(status, "api_error")
    body = {"error": {"message": exc.message, "type": kind, "param": param,
                      "code": kind if isinstance(exc, BudgetExceeded) else exc.code.name.lower()}}
    return web.json_response(body, status=status, headers=error_headers(exc, rid))


def _content(content: Any, where: str) -> tuple[str, tuple[Part, ...]]:
    """A user/assistant message's content: a string, or text and image_url parts."""
    if content is None or isinstance(content, str):
        return content or "", ()
    if not isinstance(content, list):
        raise InvalidArgument(where, "must be a string or a list of content parts")
    texts, parts = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            parts.append(Part("text", part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(image_from_url(image.get("url") if isinstance(image, dict) else image,
                                        f"{where}[{j}].image_url.url"))
        else:
            raise InvalidArgument(f"{where}[{j}].type", f"{kind!r} parts are not supported yet (text and image_url)")
    return plain_or_parts(texts, parts)


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidArgument(where, "must be a list")
    calls = []
    for j, c in enumerate(raw):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(c.get("id"), str) or not isinstance(fn.get("name"), str):
            raise InvalidArgument(f"{where}[{j}]", "must be {id, type: function, function: {name, arguments}}")
        arguments = fn.get("arguments") or "{}"
        if not isinstance(arguments, str):
            raise InvalidArgument(f"{where}[{j}].function.arguments", "must be a string (JSON)")
        calls.append(ToolCall(c["id"], fn["name"], arguments))
    return tuple(calls)


def _message(i: int, m: Any) -> Message:
    if not isinstance(m, dict):
        raise InvalidArgument(f"messages[{i}]", "must be an object")
    given = m.get("role")
    role = _ROLES.get(given) if isinstance(given, str) else None
    if role is None:
        raise InvalidArgument(f"messages[{i}].role", f"must be one of {', '.join(_ROLES)}")
    where = f"messages[{i}].content"
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidArgument(f"messages[{i}].tool_call_id", "required for a tool message")
        return Message("tool", text_of(m.get("content") or "", where), tool_call_id=call_id)
    if role == "system":
        return Message("system", text_of(m.get("content"), where))
    content, parts = _content(m.get("content"), where)
    calls = _tool_calls(m.get("tool_calls"), f"messages[{i}].tool_calls") if role == "assistant" else ()
    return Message(role, content, parts, calls)


def _output(body: Mapping[str, Any]) -> Output:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise InvalidArgument("tools", "must be a list")
    tools = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or t.get("type") != "function":
            raise InvalidArgument(f"tools[{i}].type", "only function tools are supported")
        fn = t.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidArgument(f"tools[{i}].function.name", "required")
        params = fn.get("parameters")
        tools.append(Tool(fn["name"], str(fn.get("description") or ""),
                          json_text(params, f"tools[{i}].function.parameters") if params is not None else "",
                          fn.get("strict") is True))
    choice = body.get("tool_choice")
    tool_choice: ToolChoice | None = None
    if isinstance(choice, str):
        tool_choice = ToolChoice(choice)
    elif isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidArgument("tool_choice", "must be auto, none, required or {type: function, function: {name}}")
        tool_choice = ToolChoice("tool", fn["name"])
    elif choice is not None:
        raise InvalidArgument("tool_choice", "must be a string or an object")
    return Output(tuple(tools), tool_choice, _response_format(body.get("response_format")))


def _response_format(fmt: Any) -> ResponseFormat | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidArgument("response_format.json_schema", "required for type json_schema")
        return ResponseFormat("json_schema", str(spec.get("name") or ""),
                              json_text(spec.get("schema"), "response_format.json_schema.schema"),
                              spec.get("strict") is True)
    raise InvalidArgument("response_format.type", "must be text, json_object or json_schema")


def parse(body: Mapping[str, Any]) -> tuple[GatewayRequest, bool, bool]:
    """(request, stream, include_usage) from an OpenAI chat-completions body."""
    for name in _NOT_YET:
        if body.get(name) not in (None, [], {}):
            raise InvalidArgument(name, "not supported yet (docs/api.md)")
    for name, neutral in _NEUTRAL.items():
        if body.get(name) not in (None, neutral):
            raise InvalidArgument(name, f"only {neutral} is supported yet")
    raw = body.get("messages") or []
    if not isinstance(raw, list):
        raise InvalidArgument("messages", "must be a list")
    messages = [_message(i, m) for i, m in enumerate(raw)]
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidArgument("stop", "must be a string or a list of strings")
    max_tokens = number(body, "max_completion_tokens", int) or number(body, "max_tokens", int)
    sampling = Sampling(temperature=number(body, "temperature"), max_tokens=max_tokens,
                        top_p=number(body, "top_p"), stop=tuple(stop or ()), seed=number(body, "seed", int),
                        presence_penalty=number(body, "presence_penalty"),
                        frequency_penalty=number(body, "frequency_penalty"))
    metadata = body.get("metadata") or {}
    if isinstance(metadata, dict) and isinstance(body.get("user"), str):
        metadata = {**metadata, "user": body["user"]}
    options = body.get("stream_options") or {}
    return (request(body, messages, sampling, metadata, _output(body)), body.get("stream") is True,
            bool(isinstance(options, dict) and options.get("include_usage")))


def _tool_calls_out(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _usage(c: Completion) -> dict[str, int]:
    u = c.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def _headers(reply: Reply) -> dict[str, str]:
    return {"x-request-id": reply.request_id, **remaining_metadata(reply.limits), **cache_metadata(reply)}


def add_openai_routes(face: HttpFace, core: Gateway, routes: RouterConfig | None, *, max_request_bytes: int) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        rid = request[REQUEST_ID]
        auth = request.headers.get("authorization")
        body = await read_body(request, core, rid, max_request_bytes)
        req, stream, include_usage = parse(body)
        if not stream:
            reply = await core.complete(auth, req, request_id=rid)
            c = reply.completion
            return web.json_response({
                "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()), "model": c.model,
                "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": c.text if c.text or not c.tool_calls else None, "refusal": None,
                    **({"tool_calls": _tool_calls_out(c.tool_calls)} if c.tool_calls else {})},
                    "finish_reason": _FINISH.get(c.finish_reason, "stop"), "logprobs": None}],
                "usage": _usage(c), "llmgw": reply_extension(reply),
            }, headers=_headers(reply))
        return await _stream(request, core, auth, req, rid, include_usage)

    async def models(request: web.Request) -> web.StreamResponse:
        identity = core.authenticate(request.headers.get("authorization"))
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "llmgw"} for i in model_ids(routes, identity)]
        return web.json_response({"object": "list", "data": data})

    face.route("POST", "/v1/chat/completions", chat, openai_error)
    face.route("GET", "/v1/models", models, openai_error)


class _Frames:
    """SSE as OpenAI sends it: a role chunk, content and tool-call deltas (a call's first delta
    carries its id, type and name), the finish_reason chunk, the usage chunk when asked for,
    ``[DONE]``; an error after the first chunk is an ``error`` event."""

    def __init__(self, rid: str, include_usage: bool) -> None:
        self._rid, self._include_usage = rid, include_usage
        self._created = int(time.time())
        self._model = ""

    def _frame(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {"id": f"chatcmpl-{self._rid}", "object": "chat.completion.chunk", "created": self._created,
                "model": self._model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                   "logprobs": None}], **extra}
        return f"data: {json.dumps(body)}\n\n".encode()

    def opening(self) -> list[bytes]:
        return [self._frame({"role": "assistant", "content": ""})]

    def chunk(self, chunk: Chunk) -> list[bytes]:
        delta: dict[str, Any] = {"content": chunk.delta} if chunk.delta else {}
        if chunk.tool_calls:
            delta["tool_calls"] = [
                {"index": d.index, "id": d.id, "type": "function", "function": {"name": d.name,
                                                                                 "arguments": d.arguments}}
                if d.id else {"index": d.index, "function": {"arguments": d.arguments}}
                for d in chunk.tool_calls]
        return [self._frame(delta)] if delta else []

    def closing(self, reply: Reply) -> list[bytes]:
        c = reply.completion
        self._model = c.model
        frames = [self._frame({}, _FINISH.get(c.finish_reason, "stop"), llmgw=reply_extension(reply))]
        if self._include_usage:
            tail = {"id": f"chatcmpl-{self._rid}", "object": "chat.completion.chunk", "created": self._created,
                    "model": c.model, "choices": [], "usage": _usage(c)}
            frames.append(f"data: {json.dumps(tail)}\n\n".encode())
        return [*frames, b"data: [DONE]\n\n"]

    def failed(self, exc: LlmgwError) -> bytes:
        body = {"error": {"message": exc.message, "type": _TYPES.get(STATUS.get(exc.code, 500), "api_error"),
                          "code": exc.code.name.lower()}}
        return f"data: {json.dumps(body)}\n\n".encode()


async def _stream(request: web.Request, core: Gateway, auth: str | None, req: GatewayRequest, rid: str,
                  include_usage: bool) -> web.StreamResponse:
    return await sse(request, core.stream(auth, req, request_id=rid), _Frames(rid, include_usage),
                     headers={"x-request-id": rid}, error=lambda exc: openai_error(exc, rid))
