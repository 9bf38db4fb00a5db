"""The routing policy: walk the route's targets in order, render each target's prompt variant,
retry retryable failures within the target, fall back to the next, and report every attempt.

What an attempt may cost is bounded three ways: the target's own timeout, a share of the
caller's deadline that leaves the rest of the chain time to answer, and (streams) a first-token
timeout. A provider's 429 pauses its target for every replica instead of counting as a failure;
the breaker (kit.breaker.RateBreaker) judges each target by its failure rate.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from llmgw.domain import (
    Attempt,
    Chunk,
    Completion,
    Decision,
    Message,
    Prepared,
    RouteCall,
    Sampling,
    ToolCall,
    assemble_tool_calls,
    prompt_text,
)
from llmgw.kit import tracing
from llmgw.kit.breaker import RateBreaker, State, Ticket
from llmgw.kit.errors import DeadlineExceeded, InvalidArgument, LlmgwError, NotFound, Unavailable
from llmgw.kit.logging import get_logger
from llmgw.kit.tasks import Background
from llmgw.kit.tokens import count_tokens
from llmgw.ports import LimiterPort
from llmgw.prompts import PromptVersion, Registry
from llmgw.services.limiter.core import PAUSE_LIMIT
from llmgw.services.router.config import RouterConfig, Target
from llmgw.services.router.errors import ProviderError
from llmgw.services.router.providers import DEFAULT_MAX_TOKENS, Provider, ProviderReply, StreamPiece

__all__ = ["Router"]

T = TypeVar("T")

_log = get_logger(__name__)
ATTEMPTS = Counter("llmgw_router_attempts_total", "Provider attempts", ["provider", "model", "result"])
FALLBACKS = Counter("llmgw_router_fallbacks_total", "Requests served by a target other than the first", ["route"])
CONFIG_ALERTS = Counter(
    "llmgw_router_config_errors_total", "Provider calls failing because of our configuration (401/403/404)",
    ["provider", "model"],
)
# A provider pause (a 429 met here or by another replica) ending within this long is waited out.
_PAUSE_ENDING_S = 0.1
PAUSES = Counter("llmgw_router_rate_limit_pauses_total", "429s that paused a target", ["provider", "model"])
CUT_OFF = Counter("llmgw_router_streams_cut_off_total", "Streams that failed after their first chunk",
                  ["provider", "model"])
BREAKER_STATE = Gauge(
    "llmgw_router_breaker_state", "Circuit state per target: 0 closed, 1 half-open, 2 open", ["provider", "model"]
)
HEDGES = Counter("llmgw_router_hedges_total", "Hedged requests, by which attempt answered", ["route", "winner"])
PROVIDER_LATENCY = Histogram("llmgw_router_provider_seconds", "Provider call latency", ["provider", "model"])



@dataclass(frozen=True, slots=True)
class _Plan:
    route: str
    targets: list[Target]
    sampling: Sampling
    version: PromptVersion | None


@dataclass(slots=True)
class _Slot:
    """One attempt's permissions: the breaker's ticket and the provider-budget reservation.
    Whatever ends the attempt settles both exactly once."""

    target: Target
    ticket: Ticket
    reservation: str
    prompt_tokens: int
    start: float = field(default_factory=time.perf_counter)
    span: Any = None  # the attempt's client span (traces on)

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000


@dataclass(slots=True)
class _Open:
    """A stream whose first piece arrived: from here on a failure cannot fall back."""

    slot: _Slot
    pieces: AsyncIterator[StreamPiece]
    first: StreamPiece
    ends_at: float  # loop time by which the whole stream must be done


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
        # RPM/TPM, so our own traffic never earns a provider 429; a 429 that still comes pauses
        # the target there for every replica.
        self._shaper = shaper
        self._budget_wait_s = budget_wait_s
        self._settles = Background()
        self._breakers: dict[tuple[str, str], RateBreaker] = {}
        # (provider, model) -> clock() until which a 429 keeps the target out (this replica).
        self._paused: dict[tuple[str, str], float] = {}
        # (provider, model) -> recent successful latencies (s), for hedging.
        self._latencies: dict[tuple[str, str], deque[float]] = {}
        # (provider, model) -> whether what ``prepare`` asks ahead can be given back whole, as the
        # target's last grant showed: its limits count no requests (a reservation's tokens can
        # always go back), or the grant can be voided (a limiter core in this process). Else a
        # request counted for a call that never happens (a hit, a refusal) would stay counted.
        self._ahead: dict[tuple[str, str], bool] = {}

    def breaker(self, target: Target) -> RateBreaker:
        key = (target.provider, target.model)
        if key not in self._breakers:

            def changed(state: State, provider: str = target.provider, model: str = target.model) -> None:
                BREAKER_STATE.labels(provider, model).set(int(state))
                _log.warning("circuit_state", provider=provider, model=model, state=state.name.lower())

            cfg = self._config.breaker
            self._breakers[key] = RateBreaker(
                failure_rate=cfg.failure_rate, min_calls=cfg.min_calls, window_s=cfg.window_s,
                open_s=cfg.open_seconds, half_open_probes=cfg.half_open_probes, clock=self._clock, on_change=changed,
            )
            BREAKER_STATE.labels(*key).set(0)
        return self._breakers[key]

    # ---- choosing and admitting targets ----

    def _plan(self, call: RouteCall) -> _Plan:
        name = call.route or self._config.default_route
        route = self._config.routes.get(name)
        if route is None:
            raise NotFound(f"route {name!r} not found")
        pv = self._registry.get(call.prompt, call.prompt_version) if call.prompt else None
        sampling = call.sampling
        if pv is not None:
            sampling = sampling.with_defaults(pv.sampling)  # caller, then prompt version, then route
        return _Plan(name, route.targets, sampling.with_defaults(route.sampling_defaults), pv)

    def _pause_left(self, target: Target) -> float:
        until = self._paused.get((target.provider, target.model))
        return 0.0 if until is None else until - self._clock()

    def _viable(self, target: Target, pv: PromptVersion | None) -> bool:
        """Could this target be tried now? (Takes no ticket: used to plan the deadline.)"""
        if pv is not None and pv.unsupported_reason(target.provider):
            return False
        return self._pause_left(target) <= 0 and self.breaker(target).state != State.OPEN

    def _has_next(self, plan: _Plan, index: int) -> bool:
        return any(self._viable(t, plan.version) for t in plan.targets[index + 1 :])

    def _skip(self, target: Target, reason: str, attempts: list[Attempt], result: str = "skipped") -> None:
        attempts.append(Attempt(target.provider, target.model, "skipped", reason, 0.0))
        tracing.event("llmgw.target_skipped", {"gen_ai.provider.name": target.provider,
                                                "gen_ai.request.model": target.model, "llmgw.reason": reason})
        ATTEMPTS.labels(target.provider, target.model, result).inc()

    def _ticket(self, target: Target, pv: PromptVersion | None, attempts: list[Attempt]) -> Ticket | None:
        """A target is tried only if no 429 pause holds it and its circuit lets a call through;
        otherwise a 'skipped' attempt says why."""
        paused = self._pause_left(target)
        if paused > 0:
            self._skip(target, f"rate limited by the provider (retry in {paused:.1f}s)", attempts, "paused")
            return None
        ticket = self.breaker(target).allow()
        if ticket is None:
            self._skip(target, "circuit open", attempts)
        return ticket

    async def _reserve(self, call: RouteCall, target: Target, prompt_tokens: int, sampling: Sampling,
                       attempts: list[Attempt], *, may_wait: bool) -> tuple[bool, str]:
        """Ask the provider budget before a call: (go, reservation). While another target of the
        route could answer, a spent budget moves on at once; the last one waits at most
        ``budget_wait_s`` (and never past the deadline)."""
        if self._shaper is None:
            return True, ""
        tokens = prompt_tokens + (sampling.max_tokens or DEFAULT_MAX_TOKENS)
        waited = 0.0
        while True:
            try:
                d = await self._ask_budget(call, target, tokens)
            except LlmgwError as exc:  # shaping unavailable: the provider's own limits still apply
                _log.warning("provider_budget_unavailable", error=exc.message)
                return True, ""
            if d.allowed:
                return True, d.reservation_id
            wait = d.retry_after_ms / 1000
            late = call.deadline is not None and time.monotonic() + wait >= call.deadline
            if d.limit_name == PAUSE_LIMIT:
                if wait <= _PAUSE_ENDING_S and waited < _PAUSE_ENDING_S and not late:
                    # Usually this router's own pause: shared with the limiter a moment after its
                    # local hold began, it ends a few ms later. Waiting that out beats leaving a
                    # target the retry policy just decided to call again.
                    await asyncio.sleep(wait)
                    waited += wait
                    continue
                # Another replica met this provider's 429: keep out here too, without asking again.
                self._hold(target, wait)
                self._skip(target, f"rate limited by the provider (retry in {wait:.1f}s)", attempts, "paused")
                return False, ""
            if not may_wait or waited + wait > self._budget_wait_s or late:
                self._skip(target, f"provider budget spent ({d.limit_name}, retry in {wait:.1f}s)", attempts,
                           "budget")
                return False, ""
            await asyncio.sleep(wait)
            waited += wait

    async def _ask_budget(self, call: RouteCall, target: Target, tokens: int) -> Decision:
        assert self._shaper is not None
        d = await self._shaper.check(
            [("provider", target.provider), ("model", target.model)], requests=1, tokens=tokens,
            request_id=f"{call.request_id or uuid.uuid4().hex}-{target.provider}-{uuid.uuid4().hex[:6]}",
            domain="provider")
        if d.allowed:
            self._ahead[(target.provider, target.model)] = d.void is not None or not any(
                st.unit == "requests" for st in d.statuses)
        return d

    def _hold(self, target: Target, seconds: float) -> None:
        key = (target.provider, target.model)
        self._paused[key] = max(self._paused.get(key, 0.0), self._clock() + seconds)

    def _pause(self, target: Target, exc: ProviderError) -> None:
        """A 429 is the provider's quota, not an outage: keep the target out for its retry-after,
        here at once and in every replica through the limiter."""
        cfg = self._config.rate_limits
        seconds = min(cfg.max_pause_s, exc.retry_after_s if exc.retry_after_s is not None else cfg.default_pause_s)
        self._hold(target, seconds)
        PAUSES.labels(target.provider, target.model).inc()
        if self._shaper is not None and seconds > 0:
            self._settles.spawn(self._share_pause(target, seconds))

    async def _share_pause(self, target: Target, seconds: float) -> None:
        try:
            assert self._shaper is not None
            await self._shaper.pause(
                [("provider", target.provider), ("model", target.model)], seconds=seconds, domain="provider")
        except LlmgwError as exc:
            _log.warning("provider_pause_not_shared", error=exc.message)

    def _settle(self, reservation: str, tokens: int) -> None:
        if self._shaper is None or not reservation:
            return
        self._settles.spawn(self._shaper.settle(reservation, tokens))

    # ---- the first attempt, ready ahead ----

    async def prepare(self, call: RouteCall) -> Prepared | None:
        """Ready the first target's attempt before the call is known to happen: render its prompt
        and reserve its provider budget. A router in the ingress's process runs this beside the
        ingress's limiter check and cache lookup, so a miss pays one round trip to Redis for all
        three (and the rendering overlaps it), not a second one after them. The budget is asked
        ahead only where what a hit or a refusal did not use can go back whole (``_ahead``);
        elsewhere the attempt is only rendered. None: nothing to prepare (the target is out,
        anything unusual: ``route`` does it all)."""
        try:
            plan = self._plan(call)
        except LlmgwError:
            return None
        if not plan.targets or not self._viable(plan.targets[0], plan.version):
            return None
        target = plan.targets[0]
        try:
            rendered = self._render(call, plan, target, [])
        except LlmgwError:
            return None  # the call itself reports it
        if rendered is None:
            return None
        system, messages, prompt_tokens = rendered
        # Without shaping there is no budget to ask: granted as it stands.
        ready = Prepared(target.provider, target.model, system, messages, prompt_tokens,
                         granted=self._shaper is None, reservation="")
        if self._shaper is None or not self._ahead.get((target.provider, target.model), False):
            return ready  # not known yet (the call's own grant will tell), or not given back whole
        try:
            d = await self._ask_budget(call, target, prompt_tokens + (plan.sampling.max_tokens or DEFAULT_MAX_TOKENS))
        except LlmgwError:
            return ready  # the call asks again and decides what a shaping outage means
        if d.allowed:  # refused: asked again by the call, which may wait or move on
            ready.granted, ready.reservation, ready.void = True, d.reservation_id, d.void
        return ready

    def unprepare(self, prepared: Prepared) -> None:
        """No call follows (a hit, a refusal, a cancel): the grant goes back at once."""
        if prepared.claim():
            self._give_back(prepared)

    def _give_back(self, prepared: Prepared) -> None:
        if prepared.void is not None:
            self._settles.spawn(prepared.void())
        else:
            self._settle(prepared.reservation, 0)

    def _take_prepared(self, call: RouteCall, index: int, target: Target) -> Prepared | None:
        p = call.prepared
        if p is None or index != 0 or (p.provider, p.model) != (target.provider, target.model) or not p.claim():
            return None
        return p

    # ---- time ----

    def _timeout(self, call: RouteCall, target: Target, has_next: bool) -> float:
        """This attempt's timeout: the target's, cut to what is left of the caller's deadline,
        minus a reserve for the rest of the chain when another target could still answer."""
        if call.deadline is None:
            return target.timeout_s
        left = call.deadline - time.monotonic()
        if left <= 0.005:
            raise DeadlineExceeded("the caller's deadline passed before a provider answered")
        if has_next:
            d = self._config.deadline
            left -= min(d.reserve_s, left * d.max_reserve_share)
        return min(target.timeout_s, left)

    def _retry_wait(self, call: RouteCall, target: Target, exc: ProviderError, attempt_no: int) -> float | None:
        """Seconds to wait before retrying this target, or None to move on to the next one."""
        if not exc.retriable or attempt_no + 1 >= target.attempts:
            return None
        if exc.kind == "rate_limited" and exc.retry_after_s is None:
            return None  # paused for the default pause: the next target, not a blind retry
        if exc.retry_after_s is not None:
            wait = exc.retry_after_s
            if wait > target.max_retry_wait_s:
                return None  # the provider asks for longer than we would wait: fall back now
        else:
            # Full jitter: spreads retries of many callers instead of synchronising them.
            wait = self._rng.uniform(0, target.backoff_base_s * 2**attempt_no)
        if self.breaker(target).state == State.OPEN:
            return None  # no sleeping for a target that will not be called
        if call.deadline is not None and time.monotonic() + wait >= call.deadline:
            return None
        return wait

    # ---- outcomes ----

    def _failed(self, slot: _Slot, exc: ProviderError, attempts: list[Attempt], *, tokens: int = 0) -> None:
        """Record a failed call and settle its slot; the caller's own fault ends the request."""
        target = slot.target
        self._settle(slot.reservation, tokens)
        attempts.append(Attempt(target.provider, target.model, "error", exc.message, slot.ms))
        ATTEMPTS.labels(target.provider, target.model, exc.kind).inc()
        breaker = self.breaker(target)
        if exc.kind in ("caller", "rate_limited"):
            breaker.release(slot.ticket)  # no verdict on the provider's health
        else:
            breaker.record(slot.ticket, ok=False)
        if exc.kind == "rate_limited":
            self._pause(target, exc)
        if exc.kind == "config":
            CONFIG_ALERTS.labels(target.provider, target.model).inc()
        _log.warning("provider_failed", provider=target.provider, model=target.model, kind=exc.kind,
                     error=exc.message)
        if slot.span is not None:
            tracing.finish(slot.span, {"error.type": exc.kind}, error=exc.message)
        if exc.kind == "caller":
            raise InvalidArgument("request", exc.message) from exc

    def _abandoned(self, slot: _Slot, tokens: int) -> None:
        """Cancelled or out of time mid-call: no verdict; the provider was sent the prompt."""
        self.breaker(slot.target).release(slot.ticket)
        self._settle(slot.reservation, tokens)
        if slot.span is not None:
            tracing.finish(slot.span, error="cancelled")

    def _succeeded(self, slot: _Slot, input_tokens: int, output_tokens: int, attempts: list[Attempt],
                   finish_reason: str = "") -> float:
        target = slot.target
        ms = slot.ms
        if slot.span is not None:
            tracing.finish(slot.span, {"gen_ai.response.model": target.model, "gen_ai.usage.input_tokens": input_tokens,
                                       "gen_ai.usage.output_tokens": output_tokens,
                                       "gen_ai.response.finish_reasons": [finish_reason] if finish_reason else []})
        self._settle(slot.reservation, input_tokens + output_tokens)
        self.breaker(target).record(slot.ticket, ok=True)
        PROVIDER_LATENCY.labels(target.provider, target.model).observe(ms / 1000)
        self._latencies.setdefault((target.provider, target.model), deque(maxlen=200)).append(ms / 1000)
        ATTEMPTS.labels(target.provider, target.model, "ok").inc()
        attempts.append(Attempt(target.provider, target.model, "ok", "", ms))
        return ms

    def _completion(self, plan: _Plan, index: int, text: str, input_tokens: int, output_tokens: int,
                    finish_reason: str, attempts: list[Attempt], tool_calls: tuple[ToolCall, ...] = ()) -> Completion:
        target = plan.targets[index]
        if index:
            FALLBACKS.labels(plan.route).inc()
            tracing.event("llmgw.fallback", {"gen_ai.provider.name": target.provider,
                                             "gen_ai.request.model": target.model, "llmgw.target_index": index})
        return Completion(text=text, provider=target.provider, model=target.model,
                          usage=self._config.usage(target.model, input_tokens, output_tokens),
                          attempts=tuple(attempts), finish_reason=finish_reason, tool_calls=tool_calls)

    async def _slot(self, call: RouteCall, plan: _Plan, index: int, prompt_tokens: int,
                    attempts: list[Attempt], held: Prepared | None = None) -> tuple[_Slot, float] | None:
        """Everything an attempt needs before the call: its timeout, a breaker ticket and the
        provider budget (``held``: granted already, by ``prepare``; given back if the target is
        out). None: the target is out (the reason is in ``attempts``)."""
        target = plan.targets[index]
        try:
            has_next = self._has_next(plan, index)
            self._timeout(call, target, has_next)  # DeadlineExceeded before anything is taken
            ticket = self._ticket(target, plan.version, attempts)
        except BaseException:
            if held is not None:
                self._give_back(held)
            raise
        if ticket is None:
            if held is not None:
                self._give_back(held)
            return None
        try:
            go, reservation = (True, held.reservation) if held is not None else await self._reserve(
                call, target, prompt_tokens, plan.sampling, attempts, may_wait=not has_next)
        except BaseException:
            self.breaker(target).release(ticket)
            raise
        if not go:
            self.breaker(target).release(ticket)
            return None
        # The budget wait came out of the deadline: recompute.
        slot = _Slot(target, ticket, reservation, prompt_tokens)
        if tracing.enabled():
            slot.span = tracing.tracer().start_span(f"chat {target.model}", kind=tracing.SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": target.provider,
                "gen_ai.request.model": target.model, "llmgw.route": plan.route})
        return slot, self._timeout(call, target, has_next)

    def _render(self, call: RouteCall, plan: _Plan, target: Target,
                attempts: list[Attempt]) -> tuple[str, tuple[Message, ...], int] | None:
        """The target's prompt variant, or None (skipped) when the prompt version has none for
        its provider, or none that passed the eval gate when the prompt is gated."""
        pv = plan.version
        if pv is None:
            return "", call.messages, count_tokens(prompt_text("", call.messages, call.output))
        reason = pv.unsupported_reason(target.provider)
        if reason:
            self._skip(target, reason, attempts)
            return None
        system, messages = pv.render(call.variables, target.provider)
        return system, messages, count_tokens(prompt_text(system, messages, call.output))

    # ---- unary ----

    async def route(self, call: RouteCall) -> Completion:
        plan = self._plan(call)
        attempts: list[Attempt] = []
        index = 0
        while index < len(plan.targets):
            delay = self._hedge_delay(plan, index)
            answered: tuple[int, ProviderReply] | None = None
            if delay is None:
                reply = await self._try_unary(call, plan, index, attempts)
                answered, tried = (None if reply is None else (index, reply)), 1
            else:
                answered, tried = await self._hedged(call, plan, index, delay, attempts)
            if answered is not None:
                i, got = answered
                return self._completion(plan, i, got.text, got.input_tokens, got.output_tokens,
                                        got.finish_reason, attempts, got.tool_calls)
            index += tried
        raise Unavailable(_all_failed(plan.route, attempts), attempts=attempts)

    def _hedge_delay(self, plan: _Plan, index: int) -> float | None:
        """How long target ``index`` may run before the next one is started beside it; None: no
        hedge (off for the route, no next target that could answer, too few samples)."""
        route = self._config.routes[plan.route]
        if not route.hedge or index + 1 >= len(plan.targets) or not self._viable(plan.targets[index + 1],
                                                                                  plan.version):
            return None
        target = plan.targets[index]
        cfg = self._config.hedging
        seen = self._latencies.get((target.provider, target.model))
        if seen is None or len(seen) < cfg.min_samples:
            return None
        ordered = sorted(seen)
        return max(cfg.min_delay_s, ordered[min(len(ordered) - 1, int(cfg.quantile * len(ordered)))])

    async def _hedged(self, call: RouteCall, plan: _Plan, index: int, delay: float, attempts: list[Attempt]
                      ) -> tuple[tuple[int, ProviderReply] | None, int]:
        """Target ``index``, and after ``delay`` target ``index + 1`` beside it: the first complete
        answer wins, the other call is cancelled (its budget settled as any cancel). Returns the
        answer (or None) and how many targets were tried."""
        own: dict[asyncio.Task[ProviderReply | None], tuple[int, list[Attempt]]] = {}
        first: list[Attempt] = []
        own[asyncio.create_task(self._try_unary(call, plan, index, first))] = (index, first)
        try:
            done, pending = await asyncio.wait(set(own), timeout=delay)
            if not done:
                second: list[Attempt] = []
                own[asyncio.create_task(self._try_unary(call, plan, index + 1, second))] = (index + 1, second)
                pending = set(own)
            while pending or done:
                if not done:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    reply = task.result()  # the caller's fault (InvalidArgument) ends it all
                    if reply is not None:
                        if len(own) > 1:
                            HEDGES.labels(plan.route, "hedge" if own[task][0] != index else "first").inc()
                        return (own[task][0], reply), len(own)
                done = set()
            return None, len(own)
        finally:
            for task in own:
                task.cancel()
            await asyncio.gather(*own, return_exceptions=True)
            for task, (i, mine) in own.items():
                attempts.extend(mine)
                if task.cancelled():
                    t = plan.targets[i]
                    attempts.append(Attempt(t.provider, t.model, "skipped", "hedge: another target answered first",
                                            0.0))

    async def _try_unary(self, call: RouteCall, plan: _Plan, index: int,
                         attempts: list[Attempt]) -> ProviderReply | None:
        target = plan.targets[index]
        provider = self._providers[target.provider]

        async def once(slot: _Slot, timeout: float, system: str, messages: tuple[Message, ...]) -> ProviderReply:
            reply = await provider.complete(target.model, system, messages, plan.sampling, timeout,
                                            output=call.output)
            self._succeeded(slot, reply.input_tokens, reply.output_tokens, attempts, reply.finish_reason)
            return reply

        return await self._with_retries(call, plan, index, attempts, once)

    async def _with_retries(self, call: RouteCall, plan: _Plan, index: int, attempts: list[Attempt],
                            once: Callable[[_Slot, float, str, tuple[Message, ...]], Awaitable[T]]) -> T | None:
        """The retry policy of one target, for unary calls and for opening streams alike: each try
        takes a slot (timeout, breaker ticket, provider budget); ``once`` raises ProviderError for a
        failed try. None: the target is out (the reasons are in ``attempts``)."""
        target = plan.targets[index]
        prepared = self._take_prepared(call, index, target)
        if prepared is not None:
            rendered: tuple[str, tuple[Message, ...], int] | None = (
                prepared.system, prepared.messages, prepared.prompt_tokens)
        else:
            rendered = self._render(call, plan, target, attempts)
        if rendered is None:
            return None
        system, messages, prompt_tokens = rendered
        held = prepared if prepared is not None and prepared.granted else None
        for attempt_no in range(target.attempts):
            got = await self._slot(call, plan, index, prompt_tokens, attempts, held)
            held = None  # a retry asks the budget again
            if got is None:
                return None
            slot, timeout = got
            try:
                return await once(slot, timeout, system, messages)
            except ProviderError as exc:
                self._failed(slot, exc, attempts)
                wait = self._retry_wait(call, target, exc, attempt_no)
                if wait is None:
                    return None
                tracing.event("llmgw.retry", {"gen_ai.provider.name": target.provider,
                                              "gen_ai.request.model": target.model, "llmgw.wait_s": wait})
                await asyncio.sleep(wait)
            except BaseException:
                self._abandoned(slot, prompt_tokens)
                raise
        return None

    # ---- streaming ----

    async def stream(self, call: RouteCall) -> AsyncIterator[Chunk]:
        """Fallback (and retry) is possible until the first chunk is out; after that a failure
        ends the stream with UNAVAILABLE saying the answer was cut off (never a silent
        truncation: a stream is complete only with the provider's terminal event)."""
        plan = self._plan(call)
        attempts: list[Attempt] = []
        for index in range(len(plan.targets)):
            opened = await self._open_stream(call, plan, index, attempts)
            if opened is None:
                continue
            async for chunk in self._relay(plan, index, opened, attempts):
                yield chunk
            return
        raise Unavailable(_all_failed(plan.route, attempts), attempts=attempts)

    async def _open_stream(self, call: RouteCall, plan: _Plan, index: int, attempts: list[Attempt]) -> _Open | None:
        target = plan.targets[index]
        provider = self._providers[target.provider]
        loop = asyncio.get_running_loop()

        async def once(slot: _Slot, timeout: float, system: str, messages: tuple[Message, ...]) -> _Open:
            first_limit = min(timeout, target.first_token_timeout_s or timeout)
            # The whole stream is bounded by the target's timeout and the caller's deadline (no
            # reserve once it streams: there is no fallback after the first chunk).
            total = target.timeout_s if call.deadline is None else min(
                target.timeout_s, call.deadline - time.monotonic())
            pieces = provider.stream(target.model, system, messages, plan.sampling, first_limit,
                                     output=call.output)
            try:
                async with asyncio.timeout(first_limit):
                    first = await anext(pieces)
            except (TimeoutError, StopAsyncIteration):
                await _close(pieces)
                raise ProviderError(target.provider, "retryable",
                                    f"no first token within {first_limit:.1f} s") from None
            except BaseException:
                await _close(pieces)
                raise
            if slot.span is not None:
                slot.span.add_event("gen_ai.first_token")
            return _Open(slot, pieces, first, loop.time() + total - slot.ms / 1000)

        return await self._with_retries(call, plan, index, attempts, once)

    async def _relay(self, plan: _Plan, index: int, opened: _Open, attempts: list[Attempt]) -> AsyncIterator[Chunk]:
        slot, pieces, piece = opened.slot, opened.pieces, opened.first
        target = slot.target
        sent: list[Chunk] = []
        loop = asyncio.get_running_loop()

        def used() -> int:  # what a cut-off stream still cost: the prompt and the text sent
            return slot.prompt_tokens + (count_tokens("".join(c.sent_text for c in sent)) if sent else 0)

        try:
            while not piece.done:
                if piece.delta or piece.tool_calls:
                    chunk = Chunk(delta=piece.delta, tool_calls=piece.tool_calls)
                    sent.append(chunk)
                    yield chunk
                try:
                    async with asyncio.timeout(max(0.0, opened.ends_at - loop.time())):
                        piece = await anext(pieces)
                except TimeoutError:
                    raise ProviderError(target.provider, "retryable",
                                        f"stream not finished within {target.timeout_s:.1f} s") from None
                except StopAsyncIteration:
                    raise ProviderError(target.provider, "retryable", "stream ended early") from None
        except ProviderError as exc:
            CUT_OFF.labels(target.provider, target.model).inc()
            self._failed(slot, exc, attempts, tokens=used())
            raise Unavailable(
                f"the answer from {target.provider}/{target.model} was cut off after {len(sent)} chunks "
                f"({exc.message}); what was sent is incomplete", attempts=attempts,
            ) from exc
        except BaseException:
            self._abandoned(slot, used())  # the caller went away mid-stream
            raise
        finally:
            await _close(pieces)
        self._succeeded(slot, piece.input_tokens, piece.output_tokens, attempts, piece.finish_reason)
        completion = self._completion(plan, index, "", piece.input_tokens, piece.output_tokens,
                                      piece.finish_reason, attempts,
                                      assemble_tool_calls(d for c in sent for d in c.tool_calls))
        yield Chunk(delta="", final=True, completion=completion)


async def _close(pieces: AsyncIterator[StreamPiece]) -> None:
    aclose = getattr(pieces, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception as exc:  # closing a broken stream must not mask why it broke
            _log.debug("provider_stream_close_failed", error=repr(exc))


def _all_failed(route: str, attempts: list[Attempt]) -> str:
    tried = "; ".join(f"{a.provider}/{a.model}: {a.error}" for a in attempts) or "no target"
    return f"every provider of route {route!r} failed ({tried})"
