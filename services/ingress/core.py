"""The ingress core: one request through auth'd tenant -> validation -> limiter + cache (together)
-> router -> reply; cache store, limiter settle and events happen after the reply, off the path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter

from llmgw.domain import (
    COMPLETE_FINISH,
    LENGTH_FINISH,
    CacheEntry,
    Chunk,
    Completion,
    Decision,
    KeyMaterial,
    LimitStatus,
    LookupResult,
    Prepared,
    RouteCall,
    assemble_tool_calls,
    prompt_text,
)
from llmgw.inputs import SEGMENT_FIELDS, embedding_text, segment_key
from llmgw.keys.ledger import Hold
from llmgw.keys.ring import Identity, KeyRing
from llmgw.kit import tracing
from llmgw.kit.errors import Aborted, InvalidArgument, LlmgwError, RateLimited
from llmgw.kit.ids import new_request_id
from llmgw.kit.kafka import REQUESTS_TOPIC, RESPONSES_TOPIC
from llmgw.kit.logging import get_logger
from llmgw.kit.memo import Memo
from llmgw.kit.metrics import child
from llmgw.kit.redact import Redactor
from llmgw.kit.tasks import Background, Deferred
from llmgw.kit.tokens import count_tokens
from llmgw.ports import CachePort, EventSink, LimiterPort, PreparingRouter, RouterPort
from llmgw.prompts import PromptVersion, Registry
from llmgw.services.ingress.auth import check_scopes
from llmgw.services.ingress.effective import effective_sampling, route_for, route_name
from llmgw.services.ingress.events import request_event, response_event
from llmgw.services.ingress.request import CacheMode, GatewayRequest
from llmgw.services.ingress.spend import SpendGuard
from llmgw.services.router.config import RouterConfig

__all__ = ["Gateway", "Reply", "cache_metadata", "remaining_metadata"]

_log = get_logger(__name__)
# The route a request that names none (nor its prompt) runs on, as limit rules see it when the
# ingress has no routes file: "default", the shipped routes.yaml's default_route.
DEFAULT_ROUTE = "default"
REQUESTS = Counter("llmgw_requests_total", "Gateway requests by outcome", ["tenant", "status", "cache"])
TOKENS = Counter("llmgw_tokens_total", "Provider tokens used (cache hits excluded)",
                 ["tenant", "provider", "model", "direction"])
COST = Counter("llmgw_cost_usd_total", "Provider cost in USD (priced models only)", ["tenant", "provider", "model"])
DEPENDENCY_ERRORS = Counter("llmgw_ingress_dependency_errors_total", "Limiter/cache calls that failed", ["peer"])

# Offered to the cache: complete answers, and max_tokens cuts (the cache's policy decides those).
_STORABLE_FINISH = COMPLETE_FINISH | LENGTH_FINISH


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: str
    completion: Completion
    prompt_version: str
    cache_hit: bool
    limits: tuple[LimitStatus, ...] = ()
    # "exact", "semantic" or "miss"; a semantic hit's similarity.
    cache_tier: str = "miss"
    cache_similarity: float = 0.0


@dataclass(slots=True)
class _Resolved:
    """What a request resolves to for a tenant under the current labels: validated, defaults
    filled in, version and route chosen, cache key material built. A pure function of (tenant,
    request, label generation), so a repeat of a fingerprinted request reuses it."""

    req: GatewayRequest
    version: PromptVersion | None
    route: str
    key: KeyMaterial
    # The limiter descriptor after tenant and key id: route, prompt, label (docs/limits.md).
    descriptor_tail: tuple[tuple[str, str], ...] = ()
    # The prompt's tokens as it will be sent (rendering + tokenizing is costly): counted on first need.
    prompt_tokens: int | None = None
    # The route that runs (the named one, else the default): what scopes and prices are of.
    run_route: str = DEFAULT_ROUTE


@dataclass(slots=True)
class _Admitted:
    request_id: str
    identity: Identity
    resolved: _Resolved
    started: float
    stream: bool
    deadline: float | None = None
    at: float = 0.0  # wall clock at admission (the request event's time)
    trace: Any = None  # the request's span context (traces on): after-reply work joins its trace
    # The worst case reserved against the key's and tenant's budgets (a miss under a budget).
    hold: Hold | None = None
    # The router's first attempt, readied beside the limiter check and cache lookup (a router
    # in this process only; see ``Gateway._decide``).
    preparing: asyncio.Future[Prepared | None] | None = None

    @property
    def tenant(self) -> str:
        return self.identity.tenant

    @property
    def key_id(self) -> str:
        return self.identity.key_id

    @property
    def trace_id(self) -> str:
        return tracing.trace_id_of(self.trace)

    @property
    def descriptor(self) -> tuple[tuple[str, str], ...]:
        """What the limiter's gateway-domain rules may match: every key the ingress knows."""
        return (("tenant", self.tenant), ("api_key", self.key_id), *self.resolved.descriptor_tail)

    @property
    def req(self) -> GatewayRequest:
        return self.resolved.req

    @property
    def version(self) -> PromptVersion | None:
        return self.resolved.version

    @property
    def route(self) -> str:
        return self.resolved.route

    @property
    def key(self) -> KeyMaterial:
        return self.resolved.key

    @property
    def prompt_version(self) -> str:
        return self.version.id if self.version else ""

    def call(self, prepared: Prepared | None = None) -> RouteCall:
        return RouteCall(
            route=self.req.route,
            request_id=self.request_id,
            tenant=self.tenant,
            prompt=self.req.prompt,
            prompt_version=self.prompt_version,
            variables=self.req.variables,
            messages=self.req.messages,
            sampling=self.req.sampling,
            output=self.req.output,
            deadline=self.deadline,
            prepared=prepared,
        )




