"""One aiohttp app serving the OpenAI Chat Completions API (``/v1/chat/completions``) and the
Anthropic Messages API (``/v1/messages``), plain and SSE streaming, with per-provider faults.

Controls (JSON): ``POST /_control/{openai|anthropic}`` with any field of ``Faults``
(fakeproviders/faults.py: error rates per status, retry-after in its three forms, RPM/TPM limits,
dropped connections, truncated streams, malformed chunks, stalls, slow tokens);
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

from llmgw.fakeproviders.answers import Answer, Refused, anthropic_answer, json_chunks, openai_answer
from llmgw.fakeproviders.faults import Faults, Quota

__all__ = ["FakeProviders", "Faults", "create_app", "reply_for"]

PROVIDERS = ("openai", "anthropic")


# (provider, model, system prompt, messages as sent) -> the answer text.
Responder = Callable[[str, str, str, list[dict[str, Any]]], str]


@dataclass
class FakeProviders:
    faults: dict[str, Faults] = field(default_factory=lambda: {p: Faults() for p in PROVIDERS})
    responder: Responder | None = None
    calls: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PROVIDERS})
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    quotas: dict[str, Quota] = field(default_factory=lambda: {p: Quota() for p in PROVIDERS})


STATE: web.AppKey[FakeProviders] = web.AppKey("state", FakeProviders)


def count_tokens(text: str) -> int:
    # Roughly four characters a token, as the providers' own rule of thumb.
    return max(1, (len(text) + 3) // 4)


def reply_for(provider: str, model: str, last_user: str, fixed: str | None = None) -> str:
    if fixed is not None:
        return fixed
    quoted = " ".join(last_user.split())[:200]
    return f"[{provider}:{model}] You said: {quoted}"


def _text(content: Any) -> str:
    """The text of a message's content: a string, or its text parts / blocks."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


_ANSWERS = {"openai": openai_answer, "anthropic": anthropic_answer}


def _answer(state: FakeProviders, provider: str, body: dict[str, Any], last_user: str,
            conversation: Callable[[], tuple[str, list[dict[str, Any]]]]) -> Answer:
    """A fixed reply (a fault) first, then a scripted responder (given ``conversation()``: the
    system prompt and the messages), else the API's deterministic answer, which raises Refused
    where the real API answers 400."""
    model = str(body.get("model", ""))
    fixed = state.faults[provider].reply
    text = reply_for(provider, model, last_user, fixed)
    if fixed is not None:
        return Answer(text)
    if state.responder is not None:
        system, messages = conversation()
        return Answer(state.responder(provider, model, system, messages))
    return _ANSWERS[provider](body, model, text)


def _chunks(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _openai_error(status: int, headers: dict[str, str] | None = None, message: str = "") -> web.Response:
    kinds = {429: "rate_limit_exceeded", 400: "invalid_request_error", 401: "invalid_api_key"}
    body = {"error": {"message": message or f"fake openai error {status}", "type": kinds.get(status, "server_error"),
                      "code": kinds.get(status, "server_error")}}
    return web.json_response(body, status=status, headers=headers or {})


def _anthropic_error(status: int, headers: dict[str, str] | None = None, message: str = "") -> web.Response:
    kinds = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error",
             401: "authentication_error"}
    body = {"type": "error", "error": {"type": kinds.get(status, "api_error"),
                                       "message": message or f"fake anthropic error {status}"}}
    return web.json_response(body, status=status, headers=headers or {})


async def _prelude(state: FakeProviders, provider: str) -> web.Response | None:
    state.calls[provider] += 1
    f = state.faults[provider]
    if f.latency_ms:
        await asyncio.sleep(f.latency_ms / 1000)
    err = _openai_error if provider == "openai" else _anthropic_error
    wait = state.quotas[provider].refused(f, time.monotonic())
    if wait is not None:
        return err(429, Quota.headers(wait))
    status = f.failing_status(state.rng)
    if status is not None:
        return err(status, f.retry_headers())
    return None


