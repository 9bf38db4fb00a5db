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

__all__ = ["BreakerConfig", "Price", "ProviderConfig", "RouteConfig", "RouterConfig", "Target", "load_router_config"]

ProviderName = Literal["openai", "anthropic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    # None: the SDK's default (the real provider).
    base_url: str | None = None
    api_key_env: str
    # Used when the key variable is unset: only for local fake providers.
    fallback_api_key: str | None = None


class Target(_Strict):
    provider: ProviderName
    model: str = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)
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

    @property
    def sampling_defaults(self) -> Sampling:
        d = self.defaults
        return Sampling(temperature=d.temperature, max_tokens=d.max_tokens, top_p=d.top_p, stop=tuple(d.stop))


class Price(_Strict):
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class BreakerConfig(_Strict):
    # Consecutive failures (retryable or configuration) that open a target's circuit.
    failure_threshold: int = Field(default=5, ge=1)
    # How long an open circuit skips the target before one probe call is let through.
    open_seconds: float = Field(default=30.0, gt=0)


class RouterConfig(_Strict):
    providers: dict[ProviderName, ProviderConfig]
    routes: dict[str, RouteConfig]
    pricing: dict[str, Price] = {}
    default_route: str = "default"
    breaker: BreakerConfig = BreakerConfig()

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
