"""The limiter core: decide every matching limit of a descriptor in one Redis round trip."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from urllib.parse import quote

import redis.asyncio as aioredis
from llmgw.services.limiter import _lua
from llmgw.services.limiter.rules import Limit, Rule, RuleSet
from prometheus_client import Counter
from redis.exceptions import RedisError

from llmgw.domain import Decision, LimitStatus
from llmgw.kit.logging import get_logger

__all__ = ["RedisLimiter"]

_log = get_logger(__name__)
DECISIONS = Counter("llmgw_limiter_decisions_total", "Limiter decisions", ["domain", "result"])
REDIS_ERRORS = Counter("llmgw_limiter_redis_errors_total", "Checks decided without Redis (fail-open/closed)")


class RedisLimiter:
    """Implements ``llmgw.ports.LimiterPort`` against Redis.

    When Redis is slow or down the check gives up after ``timeout_s`` and fails open (or closed,
    by setting) instead of stalling the request path.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        rules: RuleSet,
        *,
        prefix: str = "llmgw:rl",
        timeout_s: float = 0.05,
        fail_open: bool = True,
        reservation_ttl_s: float = 600.0,
    ) -> None:
        self._redis = redis
        self._rules = rules
        self._prefix = prefix
        self._timeout = timeout_s
        self._fail_open = fail_open
        self._reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self._check = redis.register_script(_lua.CHECK)
        self._settle = redis.register_script(_lua.SETTLE)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def replace_rules(self, rules: RuleSet) -> None:
        self._rules = rules

    def _key(self, domain: str, rule: Rule, limit: Limit, descriptor: dict[str, str]) -> str:
        bucket = quote(rule.bucket(descriptor), safe="=|")
        return f"{self._prefix}:{domain}:{limit.name}:{bucket}"

    async def check(
        self,
        descriptor: Sequence[tuple[str, str]],
        *,
        requests: int = 1,
        tokens: int = 0,
        request_id: str = "",
        domain: str = "gateway",
    ) -> Decision:
        desc = dict(descriptor)
        matched = self._rules.matching(domain, desc)
        if not matched:
            DECISIONS.labels(domain, "unlimited").inc()
            return Decision(allowed=True)
        keys: list[str] = []
        argv: list[str | int | float] = []
        token_buckets: list[list[object]] = []
        for rule, limit in matched:
            key = self._key(domain, rule, limit, desc)
            cost = requests if limit.unit == "requests" else tokens
            interval = limit.period_ms / limit.limit
            keys.append(key)
            argv += [repr(interval), limit.period_ms, cost, int(limit.shadow), int(limit.unit == "tokens")]
            if limit.unit == "tokens" and tokens > 0 and not limit.shadow:
                token_buckets.append([key, interval, tokens])
        reservation = f"{self._prefix}:res:{request_id or uuid.uuid4().hex}" if token_buckets else ""
        payload = json.dumps({"buckets": token_buckets}) if token_buckets else ""
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._check(
                    keys=[*keys, reservation or f"{self._prefix}:res:none"],
                    args=[len(keys), payload, self._reservation_ttl_ms, *argv],
                )
        except (TimeoutError, RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            _log.warning("limiter_redis_unavailable", error=repr(exc), fail_open=self._fail_open)
            DECISIONS.labels(domain, "fail_open" if self._fail_open else "fail_closed").inc()
            if self._fail_open:
                return Decision(allowed=True)
            return Decision(allowed=False, retry_after_ms=1000, limit_name="limiter-unavailable")
        denied, retry_ms, deny_idx = int(raw[0]), int(raw[1]), int(raw[2])
        statuses = tuple(
            LimitStatus(
                name=limit.name,
                unit=limit.unit,
                limit=limit.limit,
                remaining=int(raw[3 + i * 3 + 1]),
                reset_after_ms=int(raw[3 + i * 3 + 2]),
                shadow=limit.shadow,
            )
            for i, (_, limit) in enumerate(matched)
        )
        for i, (_, limit) in enumerate(matched):
            if limit.shadow and int(raw[3 + i * 3]) == 0:
                _log.info("shadow_limit_exceeded", limit=limit.name, domain=domain)
        if denied:
            DECISIONS.labels(domain, "over_limit").inc()
            return Decision(
                allowed=False,
                retry_after_ms=retry_ms,
                limit_name=matched[deny_idx - 1][1].name,
                statuses=statuses,
            )
        DECISIONS.labels(domain, "ok").inc()
        return Decision(allowed=True, statuses=statuses, reservation_id=reservation)

    async def settle(self, reservation_id: str, actual_tokens: int) -> int:
        """Replace a reservation's estimate by the real count; 0 when there is nothing to settle."""
        if not reservation_id:
            return 0
        try:
            async with asyncio.timeout(self._timeout * 4):
                refunded = await self._settle(keys=[reservation_id], args=[max(0, actual_tokens)])
        except (TimeoutError, RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            _log.warning("limiter_settle_failed", error=repr(exc), reservation=reservation_id)
            return 0
        return int(refunded or 0)

    async def ready(self) -> bool:
        return bool(await self._redis.ping())
