"""In-memory fakes of llmgw's own seams, for unit tests (as ``structlog.testing`` ships its own).

Only seams are faked here; the thing under test is always real. Integration tests use real Redis,
Kafka and gRPC servers instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from llmgw.domain import Message, Output, Sampling
from llmgw.services.router.errors import Kind, ProviderError
from llmgw.services.router.providers import ProviderReply, StreamPiece

__all__ = ["InMemoryEvents", "ScriptedProvider"]


@dataclass
class InMemoryEvents:
    """``EventSink`` that keeps what was published."""

    events: list[tuple[str, str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, key: str, value: bytes) -> None:
        self.events.append((topic, key, value))

    def on(self, topic: str) -> list[tuple[str, bytes]]:
        return [(k, v) for t, k, v in self.events if t == topic]


@dataclass
class ScriptedProvider:
    """A ``Provider`` whose next calls fail as scripted: each item is None (succeed), an error
    kind, or a ``ProviderError`` to raise as it is. ``delay_s`` (by model) makes a call slow: it
    then fails with a timeout when the router's timeout is shorter, as an SDK call would."""

    name: str
    script: list[Kind | ProviderError | None] = field(default_factory=list)
    fail_stream_after: int | None = None  # fail after this many chunks (a mid-stream failure)
    delay_s: dict[str, float] = field(default_factory=dict)
    calls: list[tuple[str, str, tuple[Message, ...], Sampling]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    async def _next(self, model: str, timeout_s: float) -> None:
        self.timeouts.append(timeout_s)
        delay = self.delay_s.get(model, 0.0)
        if delay:
            await asyncio.sleep(min(delay, timeout_s))
            if delay > timeout_s:
                raise ProviderError(self.name, "retryable", f"no answer within {timeout_s:.1f} s")
        item = self.script.pop(0) if self.script else None
        if isinstance(item, ProviderError):
            raise item
        if item is not None:
            raise ProviderError(self.name, item, f"scripted {item} failure", status=500)

    def _text(self, messages: tuple[Message, ...]) -> str:
        return f"{self.name} says: {messages[-1].content}"

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> ProviderReply:
        self.calls.append((model, system, messages, sampling))
        await self._next(model, timeout_s)
        text = self._text(messages)
        return ProviderReply(text=text, input_tokens=10, output_tokens=len(text.split()), finish_reason="stop")

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> AsyncIterator[StreamPiece]:
        self.calls.append((model, system, messages, sampling))
        await self._next(model, timeout_s)
        words = self._text(messages).split(" ")
        for i, w in enumerate(words):
            if self.fail_stream_after is not None and i == self.fail_stream_after:
                raise ProviderError(self.name, "retryable", "connection reset mid-stream")
            yield StreamPiece(delta=w if i == 0 else " " + w)
        yield StreamPiece(done=True, input_tokens=10, output_tokens=len(words), finish_reason="stop")
