"""What a request costs in dollars, and charging it to its key's and tenant's spend.

Before a provider call, a request whose key or tenant has a budget reserves its worst case: the
prompt's tokens plus the most the answer may take, at the price of the most expensive target its
route may call (all of them, summed, on a hedged route: a hedge pays for two calls at once).
After the reply it is charged what it really cost: the provider's usage at the table's price, 0
for a cache hit, the prompt and what was sent for a stream cut short. docs/keys.md.
"""

from __future__ import annotations

from prometheus_client import Counter
from redis.exceptions import RedisError

from llmgw.domain import Completion
from llmgw.keys.ledger import Hold, SpendLedger
from llmgw.keys.model import NANO, to_nano
from llmgw.keys.ring import Identity
from llmgw.kit.errors import BudgetExceeded, ConfigError, Unavailable
from llmgw.kit.logging import get_logger
from llmgw.services.router.config import Price, RouterConfig

__all__ = ["SpendGuard"]

_log = get_logger(__name__)
LEDGER_ERRORS = Counter("llmgw_spend_ledger_errors_total", "Spend ledger calls that failed", ["op"])


class SpendGuard:
    """``ledger`` None: no store, so no budgets and no spend counters (the events still carry
    each request's charge). ``unpriced``: the price of a model the table lacks; None refuses
    budgeted requests that could reach one (never counted as free)."""

    def __init__(self, ledger: SpendLedger | None, routes: RouterConfig | None, *, unpriced: Price | None = None,
                 timeout_s: float = 0.5) -> None:
        self._ledger = ledger
        self._routes = routes
        self._unpriced = unpriced
        self._timeout = timeout_s

    @property
    def enabled(self) -> bool:
        return self._ledger is not None

    def _price(self, model: str) -> Price | None:
        price = self._routes.pricing.get(model) if self._routes is not None else None
        return price or self._unpriced

    def _prices(self, route: str) -> list[tuple[str, Price | None]]:
        cfg = self._routes.routes.get(route) if self._routes is not None else None
        if cfg is None:
            return []
        return [(f"{t.provider}/{t.model}", self._price(t.model)) for t in cfg.targets]

    def worst_case(self, route: str, input_tokens: int, output_tokens: int) -> int:
        """The most a request on ``route`` may cost, in billionths of a USD."""
        prices = self._prices(route)
        if not prices:
            raise ConfigError(f"route {route!r}: unknown to this ingress (ROUTES_FILE), so a budget can't be enforced")
        unpriced = [name for name, price in prices if price is None]
        if unpriced:
            raise ConfigError(f"model {unpriced[0]!r} has no price (router pricing) and this request is under a "
                              "budget: price it, or set UNPRICED_INPUT_USD_PER_MTOK and UNPRICED_OUTPUT_USD_PER_MTOK")
        costs = [_cost(p, input_tokens, output_tokens) for _, p in prices if p is not None]
        cfg = self._routes.routes[route] if self._routes is not None else None
        return sum(costs) if cfg is not None and cfg.hedge else max(costs)

    def charge(self, completion: Completion, *, hit: bool, reserved: int) -> int:
        """What a reply costs the caller: the provider's usage priced (a model only the
        ``unpriced`` setting prices is counted at that price; one priced nowhere is counted at
        the reservation's worst case)."""
        if hit:
            return 0
        u = completion.usage
        if u.cost_usd is not None:
            return to_nano(u.cost_usd)
        price = self._price(completion.model)
        return _cost(price, u.input_tokens, u.output_tokens) if price is not None else reserved

    def partial(self, route: str, input_tokens: int, output_tokens: int) -> int:
        """A stream cut after some of it was sent: the prompt and what was sent, at the route's
        most expensive target (which target served it is not known when the final chunk never
        came). Unpriced everywhere: 0, and counted in the ledger's error metric."""
        costs = [_cost(p, input_tokens, output_tokens) for _, p in self._prices(route) if p is not None]
        return max(costs, default=0)

    async def reserve(self, identity: Identity, route: str, input_tokens: int, output_tokens: int) -> Hold | None:
        """Reserve the worst case against every budget of the key and its tenant; None when none
        applies. Refused: BudgetExceeded with what that budget has left."""
        if not identity.budgets:
            return None
        if self._ledger is None:
            raise ConfigError(f"API key {identity.key_id} has a budget but this ingress has no spend store "
                              "(KEYS_REDIS_URL)")
        amount = self.worst_case(route, input_tokens, output_tokens)
        try:
            held = await self._ledger.reserve(identity.tenant, identity.key_id, identity.budgets, amount,
                                              timeout_s=self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            LEDGER_ERRORS.labels("reserve").inc()
            _log.warning("spend_ledger_unreachable", error=repr(exc))
            # A budget is a promise never to overshoot: without the ledger, refuse.
            raise Unavailable("the spend ledger is unreachable; budgeted requests are refused until it is back",
                              metadata={"retry-after": "1"}) from None
        if isinstance(held, Hold):
            return held
        owner = identity.key_id if held.scope == "key" else identity.tenant
        budget = next(b for scope, b in identity.budgets if scope == held.scope and b.per == held.per)
        left = held.remaining_nano / NANO
        raise BudgetExceeded(
            f"budget of {held.scope} {owner} ({budget.describe()}) exceeded: ${left:.6f} left, this request "
            f"may cost up to ${amount / NANO:.6f}", budget=f"{held.scope}:{held.per}", remaining_usd=left)

    async def settle(self, identity: Identity, hold: Hold | None, actual: int) -> None:
        """Charge ``actual``: replaces the hold's worst case, or is recorded alone (no budget)."""
        if self._ledger is None:
            return
        try:
            if hold is not None:
                await self._ledger.settle(hold, actual, timeout_s=self._timeout * 4)
            else:
                await self._ledger.record(identity.tenant, identity.key_id, actual, timeout_s=self._timeout * 4)
        except (RedisError, OSError, TimeoutError) as exc:
            # A lost settle leaves the worst case charged (never an overshoot); a lost record
            # leaves the counter short of the events, which stay the source of truth.
            LEDGER_ERRORS.labels("settle" if hold is not None else "record").inc()
            _log.warning("spend_settle_failed", error=repr(exc))


def _cost(price: Price, input_tokens: int, output_tokens: int) -> int:
    # Prices are USD per million tokens: nano-USD = tokens * price * 1000, rounded up.
    return to_nano((input_tokens * price.input + output_tokens * price.output) / 1_000_000)
