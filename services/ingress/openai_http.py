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

from llmgw.domain import Chunk, Completion, Message, Sampling
from llmgw.kit.errors import InvalidArgument, LlmgwError, NotFound
from llmgw.services.ingress.core import Gateway, Reply, remaining_metadata
from llmgw.services.ingress.http import REQUEST_ID, STATUS, HttpFace, error_headers, read_json
from llmgw.services.ingress.request import CacheMode, GatewayRequest
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


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidArgument(where, "must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise InvalidArgument(f"{where}[{j}].type", f"{kind!r} parts are not supported yet (text only)")
        texts.append(part["text"])
    return "".join(texts)


def _number(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise InvalidArgument(name, "must be an integer" if kind is int else "must be a number")
    return value


def _route(model: str, routes: RouterConfig | None) -> str:
    if routes is None or not model:
        return model
    if model in routes.routes:
        return model
    if "/" in model:
        provider, name = model.split("/", 1)
        for route, cfg in routes.routes.items():
            first = cfg.targets[0]
            if (first.provider, first.model) == (provider, name):
                return route
    raise NotFound(f"model {model!r}: no route is named so, nor has it as its first target (see GET /v1/models)")


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
    ext = body.get("llmgw") or {}
    if not isinstance(ext, dict):
        raise InvalidArgument("llmgw", "must be an object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidArgument("model", "must be a string")
    if not model and not ext.get("prompt"):
        raise InvalidArgument("model", "required (a route, or provider/model; GET /v1/models lists them)")
    messages = []
    raw = body.get("messages") or []
    if not isinstance(raw, list):
        raise InvalidArgument("messages", "must be a list")
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidArgument(f"messages[{i}]", "must be an object")
        role = m.get("role")
        if role == "tool" or m.get("tool_calls"):
            raise InvalidArgument(f"messages[{i}].role", "tool calls and results are not supported yet")
        if role not in _ROLES:
            raise InvalidArgument(f"messages[{i}].role", f"must be one of {', '.join(_ROLES)}")
        messages.append(Message(_ROLES[role], _text(m.get("content"), f"messages[{i}].content")))
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidArgument("stop", "must be a string or a list of strings")
    max_tokens = _number(body, "max_completion_tokens", int) or _number(body, "max_tokens", int)
    sampling = Sampling(temperature=_number(body, "temperature"), max_tokens=max_tokens,
                        top_p=_number(body, "top_p"), stop=tuple(stop or ()))
    modes = {"default": CacheMode.DEFAULT, "bypass": CacheMode.BYPASS, "refresh": CacheMode.REFRESH}
    mode = modes.get(str(ext.get("cache_mode", "default")))
    if mode is None:
        raise InvalidArgument("llmgw.cache_mode", f"must be one of {', '.join(modes)}")
    variables = ext.get("variables") or {}
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise InvalidArgument("llmgw.variables", "must be an object of strings")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidArgument("metadata", "must be an object of strings")
    if isinstance(body.get("user"), str):
        metadata = {**metadata, "user": body["user"]}
    stream = body.get("stream") is True
    options = body.get("stream_options") or {}
    req = GatewayRequest(
        prompt=str(ext.get("prompt") or ""), label=str(ext.get("label") or ""), variables=dict(variables),
        messages=tuple(messages) if not ext.get("prompt") else (), route=_route(model or "", routes),
        sampling=sampling, cache_mode=mode, metadata={str(k): str(v) for k, v in metadata.items()},
    )
    return req, stream, bool(isinstance(options, dict) and options.get("include_usage"))


def _usage(c: Completion) -> dict[str, int]:
    u = c.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens}


def _extension(reply: Reply) -> dict[str, Any]:
    c = reply.completion
    return {"request_id": reply.request_id, "cache_hit": reply.cache_hit, "provider": c.provider,
            "prompt_version": reply.prompt_version,
            "attempts": [{"provider": a.provider, "model": a.model, "status": a.status, "error": a.error}
                         for a in c.attempts]}


def _headers(reply: Reply) -> dict[str, str]:
    return {"x-request-id": reply.request_id, **remaining_metadata(reply.limits)}


def add_openai_routes(face: HttpFace, core: Gateway, routes: RouterConfig | None, *, max_request_bytes: int) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        rid = request[REQUEST_ID]
        auth = request.headers.get("authorization")
        try:
            body = await read_json(request, max_request_bytes)
        except InvalidArgument as exc:
            core.refused(rid, exc)
            raise
        req, stream, include_usage = parse(body, routes)
        if not stream:
            reply = await core.complete(auth, req, request_id=rid)
            c = reply.completion
            return web.json_response({
                "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()), "model": c.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                             "finish_reason": _FINISH.get(c.finish_reason, "stop"), "logprobs": None}],
                "usage": _usage(c), "llmgw": _extension(reply),
            }, headers=_headers(reply))
        return await _stream(request, core, auth, req, rid, include_usage)

    async def models(request: web.Request) -> web.StreamResponse:
        core.authenticate(request.headers.get("authorization"))
        ids: list[str] = []
        for name, cfg in (routes.routes.items() if routes is not None else ()):
            ids.append(name)
            ids += [f"{t.provider}/{t.model}" for t in cfg.targets[:1]]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "llmgw"} for i in dict.fromkeys(ids)]
        return web.json_response({"object": "list", "data": data})

    face.route("POST", "/v1/chat/completions", chat, openai_error)
    face.route("GET", "/v1/models", models, openai_error)


async def _stream(request: web.Request, core: Gateway, auth: str | None, req: GatewayRequest, rid: str,
                  include_usage: bool) -> web.StreamResponse:
    """SSE as OpenAI sends it. Headers go out with the first chunk: an error before it (a bad key,
    a limit, every provider down) is a plain HTTP error with its status; after it, an error event."""
    created = int(time.time())
    resp: web.StreamResponse | None = None
    model = ""

    def frame(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    async def opened() -> web.StreamResponse:
        nonlocal resp
        if resp is None:
            resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                               "x-request-id": rid})
            await resp.prepare(request)
            await resp.write(frame({"role": "assistant", "content": ""}))
        return resp

    try:
        async for item in core.stream(auth, req, request_id=rid):
            if isinstance(item, Chunk):
                out = await opened()
                if item.delta:
                    await out.write(frame({"content": item.delta}))
                continue
            c = item.completion
            model = c.model
            out = await opened()
            await out.write(frame({}, _FINISH.get(c.finish_reason, "stop"), llmgw=_extension(item)))
            if include_usage:
                tail = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": _usage(c)}
                await out.write(f"data: {json.dumps(tail)}\n\n".encode())
            await out.write(b"data: [DONE]\n\n")
    except LlmgwError as exc:
        if resp is None:
            return openai_error(exc, rid)
        body = {"error": {"message": exc.message, "type": _TYPES.get(STATUS.get(exc.code, 500), "api_error"),
                          "code": exc.code.name.lower()}}
        await resp.write(f"data: {json.dumps(body)}\n\n".encode())
    assert resp is not None
    await resp.write_eof()
    return resp
