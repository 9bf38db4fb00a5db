"""The seams between services, as Protocols.

The ingress talks to the limiter, cache and router only through these, so the same ingress core
runs against gRPC clients (the real deployment) or the in-process cores (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from llmgw.domain import CacheEntry, Chunk, Completion, Decision, KeyMaterial, LookupResult, Prepared, RouteCall

__all__ = ["CachePort", "EventSink", "LimiterPort", "PreparingRouter", "RouterPort"]

Descriptor = Sequence[tuple[str, str]]


class LimiterPort(Protocol):
    async def check(
        self,
        descriptor: Descriptor,
        *,
        requests: int = 1,
        tokens: int = 0,
        request_id: str = "",
        domain: str = "gateway",
    ) -> Decision: ...

    async def settle(self, reservation_id: str, actual_tokens: int) -> int: ...

    async def admit(self, descriptor: Descriptor, *, domain: str = "gateway") -> Decision:
        """One request that costs no tokens (a cache hit): counted against request limits."""
        ...

    async def pause(self, descriptor: Descriptor, *, seconds: float, domain: str = "provider") -> int:
        """Refuse the descriptor's checks for ``seconds`` everywhere (a provider's 429); ms in force."""
        ...


class CachePort(Protocol):
    def peek(self, key: KeyMaterial) -> LookupResult | None:
        """A hit from process memory, without a round trip; ``None``: ask ``lookup``."""
        ...

    async def lookup(self, key: KeyMaterial, *, read: bool = True) -> LookupResult: ...

    async def wait(self, key: KeyMaterial, *, timeout_s: float) -> LookupResult: ...

    async def store(self, key: str, entry: CacheEntry, *, tenant: str, prompt: str = "", route: str = "",
                    lock_token: str = "", semantic: str = "") -> bool: ...

    async def release(self, key: str, lock_token: str = "") -> None: ...


class RouterPort(Protocol):
    async def route(self, call: RouteCall) -> Completion: ...

    def stream(self, call: RouteCall) -> AsyncIterator[Chunk]: ...


@runtime_checkable
class PreparingRouter(RouterPort, Protocol):
    """A router in the ingress's own process: it can ready a call's first attempt while the
    ingress still waits on its limiter and cache (``llmgw.domain.Prepared``)."""

    async def prepare(self, call: RouteCall) -> Prepared | None: ...

    def unprepare(self, prepared: Prepared) -> None: ...


class EventSink(Protocol):
    """Where the ingress hands events; must never block the request path."""

    def publish(self, topic: str, key: str, value: bytes) -> None: ...
