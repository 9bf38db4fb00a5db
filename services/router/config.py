"""Routes, providers and prices, loaded strictly from YAML (see docs/router.md).

    providers:
      openai:    {base_url: "http://127.0.0.1:8089/v1", api_key_env: OPENAI_API_KEY}
      anthropic: {base_url: "http://127.0.0.1:8089",    api_key_env: ANTHROPIC_API_KEY}
    routes:
      default:
        defaults: {temperature: 0, max_tokens: 512}
        targets:
          - {provider: openai, model: gpt-4o-mini, timeout_s: 30}
          - {provider: anthropic, model: claude-3-5-haiku-latest}
    pricing:   # USD per million tokens
      gpt-4o-mini: {input: 0.15, output: 0.60}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmgw.domain import Sampling, Usage
from llmgw.kit.errors import ConfigError
from llmgw.kit.settings import load_yaml

__all__ = [
    "BreakerConfig", "DeadlineConfig", "HedgeConfig", "Price", "ProviderConfig", "RateLimitConfig", "RouteConfig",
    "RouterConfig", "Target", "load_router_config",
]

ProviderName = Literal["openai", "anthropic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    # None: the SDK's default (the real provider).
    base_url: str | None = None
    api_key_env: str
    # The SDK's HTTP transport: "aiohttp" (the SDKs' own DefaultAioHttpClient, vendored in both:
    # faster per call and per process than their default; docs/benchmarks.md "bench/http.py") or
    # "httpx" (the SDKs' default).
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    # Used when the key variable is unset: only for local fake providers.
    fallback_api_key: str | None = None


class Target(_Strict):
    provider: ProviderName
    model: str = Field(min_length=1)
    # The most one attempt may take: a whole unary answer, or a whole stream (first byte to last).
    timeout_s: float = Field(default=30.0, gt=0)
    # A stream's first content must arrive within this (default: timeout_s); a stall before it
    # is a failed attempt that can still fall back, since nothing was sent to the caller yet.
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    # Tries on this target before falling back (1 = no retry).
    attempts: int = Field(default=1, ge=1, le=5)
    # Retry backoff: full jitter, uniform(0, base * 2**n) seconds.
    backoff_base_s: float = Field(default=0.1, gt=0)
    # A provider's retry-after longer than this means: fall back now instead of waiting.
    max_retry_wait_s: float = Field(default=2.0, ge=0)


class _Defaults(_Strict):
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = None
    stop: list[str] = []


class RouteConfig(_Strict):
    defaults: _Defaults = _Defaults()
    targets: list[Target] = Field(min_length=1)
    # Hedging (unary calls): when a target is slower than its recent ``hedging.quantile``, the
    # next target is started too and the first complete answer wins. Off by default: it spends
    # provider calls (and money) to cut tail latency.
    hedge: bool = False

    @property
    def sampling_defaults(self) -> Sampling:
        d = self.defaults
        return Sampling(temperature=d.temperature, max_tokens=d.max_tokens, top_p=d.top_p, stop=tuple(d.stop))


class Price(_Strict):
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class BreakerConfig(_Strict):
    """A failure-rate breaker per provider+model (kit.breaker.RateBreaker; docs/routing.md).
    Failures are retryable and configuration errors; 429s, the caller's own faults and cancels
    are no verdict on the provider."""

    # Share of failed calls in the window that opens the circuit (Envoy's outlier detection
    # defaults to 85 %): a provider failing half its calls stays in use, retries absorb that.
    failure_rate: float = Field(default=0.8, gt=0, le=1)
    # Outcomes in the window needed before the rate may open it (no verdict on a handful of calls).
    min_calls: int = Field(default=20, ge=1)
    # The sliding window, in whole seconds.
    window_s: float = Field(default=10.0, ge=1)
    # How long an open circuit skips the target before probes are let through.
    open_seconds: float = Field(default=10.0, gt=0)
    # Calls let through while half-open; they close or re-open it by the same failure rate.
    half_open_probes: int = Field(default=3, ge=1)


class DeadlineConfig(_Strict):
    """How a caller's deadline is shared among a route's targets: an attempt that still has a
    target after it may use the remaining time minus a reserve kept for the rest of the chain,
    ``min(reserve_s, remaining * max_reserve_share)``."""

    reserve_s: float = Field(default=1.0, ge=0)
    max_reserve_share: float = Field(default=0.5, ge=0, lt=1)


class HedgeConfig(_Strict):
    # A hedge starts once the attempt has run longer than this quantile of the target's recent
    # successful latencies (the last 200), known from at least ``min_samples`` of them...
    quantile: float = Field(default=0.95, gt=0, lt=1)
    min_samples: int = Field(default=20, ge=1)
    # ...and never sooner than this.
    min_delay_s: float = Field(default=0.05, ge=0)


class RateLimitConfig(_Strict):
    # A 429 pauses its target (in this router at once, in every replica through the limiter)
    # for the provider's retry-after, or this long when it gives none.
    default_pause_s: float = Field(default=1.0, gt=0)
    # Never pause longer than this, whatever the provider asks (a bad header must not take a
    # target out for an hour).
    max_pause_s: float = Field(default=60.0, gt=0)


class RouterConfig(_Strict):
    providers: dict[ProviderName, ProviderConfig]
    routes: dict[str, RouteConfig]
    pricing: dict[str, Price] = {}
    default_route: str = "default"
    breaker: BreakerConfig = BreakerConfig()
    deadline: DeadlineConfig = DeadlineConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    hedging: HedgeConfig = HedgeConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        if self.default_route not in self.routes:
            raise ValueError(f"default_route {self.default_route!r} is not a route")
        for name, route in self.routes.items():
            for t in route.targets:
                if t.provider not in self.providers:
                    raise ValueError(f"route {name!r}: provider {t.provider!r} is not configured")
        return self

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self.pricing.get(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / 1_000_000

    def usage(self, model: str, input_tokens: int, output_tokens: int) -> Usage:
        return Usage(input_tokens, output_tokens, self.cost(model, input_tokens, output_tokens))


def load_router_config(path: str | Path) -> RouterConfig:
    try:
        return RouterConfig.model_validate(load_yaml(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
