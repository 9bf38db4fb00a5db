"""API keys as data: what a key may do and spend (docs/keys.md).

A key's secret is shown once, at creation; what is kept is its SHA-256 digest. The secrets are
256 random bits, so a fast digest is as safe as a slow one (a slow hash protects guessable
passwords; nothing here is guessable) and authenticating costs one hash per request.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "KEY_ID_PATTERN", "NANO", "Budget", "KeyLimit", "KeyRecord", "Period", "Scopes", "Secret", "TenantRecord", "digest",
    "new_key_id", "new_secret", "to_nano",
]

Period = Literal["day", "month", "total"]
# Spend is counted in billionths of a dollar: integers, so counters, reservations and the sum of
# events agree to the unit (a float sum over a million requests would not).
NANO = 1_000_000_000
KEY_ID_PATTERN = r"^key-[A-Za-z0-9_.\-]{1,64}$"
_SECRET_PREFIX = "llmgw_"


def to_nano(usd: float) -> int:
    """USD to billionths, rounded up (a charge is never rounded down to free), after the float
    noise of a price product is cut (1e-6 * 1e9 is 1000.0000000000001, and costs 1000)."""
    return math.ceil(round(usd * NANO, 3))


def new_secret() -> str:
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key-" + secrets.token_hex(6)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    """At most ``usd`` per calendar day or month (UTC), or in all."""

    usd: float = Field(gt=0)
    per: Period = "month"

    @property
    def limit_nano(self) -> int:
        return int(self.usd * NANO)

    def describe(self) -> str:
        return f"${self.usd:g} per {self.per}" if self.per != "total" else f"${self.usd:g} in total"


class Scopes(_Strict):
    """What a key may use; empty: everything. ``models`` are ``provider/model`` names: a key may
    only run on routes whose every target (fallbacks included) is one of them, so it can never
    cause spend on another model."""

    routes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{name}={','.join(values)}" for name, values in
                 (("routes", self.routes), ("models", self.models), ("prompts", self.prompts)) if values]
        return " ".join(parts) or "all"


class KeyLimit(_Strict):
    """A rate limit of the key's own (docs/limits.md): the limiter decides it as a gateway-domain
    rule on the key's id, beside the rules file's."""

    unit: Literal["requests", "tokens"] = "requests"
    limit: int = Field(gt=0)
    per: Literal["second", "minute", "hour", "day"] = "minute"

    def name(self, key_id: str) -> str:
        return f"{key_id}.{self.unit}-per-{self.per}"


class Secret(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # A rotated-out secret stays valid until then (the grace period); None: no end.
    not_after: float | None = None


class KeyRecord(_Strict):
    id: str = Field(pattern=KEY_ID_PATTERN)
    tenant: str = Field(min_length=1, max_length=128)
    name: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    status: Literal["active", "revoked"] = "active"
    revoked_at: float | None = None
    secrets: tuple[Secret, ...] = Field(min_length=1)
    scopes: Scopes = Scopes()
    budgets: tuple[Budget, ...] = ()
    limits: tuple[KeyLimit, ...] = ()

    @field_validator("budgets")
    @classmethod
    def _one_per_period(cls, value: tuple[Budget, ...]) -> tuple[Budget, ...]:
        return _one_per_period(value)

    @field_validator("limits")
    @classmethod
    def _one_per_unit_and_period(cls, value: tuple[KeyLimit, ...]) -> tuple[KeyLimit, ...]:
        if len({(lim.unit, lim.per) for lim in value}) != len(value):
            raise ValueError("one limit per unit and period")
        return value

    def live_secrets(self, now: float) -> tuple[Secret, ...]:
        return tuple(s for s in self.secrets if s.not_after is None or s.not_after > now)


class TenantRecord(_Strict):
    tenant: str = Field(min_length=1, max_length=128)
    budgets: tuple[Budget, ...] = ()

    @field_validator("budgets")
    @classmethod
    def _one_per_period(cls, value: tuple[Budget, ...]) -> tuple[Budget, ...]:
        return _one_per_period(value)


def _one_per_period(budgets: tuple[Budget, ...]) -> tuple[Budget, ...]:
    periods = [b.per for b in budgets]
    if len(set(periods)) != len(periods):
        raise ValueError("one budget per period (day, month, total)")
    return budgets


def window(per: Period, now: float | None = None) -> str:
    """The calendar window a charge at ``now`` falls in: 2026-12-05, 2026-12, or total (UTC)."""
    if per == "total":
        return "total"
    at = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return at.strftime("%Y-%m-%d" if per == "day" else "%Y-%m")
