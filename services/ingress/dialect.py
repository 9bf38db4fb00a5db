"""What both HTTP dialects (OpenAI's, Anthropic's) share at the edge: text content, numbers, JSON
schemas as canonical text, images, the ``llmgw`` extension field, the request it all becomes, and
the SSE driver that sends headers only with the first chunk (so an error before it is a plain HTTP
error with its status)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from llmgw.domain import Chunk, Message, Output, Part, Sampling
from llmgw.keys.ring import Identity
from llmgw.kit.errors import InvalidArgument, LlmgwError
from llmgw.services.ingress.auth import may_use_route
from llmgw.services.ingress.core import Gateway, Reply
from llmgw.services.ingress.http import read_json
from llmgw.services.ingress.request import CacheMode, GatewayRequest
from llmgw.services.router.config import RouterConfig

__all__ = ["Extension", "Frames", "extension", "image_from_url", "json_text", "model_ids",
           "number", "plain_or_parts", "read_body", "reply_extension", "request", "sse", "text_of"]


def text_of(content: Any, where: str) -> str:
    """Text content: a string, or a list of text parts (where only text is taken: system prompts,
    tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidArgument(where, "must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise InvalidArgument(f"{where}[{j}].type", f"{kind!r} parts are not taken here (text only)")
        texts.append(part["text"])
    return "".join(texts)


def number(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise InvalidArgument(name, "must be an integer" if kind is int else "must be a number")
    return value


def model_ids(routes: RouterConfig | None, identity: Identity) -> list[str]:
    """The routes the key may run on, and each one's first provider/model."""
    ids: list[str] = []
    for name, cfg in (routes.routes.items() if routes is not None else ()):
        if not may_use_route(identity, name, routes):
            continue
        ids.append(name)
        ids += [f"{t.provider}/{t.model}" for t in cfg.targets[:1]]
    return list(dict.fromkeys(ids))


async def read_body(http_request: web.Request, core: Gateway, rid: str, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; one that can't be read (too large, not JSON) is refused and its
    response event carries none of its fields."""
    try:
        return await read_json(http_request, max_bytes)
    except InvalidArgument as exc:
        core.refused(rid, exc)
        raise


def reply_extension(reply: Reply) -> dict[str, Any]:
    """The ``llmgw`` object both dialects add to an answer."""
    c = reply.completion
    return {"request_id": reply.request_id, "cache_hit": reply.cache_hit, "cache_tier": reply.cache_tier,
            **({"cache_similarity": round(reply.cache_similarity, 4)} if reply.cache_tier == "semantic" else {}),
            "provider": c.provider,
            "prompt_version": reply.prompt_version,
            "attempts": [{"provider": a.provider, "model": a.model, "status": a.status, "error": a.error}
                         for a in c.attempts]}


@dataclass(frozen=True, slots=True)
class Extension:
    """The ``llmgw`` field: a registry prompt instead of messages, and the cache mode."""

    prompt: str = ""
    label: str = ""
    variables: Mapping[str, str] | None = None
    cache_mode: CacheMode = CacheMode.DEFAULT


_MODES = {"default": CacheMode.DEFAULT, "bypass": CacheMode.BYPASS, "refresh": CacheMode.REFRESH}


def extension(body: Mapping[str, Any]) -> Extension:
    ext = body.get("llmgw") or {}
    if not isinstance(ext, dict):
        raise InvalidArgument("llmgw", "must be an object")
    mode = _MODES.get(str(ext.get("cache_mode", "default")))
    if mode is None:
        raise InvalidArgument("llmgw.cache_mode", f"must be one of {', '.join(_MODES)}")
    variables = ext.get("variables") or {}
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise InvalidArgument("llmgw.variables", "must be an object of strings")
    return Extension(str(ext.get("prompt") or ""), str(ext.get("label") or ""), dict(variables), mode)


def request(body: Mapping[str, Any], messages: Sequence[Message], sampling: Sampling, metadata: Mapping[str, Any],
            output: Output = Output()) -> GatewayRequest:
    """The one domain request both faces run, from a dialect's parsed parts. ``model`` is resolved
    to its route by the core (so an unknown model is a request like any other: counted, published)."""
    ext = extension(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidArgument("model", "must be a string")
    if not model and not ext.prompt:
        raise InvalidArgument("model", "required (a route, or provider/model; GET /v1/models lists them)")
    if not isinstance(metadata, dict):
        raise InvalidArgument("metadata", "must be an object")
    return GatewayRequest(
        prompt=ext.prompt, label=ext.label, variables=dict(ext.variables or {}),
        messages=tuple(messages) if not ext.prompt else (), model=model or "",
        sampling=sampling, output=output, cache_mode=ext.cache_mode,
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def json_text(value: Any, where: str) -> str:
    """A JSON object as canonical text (sorted keys, no spaces): equal objects, equal cache keys."""
    if not isinstance(value, dict):
        raise InvalidArgument(where, "must be a JSON object")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def image_from_url(url: Any, where: str) -> Part:
    if not isinstance(url, str) or not url:
        raise InvalidArgument(where, "must be a URL (https: or data:)")
    return Part("image", url=url)


def plain_or_parts(texts: list[str], parts: list[Part]) -> tuple[str, tuple[Part, ...]]:
    """Text-only content stays one string (the same cache key as the string form); with an image,
    the parts in order."""
    if all(p.type == "text" for p in parts):
        return "".join(texts), ()
    return "", tuple(parts)


class Frames(Protocol):
    """A dialect's stream writer: one per stream (it may keep state, e.g. open content blocks)."""

    def opening(self) -> list[bytes]: ...

    def chunk(self, chunk: Chunk) -> list[bytes]: ...

    def closing(self, reply: Reply) -> list[bytes]: ...

    def failed(self, exc: LlmgwError) -> bytes: ...


async def sse(request_: web.Request, items: AsyncIterator[Chunk | Reply], frames: Frames, *,
              headers: Mapping[str, str], error: Callable[[LlmgwError], web.Response]) -> web.StreamResponse:
    """Relay the core's stream as SSE. Headers (and the opening frames) go out with the first
    item: an error before it answers ``error(exc)`` with its HTTP status; after it, the failed event."""
    resp: web.StreamResponse | None = None

    async def opened() -> web.StreamResponse:
        nonlocal resp
        if resp is None:
            resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                               **headers})
            await resp.prepare(request_)
            for frame in frames.opening():
                await resp.write(frame)
        return resp

    try:
        async for item in items:
            out = await opened()
            for frame in frames.chunk(item) if isinstance(item, Chunk) else frames.closing(item):
                await out.write(frame)
    except LlmgwError as exc:
        if resp is None:
            return error(exc)
        await resp.write(frames.failed(exc))
    final = await opened()
    await final.write_eof()
    return final
