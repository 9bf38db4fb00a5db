"""Spend counters and dollar budgets in Redis: reserve the worst case, settle the real cost.

Every charge lands on six counters, one per (key, tenant) x (day, month, total) window, in
billionths of a USD. A request whose key or tenant has a budget first *reserves* its worst-case
cost on all six in one script that refuses when any budgeted window would go over; after the
reply it *settles*: the counters move by (real cost - reserved) and the hold is deleted, at most
once. Requests of keys without a budget are only *recorded* after the reply, off the request path.

So a budgeted window holds settled spend plus what requests in flight may still cost, and never
more than its budget, whatever the number of ingresses and concurrent requests. For a closed
window (no request in flight) it is exactly the spend, the sum of the charges on the response
events. All of a tenant's counters share a hash tag, so the scripts run on Redis Cluster too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

from llmgw.keys.model import Budget, Period, window
from llmgw.kit.redis import Client
from llmgw.kit.scripts import ScriptBatcher

__all__ = ["PERIODS", "Hold", "Refusal", "SpendLedger", "days_between", "utc_day"]

PERIODS: tuple[Period, ...] = ("day", "month", "total")
# How long a window's counter is kept after its last charge: `llmgw spend` reads day counters
# back this far.
_TTL_S: dict[Period, int] = {"day": 400 * 86_400, "month": 3 * 365 * 86_400, "total": 0}

# KEYS: counters..., hold. ARGV: amount, hold ttl ms, then limit (-1: none) and ttl s per counter.
_RESERVE = """
local n = #KEYS - 1
local amount = tonumber(ARGV[1])
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  if limit >= 0 then
    local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
    if spent + amount > limit then return {0, i, limit - spent} end
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], amount)
  local ttl = tonumber(ARGV[2 + 2 * i])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
redis.call('SET', KEYS[n + 1], amount, 'PX', ARGV[2])
return {1, 0, 0}
"""

# KEYS: counters..., hold. ARGV: actual, held ('1': settle the hold; '0': record only), ttl s per
# counter. A hold already settled (or expired) changes nothing: a settle is applied at most once.
_SETTLE = """
local n = #KEYS - 1
local delta = tonumber(ARGV[1])
if ARGV[2] == '1' then
  local held = redis.call('GET', KEYS[n + 1])
  if not held then return {0, 0} end
  redis.call('DEL', KEYS[n + 1])
  delta = delta - tonumber(held)
end
if delta ~= 0 then
  for i = 1, n do
    redis.call('INCRBY', KEYS[i], delta)
    local ttl = tonumber(ARGV[2 + i])
    if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
return {1, delta}
"""


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: the counters it charged (its windows, even if a day ends before it is
    settled) and its hold key."""

    counters: tuple[str, ...]
    key: str
    amount: int


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # "key" | "tenant"
    per: Period
    remaining_nano: int


@dataclass(frozen=True, slots=True)
class _Window:
    scope: str
    per: Period
    counter: str


class SpendLedger:
    def __init__(self, redis: Client, *, prefix: str = "llmgw:spend", batcher: ScriptBatcher | None = None,
                 hold_ttl_s: float = 86_400.0) -> None:
        self._redis = redis
        self._prefix = prefix
        batcher = batcher or ScriptBatcher(redis)
        self._reserve = batcher.register(_RESERVE)
        self._settle = batcher.register(_SETTLE)
        self._hold_ttl_ms = int(hold_ttl_s * 1000)

    def counter(self, tenant: str, scope: str, owner: str, per: Period, win: str) -> str:
        # Hash tag: the tenant. A request's six counters share its slot (one script, one node),
        # and tenants spread over a cluster's shards.
        return f"{self._prefix}:{{{quote(tenant, safe='')}}}:{scope}={quote(owner, safe='')}:{per}:{win}"

    def _windows(self, tenant: str, key_id: str, now: float) -> list[_Window]:
        return [_Window(scope, per, self.counter(tenant, scope, owner, per, window(per, now)))
                for scope, owner in (("key", key_id), ("tenant", tenant)) for per in PERIODS]

    def _hold_key(self, tenant: str) -> str:
        return f"{self._prefix}:{{{quote(tenant, safe='')}}}:hold:{uuid.uuid4().hex}"

    async def reserve(self, tenant: str, key_id: str, budgets: Iterable[tuple[str, Budget]], amount: int,
                      *, timeout_s: float, now: float | None = None) -> Hold | Refusal:
        """Charge ``amount`` (the worst case) on every window, or nothing and say which budget
        it would break and what that one has left."""
        windows = self._windows(tenant, key_id, time.time() if now is None else now)
        limits = {(scope, b.per): b.limit_nano for scope, b in budgets}
        hold = self._hold_key(tenant)
        args: list[int | str] = [amount, self._hold_ttl_ms]
        for w in windows:
            args += [limits.get((w.scope, w.per), -1), _TTL_S[w.per]]
        ok, index, remaining = (int(v) for v in await self._reserve(
            keys=[*(w.counter for w in windows), hold], args=args, timeout_s=timeout_s))
        if not ok:
            refused = windows[index - 1]
            return Refusal(refused.scope, refused.per, max(0, remaining))
        return Hold(tuple(w.counter for w in windows), hold, amount)

    async def settle(self, hold: Hold, actual: int, *, timeout_s: float) -> bool:
        """Replace the hold's worst case by ``actual``; False when it was settled already."""
        return await self._apply(list(hold.counters), hold.key, actual, held=True, timeout_s=timeout_s)

    async def record(self, tenant: str, key_id: str, actual: int, *, timeout_s: float,
                     now: float | None = None) -> None:
        """Count a charge that reserved nothing (no budget applied)."""
        if actual:
            windows = self._windows(tenant, key_id, time.time() if now is None else now)
            await self._apply([w.counter for w in windows], self._hold_key(tenant), actual, held=False,
                              timeout_s=timeout_s)

    async def _apply(self, counters: list[str], hold: str, actual: int, *, held: bool, timeout_s: float) -> bool:
        ttls = [_TTL_S[PERIODS[i % len(PERIODS)]] for i in range(len(counters))]
        applied, _ = await self._settle(keys=[*counters, hold], args=[actual, "1" if held else "0", *ttls],
                                        timeout_s=timeout_s)
        return bool(applied)

    # ---- reading (llmgw spend, llmgw keys show) ----

    async def window_spend(self, tenant: str, scope: str, owner: str, per: Period,
                           now: float | None = None) -> int:
        """The current window's counter: settled spend plus what requests in flight reserved."""
        raw = await self._redis.get(self.counter(tenant, scope, owner, per, window(per, now)))
        return int(raw or 0)

    async def daily(self, tenant: str, scope: str, owner: str, days: Sequence[date]) -> dict[date, int]:
        """Each UTC day's counter (0 where nothing was charged)."""
        keys = [self.counter(tenant, scope, owner, "day", d.isoformat()) for d in days]
        values = await self._redis.mget(keys) if keys else []
        return {d: int(v or 0) for d, v in zip(days, values, strict=True)}


def days_between(since: date, until: date) -> list[date]:
    """Every UTC day from ``since`` up to, not including, ``until``."""
    return [since + timedelta(days=i) for i in range((until - since).days)]


def utc_day(ts: float) -> date:
    return datetime.fromtimestamp(ts, tz=UTC).date()