class Gateway:
    def __init__(
        self,
        *,
        limiter: LimiterPort,
        cache: CachePort,
        router: RouterPort,
        events: EventSink,
        registry: Registry,
        keys: Callable[[], KeyRing],
        redactor: Redactor | None = None,
        default_label: str = "production",
        default_max_tokens: int = 512,
        limiter_fail_open: bool = True,
        single_flight_wait_s: float = 10.0,
        memo_entries: int = 1024,
        bookkeeping_delay_s: float = 0.002,
        routes: RouterConfig | None = None,
        spend: SpendGuard | None = None,
        events_key_by: Sequence[str] = SEGMENT_FIELDS,
    ) -> None:
        # The router's routes (the same file): what really runs, for the cache key.
        self._routes = routes
        self._limiter = limiter
        self._cache = cache
        self._router = router
        # A router in this process readies a miss's provider call during the gate (one Redis
        # round trip for the limiter, the cache and the provider budget instead of two in a row),
        # except for a tenant whose last check was refused: a refused request would only reserve
        # provider budget to give it back, and a flood of them would hold it from others.
        self._preparing = router if isinstance(router, PreparingRouter) else None
        self._refused: set[str] = set()
        self._events = events
        self._events_key_by = tuple(events_key_by)
        self._registry = registry
        # The ring in force (a store change swaps it whole): read once per request.
        self._keys = keys
        self._spend = spend or SpendGuard(None, routes)
        self._redactor = redactor or Redactor()
        self._default_label = default_label
        self._default_max_tokens = default_max_tokens
        self._limiter_fail_open = limiter_fail_open
        self._single_flight_wait_s = single_flight_wait_s
        self._background = Background()
        self._resolutions: Memo[tuple[str, bytes, int], _Resolved] = Memo(memo_entries)
        # After a reply: what others wait for (a store single-flight waiters need, a settle)
        # starts on the next loop turn; events and metrics are built a moment later, off its path.
        self._soon = Deferred(0)
        self._bookkeeping = Deferred(bookkeeping_delay_s)

    # ---- helpers ----

    def _later(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run after the reply; failures are logged, never raised into a request."""

        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:  # background bookkeeping must not crash anything
                _log.warning("background_task_failed", error=repr(exc))

        self._background.spawn(guarded())

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for after-reply work (tests, graceful stop)."""
        self._soon.flush()
        self._bookkeeping.flush()
        await self._background.wait(timeout_s)

    def _admit(
        self, authorization: str | None, req: GatewayRequest, *, request_id: str, stream: bool,
        time_remaining: float | None = None,
    ) -> _Admitted:
        started = time.perf_counter()
        identity = _ANONYMOUS
        try:
            identity = self._keys().identify(authorization)
            tenant = identity.tenant
            resolved = self._resolve(tenant, req)
            check_scopes(identity, route=resolved.run_route,
                         prompt=resolved.req.prompt, routes=self._routes)
        except LlmgwError as exc:
            self._bookkeeping.call(self._publish_outcome, request_id, identity, req, "", req.route, exc, started,
                                   None, False, time.perf_counter(), time.time(),
                                   tracing.trace_id_of(tracing.current_context()))
            raise
        deadline = time.monotonic() + time_remaining if time_remaining is not None else None
        admitted = _Admitted(request_id, identity, resolved, started, stream, deadline, time.time(),
                             tracing.current_context())
        if admitted.trace is not None and self._redactor.trace_input(tenant):
            # A tenant's opt-in; the redaction of its events applies.
            r = resolved.req
            text = embedding_text(r.variables, ((m.role, m.text) for m in r.messages))
            tracing.annotate({"llmgw.input_text": self._redactor.for_tenant(tenant)(text)})
        return admitted

    def _resolve(self, tenant: str, req: GatewayRequest) -> _Resolved:
        """Validation, label resolution and key material; a repeat (same fingerprint, tenant and
        label generation) reuses the first one's. A label move bumps the generation, so a promote
        or rollback is seen by the very next request. Invalid requests raise and are not kept."""
        memo_key = (tenant, req.fingerprint, self._registry.generation) if req.fingerprint else None
        if memo_key is not None and (known := self._resolutions.get(memo_key)) is not None:
            return known
        req.validate_shape()
        if req.model:
            named = route_for(req.model, self._routes)
            if req.route and req.route != named:
                raise InvalidArgument("model", f"runs on route {named!r}, but the request names route {req.route!r}")
            req = replace(req, route=named, fingerprint=b"")
        version = None
        if req.prompt:
            version = self._registry.resolve(req.prompt, req.label or self._default_label)
            # Defaults filled in: a caller passing a default explicitly hits the same cache entry.
            # (No longer the caller's bytes: the fingerprint goes.)
            req = replace(req, variables=version.variables(req.variables), route=req.route or version.route,
                          fingerprint=b"")
        route = route_name(req.route, self._routes) or DEFAULT_ROUTE
        tail = (("route", route),
                *((("prompt", req.prompt), ("label", req.label or self._default_label)) if req.prompt else ()))
        sampling, targets = effective_sampling(req.sampling, version, req.route, self._routes)
        resolved = _Resolved(req, version, req.route, descriptor_tail=tail, run_route=route, key=KeyMaterial(
            tenant=tenant,
            route=req.route,
            prompt=req.prompt,
            prompt_version=version.id if version else "",
            variables=req.variables,
            messages=req.messages,
            sampling=sampling,
            targets=targets,
            output=req.output,
        ))
        if memo_key is not None:
            self._resolutions.put(memo_key, resolved)
        return resolved

    def _event_key(self, a: _Admitted) -> str:
        if self._events_key_by == ("request_id",):
            return a.request_id
        return segment_key({"tenant": a.tenant, "route": a.route, "prompt": a.req.prompt, "label": a.req.label},
                           self._events_key_by)

    def _publish_request(self, a: _Admitted) -> None:
        self._events.publish(
            REQUESTS_TOPIC,
            self._event_key(a),
            request_event(a.req, request_id=a.request_id, tenant=a.tenant, at=a.at,
                          prompt_version=a.prompt_version, route=a.route, stream=a.stream,
                          redact=self._redactor.for_tenant(a.tenant),
                          raw_input=self._redactor.raw_input(a.tenant), trace_id=a.trace_id, key_id=a.key_id),
        )

    def _estimate(self, a: _Admitted) -> int:
        """Tokens to reserve: the prompt as it will be sent (counted with cl100k_base) plus the
        most the answer may take. Settled against the provider's real usage afterwards."""
        return self._prompt_token_count(a) + (a.key.sampling.max_tokens or self._default_max_tokens)

    def _prompt_token_count(self, a: _Admitted) -> int:
        r = a.resolved
        if r.prompt_tokens is None:
            system, messages = r.version.render(r.req.variables) if r.version is not None else ("", r.req.messages)
            r.prompt_tokens = count_tokens(prompt_text(system, messages, r.req.output))
        return r.prompt_tokens

    async def _check(self, a: _Admitted) -> Decision:
        return await self._limited(self._limiter.check(
            a.descriptor, requests=1, tokens=self._estimate(a), request_id=a.request_id
        ))

    async def _limited(self, decision: Coroutine[Any, Any, Decision]) -> Decision:
        try:
            return await decision
        except LlmgwError as exc:
            if not exc.retriable:
                raise
            DEPENDENCY_ERRORS.labels("limiter").inc()
            _log.warning("limiter_unreachable", error=exc.message, fail_open=self._limiter_fail_open)
            if self._limiter_fail_open:
                return Decision(allowed=True)
            raise

    async def _reserve_budget(self, a: _Admitted) -> None:
        """A miss under a budget reserves its worst case before the provider call (a hit costs
        nothing and reserves nothing). Shielded like the limiter check: a request cancelled
        meanwhile gives the reservation back instead of leaving it charged."""
        if not a.identity.budgets:
            return
        route = a.resolved.run_route
        max_tokens = a.key.sampling.max_tokens or self._default_max_tokens
        reserving = asyncio.ensure_future(self._spend.reserve(a.identity, route, self._prompt_token_count(a),
                                                              max_tokens))
        try:
            a.hold = await asyncio.shield(reserving)
        except asyncio.CancelledError:
            reserving.add_done_callback(lambda done: self._unreserve(a, done))
            raise

    def _unreserve(self, a: _Admitted, done: asyncio.Future[Hold | None]) -> None:
        if not done.cancelled() and done.exception() is None and (hold := done.result()) is not None:
            self._later(self._spend.settle(a.identity, hold, 0))

    async def _lookup(self, a: _Admitted) -> LookupResult:
        read = a.req.cache_mode == CacheMode.DEFAULT
        try:
            return await self._cache.lookup(a.key, read=read)
        except LlmgwError as exc:
            # Never a failed request because of the cache: go on as a miss.
            DEPENDENCY_ERRORS.labels("cache").inc()
            _log.warning("cache_unreachable", error=exc.message)
            return LookupResult(key="", cacheable=False)

    async def _gate(self, a: _Admitted) -> tuple[Decision, LookupResult]:
        """Limiter check and cache lookup run concurrently (one round trip of latency, not two).
        The request's event follows the decision, refused or not, before any provider call."""
        try:
            return await self._decide(a)
        finally:
            self._bookkeeping.call(self._publish_request, a)

    async def _decide(self, a: _Admitted) -> tuple[Decision, LookupResult]:
        if a.req.cache_mode == CacheMode.DEFAULT:
            near = self._cache.peek(a.key)
            if near is not None:
                # Answered from memory: only the request limit is left to decide (a hit costs no
                # tokens), often from a lease without any round trip.
                return self._allowed(a, await self._limited(self._limiter.admit(a.descriptor))), near
        check = asyncio.ensure_future(self._check(a))
        lookup = asyncio.ensure_future(self._lookup(a))
        if self._preparing is not None and a.tenant not in self._refused:
            a.preparing = asyncio.ensure_future(self._preparing.prepare(a.call()))
        try:
            # Shielded: a request cancelled here (client cancel, deadline) lets both calls finish
            # and gives back what they took, instead of leaving a reservation charged and a
            # single-flight lock held until they expire.
            decision = await asyncio.shield(check)
        except BaseException:
            lookup.add_done_callback(self._release_if_leader)
            check.add_done_callback(self._settle_if_reserved)
            raise
        if decision.allowed:
            self._refused.discard(a.tenant)
        else:
            self._refused.add(a.tenant)
            # Let the lookup finish (it is bounded): a refused request must not keep a
            # single-flight lock that identical requests of other callers would wait on.
            lookup.add_done_callback(self._release_if_leader)
        self._allowed(a, decision)
        try:
            found = await asyncio.shield(lookup)
            if found.in_flight:
                found = await self._wait(a, found)
        except BaseException:
            lookup.add_done_callback(self._release_if_leader)
            self._release(decision, None)
            raise
        return decision, found

    async def _route_call(self, a: _Admitted) -> RouteCall:
        """The call for the router, with its first attempt if one was readied (waited for: it
        ran beside the gate, so it is usually done)."""
        if a.preparing is None:
            return a.call()
        try:
            return a.call(await asyncio.shield(a.preparing))
        except Exception as exc:  # readying is only a shortcut: the call does it all itself
            _log.warning("router_prepare_failed", error=repr(exc))
            return a.call()

    def _unprepare(self, a: _Admitted) -> None:
        """No provider call used what was readied (a hit, a refusal, an error, a cancel): its
        budget goes back, now or when readying ends. A no-op once the router took it."""
        if a.preparing is None or self._preparing is None:
            return
        router = self._preparing

        def give_back(done: asyncio.Future[Prepared | None]) -> None:
            if not done.cancelled() and done.exception() is None and (p := done.result()) is not None:
                router.unprepare(p)

        if a.preparing.done():
            give_back(a.preparing)
        else:
            a.preparing.add_done_callback(give_back)

    def _settle_if_reserved(self, done: asyncio.Future[Decision]) -> None:
        if not done.cancelled() and done.exception() is None and done.result().reservation_id:
            self._later(self._limiter.settle(done.result().reservation_id, 0))

    @staticmethod
    def _allowed(a: _Admitted, decision: Decision) -> Decision:
        if not decision.allowed:
            raise RateLimited(
                f"rate limit {decision.limit_name!r} exceeded for tenant {a.tenant!r}",
                retry_after_s=decision.retry_after_ms / 1000,
                limit=decision.limit_name,
                metadata=remaining_metadata(decision.statuses),
            )
        return decision

    def _release_if_leader(self, done: asyncio.Future[LookupResult]) -> None:
        if not done.cancelled() and done.exception() is None and done.result().leader:
            self._later(self._cache.release(done.result().key, done.result().lock_token))

    async def _wait(self, a: _Admitted, first: LookupResult) -> LookupResult:
        """An identical request is already calling the provider: take its answer (bounded wait)."""
        try:
            # As long as the leader's lock holds (one setting, the cache's SINGLE_FLIGHT_LOCK_S):
            # a leader that died frees its waiters when its lock expires, not later or sooner.
            wait_s = first.lock_ttl_ms / 1000 + 0.1 if first.lock_ttl_ms else self._single_flight_wait_s
            return await self._cache.wait(a.key, timeout_s=wait_s)
        except LlmgwError as exc:
            DEPENDENCY_ERRORS.labels("cache").inc()
            _log.warning("cache_wait_failed", error=exc.message)
            return LookupResult(key=first.key, cacheable=first.cacheable)

    def _publish_outcome(
        self, request_id: str, identity: Identity, req: GatewayRequest, prompt_version: str, route: str,
        exc: LlmgwError | None, started: float, completion: Completion | None, cache_hit: bool,
        ended: float, at: float, trace_id: str = "", charged: int = 0, tier: str = "", similarity: float = 0.0,
    ) -> None:
        """``ended``: perf_counter when the reply left; ``at``: the wall clock then; ``charged``:
        the request's charge (nano-USD), as the spend ledger got it."""
        tenant = identity.tenant
        status = exc.code.name if exc else "OK"
        child(REQUESTS, tenant, status, "hit" if cache_hit else "miss").inc()
        c = completion
        self._events.publish(
            RESPONSES_TOPIC,
            request_id,
            response_event(
                request_id=request_id, tenant=tenant, at=at, prompt=req.prompt, prompt_version=prompt_version,
                route=route, status=status, latency_ms=(ended - started) * 1000,
                text=c.text if c else "", provider=c.provider if c else "", model=c.model if c else "",
                error=exc.message if exc else "", usage=c.usage if c else None, cache_hit=cache_hit,
                attempts=c.attempts if c else tuple(getattr(exc, "attempts", ()) or ()),
                finish_reason=c.finish_reason if c else "", tool_calls=c.tool_calls if c else (),
                redact=self._redactor.for_tenant(tenant), trace_id=trace_id, key_id=identity.key_id,
                charged_nanousd=charged, cache_tier=tier, cache_similarity=similarity,
            ),
        )

    def _finish(self, a: _Admitted, decision: Decision, lookup: LookupResult, completion: Completion,
                chunks: tuple[Chunk, ...], *, hit: bool) -> None:
        """After the reply: settle the token reservation and store (next loop turn), then the
        metrics and the response event (deferred). A hit from memory has only the latter."""
        ended, at = time.perf_counter(), time.time()
        if a.trace is not None:  # one call per request: each set on a span takes a lock
            u = completion.usage
            tracing.annotate({**_span_attributes(a), "llmgw.cache_hit": hit,
                              "llmgw.cache_tier": (lookup.tier or "exact") if hit else "miss",
                              "gen_ai.provider.name": completion.provider,
                              "gen_ai.response.model": completion.model, "gen_ai.usage.input_tokens": u.input_tokens,
                              "gen_ai.usage.output_tokens": u.output_tokens,
                              "gen_ai.response.finish_reasons": [completion.finish_reason]})
        charged = self._spend.charge(completion, hit=hit, reserved=a.hold.amount if a.hold else 0)
        if decision.reservation_id or lookup.leader or not hit:
            self._soon.call(self._settle_and_store, a, decision, lookup, completion, chunks, hit, charged)
        self._bookkeeping.call(self._account, a, completion, hit, ended, at, charged,
                               (lookup.tier or "exact") if hit else "miss", lookup.similarity)

    def _settle_and_store(self, a: _Admitted, decision: Decision, lookup: LookupResult, completion: Completion,
                          chunks: tuple[Chunk, ...], hit: bool, charged: int) -> None:
        with tracing.after(a.trace, "ingress.settle_and_store"):
            self._settle_and_store_now(a, decision, lookup, completion, chunks, hit, charged)

    def _settle_and_store_now(self, a: _Admitted, decision: Decision, lookup: LookupResult, completion: Completion,
                              chunks: tuple[Chunk, ...], hit: bool, charged: int) -> None:
        if a.hold is not None or (charged and self._spend.enabled):
            self._later(self._spend.settle(a.identity, a.hold, charged))
        if decision.reservation_id:
            self._later(self._limiter.settle(decision.reservation_id, 0 if hit else completion.usage.total_tokens))
        if (not hit and lookup.cacheable and lookup.key and a.req.cache_mode != CacheMode.BYPASS
                and completion.finish_reason in _STORABLE_FINISH):
            entry = CacheEntry(text=completion.text, provider=completion.provider, model=completion.model,
                               usage=completion.usage, chunks=chunks, stored_at=time.time(),
                               finish_reason=completion.finish_reason, tool_calls=completion.tool_calls)
            self._later(self._cache.store(lookup.key, entry, tenant=a.tenant, prompt=a.req.prompt, route=a.route,
                                          lock_token=lookup.lock_token, semantic=lookup.semantic))
        elif lookup.leader:
            # Waiters stop waiting for an entry that won't come.
            self._later(self._cache.release(lookup.key, lookup.lock_token))

    def _account(self, a: _Admitted, completion: Completion, hit: bool, ended: float, at: float,
                 charged: int, tier: str, similarity: float) -> None:
        if not hit:
            u, labels = completion.usage, (a.tenant, completion.provider, completion.model)
            child(TOKENS, *labels, "input").inc(u.input_tokens)
            child(TOKENS, *labels, "output").inc(u.output_tokens)
            if u.cost_usd is not None:
                child(COST, *labels).inc(u.cost_usd)
        # No span of its own: publishing is a local enqueue (the publisher's I/O is batched apart).
        self._publish_outcome(a.request_id, a.identity, a.req, a.prompt_version, a.route, None, a.started,
                              completion, hit, ended, at, a.trace_id, charged, tier, similarity)

    def _failed(
        self, a: _Admitted, decision: Decision | None, exc: LlmgwError, lookup: LookupResult | None = None,
        *, sent: tuple[int, int] = (0, 0),
    ) -> None:
        """``sent``: the (input, output) tokens a failed request still cost (a stream cut after
        chunks were sent)."""
        if a.trace is not None:
            tracing.annotate(_span_attributes(a))
        tokens = sum(sent)
        charged = self._spend.partial(a.resolved.run_route, *sent) if tokens else 0
        if (lookup is not None and lookup.leader) or (decision is not None and decision.reservation_id):
            self._soon.call(self._release, decision, lookup, tokens)
        if a.hold is not None or (charged and self._spend.enabled):
            self._later(self._spend.settle(a.identity, a.hold, charged))
        self._bookkeeping.call(self._publish_outcome, a.request_id, a.identity, a.req, a.prompt_version, a.route,
                               exc, a.started, None, False, time.perf_counter(), time.time(), a.trace_id, charged)

    def _release(self, decision: Decision | None, lookup: LookupResult | None, tokens: int = 0) -> None:
        if lookup is not None and lookup.leader:
            self._later(self._cache.release(lookup.key, lookup.lock_token))
        if decision is not None and decision.reservation_id:
            self._later(self._limiter.settle(decision.reservation_id, tokens))

    def _sent_tokens(self, a: _Admitted, chunks: list[Chunk]) -> tuple[int, int]:
        """What a stream cut after chunks were sent cost, as (input, output) tokens: the prompt
        and the text sent (counted with the same tokenizer as the reservation). Nothing sent:
        nothing charged."""
        if not chunks:
            return 0, 0
        return self._prompt_token_count(a), count_tokens("".join(c.sent_text for c in chunks))

    def authenticate(self, authorization: str | None) -> Identity:
        """Who a caller's authorization value is, or Unauthenticated (listing endpoints)."""
        return self._keys().identify(authorization)

    def refused(self, request_id: str, exc: LlmgwError) -> None:
        """A request refused before it was read (its size): the response event says so and
        carries none of its fields, so nothing in it can make an event the broker refuses."""
        now = time.perf_counter()
        self._bookkeeping.call(self._publish_outcome, request_id, _ANONYMOUS, GatewayRequest(), "", "", exc, now,
                               None, False, now, time.time())

    # ---- the two entry points ----

    async def complete(
        self, authorization: str | None, req: GatewayRequest, *, request_id: str = "",
        time_remaining: float | None = None,
    ) -> Reply:
        """``authorization`` is the caller's header value, ``Bearer <api key>``; ``time_remaining``
        the caller's deadline in seconds, passed on to the router."""
        rid = request_id or new_request_id()
        a = self._admit(authorization, req, request_id=rid, stream=False, time_remaining=time_remaining)
        decision: Decision | None = None
        lookup: LookupResult | None = None
        try:
            decision, lookup = await self._gate(a)
            if lookup.hit and lookup.entry is not None:
                completion = _from_entry(lookup.entry)
                self._finish(a, decision, lookup, completion, (), hit=True)
                return Reply(rid, completion, a.prompt_version, True, decision.statuses, lookup.tier or "exact",
                             lookup.similarity)
            await self._reserve_budget(a)
            completion = await self._router.route(await self._route_call(a))
        except LlmgwError as exc:
            self._failed(a, decision, exc, lookup)
            raise
        except BaseException:
            # Cancelled (the client went away, its deadline passed): give back the lock and the
            # reservation now, not when they expire.
            self._failed(a, decision, Aborted("request cancelled by the client"), lookup)
            raise
        finally:
            self._unprepare(a)
        self._finish(a, decision, lookup, completion, (), hit=False)
        return Reply(rid, completion, a.prompt_version, False, decision.statuses)

    async def stream(
        self, authorization: str | None, req: GatewayRequest, *, request_id: str = "",
        time_remaining: float | None = None,
    ) -> AsyncIterator[Chunk | Reply]:
        """Yields text Chunks, then one final Reply with the metadata."""
        rid = request_id or new_request_id()
        a = self._admit(authorization, req, request_id=rid, stream=True, time_remaining=time_remaining)
        # Whatever ends it (a hit, an error, the caller leaving), readied work nobody used goes back.
        async with aclosing(self._stream(a)) as pieces:
            try:
                async for piece in pieces:
                    yield piece
            finally:
                self._unprepare(a)

    async def _stream(self, a: _Admitted) -> AsyncGenerator[Chunk | Reply, None]:
        rid = a.request_id
        decision: Decision | None = None
        try:
            decision, lookup = await self._gate(a)
        except LlmgwError as exc:
            self._failed(a, decision, exc)
            raise
        if lookup.hit and lookup.entry is not None:
            # Replay with the original chunk boundaries (tool-call deltas included); a plain
            # entry replays as its text and each tool call whole.
            for piece in lookup.entry.replay():
                yield piece
            completion = _from_entry(lookup.entry)
            self._finish(a, decision, lookup, completion, (), hit=True)
            yield Reply(rid, completion, a.prompt_version, True, decision.statuses, lookup.tier or "exact",
                        lookup.similarity)
            return
        chunks: list[Chunk] = []
        final: Completion | None = None
        try:
            await self._reserve_budget(a)
            async for chunk in self._router.stream(await self._route_call(a)):
                if chunk.final:
                    final = chunk.completion
                    break
                chunks.append(chunk)
                yield chunk
        except LlmgwError as exc:
            self._failed(a, decision, exc, lookup, sent=self._sent_tokens(a, chunks))
            raise
        except BaseException:
            # The client went away mid-stream: an aborted stream is never cached, and pays for
            # what it was sent (reading 99 of 100 chunks and leaving is not free).
            self._failed(a, decision, Aborted("stream aborted by the client"), lookup,
                         sent=self._sent_tokens(a, chunks))
            raise
        if final is None:
            exc2 = Aborted("provider stream ended without a final chunk")
            self._failed(a, decision, exc2, lookup, sent=self._sent_tokens(a, chunks))
            raise exc2
        completion = Completion(text="".join(c.delta for c in chunks), provider=final.provider, model=final.model,
                                usage=final.usage, attempts=final.attempts, finish_reason=final.finish_reason,
                                tool_calls=assemble_tool_calls(d for c in chunks for d in c.tool_calls))
        self._finish(a, decision, lookup, completion, tuple(chunks), hit=False)
        yield Reply(rid, completion, a.prompt_version, False, decision.statuses)


# Who a request is before its key is known (refused before or at authentication).
_ANONYMOUS = Identity("", "")


def _span_attributes(a: _Admitted) -> dict[str, Any]:
    """The request's own attributes on its server span (the outcome's are added beside them)."""
    return {"llmgw.tenant": a.tenant, "llmgw.route": a.route or DEFAULT_ROUTE, "llmgw.prompt": a.req.prompt or None,
            "llmgw.prompt_version": a.prompt_version or None, "llmgw.stream": a.stream,
            "gen_ai.operation.name": "chat"}


def _from_entry(e: CacheEntry) -> Completion:
    return Completion(text=e.text, provider=e.provider, model=e.model, usage=e.usage, finish_reason=e.finish_reason,
                      tool_calls=e.tool_calls)


def remaining_metadata(statuses: tuple[LimitStatus, ...]) -> dict[str, str]:
    """``x-ratelimit-remaining-<limit>`` for every limit that applied: callers can pace themselves."""
    return {f"x-ratelimit-remaining-{s.name}": str(s.remaining) for s in statuses}


def cache_metadata(reply: Reply) -> dict[str, str]:
    """``x-llmgw-cache``: which tier answered ("exact", "semantic", "miss"), and a semantic hit's
    similarity: gRPC trailing metadata and HTTP headers say the same."""
    if reply.cache_tier == "semantic":
        return {"x-llmgw-cache": "semantic", "x-llmgw-cache-similarity": f"{reply.cache_similarity:.4f}"}
    return {"x-llmgw-cache": reply.cache_tier}
