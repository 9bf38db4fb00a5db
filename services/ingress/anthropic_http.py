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

from llmgw.domain import Chunk, Completion, Message, Output, Part, ResponseFormat, Sampling, Tool, ToolCall, ToolChoice
from llmgw.kit.errors import InvalidArgument, LlmgwError
from llmgw.services.ingress.core import Gateway, Reply, cache_metadata, remaining_metadata
from llmgw.services.ingress.dialect import (
    extension,
    image_from_url,
    json_text,
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

__all__ = ["add_anthropic_routes", "anthropic_error"]

_NOT_YET = ("thinking", "top_k", "container", "mcp_servers", "context_management")
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


def _image(block: Mapping[str, Any], where: str) -> Part:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise InvalidArgument(f"{where}.source", "a base64 image needs media_type and data")
        return Part("image", media_type=media, data=data)
    if kind == "url" and isinstance(source, dict):
        return image_from_url(source.get("url"), f"{where}.source.url")
    raise InvalidArgument(f"{where}.source.type", "must be base64 or url")


def _messages(i: int, m: Any) -> list[Message]:
    """One Anthropic turn as domain messages: a user turn's tool_result blocks become tool
    messages (in order, before the turn's own text), an assistant turn's tool_use blocks its tool calls."""
    if not isinstance(m, dict):
        raise InvalidArgument(f"messages[{i}]", "must be an object")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise InvalidArgument(f"messages[{i}].role", "must be user or assistant")
    content = m.get("content")
    if isinstance(content, str):
        return [Message(role, content)]
    if not isinstance(content, list):
        raise InvalidArgument(f"messages[{i}].content", "must be a string or a list of content blocks")
    results: list[Message] = []
    texts: list[str] = []
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            parts.append(Part("text", block["text"]))
        elif kind == "image" and role == "user":
            parts.append(_image(block, where))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidArgument(where, "a tool_use block needs id and name")
            calls.append(ToolCall(block["id"], block["name"], json_text(block.get("input", {}), f"{where}.input")))
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise InvalidArgument(f"{where}.tool_use_id", "required")
            text = text_of(block.get("content") or "", f"{where}.content")
            # OpenAI's tool messages have no error flag: an error result says so in its text.
            results.append(Message("tool", f"Error: {text}" if block.get("is_error") is True else text,
                                   tool_call_id=block["tool_use_id"]))
        else:
            raise InvalidArgument(f"{where}.type", f"{kind!r} blocks are not supported yet in a {role} turn")
    text, rich = plain_or_parts(texts, parts)
    own = [Message(role, text, rich, tuple(calls))] if text or rich or calls else []
    return results + own


def _output(body: Mapping[str, Any]) -> Output:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise InvalidArgument("tools", "must be a list")
    tools = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or t.get("type") not in (None, "custom") or not isinstance(t.get("name"), str):
            raise InvalidArgument(f"tools[{i}]", "only client tools {name, description, input_schema} are supported")
        tools.append(Tool(t["name"], str(t.get("description") or ""),
                          json_text(t.get("input_schema"), f"tools[{i}].input_schema"), t.get("strict") is True))
    choice = body.get("tool_choice")
    tool_choice = None
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        modes = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
        if not isinstance(kind, str) or kind not in modes or not isinstance(choice, dict):
            raise InvalidArgument("tool_choice.type", "must be auto, any, none or tool")
        if choice.get("disable_parallel_tool_use") is True:
            raise InvalidArgument("tool_choice.disable_parallel_tool_use", "not supported yet (docs/api.md)")
        tool_choice = ToolChoice(modes[kind], str(choice.get("name") or ""))
    fmt = None
    config = body.get("output_config")
    if config is not None:
        spec = config.get("format") if isinstance(config, dict) else None
        if not isinstance(config, dict) or set(config) - {"format"}:
            raise InvalidArgument("output_config", "only format is supported yet")
        if spec is not None:
            if not isinstance(spec, dict) or spec.get("type") != "json_schema":
                raise InvalidArgument("output_config.format.type", "must be json_schema")
            fmt = ResponseFormat("json_schema", "", json_text(spec.get("schema"), "output_config.format.schema"), True)
    return Output(tuple(tools), tool_choice, fmt)


def parse(body: Mapping[str, Any]) -> tuple[GatewayRequest, bool]:
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
        messages += _messages(i, m)
    stop = body.get("stop_sequences") or []
    if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidArgument("stop_sequences", "must be a list of strings")
    sampling = Sampling(temperature=number(body, "temperature"), max_tokens=max_tokens, top_p=number(body, "top_p"),
                        stop=tuple(stop))
    meta = body.get("metadata") or {}
    return (request(body, messages, sampling, meta if isinstance(meta, dict) else {}, _output(body)),
            body.get("stream") is True)


def _content_out(c: Completion) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": c.text}] if c.text or not c.tool_calls else []
    return blocks + [{"type": "tool_use", "id": t.id, "name": t.name, "input": t.input}
                     for t in c.tool_calls]


def _usage(c: Completion) -> dict[str, int]:
    return {"input_tokens": c.usage.input_tokens, "output_tokens": c.usage.output_tokens}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def add_anthropic_routes(face: HttpFace, core: Gateway, routes: RouterConfig | None, *,
                         max_request_bytes: int) -> None:
    async def messages(http_request: web.Request) -> web.StreamResponse:
        rid = http_request[REQUEST_ID]
        body = await read_body(http_request, core, rid, max_request_bytes)
        req, stream = parse(body)
        auth = _auth(http_request)
        if not stream:
            reply = await core.complete(auth, req, request_id=rid)
            c = reply.completion
            return web.json_response({
                "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": c.model,
                "content": _content_out(c), "stop_reason": _STOP.get(c.finish_reason, "end_turn"),
                "stop_sequence": None, "usage": _usage(c), "llmgw": reply_extension(reply),
            }, headers={"x-request-id": rid, **remaining_metadata(reply.limits), **cache_metadata(reply)})
        return await _stream(http_request, core, auth, req, rid, str(body.get("model") or ""))

    face.route("POST", "/v1/messages", messages, anthropic_error)


class _Frames:
    """Events as Anthropic sends them: message_start; each content block opened, filled and
    closed in turn (text deltas, or a tool_use block with ``input_json_delta`` pieces);
    message_delta (stop_reason, usage); message_stop; an ``error`` event after the first chunk.
    (The usage comes with message_delta: input tokens are known at the end.)"""

    def __init__(self, rid: str, model: str) -> None:
        self._rid, self._model = rid, model
        self._blocks = 0  # blocks opened so far
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", call index)
        self._block_of: dict[int, int] = {}  # tool call index -> block index

    def opening(self) -> list[bytes]:
        return [_event("message_start", {"type": "message_start", "message": {
            "id": f"msg_{self._rid}", "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})]

    def _start(self, kind: tuple[str, int], block: dict[str, Any]) -> list[bytes]:
        frames = self._stop()
        self._open = kind
        frames.append(_event("content_block_start", {"type": "content_block_start", "index": self._blocks,
                                                     "content_block": block}))
        self._blocks += 1
        return frames

    def _stop(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})]

    def chunk(self, chunk: Chunk) -> list[bytes]:
        frames: list[bytes] = []
        if chunk.delta:
            if self._open != ("text", -1):
                frames += self._start(("text", -1), {"type": "text", "text": ""})
            frames.append(_event("content_block_delta", {"type": "content_block_delta", "index": self._blocks - 1,
                                                         "delta": {"type": "text_delta", "text": chunk.delta}}))
        for d in chunk.tool_calls:
            if d.index not in self._block_of:
                frames += self._start(("tool", d.index), {"type": "tool_use", "id": d.id, "name": d.name, "input": {}})
                self._block_of[d.index] = self._blocks - 1
            if d.arguments:
                frames.append(_event("content_block_delta", {
                    "type": "content_block_delta", "index": self._block_of[d.index],
                    "delta": {"type": "input_json_delta", "partial_json": d.arguments}}))
        return frames

    def closing(self, reply: Reply) -> list[bytes]:
        c = reply.completion
        # A message always has content: an empty answer is one empty text block.
        frames = self._start(("text", -1), {"type": "text", "text": ""}) if not self._blocks else []
        return [
            *frames, *self._stop(),
            _event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": _STOP.get(c.finish_reason, "end_turn"),
                                               "stop_sequence": None},
                                     "usage": _usage(c), "llmgw": reply_extension(reply)}),
            _event("message_stop", {"type": "message_stop"}),
        ]

    def failed(self, exc: LlmgwError) -> bytes:
        return _event("error", _error_body(exc))


async def _stream(http_request: web.Request, core: Gateway, auth: str | None, req: GatewayRequest, rid: str,
                  model: str) -> web.StreamResponse:
    return await sse(http_request, core.stream(auth, req, request_id=rid), _Frames(rid, model),
                     headers={"x-request-id": rid}, error=lambda exc: anthropic_error(exc, rid))
