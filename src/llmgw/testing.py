"""In-memory fakes of llmgw's own seams, for unit tests (as ``structlog.testing`` ships its own).

Only seams are faked here; the thing under test is always real. Integration tests use real Redis,
Kafka and gRPC servers instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from llmgw.domain import Message, Sampling
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
    """A ``Provider`` whose next calls fail as scripted: each item is None (succeed) or an error kind."""

    name: str
    script: list[Kind | None] = field(default_factory=list)
    fail_stream_after: int | None = None  # fail after this many chunks (a mid-stream failure)
    calls: list[tuple[str, str, tuple[Message, ...], Sampling]] = field(default_factory=list)

    def _next(self) -> None:
        kind = self.script.pop(0) if self.script else None
        if kind is not None:
            raise ProviderError(self.name, kind, f"scripted {kind} failure", status=500)

    def _text(self, messages: tuple[Message, ...]) -> str:
        return f"{self.name} says: {messages[-1].content}"

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> ProviderReply:
        self.calls.append((model, system, messages, sampling))
        self._next()
        text = self._text(messages)
        return ProviderReply(text=text, input_tokens=10, output_tokens=len(text.split()), finish_reason="stop")

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float
    ) -> AsyncIterator[StreamPiece]:
        self.calls.append((model, system, messages, sampling))
        self._next()
        words = self._text(messages).split(" ")
        for i, w in enumerate(words):
            if self.fail_stream_after is not None and i == self.fail_stream_after:
                raise ProviderError(self.name, "retryable", "connection reset mid-stream")
            yield StreamPiece(delta=w if i == 0 else " " + w)
        yield StreamPiece(done=True, input_tokens=10, output_tokens=len(words), finish_reason="stop")
