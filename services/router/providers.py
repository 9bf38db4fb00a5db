"""Provider adapters over the official async SDKs: one client per provider, created once, shared.

Each adapter maps a rendered prompt variant (system prompt + messages), sampling parameters and
the answer's shape (tools, tool choice, response format) to its API through its wire module
(``openai_wire``, ``anthropic_wire``: the dialect translation, written once) and translates SDK exceptions into
``ProviderError`` right here, so nothing above this module sees an SDK type.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llmgw.domain import Message, Output, Sampling, ToolCall, ToolCallDelta
from llmgw.kit.logging import get_logger
from llmgw.services.router import anthropic_wire, openai_wire
from llmgw.services.router.anthropic_wire import DEFAULT_MAX_TOKENS
from llmgw.services.router.config import ProviderConfig
from llmgw.services.router.errors import ProviderError, classify_status

__all__ = [
    "DEFAULT_MAX_TOKENS", "AnthropicProvider", "OpenAIProvider", "Provider", "ProviderReply", "StreamPiece",
    "make_provider", "retry_after_s",
]

_log = get_logger(__name__)



@dataclass(frozen=True, slots=True)
class ProviderReply:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamPiece:
    """A delta, or (``done``) the end of the stream with the usage."""

    delta: str = ""
    done: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


class Provider(Protocol):
    name: str

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = ...,
    ) -> ProviderReply: ...

    def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = ...,
    ) -> AsyncIterator[StreamPiece]: ...


def retry_after_s(headers: Any, *, now: float | None = None) -> float | None:
    """The provider's wait, from ``retry-after-ms`` (both providers send it; the most precise),
    else ``retry-after`` in seconds or as an HTTP date; None when absent or unreadable."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _provider_message(exc: Any) -> str:
    """The provider's own error text (never the SDK's exception text), bounded."""
    body = getattr(exc, "body", None)
    text = ""
    if isinstance(body, dict):
        error = body.get("error")
        inner: dict[str, Any] = error if isinstance(error, dict) else body
        text = str(inner.get("message") or inner.get("type") or "")
    return text[:300]


# Failures of the response itself, whatever library noticed them: a body that is not JSON, an
# SSE event that does not parse, fields of the wrong shape (the SDKs parse lazily, so these
# surface as plain Python errors).
_MALFORMED = (json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError)


@contextlib.contextmanager
def _translate(provider: str, sdk: Any, timeout_s: float) -> Iterator[None]:
    """Every failure of a provider call becomes a classified ``ProviderError`` here, with a
    message of ours; the exception's detail goes to the log (the request id is bound there)."""
    try:
        yield
    except ProviderError:
        raise
    except sdk.APIStatusError as exc:
        status = exc.status_code
        detail = _provider_message(exc)
        raise ProviderError(
            provider, classify_status(status), f"HTTP {status}" + (f": {detail}" if detail else ""), status=status,
            retry_after_s=retry_after_s(exc.response.headers),
        ) from exc
    except sdk.APITimeoutError as exc:
        raise ProviderError(provider, "retryable", f"no answer within {timeout_s:.1f} s") from exc
    except sdk.APIConnectionError as exc:
        _log.warning("provider_transport_error", provider=provider, error=repr(exc.__cause__ or exc))
        raise ProviderError(provider, "retryable", "connection failed") from exc
    except (sdk.APIError, *_MALFORMED) as exc:
        _log.warning("provider_malformed_response", provider=provider, error=repr(exc))
        raise ProviderError(provider, "retryable", "malformed response") from exc
    except Exception as exc:  # the SDKs raise more than they document: classify, never leak
        if _is_transport(exc):
            _log.warning("provider_transport_error", provider=provider, error=repr(exc))
            raise ProviderError(provider, "retryable", "connection lost during the response") from exc
        _log.warning("provider_unexpected_error", provider=provider, error=repr(exc))
        raise ProviderError(provider, "retryable", "unexpected provider failure") from exc


def _is_transport(exc: Exception) -> bool:
    """A transport error raised while reading a body or stream, past the SDK's own wrapping.
    Told by the class hierarchy's names, not by import: the SDKs ship different HTTP stacks
    (httpx, httpcore, the Anthropic SDK's own ``httpx2``)."""
    return any(cls.__name__ in _TRANSPORT and cls.__module__.startswith(("httpx", "httpcore"))
               for cls in type(exc).__mro__)


_TRANSPORT = frozenset({"TransportError", "ProtocolError", "NetworkError", "TimeoutException"})


def _incomplete(provider: str, what: str) -> ProviderError:
    return ProviderError(provider, "retryable", f"{what}: the answer was cut off")


def _api_key(cfg: ProviderConfig) -> str:
    key = os.environ.get(cfg.api_key_env) or cfg.fallback_api_key
    if not key:
        # Not fatal at start: the router falls back and reports "config" errors for this provider.
        return "missing-key"
    return key


