"""The routing policy: walk the route's targets in order, render each target's prompt variant,
retry retryable failures within the target, fall back to the next, and report every attempt."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from llmgw.domain import Attempt, Chunk, Completion, Message, RouteCall, Sampling
from llmgw.kit.breaker import Breaker, State
from llmgw.kit.errors import DeadlineExceeded, InvalidArgument, LlmgwError, NotFound, Unavailable
from llmgw.kit.logging import get_logger
from llmgw.kit.tasks import Background
from llmgw.kit.tokens import count_tokens
from llmgw.ports import LimiterPort
from llmgw.prompts import PromptVersion, Registry
from llmgw.services.router.config import RouterConfig, Target
from llmgw.services.router.errors import ProviderError
from llmgw.services.router.providers import DEFAULT_MAX_TOKENS, Provider

__all__ = ["Router"]

_log = get_logger(__name__)
ATTEMPTS = Counter("llmgw_router_attempts_total", "Provider attempts", ["provider", "model", "result"])
FALLBACKS = Counter("llmgw_router_fallbacks_total", "Requests served by a target other than the first", ["route"])
CONFIG_ALERTS = Counter(
    "llmgw_router_config_errors_total", "Provider calls failing because of our configuration (401/403/404)",
    ["provider", "model"],
)
BREAKER_STATE = Gauge(
    "llmgw_router_breaker_state", "Circuit state per target: 0 closed, 1 half-open, 2 open", ["provider", "model"]
)
PROVIDER_LATENCY = Histogram("llmgw_router_provider_seconds", "Provider call latency", ["provider", "model"])


class Router:
    """Implements ``llmgw.ports.RouterPort``."""

    def __init__(
        self,
        config: RouterConfig,
        providers: Mapping[str, Provider],
        registry: Registry,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        shaper: LimiterPort | None = None,
        budget_wait_s: float = 1.0,
    ) -> None:
        self._config = config
        self._providers = providers
        self._registry = registry
        self._clock = clock
        self._rng = rng or random.Random()
        # Outbound shaping: the limiter's "provider" domain mirrors each provider account's
        # RPM/TPM, so our own traffic never earns a provider 429.
        self._shaper = shaper
        self._budget_wait_s = budget_wait_s
        self._settles = Background()
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def breaker(self, target: Target) -> Breaker:
        key = (target.provider, target.model)
        if key not in self._breakers:

            def changed(state: State, provider: str = target.provider, model: str = target.model) -> None:
                BREAKER_STATE.labels(provider, model).set(int(state))
                _log.warning("circuit_state", provider=provider, model=model, state=state.name.lower())

            cfg = self._config.breaker
            self._breakers[key] = Breaker(failure_threshold=cfg.failure_threshold, open_seconds=cfg.open_seconds,
                                          clock=self._clock, on_change=changed)
            BREAKER_STATE.labels(*key).set(0)
        return self._breakers[key]

    def _route(self, call: RouteCall) -> tuple[str, list[Target], Sampling, PromptVersion | None]:
        name = call.route or self._config.default_route
        route = self._config.routes.get(name)
        if route is None:
            raise NotFound(f"route {name!r} not found")
        pv = self._registry.get(call.prompt, call.prompt_version) if call.prompt else None
        sampling = call.sampling
        if pv is not None:
            sampling = sampling.with_defaults(pv.sampling)  # caller, then prompt version, then route
        return name, route.targets, sampling.with_defaults(route.sampling_defaults), pv

    def _note_failure(self, target: Target, exc: ProviderError) -> None:
        ATTEMPTS.labels(target.provider, target.model, exc.kind).inc()
        if exc.kind == "caller":
            self.breaker(target).release()
        else:
            self.breaker(target).failure()
        if exc.kind == "config":
            CONFIG_ALERTS.labels(target.provider, target.model).inc()
        _log.warning("provider_failed", provider=target.provider, model=target.model, kind=exc.kind,
                     error=exc.message)

    def _failed_attempt(self, target: Target, exc: ProviderError, start: float, reservation: str,
                        attempts: list[Attempt]) -> None:
        """Record a failed call; the caller's own fault ends the request (no retry, no fallback)."""
        self._settle(reservation, 0)
        attempts.append(Attempt(target.provider, target.model, "error", exc.message,
                                (time.perf_counter() - start) * 1000))
        self._note_failure(target, exc)
        if exc.kind == "caller":
            raise InvalidArgument("request", exc.message) from exc

    def _usable(self, target: Target, pv: PromptVersion | None, attempts: list[Attempt]) -> bool:
        """A target is tried only if the prompt version has a variant for its provider (one that
        passed the eval gate, when the prompt is gated) and its
        circuit lets a call through; otherwise a 'skipped' attempt says why."""
        reason = pv.unsupported_reason(target.provider) if pv is not None else ""
        if not reason and not self.breaker(target).allow():
            reason = "circuit open"
        if not reason:
            return True
        attempts.append(Attempt(target.provider, target.model, "skipped", reason, 0.0))
        ATTEMPTS.labels(target.provider, target.model, "skipped").inc()
        return False

    async def _reserve(self, call: RouteCall, target: Target, system: str, messages: tuple[Message, ...],
                       sampling: Sampling, attempts: list[Attempt]) -> tuple[bool, str]:
        """Ask the provider budget before a call: (go, reservation). Waits at most
        ``budget_wait_s`` (and never past the deadline) for budget, else the target is skipped."""
        if self._shaper is None:
            return True, ""
        prompt_tokens = count_tokens(system + "".join(m.content for m in messages))
        tokens = prompt_tokens + (sampling.max_tokens or DEFAULT_MAX_TOKENS)
        waited = 0.0
        while True:
            try:
                d = await self._shaper.check([("provider", target.provider), ("model", target.model)], requests=1,
                                             tokens=tokens, request_id=f"{call.request_id or uuid.uuid4().hex}-"
                                             f"{target.provider}-{uuid.uuid4().hex[:6]}", domain="provider")
            except LlmgwError as exc:  # shaping unavailable: the provider's own limits still apply
                _log.warning("provider_budget_unavailable", error=exc.message)
                return True, ""
            if d.allowed:
                return True, d.reservation_id
            wait = d.retry_after_ms / 1000
            late = call.deadline is not None and time.monotonic() + wait >= call.deadline
            if waited + wait > self._budget_wait_s or late:
                attempts.append(Attempt(target.provider, target.model, "skipped",
                                        f"provider budget spent ({d.limit_name}, retry in {wait:.1f}s)", 0.0))
                ATTEMPTS.labels(target.provider, target.model, "budget").inc()
                return False, ""
            await asyncio.sleep(wait)
            waited += wait

    def _settle(self, reservation: str, tokens: int) -> None:
        if self._shaper is None or not reservation:
            return
        self._settles.spawn(self._shaper.settle(reservation, tokens))

    @staticmethod
    def _budget(call: RouteCall, target: Target) -> float:
        """This attempt's timeout: the target's, cut to what is left of the caller's deadline."""
        if call.deadline is None:
            return target.timeout_s
        left = call.deadline - time.monotonic()
        if left <= 0.005:
            raise DeadlineExceeded("the caller's deadline passed before a provider answered")
        return min(target.timeout_s, left)

    def _retry_wait(self, call: RouteCall, target: Target, exc: ProviderError, attempt_no: int) -> float | None:
        """Seconds to wait before retrying this target, or None to move on to the next one."""
        if exc.kind != "retryable" or attempt_no + 1 >= target.attempts:
            return None
        if exc.retry_after_s is not None:
            wait = exc.retry_after_s
            if wait > target.max_retry_wait_s:
                return None  # the provider asks for longer than we would wait: fall back now
        else:
            # Full jitter: spreads retries of many callers instead of synchronising them.
            wait = self._rng.uniform(0, target.backoff_base_s * 2**attempt_no)
        if call.deadline is not None and time.monotonic() + wait >= call.deadline:
            return None
        return wait

    async def route(self, call: RouteCall) -> Completion:
        name, targets, sampling, pv = self._route(call)
        attempts: list[Attempt] = []
        for index, target in enumerate(targets):
            if not self._usable(target, pv, attempts):
                continue
            system, messages = pv.render(call.variables, target.provider) if pv else ("", call.messages)
            provider = self._providers[target.provider]
            for attempt_no in range(target.attempts):
                if attempt_no and not self.breaker(target).allow():
                    break
                go, reservation = await self._reserve(call, target, system, messages, sampling, attempts)
                if not go:
                    self.breaker(target).release()
                    break
                start = time.perf_counter()
                try:
                    reply = await provider.complete(
                        target.model, system, messages, sampling, self._budget(call, target)
                    )
                except ProviderError as exc:
                    self._failed_attempt(target, exc, start, reservation, attempts)
                    wait = self._retry_wait(call, target, exc, attempt_no)
                    if wait is None:
                        break
                    await asyncio.sleep(wait)
                    continue
                except BaseException:
                    self.breaker(target).release()  # cancelled or out of time: no verdict on the target
                    raise
                ms = (time.perf_counter() - start) * 1000
                self._settle(reservation, reply.input_tokens + reply.output_tokens)
                self.breaker(target).success()
                PROVIDER_LATENCY.labels(target.provider, target.model).observe(ms / 1000)
                ATTEMPTS.labels(target.provider, target.model, "ok").inc()
                attempts.append(Attempt(target.provider, target.model, "ok", "", ms))
                if index:
                    FALLBACKS.labels(name).inc()
                return Completion(
                    text=reply.text,
                    provider=target.provider,
                    model=target.model,
                    usage=self._config.usage(target.model, reply.input_tokens, reply.output_tokens),
                    attempts=tuple(attempts),
                    finish_reason=reply.finish_reason,
                )
        raise Unavailable(_all_failed(name, attempts), attempts=attempts)

    async def stream(self, call: RouteCall) -> AsyncIterator[Chunk]:
        """Fallback is possible until the first chunk is out; after that a failure ends the
        stream with an error (never a silent truncation)."""
        name, targets, sampling, pv = self._route(call)
        attempts: list[Attempt] = []
        for index, target in enumerate(targets):
            if not self._usable(target, pv, attempts):
                continue
            system, messages = pv.render(call.variables, target.provider) if pv else ("", call.messages)
            provider = self._providers[target.provider]
            go, reservation = await self._reserve(call, target, system, messages, sampling, attempts)
            if not go:
                self.breaker(target).release()
                continue
            start = time.perf_counter()
            try:
                pieces = provider.stream(target.model, system, messages, sampling, self._budget(call, target))
                first = await anext(pieces)
            except ProviderError as exc:
                self._failed_attempt(target, exc, start, reservation, attempts)
                continue
            except BaseException:
                self.breaker(target).release()
                raise
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
            except BaseException:
                self.breaker(target).release()  # the caller went away mid-stream
                raise
            ms = (time.perf_counter() - start) * 1000
            self._settle(reservation, piece.input_tokens + piece.output_tokens)
            self.breaker(target).success()
            ATTEMPTS.labels(target.provider, target.model, "ok").inc()
            attempts.append(Attempt(target.provider, target.model, "ok", "", ms))
            yield Chunk(
                delta="",
                final=True,
                completion=Completion(
                    text="",
                    provider=target.provider,
                    model=target.model,
                    usage=self._config.usage(target.model, piece.input_tokens, piece.output_tokens),
                    attempts=tuple(attempts),
                    finish_reason=piece.finish_reason,
                ),
            )
            return
        raise Unavailable(_all_failed(name, attempts), attempts=attempts)


def _all_failed(route: str, attempts: list[Attempt]) -> str:
    tried = "; ".join(f"{a.provider}/{a.model}: {a.error}" for a in attempts) or "no target"
    return f"every provider of route {route!r} failed ({tried})"
