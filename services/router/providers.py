"""Provider adapters over the official async SDKs: one client per provider, created once, shared.

Each adapter maps a rendered prompt variant (system prompt + messages) and sampling parameters to
its API (system placement, stop sequences, max_tokens) and translates SDK exceptions into
``ProviderError`` right here, so nothing above this module sees an SDK type.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
import openai

from llmgw.domain import Message, Sampling
from llmgw.services.router.config import ProviderConfig
from llmgw.services.router.errors import ProviderError, classify_status

__all__ = ["AnthropicProvider", "OpenAIProvider", "Provider", "ProviderReply", "StreamPiece", "make_provider"]

# Anthropic requires max_tokens; used when neither the caller nor the route sets one.
DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class ProviderReply:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str


@dataclass(frozen=True, slots=True)
class StreamPiece:
    """A delta, or (``done``) the end of the stream with the usage."""

    delta: str = ""
    done: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""


class Provider(Protocol):
    name: str

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> ProviderReply: ...

    def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> AsyncIterator[StreamPiece]: ...


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    raw = headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


@contextlib.contextmanager
def _translate(provider: str, sdk: Any) -> Iterator[None]:
    """Both SDKs share the exception shape; translate once, keep the cause."""
    try:
        yield
    except sdk.APIStatusError as exc:
        status = exc.status_code
        raise ProviderError(
            provider, classify_status(status), f"HTTP {status}: {exc.message}", status=status,
            retry_after_s=_retry_after(exc.response.headers),
        ) from exc
    except sdk.APITimeoutError as exc:
        raise ProviderError(provider, "retryable", "timeout") from exc
    except sdk.APIConnectionError as exc:
        raise ProviderError(provider, "retryable", f"connection error: {exc}") from exc
    except sdk.APIError as exc:
        raise ProviderError(provider, "retryable", f"API error: {exc}") from exc


def _api_key(cfg: ProviderConfig) -> str:
    key = os.environ.get(cfg.api_key_env) or cfg.fallback_api_key
    if not key:
        # Not fatal at start: the router falls back and reports "config" errors for this provider.
        return "missing-key"
    return key


class OpenAIProvider:
    name = "openai"

    def __init__(self, cfg: ProviderConfig) -> None:
        # max_retries=0: retries and fallback are the router's policy, not the SDK's.
        self._client = openai.AsyncOpenAI(api_key=_api_key(cfg), base_url=cfg.base_url, max_retries=0)

    @staticmethod
    def _params(model: str, system: str, messages: tuple[Message, ...], sampling: Sampling) -> dict[str, Any]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": m.role, "content": m.content} for m in messages
        ]
        params: dict[str, Any] = {"model": model, "messages": msgs}
        if sampling.temperature is not None:
            params["temperature"] = sampling.temperature
        if sampling.max_tokens is not None:
            params["max_completion_tokens"] = sampling.max_tokens
        if sampling.top_p is not None:
            params["top_p"] = sampling.top_p
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        return params

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> ProviderReply:
        with _translate(self.name, openai):
            resp = await self._client.chat.completions.create(
                **self._params(model, system, messages, sampling), timeout=timeout_s
            )
        choice = resp.choices[0]
        usage = resp.usage
        return ProviderReply(
            text=choice.message.content or "",
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "",
        )

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> AsyncIterator[StreamPiece]:
        finish, tin, tout = "", 0, 0
        with _translate(self.name, openai):
            stream = await self._client.chat.completions.create(
                **self._params(model, system, messages, sampling),
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout_s,
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    tin, tout = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield StreamPiece(delta=choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        yield StreamPiece(done=True, input_tokens=tin, output_tokens=tout, finish_reason=finish)

    async def close(self) -> None:
        await self._client.close()


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, cfg: ProviderConfig) -> None:
        self._client = anthropic.AsyncAnthropic(api_key=_api_key(cfg), base_url=cfg.base_url, max_retries=0)

    @staticmethod
    def _params(model: str, system: str, messages: tuple[Message, ...], sampling: Sampling) -> dict[str, Any]:
        # Anthropic takes the system prompt as a top-level field, never as a message.
        params: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "max_tokens": sampling.max_tokens or DEFAULT_MAX_TOKENS,
        }
        extra_system = [m.content for m in messages if m.role == "system"]
        full_system = "\n\n".join([s for s in [system, *extra_system] if s])
        if full_system:
            params["system"] = full_system
        # The current Messages API takes no temperature/top_p (the SDK rejects them): they are
        # dropped here, and the cache keys on the caller's request, not on what a provider accepts.
        if sampling.stop:
            params["stop_sequences"] = list(sampling.stop)
        return params

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> ProviderReply:
        with _translate(self.name, anthropic):
            resp = await self._client.messages.create(
                **self._params(model, system, messages, sampling), timeout=timeout_s
            )
        text = "".join(block.text for block in resp.content if getattr(block, "type", "") == "text")
        return ProviderReply(
            text=text,
            input_tokens=resp.usage.input_tokens,
            output_tokens=resp.usage.output_tokens,
            finish_reason=resp.stop_reason or "",
        )

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> AsyncIterator[StreamPiece]:
        finish, tin, tout = "", 0, 0
        with _translate(self.name, anthropic):
            stream = await self._client.messages.create(
                **self._params(model, system, messages, sampling), stream=True, timeout=timeout_s
            )
            async for event in stream:
                if event.type == "message_start":
                    tin = event.message.usage.input_tokens
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield StreamPiece(delta=event.delta.text)
                elif event.type == "message_delta":
                    tout = event.usage.output_tokens
                    finish = event.delta.stop_reason or ""
        yield StreamPiece(done=True, input_tokens=tin, output_tokens=tout, finish_reason=finish)

    async def close(self) -> None:
        await self._client.close()


def make_provider(name: str, cfg: ProviderConfig) -> OpenAIProvider | AnthropicProvider:
    return OpenAIProvider(cfg) if name == "openai" else AnthropicProvider(cfg)
