"""The routing policy: walk the route's targets in order, render each target's prompt variant,
retry retryable failures within the target, fall back to the next, and report every attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from llmgw.services.router.config import RouterConfig, Target
from llmgw.services.router.errors import ProviderError
from llmgw.services.router.providers import Provider
from prometheus_client import Counter, Histogram

from llmgw.domain import Attempt, Chunk, Completion, Message, RouteCall, Sampling
from llmgw.kit.errors import InvalidArgument, NotFound, Unavailable
from llmgw.kit.logging import get_logger
from llmgw.prompts import Registry

__all__ = ["Router"]

_log = get_logger(__name__)
ATTEMPTS = Counter("llmgw_router_attempts_total", "Provider attempts", ["provider", "model", "result"])
FALLBACKS = Counter("llmgw_router_fallbacks_total", "Requests served by a target other than the first", ["route"])
CONFIG_ALERTS = Counter(
    "llmgw_router_config_errors_total", "Provider calls failing because of our configuration (401/403/404)",
    ["provider", "model"],
)
PROVIDER_LATENCY = Histogram("llmgw_router_provider_seconds", "Provider call latency", ["provider", "model"])


class Router:
    """Implements ``llmgw.ports.RouterPort``."""

    def __init__(self, config: RouterConfig, providers: Mapping[str, Provider], registry: Registry) -> None:
        self._config = config
        self._providers = providers
        self._registry = registry

    def _route(self, call: RouteCall) -> tuple[str, list[Target], Sampling]:
        name = call.route or self._config.default_route
        route = self._config.routes.get(name)
        if route is None:
            raise NotFound(f"route {name!r} not found")
        return name, route.targets, call.sampling.with_defaults(route.sampling_defaults)

    def _render(self, call: RouteCall, provider: str) -> tuple[str, tuple[Message, ...]]:
        if not call.prompt:
            return "", call.messages
        pv = self._registry.get(call.prompt, call.prompt_version)
        return pv.render(call.variables, provider)

    def _usage(self, model: str, tin: int, tout: int) -> Any:
        return self._config.usage(model, tin, tout)

    def _note_failure(self, target: Target, exc: ProviderError) -> None:
        ATTEMPTS.labels(target.provider, target.model, exc.kind).inc()
        if exc.kind == "config":
            CONFIG_ALERTS.labels(target.provider, target.model).inc()
        _log.warning("provider_failed", provider=target.provider, model=target.model, kind=exc.kind,
                     error=exc.message)

    async def route(self, call: RouteCall) -> Completion:
        name, targets, sampling = self._route(call)
        attempts: list[Attempt] = []
        for index, target in enumerate(targets):
            system, messages = self._render(call, target.provider)
            provider = self._providers[target.provider]
            for attempt_no in range(target.attempts):
                start = time.perf_counter()
                try:
                    reply = await provider.complete(target.model, system, messages, sampling, target.timeout_s)
                except ProviderError as exc:
                    ms = (time.perf_counter() - start) * 1000
                    attempts.append(Attempt(target.provider, target.model, "error", exc.message, ms))
                    self._note_failure(target, exc)
                    if exc.kind == "caller":
                        raise InvalidArgument("request", exc.message) from exc
                    if exc.kind == "retryable" and attempt_no + 1 < target.attempts:
                        await asyncio.sleep(min(exc.retry_after_s or 0.05 * 2**attempt_no, 2.0))
                        continue
                    break
                ms = (time.perf_counter() - start) * 1000
                PROVIDER_LATENCY.labels(target.provider, target.model).observe(ms / 1000)
                ATTEMPTS.labels(target.provider, target.model, "ok").inc()
                attempts.append(Attempt(target.provider, target.model, "ok", "", ms))
                if index:
                    FALLBACKS.labels(name).inc()
                return Completion(
                    text=reply.text,
                    provider=target.provider,
                    model=target.model,
                    usage=self._usage(target.model, reply.input_tokens, reply.output_tokens),
                    attempts=tuple(attempts),
                    finish_reason=reply.finish_reason,
                )
        raise Unavailable(_all_failed(name, attempts), attempts=attempts)

    async def stream(self, call: RouteCall) -> AsyncIterator[Chunk]:
        """Fallback is possible until the first chunk is out; after that a failure ends the
        stream with an error (never a silent truncation)."""
        name, targets, sampling = self._route(call)
        attempts: list[Attempt] = []
        for index, target in enumerate(targets):
            system, messages = self._render(call, target.provider)
            provider = self._providers[target.provider]
            start = time.perf_counter()
            pieces = provider.stream(target.model, system, messages, sampling, target.timeout_s)
            try:
                first = await anext(pieces)
            except ProviderError as exc:
                attempts.append(Attempt(target.provider, target.model, "error", exc.message,
                                        (time.perf_counter() - start) * 1000))
                self._note_failure(target, exc)
                if exc.kind == "caller":
                    raise InvalidArgument("request", exc.message) from exc
                continue
            if index:
                FALLBACKS.labels(name).inc()
            piece = first
            try:
                while not piece.done:
                    yield Chunk(delta=piece.delta)
                    piece = await anext(pieces)
            except ProviderError as exc:
                self._note_failure(target, exc)
                raise Unavailable(f"stream from {target.provider}/{target.model} failed after the first chunk: "
                                  f"{exc.message}") from exc
            ms = (time.perf_counter() - start) * 1000
            ATTEMPTS.labels(target.provider, target.model, "ok").inc()
            attempts.append(Attempt(target.provider, target.model, "ok", "", ms))
            yield Chunk(
                delta="",
                final=True,
                completion=Completion(
                    text="",
                    provider=target.provider,
                    model=target.model,
                    usage=self._usage(target.model, piece.input_tokens, piece.output_tokens),
                    attempts=tuple(attempts),
                    finish_reason=piece.finish_reason,
                ),
            )
            return
        raise Unavailable(_all_failed(name, attempts), attempts=attempts)


def _all_failed(route: str, attempts: list[Attempt]) -> str:
    tried = "; ".join(f"{a.provider}/{a.model}: {a.error}" for a in attempts) or "no target"
    return f"every provider of route {route!r} failed ({tried})"
