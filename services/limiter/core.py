"""The limiter core: decide every matching limit of a descriptor in one Redis round trip."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prometheus_client import Counter
from redis.crc import key_slot
from redis.exceptions import RedisError

from llmgw.domain import Decision, LimitStatus
from llmgw.kit import tracing
from llmgw.kit.breaker import Breaker, State
from llmgw.kit.errors import InvalidArgument
from llmgw.kit.logging import get_logger
from llmgw.kit.metrics import child
from llmgw.kit.redis import Client, is_cluster
from llmgw.kit.scripts import ScriptBatcher
from llmgw.kit.tasks import Background
from llmgw.services.limiter import _lua
from llmgw.services.limiter.local import Bucket, LocalGcra
from llmgw.services.limiter.plan import (
    Group,
    Plan,
    bucket_key,
    build_plan,
    parse_reservation,
    pause_key,
    payload,
    reservation_id,
    token_entries,
    void_entries,
)
from llmgw.services.limiter.rules import Limit, Rule, RuleSet

__all__ = ["PAUSABLE_DOMAIN", "PAUSE_LIMIT", "RedisLimiter"]

# A provider's 429 pauses its descriptor in this domain; refused checks then name this limit.
PAUSABLE_DOMAIN = "provider"
PAUSE_LIMIT = "provider-pause"

_log = get_logger(__name__)
DECISIONS = Counter("llmgw_limiter_decisions_total", "Limiter decisions", ["domain", "result"])
REDIS_ERRORS = Counter("llmgw_limiter_redis_errors_total", "Redis calls that failed or timed out")
NEAR_LIMIT = Counter("llmgw_limiter_near_limit_total", "Admissions leaving less than 20% of a limit", ["limit"])
SHADOW_HITS = Counter("llmgw_limiter_shadow_exceeded_total", "Shadow limits that would have refused", ["limit"])
SETTLES = Counter("llmgw_limiter_settles_deferred_total",
                  "Settles that met a Redis outage: queued, applied late, or dropped (queue full)", ["result"])
LOCAL_DECISIONS = Counter("llmgw_limiter_local_decisions_total", "Checks decided in process while Redis is out")


@dataclass(slots=True)
class _Grant:
    """Requests charged in Redis by one call, admitted in process until used or expired."""

    units: int  # left to admit
    size: int  # charged
    expires: float
    statuses: tuple[LimitStatus, ...]  # the limits as that charge left them


@dataclass(slots=True)
class _Lease:
    """A descriptor's grants and its recent demand, which sizes the next grant."""

    current: _Grant | None = None
    # Charged ahead (in the background) while ``current`` runs low: it takes over when
    # ``current`` is used up, so steady hits never wait on Redis.
    ahead: _Grant | None = None
    refilling: bool = False
    window_start: float = 0.0
    window_count: int = 0  # admissions asked for in the current window (one lease TTL long)
    demand: int = 0  # admissions in the previous window


_MAX_PLANS = 100_000


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


@dataclass(frozen=True, slots=True)
class _Shard:
    """One group's CHECK reply, decoded, and the reservation it wrote."""

    group: Group
    denied: bool
    retry_ms: int
    deny_index: int  # 1-based into group.indices; 0 with ``denied``: a pause
    # Per bucket of the group: (admitted, remaining, reset ms, window sub-bucket charged or 0).
    rows: list[tuple[int, int, int, int]]
    reservation: str
    entries: list[list[object]]

    @classmethod
    def of(cls, group: Group, raw: list[Any], reservation: str, entries: list[list[object]]) -> _Shard:
        rows = [(int(raw[b]), int(raw[b + 1]), int(raw[b + 2]), int(raw[b + 3])) for b in range(3, len(raw), 4)]
        return cls(group, bool(int(raw[0])), int(raw[1]), int(raw[2]), rows, reservation, entries)


def _counter(domain: str, result: str) -> Any:
    return child(DECISIONS, domain, result)


