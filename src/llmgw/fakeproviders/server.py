"""One aiohttp app serving the OpenAI Chat Completions API (``/v1/chat/completions``) and the
Anthropic Messages API (``/v1/messages``), plain and SSE streaming, with per-provider faults.

Controls (JSON): ``POST /_control/{openai|anthropic}`` with any of
``latency_ms``, ``error_rate`` (0..1), ``status`` (e.g. 429, 500, 529), ``retry_after`` (s),
``fail_next`` (the next N calls fail with ``status``), ``reply`` (fixed text);
``POST /_control/reset``; ``GET /_stats`` -> calls per provider.
The answer is deterministic: it quotes the last user message, so tests can assert on it.
In process, a ``responder`` scripts the answer per request (the eval suite's own tests and its
reference recordings use one).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeProviders", "Faults", "create_app", "reply_for"]

PROVIDERS = ("openai", "anthropic")


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    status: int = 500
    retry_after: float | None = None
    fail_next: int = 0
    reply: str | None = None
    # Delay between streamed chunks.
    chunk_delay_ms: float = 0.0


# (provider, model, system prompt, messages as sent) -> the answer text.
Responder = Callable[[str, str, str, list[dict[str, Any]]], str]


@dataclass
class FakeProviders:
    faults: dict[str, Faults] = field(default_factory=lambda: {p: Faults() for p in PROVIDERS})
    responder: Responder | None = None
    calls: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PROVIDERS})
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def should_fail(self, provider: str) -> bool:
        f = self.faults[provider]
        if f.fail_next > 0:
            f.fail_next -= 1
            return True
        return f.error_rate > 0 and self.rng.random() < f.error_rate


STATE: web.AppKey[FakeProviders] = web.AppKey("state", FakeProviders)


def count_tokens(text: str) -> int:
    # Roughly four characters a token, as the providers' own rule of thumb.
    return max(1, (len(text) + 3) // 4)


def reply_for(provider: str, model: str, last_user: str, fixed: str | None = None) -> str:
    if fixed is not None:
        return fixed
    quoted = " ".join(last_user.split())[:200]
    return f"[{provider}:{model}] You said: {quoted}"


def _chunks(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _openai_error(status: int, retry_after: float | None) -> web.Response:
    kinds = {429: "rate_limit_exceeded", 400: "invalid_request_error", 401: "invalid_api_key"}
    body = {"error": {"message": f"fake openai error {status}", "type": kinds.get(status, "server_error"),
                      "code": kinds.get(status, "server_error")}}
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return web.json_response(body, status=status, headers=headers)


def _anthropic_error(status: int, retry_after: float | None) -> web.Response:
    kinds = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error",
             401: "authentication_error"}
    body = {"type": "error", "error": {"type": kinds.get(status, "api_error"),
                                       "message": f"fake anthropic error {status}"}}
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return web.json_response(body, status=status, headers=headers)


async def _prelude(state: FakeProviders, provider: str) -> web.Response | None:
    state.calls[provider] += 1
    f = state.faults[provider]
    if f.latency_ms:
        await asyncio.sleep(f.latency_ms / 1000)
    if state.should_fail(provider):
        err = _openai_error if provider == "openai" else _anthropic_error
        return err(f.status, f.retry_after)
    return None


async def _sse(request: web.Request, events: list[tuple[str | None, Any]], delay_ms: float) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        line = (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"
        await resp.write(line.encode())
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
    await resp.write_eof()
    return resp


async def openai_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    failed = await _prelude(state, "openai")
    if failed is not None:
        return failed
    body = await request.json()
    model = body.get("model", "")
    messages = body.get("messages", [])
    if not messages:
        return _openai_error(400, None)
    last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    text = reply_for("openai", model, str(last_user), state.faults["openai"].reply)
    if state.responder is not None and state.faults["openai"].reply is None:
        system = "".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        text = state.responder("openai", model, system, [m for m in messages if m.get("role") != "system"])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if max_tokens and count_tokens(text) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    prompt_tokens = sum(count_tokens(str(m.get("content", ""))) for m in messages)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(text),
             "total_tokens": prompt_tokens + count_tokens(text)}
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
    if not body.get("stream"):
        return web.json_response({
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": usage,
        })
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    events: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]})
    ]
    events += [
        (None, {**base, "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]})
        for c in _chunks(text)
    ]
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return await _sse(request, events, state.faults["openai"].chunk_delay_ms)


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    failed = await _prelude(state, "anthropic")
    if failed is not None:
        return failed
    body = await request.json()
    model = body.get("model", "")
    messages = body.get("messages", [])
    if not messages or "max_tokens" not in body:
        return _anthropic_error(400, None)

    def _text(content: Any) -> str:
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))

    last_user = next((_text(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    text = reply_for("anthropic", model, last_user, state.faults["anthropic"].reply)
    if state.responder is not None and state.faults["anthropic"].reply is None:
        text = state.responder("anthropic", model, _text(body.get("system") or ""),
                               [{"role": m.get("role"), "content": _text(m.get("content", ""))} for m in messages])
    stop = "end_turn"
    if count_tokens(text) > body["max_tokens"]:
        text, stop = text[: body["max_tokens"] * 4], "max_tokens"
    system = body.get("system") or ""
    input_tokens = count_tokens(_text(system)) if system else 0
    input_tokens += sum(count_tokens(_text(m.get("content", ""))) for m in messages)
    mid = f"msg_{uuid.uuid4().hex[:12]}"
    if not body.get("stream"):
        return web.json_response({
            "id": mid, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": count_tokens(text)},
        })
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": c}})
        for c in _chunks(text)
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": count_tokens(text)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return await _sse(request, events, state.faults["anthropic"].chunk_delay_ms)


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    target = request.match_info["target"]
    if target == "reset":
        state.faults = {p: Faults() for p in PROVIDERS}
        state.calls = {p: 0 for p in PROVIDERS}
        return web.json_response({"ok": True})
    if target not in PROVIDERS:
        return web.json_response({"error": f"unknown provider {target!r}"}, status=404)
    body = await request.json()
    current = asdict(state.faults[target])
    unknown = set(body) - set(current)
    if unknown:
        return web.json_response({"error": f"unknown fields {sorted(unknown)}"}, status=400)
    current.update(body)
    state.faults[target] = Faults(**current)
    return web.json_response(asdict(state.faults[target]))


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"calls": state.calls})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(state: FakeProviders | None = None) -> web.Application:
    app = web.Application()
    app[STATE] = state or FakeProviders()
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_post("/v1/messages", anthropic_messages)
    app.router.add_post("/_control/{target}", control)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/healthz", health)
    return app