# The SDK's ``chat.completions.create`` first walks every request through its TypedDict
# transformer (renames, dates, files: nothing a chat body built by ``openai_wire`` needs); that
# walk was a tenth of a miss's CPU in the ingress under load (docs/benchmarks.md). The body goes
# to the same endpoint through the same client instead: same transport, errors and parsing.
_CHAT = "/chat/completions"


def _first(choices: object) -> dict[str, Any]:
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}


class OpenAIProvider:
    name = "openai"

    def __init__(self, cfg: ProviderConfig) -> None:
        # max_retries=0: retries and fallback are the router's policy, not the SDK's.
        self._client = openai.AsyncOpenAI(
            api_key=_api_key(cfg), base_url=cfg.base_url, max_retries=0,
            http_client=openai.DefaultAioHttpClient() if cfg.transport == "aiohttp" else None,
        )

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> ProviderReply:
        with _translate(self.name, openai, timeout_s):
            # The reply as JSON: building the SDK's models for the four fields read here was a
            # fifth of the call's CPU (docs/benchmarks.md).
            data = await self._client.post(
                _CHAT, body=openai_wire.params(model, system, messages, sampling, output), cast_to=dict,
                options={"timeout": timeout_s},
            )
            if not isinstance(data, dict):  # a 200 whose body is not a JSON object
                raise ProviderError(self.name, "retryable", "malformed response")
            choice = _first(data.get("choices"))
            message = choice.get("message") or {}
            usage = data.get("usage") or {}
            reply = ProviderReply(
                text=message.get("content") or "",
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                # No choice, or none with a finish_reason: an incomplete answer (below), not a crash.
                finish_reason=choice.get("finish_reason") or "",
                tool_calls=openai_wire.reply_tool_calls(message),
            )
        if not reply.finish_reason:
            raise _incomplete(self.name, "response without a finish_reason")
        return reply

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> AsyncIterator[StreamPiece]:
        finish, tin, tout = "", 0, 0
        with _translate(self.name, openai, timeout_s):
            stream = await self._client.post(
                _CHAT, body={**openai_wire.params(model, system, messages, sampling, output), "stream": True,
                             "stream_options": {"include_usage": True}},
                cast_to=ChatCompletion, stream=True, stream_cls=openai.AsyncStream[ChatCompletionChunk],
                options={"timeout": timeout_s},
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    tin, tout = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices:
                    calls = openai_wire.stream_deltas(choice.delta)
                    if choice.delta.content or calls:
                        yield StreamPiece(delta=choice.delta.content or "", tool_calls=calls)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        # Complete only with a chunk carrying a finish_reason: an EOF before it (a dropped
        # connection the server closed cleanly) is a truncated answer, not a short one.
        if not finish:
            raise _incomplete(self.name, "stream ended without a finish_reason")
        yield StreamPiece(done=True, input_tokens=tin, output_tokens=tout, finish_reason=finish)

    async def close(self) -> None:
        await self._client.close()


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, cfg: ProviderConfig) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=_api_key(cfg), base_url=cfg.base_url, max_retries=0,
            http_client=anthropic.DefaultAioHttpClient() if cfg.transport == "aiohttp" else None,
        )

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> ProviderReply:
        with _translate(self.name, anthropic, timeout_s):
            resp = await self._client.messages.create(
                **anthropic_wire.params(model, system, messages, sampling, output), timeout=timeout_s
            )
            text = "".join(block.text for block in resp.content if getattr(block, "type", "") == "text")
            reply = ProviderReply(
                text=text,
                input_tokens=resp.usage.input_tokens,
                output_tokens=resp.usage.output_tokens,
                finish_reason=resp.stop_reason or "",
                tool_calls=anthropic_wire.reply_tool_calls(resp.content),
            )
        if not reply.finish_reason:
            raise _incomplete(self.name, "response without a stop_reason")
        return reply

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> AsyncIterator[StreamPiece]:
        finish, tin, tout, stopped = "", 0, 0, False
        blocks = anthropic_wire.StreamState()
        with _translate(self.name, anthropic, timeout_s):
            stream = await self._client.messages.create(
                **anthropic_wire.params(model, system, messages, sampling, output), stream=True, timeout=timeout_s
            )
            async for event in stream:
                if event.type == "message_stop":
                    stopped = True
                elif event.type == "message_start":
                    tin = event.message.usage.input_tokens
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield StreamPiece(delta=event.delta.text)
                elif event.type == "message_delta":
                    tout = event.usage.output_tokens
                    finish = event.delta.stop_reason or ""
                elif calls := blocks.deltas(event):
                    yield StreamPiece(tool_calls=calls)
        # Complete only with message_stop after a stop_reason (see the OpenAI adapter).
        if not (stopped and finish):
            raise _incomplete(self.name, "stream ended without message_stop")
        yield StreamPiece(done=True, input_tokens=tin, output_tokens=tout, finish_reason=finish)

    async def close(self) -> None:
        await self._client.close()


def make_provider(name: str, cfg: ProviderConfig) -> OpenAIProvider | AnthropicProvider:
    return OpenAIProvider(cfg) if name == "openai" else AnthropicProvider(cfg)