class RedisLimiter:
    """Implements ``llmgw.ports.LimiterPort`` against Redis.

    When Redis is slow or down a check gives up after ``timeout_s``; after a few failures a breaker
    stops trying for a while, and checks are decided in process per each limit's
    ``on_redis_failure``, so a dead Redis never stalls the request path.
    """

    def __init__(
        self,
        redis: Client,
        rules: RuleSet,
        *,
        prefix: str = "llmgw:rl",
        timeout_s: float = 0.05,
        reservation_ttl_s: float = 600.0,
        replicas: int = 1,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        batcher: ScriptBatcher | None = None,
        lease_max: int = 1,
        lease_ttl_s: float = 1.0,
        settle_queue_max: int = 100_000,
    ) -> None:
        self._redis = redis
        self._rules = rules
        self._prefix = prefix
        self._timeout = timeout_s
        self._reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self._replicas = max(1, replicas)
        # While open, decisions never wait on Redis: a dead Redis costs nothing per request.
        self._breaker = breaker or Breaker(failure_threshold=3, open_seconds=2.0, clock=clock)
        self._local = LocalGcra(clock)
        self._plans: dict[tuple[str, tuple[tuple[str, str], ...]], Plan] = {}
        # Outside a cluster every key of a decision is in one group (one atomic script).
        self._slot_of = _slot if is_cluster(redis) else None
        self._clock = clock
        self._lease_max = max(1, lease_max)
        self._lease_ttl = lease_ttl_s
        self._leases: dict[tuple[str, tuple[tuple[str, str], ...]], _Lease] = {}
        self._refills = Background()
        # Settles that met a Redis outage, applied when it is back (oldest first, bounded).
        self._pending_settles: deque[tuple[list[list[str]], int]] = deque()
        self._settle_queue_max = settle_queue_max
        self._settling = False
        # Pipelined with whatever else runs at the same moment (other checks; in a colocated
        # ingress also the cache lookup): one write and one read per loop turn, not per call.
        batcher = batcher or ScriptBatcher(redis)
        self._check = batcher.register(_lua.CHECK)
        self._settle = batcher.register(_lua.SETTLE)
        self._refund = batcher.register(_lua.REFUND)
        self._pause = batcher.register(_lua.PAUSE)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def replace_rules(self, rules: RuleSet) -> None:
        self._rules = rules
        self._plans.clear()

    def _plan(self, domain: str, descriptor: tuple[tuple[str, str], ...]) -> Plan:
        """The limits, Redis keys, shards and Lua specs of a descriptor: computed once per distinct
        descriptor (bounded), not per decision — the hot path only fills in the costs."""
        plan = self._plans.get((domain, descriptor))
        if plan is None:
            matched = self._rules.matching(domain, dict(descriptor))
            plan = build_plan(self._prefix, domain, descriptor, matched, pausable=domain == PAUSABLE_DOMAIN,
                              slot_of=self._slot_of)
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[(domain, descriptor)] = plan
        return plan

    @tracing.traced("limiter.check", unless_under="llmgw.limiter.")
    async def check(
        self,
        descriptor: Sequence[tuple[str, str]],
        *,
        requests: int = 1,
        tokens: int = 0,
        request_id: str = "",
        domain: str = "gateway",
    ) -> Decision:
        plan = self._plan(domain, tuple(descriptor))
        matched = plan.matched
        # Only the provider domain can be paused (a provider's 429): its checks read the pause key
        # in the same script, so even a provider with no limit rules is kept out by a pause.
        if not matched and domain != PAUSABLE_DOMAIN:
            _counter(domain, "unlimited").inc()
            return Decision(allowed=True)
        if not self._breaker.allow():
            return self._decide_locally(domain, dict(descriptor), matched, requests, tokens)
        # Reservations are named here, never after the caller's request id (a correlation id
        # only: two requests with the same one must not share a reservation), by tenant.
        owner = quote(dict(descriptor).get("tenant") or domain, safe="")
        try:
            # The budget counts from when the check is sent (kit/scripts.py): a burst that keeps
            # this process busy must not look like a slow Redis and trip the breaker.
            if len(plan.groups) == 1:
                shards = [await self._check_group(plan, plan.groups[0], requests, tokens, owner)]
            else:
                shards = await self._check_shards(plan, requests, tokens, owner)
        except (RedisError, OSError, TimeoutError) as exc:
            REDIS_ERRORS.inc()
            self._breaker.failure()
            _log.warning("limiter_redis_unavailable", error=repr(exc))
            return self._decide_locally(domain, dict(descriptor), matched, requests, tokens)
        except BaseException:
            # Cancelled mid-call: no verdict on Redis, but a half-open probe slot must be freed,
            # or the breaker would never let another call through (degraded until a restart).
            self._breaker.release()
            raise
        self._breaker.success()
        self._settle_queued()
        return self._verdict(domain, plan, shards, requests, tokens)

    async def _void(self, plan: Plan, shards: list[_Shard], requests: int, tokens: int) -> None:
        await asyncio.gather(*(self._give_back(plan, shard, requests, tokens) for shard in shards))

    async def _check_group(self, plan: Plan, group: Group, requests: int, tokens: int, owner: str) -> _Shard:
        entries = token_entries(plan, group, tokens)
        reservation = f"{self._prefix}:res:{group.tag}:{owner}:{uuid.uuid4().hex}" if entries else ""
        raw = await self._check(
            keys=[*group.keys, reservation or f"{self._prefix}:res:{group.tag}:none",
                  *([group.pause] if group.pause else [])],
            args=[len(group.keys), payload(entries), self._reservation_ttl_ms, requests, tokens, group.specs,
                  int(bool(group.pause))],
            timeout_s=self._timeout,
        )
        return _Shard.of(group, raw, reservation, entries)

    async def _check_shards(self, plan: Plan, requests: int, tokens: int, owner: str) -> list[_Shard]:
        """A decision over several cluster shards: each shard's script at once. A shard that
        failed or refused makes the others give back what they charged (off the request path),
        so a refused request holds units elsewhere for one round trip at most."""
        results = await asyncio.gather(*(self._check_group(plan, g, requests, tokens, owner) for g in plan.groups),
                                       return_exceptions=True)
        shards = [r for r in results if isinstance(r, _Shard)]
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None or any(s.denied for s in shards):
            for shard in shards:
                if not shard.denied:
                    self._refills.spawn(self._give_back(plan, shard, requests, tokens))
        if failed is not None:
            raise failed
        return shards

    async def _give_back(self, plan: Plan, shard: _Shard, requests: int, tokens: int) -> None:
        group = shard.group
        charged = [(i, row[3]) for i, row in zip(group.indices, shard.rows, strict=True) if row[0] == 1]
        entries = void_entries(plan, charged, requests, tokens)
        try:
            await self._refund(keys=[shard.reservation or f"{self._prefix}:res:{group.tag}:none",
                                     *(str(e[0]) for e in entries)],
                               args=[json.dumps(entries)], timeout_s=self._timeout * 4)
        except (RedisError, OSError, TimeoutError) as exc:  # the charge then ages out with its window
            REDIS_ERRORS.inc()
            _log.warning("limiter_give_back_failed", error=repr(exc))

    def _verdict(self, domain: str, plan: Plan, shards: list[_Shard], requests: int, tokens: int) -> Decision:
        matched = plan.matched
        denied = [s for s in shards if s.denied]
        paused = next((s for s in denied if s.deny_index == 0), None)
        if paused is not None:
            _counter(domain, "paused").inc()
            return Decision(allowed=False, retry_after_ms=paused.retry_ms, limit_name=PAUSE_LIMIT)
        if not matched:
            _counter(domain, "unlimited").inc()
            return Decision(allowed=True)
        rows = {i: row for shard in shards for i, row in zip(shard.group.indices, shard.rows, strict=True)}
        statuses = tuple(
            LimitStatus(name=limit.name, unit=limit.unit, limit=limit.limit, remaining=rows[i][1],
                        reset_after_ms=rows[i][2], shadow=limit.shadow)
            for i, (_, limit) in enumerate(matched)
        )
        self._observe(domain, matched, [rows[i][0] == 1 for i in range(len(matched))], statuses)
        if denied:
            worst = max(denied, key=lambda s: s.retry_ms)
            _counter(domain, "over_limit").inc()
            return Decision(
                allowed=False,
                retry_after_ms=worst.retry_ms,
                limit_name=matched[worst.group.indices[worst.deny_index - 1]][1].name,
                statuses=statuses,
            )
        _counter(domain, "ok").inc()
        return Decision(allowed=True, statuses=statuses,
                        reservation_id=reservation_id([(s.reservation, s.entries) for s in shards if s.reservation]),
                        # What gives it all back if the call it admitted never happens.
                        void=functools.partial(self._void, plan, shards, requests, tokens))

    @staticmethod
    def _observe(domain: str, matched: Sequence[tuple[Rule, Limit]], admitted: Sequence[bool],
                 statuses: Sequence[LimitStatus]) -> None:
        for (_, limit), ok, status in zip(matched, admitted, statuses, strict=True):
            if limit.shadow and not ok:
                SHADOW_HITS.labels(limit.name).inc()
                _log.info("shadow_limit_exceeded", limit=limit.name, domain=domain)
            elif ok and status.remaining < 0.2 * limit.limit:
                NEAR_LIMIT.labels(limit.name).inc()

    def _decide_locally(
        self, domain: str, desc: dict[str, str], matched: list[tuple[Rule, Limit]], requests: int, tokens: int
    ) -> Decision:
        """Redis is out: each limit per its ``on_redis_failure`` — ``local`` applies limit/replicas
        in this process, ``open`` admits, ``closed`` refuses."""
        LOCAL_DECISIONS.inc()
        if any(limit.on_redis_failure == "closed" and not limit.shadow for _, limit in matched):
            name = next(limit.name for _, limit in matched if limit.on_redis_failure == "closed")
            DECISIONS.labels(domain, "fail_closed").inc()
            return Decision(allowed=False, retry_after_ms=1000, limit_name=name)
        local = [(rule, limit) for rule, limit in matched if limit.on_redis_failure == "local"]
        buckets = []
        for rule, limit in local:
            share = max(1, limit.limit // self._replicas)
            buckets.append(Bucket(key=bucket_key(self._prefix, domain, rule, limit, desc),
                                  interval_ms=limit.period_ms / share,
                                  period_ms=limit.period_ms, cost=requests if limit.unit == "requests" else tokens,
                                  shadow=limit.shadow))
        allowed, retry_ms, idx, results = self._local.check(buckets)
        statuses = tuple(
            LimitStatus(limit.name, limit.unit, max(1, limit.limit // self._replicas), rem, reset, limit.shadow)
            for (_, limit), (_, rem, reset) in zip(local, results, strict=True)
        )
        DECISIONS.labels(domain, "local_ok" if allowed else "local_over_limit").inc()
        if not allowed:
            return Decision(allowed=False, retry_after_ms=retry_ms, limit_name=local[idx][1].name, statuses=statuses)
        return Decision(allowed=True, statuses=statuses)

    @tracing.traced("limiter.admit", unless_under="llmgw.limiter.")
    async def admit(self, descriptor: Sequence[tuple[str, str]], *, domain: str = "gateway") -> Decision:
        """One request that costs no tokens (a cache hit), counted against the request limits.

        With ``lease_max`` > 1 an admission that has to ask Redis may charge several requests at
        once and keep the rest as a lease: the next hits of the descriptor are admitted in
        process, without a round trip, until the lease is used up or ``lease_ttl_s`` passes.

        - Never over a limit: every leased request was charged in Redis first.
        - Exact near a limit: a lease is at most a tenth of what the limits have left.
        - Sized to demand: at most as many requests as the descriptor asked for in the previous
          lease window, so a tenant sending a hit now and then is never charged for hits it did
          not make; leased requests left unused stay charged, which only happens when a busy
          descriptor slows down (at most ``lease_max`` - 1 per replica each time; if the next
          lease was already charged ahead, that lease and a quarter of the current one).
        - Charged ahead: while a descriptor uses up at least two leases a window, the next lease
          is charged in the background once a quarter of the current one is left, so its hits
          never wait on Redis."""
        key = (domain, tuple(descriptor))
        now = self._clock()
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= _MAX_PLANS:
                self._leases.clear()
            lease = self._leases[key] = _Lease(window_start=now)
        if now - lease.window_start >= self._lease_ttl:
            # Demand is what the last full window saw; a silence longer than a window resets it.
            lease.demand = lease.window_count if now - lease.window_start < 2 * self._lease_ttl else 0
            lease.window_start, lease.window_count = now, 0
        lease.window_count += 1
        if lease.ahead is not None and now >= lease.ahead.expires:
            lease.ahead = None  # charged ahead, never needed: stays charged, must not block the next
        grant = lease.current
        if (grant is None or grant.units <= 0 or now >= grant.expires) and lease.ahead is not None:
            lease.current, lease.ahead = lease.ahead, None
            grant = lease.current
        if grant is not None and grant.units > 0 and now < grant.expires:
            grant.units -= 1
            if (grant.units * 4 <= grant.size and lease.demand >= 2 * grant.size and not lease.refilling
                    and lease.ahead is None):
                # A quarter left, and demand that uses up two leases a window: charge the next
                # one now, in the background, so the hit that empties this one does not wait.
                lease.refilling = True
                self._refills.spawn(self._refill(descriptor, domain, lease))
            _counter(domain, "leased").inc()
            return Decision(allowed=True, statuses=grant.statuses)
        size = self._lease_size(lease)
        decision = await self.check(descriptor, requests=size, tokens=0, domain=domain)
        if not decision.allowed and size > 1:
            size = 1
            decision = await self.check(descriptor, requests=1, tokens=0, domain=domain)
        charged = size if decision.allowed else 0
        lease.current = _Grant(max(0, charged - 1), charged, self._clock() + self._lease_ttl, decision.statuses)
        return decision

    async def _refill(self, descriptor: Sequence[tuple[str, str]], domain: str, lease: _Lease) -> None:
        """Charge the next lease while the current one still admits. Refused (the limits have less
        left than a lease), it charges nothing: the next admission then asks for itself."""
        try:
            size = self._lease_size(lease)
            if size <= 1:
                return
            decision = await self.check(descriptor, requests=size, tokens=0, domain=domain)
            if decision.allowed:
                lease.ahead = _Grant(size, size, self._clock() + self._lease_ttl, decision.statuses)
        finally:
            lease.refilling = False

    async def close(self) -> None:
        """Stop charging leases ahead (before the Redis connection closes)."""
        await self._refills.cancel(timeout_s=1.0)

    def _lease_size(self, lease: _Lease) -> int:
        if self._lease_max <= 1:
            return 1
        statuses = lease.current.statuses if lease.current is not None else ()
        remaining = [s.remaining for s in statuses if s.unit == "requests" and not s.shadow]
        return max(1, min(self._lease_max, min(remaining, default=0) // 10, lease.demand))

    @tracing.traced("limiter.settle", unless_under="llmgw.limiter.")
    async def settle(self, reservation_id: str, actual_tokens: int) -> int:
        """Replace a reservation's estimate by the real count; 0 when there is nothing to settle.
        While Redis is out the settle is queued (bounded, counted) and applied once it is back:
        otherwise the whole estimate would stay charged for the reservation's life."""
        if not reservation_id:
            return 0
        parts = parse_reservation(self._prefix, reservation_id)  # InvalidArgument before anything is queued
        if self._breaker.state == State.OPEN:
            self._queue_settle(parts, actual_tokens)
            return 0
        try:
            refunded = await self._settle_all(parts, actual_tokens)
        except (TimeoutError, RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            _log.warning("limiter_settle_failed", error=repr(exc), reservation=reservation_id)
            self._queue_settle(parts, actual_tokens)
            return 0
        self._settle_queued()
        return refunded

    async def _settle_all(self, parts: list[list[str]], actual_tokens: int) -> int:
        """Each shard's reservation (``parse_reservation``'s parts; at most once each: a retry of a
        half-applied settle re-runs only what is still reserved); the tokens refunded."""
        results = await asyncio.gather(*(self._settle(keys=keys, args=[max(0, actual_tokens)],
                                                      timeout_s=self._timeout * 4) for keys in parts))
        return max((int(r or 0) for r in results), default=0)

    def _queue_settle(self, parts: list[list[str]], tokens: int) -> None:
        if len(self._pending_settles) >= self._settle_queue_max:
            SETTLES.labels("dropped").inc()  # the reservation then expires with its estimate
            return
        self._pending_settles.append((parts, tokens))
        SETTLES.labels("queued").inc()
        self._settle_queued()

    def _settle_queued(self) -> None:
        """Apply what waits, in the background, until Redis takes it (one retrier at a time)."""
        if self._pending_settles and not self._settling:
            self._settling = True
            self._refills.spawn(self._retry_settles())

    async def _retry_settles(self) -> None:
        try:
            while self._pending_settles:
                if self._breaker.state == State.OPEN:
                    await asyncio.sleep(0.25)
                    continue
                parts, tokens = self._pending_settles[0]
                try:
                    await self._settle_all(parts, tokens)
                except (TimeoutError, RedisError, OSError):
                    await asyncio.sleep(0.25)
                    continue
                self._pending_settles.popleft()
                SETTLES.labels("applied_late").inc()
        finally:
            self._settling = False

    async def pause(self, descriptor: Sequence[tuple[str, str]], *, seconds: float,
                    domain: str = PAUSABLE_DOMAIN) -> int:
        """Refuse every check of ``descriptor`` for ``seconds`` on every replica (a provider's
        429); returns the ms in force. Best effort: with Redis out, each router's own pause holds."""
        if domain != PAUSABLE_DOMAIN:
            raise InvalidArgument("domain", f"only the {PAUSABLE_DOMAIN!r} domain can be paused")
        ms = max(1, int(seconds * 1000))
        try:
            return int(await self._pause(keys=[pause_key(self._prefix, domain, descriptor)], args=[ms],
                                         timeout_s=self._timeout * 4))
        except (TimeoutError, RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            _log.warning("limiter_pause_failed", error=repr(exc))
            return 0

    async def ready(self) -> bool:
        return bool(await self._redis.ping())