# An event whose data is not JSON, named as each API names its content events (the Anthropic
# SDK skips events it has no name for).
_MALFORMED = {True: b'data: {"id": "broken", "choices": [{"delta": {"content": "x"\n\n',
              False: b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": \n\n'}


async def _drop(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """The connection dies mid-response, as a provider's load balancer drops it."""
    if request.transport is not None:
        request.transport.abort()
    return resp


async def _unary(request: web.Request, body: dict[str, Any], fault: str, f: Faults) -> web.StreamResponse:
    if fault == "stall":
        await asyncio.sleep(f.stall_ms / 1000)
    if fault.startswith("malformed"):
        return web.Response(status=200, body=b'{"id": "broken", "choices": [', content_type="application/json")
    if fault == "not_json":
        return web.Response(status=200, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
    if fault == "no_choices":
        empty: dict[str, Any] = {"choices": []} if "choices" in body else {"content": [], "stop_reason": None}
        return web.json_response({**body, **empty})
    if fault.startswith("disconnect"):
        data = json.dumps(body).encode()
        resp = web.StreamResponse(headers={"content-type": "application/json", "content-length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        return await _drop(request, resp)
    return web.json_response(body)


async def _sse(request: web.Request, events: list[tuple[str | None, Any]], *, first: int, terminal: int,
               fault: str, f: Faults, done: bool) -> web.StreamResponse:
    """Stream ``events``; ``first`` is the first content event, ``terminal`` the first of the
    closing events (finish_reason / message_delta ...), ``done``: the API ends with ``[DONE]``."""
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)

    def encode(name: str | None, data: Any) -> bytes:
        payload = data if isinstance(data, str) else json.dumps(data)
        return ((f"event: {name}\n" if name else "") + f"data: {payload}\n\n").encode()

    for i, (name, data) in enumerate(events):
        if i == first:
            if fault == "disconnect_before_first":
                return await _drop(request, resp)
            if fault == "malformed_before_first":
                await resp.write(_MALFORMED[done])
            if f.first_token_ms:
                await asyncio.sleep(f.first_token_ms / 1000)
        if fault == "truncate" and i >= max(first + 1, (first + terminal) // 2):
            if done:
                await resp.write(encode(None, "[DONE]"))
            break
        await resp.write(encode(name, data))
        if i == first:
            if fault == "disconnect_after_first":
                return await _drop(request, resp)
            if fault == "malformed_after_first":
                await resp.write(_MALFORMED[done])
            if fault == "stall":
                await asyncio.sleep(f.stall_ms / 1000)
        if f.chunk_delay_ms:
            await asyncio.sleep(f.chunk_delay_ms / 1000)
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
        return _openai_error(400)
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    try:
        answer = _answer(state, "openai", body, last_user, lambda: (
            "".join(str(m.get("content", "")) for m in messages if m.get("role") == "system"),
            [m for m in messages if m.get("role") != "system"]))
    except Refused as exc:
        return _openai_error(400, message=str(exc))
    text = answer.text
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "tool_calls" if answer.tool_calls else "stop"
    if max_tokens and count_tokens(text) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    prompt_tokens = sum(count_tokens(json.dumps(m.get("content", ""))) for m in messages)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(text),
             "total_tokens": prompt_tokens + count_tokens(text)}
    f = state.faults["openai"]
    state.quotas["openai"].record(time.monotonic(), usage["total_tokens"])
    fault = f.broken(state.rng)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
    if not body.get("stream"):
        content, final = (text[: len(text) // 2], None) if fault == "truncate" else (text, finish)
        return await _unary(request, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {
                "role": "assistant", "content": content if content or not answer.tool_calls else None,
                **({"tool_calls": [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                   for i, n, a in answer.tool_calls]} if answer.tool_calls else {})},
                "finish_reason": final}],
            "usage": usage,
        }, fault, f)
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    events: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]})
    ]
    events += [
        (None, {**base, "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]})
        for c in (_chunks(text) if text or not answer.tool_calls else [])
    ]
    for n, (call_id, name, args) in enumerate(answer.tool_calls):
        first_piece = {"index": n, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [first_piece]},
                                                   "finish_reason": None}]}))
        events += [(None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": n, "function": {"arguments": piece}}]}, "finish_reason": None}]}) for piece in json_chunks(args)]
    terminal = len(events)
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return await _sse(request, events, first=1, terminal=terminal, fault=fault, f=f, done=True)


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    failed = await _prelude(state, "anthropic")
    if failed is not None:
        return failed
    body = await request.json()
    model = body.get("model", "")
    messages = body.get("messages", [])
    if not messages or "max_tokens" not in body:
        return _anthropic_error(400)

    last_user = next((_text(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    try:
        answer = _answer(state, "anthropic", body, last_user, lambda: (
            _text(body.get("system") or ""),
            [{"role": m.get("role"), "content": _text(m.get("content", ""))} for m in messages]))
    except Refused as exc:
        return _anthropic_error(400, message=str(exc))
    text = answer.text
    stop = "tool_use" if answer.tool_calls else "end_turn"
    if count_tokens(text) > body["max_tokens"]:
        text, stop = text[: body["max_tokens"] * 4], "max_tokens"
    system = body.get("system") or ""
    input_tokens = count_tokens(_text(system)) if system else 0
    input_tokens += sum(count_tokens(json.dumps(m.get("content", ""))) for m in messages)
    mid = f"msg_{uuid.uuid4().hex[:12]}"
    f = state.faults["anthropic"]
    state.quotas["anthropic"].record(time.monotonic(), input_tokens + count_tokens(text))
    fault = f.broken(state.rng)
    if not body.get("stream"):
        content, final = (text[: len(text) // 2], None) if fault == "truncate" else (text, stop)
        return await _unary(request, {
            "id": mid, "type": "message", "role": "assistant", "model": model,
            "content": ([{"type": "text", "text": content}] if content or not answer.tool_calls else []) + [
                {"type": "tool_use", "id": i, "name": n, "input": json.loads(a)} for i, n, a in answer.tool_calls],
            "stop_reason": final, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": count_tokens(text)},
        }, fault, f)
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
    ]
    block = 0
    if text or not answer.tool_calls:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": c}})
            for c in _chunks(text)
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        block = 1
    for n, (call_id, name, args) in enumerate(answer.tool_calls, start=block):
        events.append(("content_block_start", {"type": "content_block_start", "index": n, "content_block": {
            "type": "tool_use", "id": call_id, "name": name, "input": {}}}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": n,
                                            "delta": {"type": "input_json_delta", "partial_json": piece}})
                   for piece in json_chunks(args)]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": n}))
    terminal = len(events) - 1
    events += [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": count_tokens(text)}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return await _sse(request, events, first=2, terminal=terminal, fault=fault, f=f, done=False)


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    target = request.match_info["target"]
    if target == "reset":
        state.faults = {p: Faults() for p in PROVIDERS}
        state.calls = {p: 0 for p in PROVIDERS}
        state.quotas = {p: Quota() for p in PROVIDERS}
        return web.json_response({"ok": True})
    if target not in PROVIDERS:
        return web.json_response({"error": f"unknown provider {target!r}"}, status=404)
    body = await request.json()
    current = asdict(state.faults[target])
    unknown = set(body) - set(current)
    if unknown:
        return web.json_response({"error": f"unknown fields {sorted(unknown)}"}, status=400)
    current.update(body)
    try:
        state.faults[target] = Faults(**current)
    except (TypeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
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
