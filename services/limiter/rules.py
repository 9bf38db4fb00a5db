"""The limit rule model, loaded strictly from YAML (unknown keys are rejected).

    domains:
      gateway:                        # the domain the ingress checks
        - match: {tenant: "*"}        # ordered descriptor keys; "*" = one bucket per value
          limits:
            - {name: tenant-rpm, unit: requests, limit: 60, per: minute}
            - {name: tenant-tpm, unit: tokens, limit: 100000, per: minute, shadow: true}

A rule applies when every key it matches is in the request's descriptor with a matching value.
Among applying rules on the same keys the most specific wins (per-value overrides); the limits of
all winning rules are decided together, atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmgw.kit.errors import ConfigError
from llmgw.kit.settings import load_yaml

__all__ = ["DESCRIPTOR_KEYS", "SENT_KEYS", "Limit", "Rule", "RuleSet", "load_rules", "parse_rules"]

# What each domain's caller sends, and so all a rule may match on: the ingress checks the
# gateway domain before a model is chosen (tenant, the API key's id — never the key —, route,
# prompt, label), the router the provider domain before each provider call.
SENT_KEYS: dict[str, tuple[str, ...]] = {
    "gateway": ("tenant", "api_key", "route", "prompt", "label"),
    "provider": ("provider", "model"),
}
DESCRIPTOR_KEYS = tuple(dict.fromkeys(k for keys in SENT_KEYS.values() for k in keys))
PERIOD_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limit(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    unit: Literal["requests", "tokens"]
    limit: int = Field(gt=0)
    per: Literal["second", "minute", "hour", "day"]
    # window (default): no window of length ``per`` ever holds more than ``limit``.
    # gcra: a steady rate of ``limit`` per ``per``, at most ``burst`` ahead of it (any window of
    # length ``per`` then holds at most limit + burst). docs/limits.md "Algorithms".
    algorithm: Literal["window", "gcra"] = "window"
    # gcra only; default a tenth of the limit (at least 1).
    burst: int | None = Field(default=None, gt=0)
    # Count and report, never refuse: for trying a new limit in production.
    shadow: bool = False
    # While Redis is unreachable: "local" applies limit / replicas in each process; "open" admits;
    # "closed" refuses.
    on_redis_failure: Literal["local", "open", "closed"] = "local"

    @property
    def period_ms(self) -> int:
        return PERIOD_MS[self.per]

    @model_validator(mode="after")
    def _burst_is_gcra(self) -> Limit:
        if self.burst is not None and self.algorithm != "gcra":
            raise ValueError(f"limit {self.name!r}: burst applies to algorithm gcra only")
        return self

    @property
    def gcra_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, -(-self.limit // 10))

    def worst_case(self) -> str:
        """The most this limit admits in any window of its length, in words."""
        if self.algorithm == "window":
            return f"at most {self.limit} {self.unit} in any {self.per}"
        return (f"at most {self.limit + self.gcra_burst} {self.unit} in any {self.per} "
                f"(a rate of {self.limit} per {self.per}, {self.gcra_burst} ahead)")


class Rule(_Strict):
    match: dict[str, str]
    limits: list[Limit] = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _known_keys(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("match needs at least one descriptor key")
        for key in value:
            if key not in DESCRIPTOR_KEYS:
                raise ValueError(f"unknown descriptor key {key!r}; expected one of {', '.join(DESCRIPTOR_KEYS)}")
        # Keys in one order whatever order they were written in: the bucket key is made from
        # them, and rules on the same keys override each other; a re-sorted file (or two
        # replicas fed differently ordered copies) must count in the same buckets.
        return dict(sorted(value.items()))

    def applies(self, descriptor: Mapping[str, str]) -> bool:
        return all(
            key in descriptor and (want == "*" or descriptor[key] == want) for key, want in self.match.items()
        )

    @property
    def specificity(self) -> int:
        return sum(value != "*" for value in self.match.values())

    def bucket(self, descriptor: Mapping[str, str]) -> str:
        """The part of the Redis key naming this rule's bucket for one descriptor."""
        return "|".join(f"{key}={descriptor[key]}" for key in self.match)


class RuleSet(_Strict):
    domains: dict[str, list[Rule]]

    def matching(self, domain: str, descriptor: Mapping[str, str]) -> list[tuple[Rule, Limit]]:
        """Every limit that applies. Among rules on the same descriptor keys, the most specific one
        wins (a per-value override: ``{tenant: acme}`` replaces ``{tenant: "*"}`` for acme)."""
        best: dict[tuple[str, ...], Rule] = {}
        for rule in self.domains.get(domain, []):
            if not rule.applies(descriptor):
                continue
            keys = tuple(rule.match)
            if keys not in best or rule.specificity > best[keys].specificity:
                best[keys] = rule
        return [(rule, limit) for rule in best.values() for limit in rule.limits]

    @field_validator("domains")
    @classmethod
    def _unique_names(cls, value: dict[str, list[Rule]]) -> dict[str, list[Rule]]:
        for domain, rules in value.items():
            if domain not in SENT_KEYS:
                raise ValueError(f"unknown domain {domain!r}: nothing checks it (domains: {', '.join(SENT_KEYS)})")
            matches: dict[frozenset[tuple[str, str]], int] = {}
            for i, rule in enumerate(rules):
                unsent = [k for k in rule.match if k not in SENT_KEYS[domain]]
                if unsent:
                    raise ValueError(f"{domain}[{i}]: the {domain} domain is never sent {unsent[0]!r}, so this "
                                     f"rule could never apply (it gets: {', '.join(SENT_KEYS[domain])})")
                key = frozenset(rule.match.items())
                if key in matches:
                    raise ValueError(f"{domain}[{matches[key]}] and {domain}[{i}] have the same match {rule.match}: "
                                     "only one of them would ever apply; merge their limits")
                matches[key] = i
            seen: set[str] = set()
            for rule in rules:
                for limit in rule.limits:
                    if limit.name in seen:
                        raise ValueError(f"domain {domain!r}: limit name {limit.name!r} is used twice")
                    seen.add(limit.name)
        return value


def parse_rules(data: object, *, source: str = "<rules>") -> RuleSet:
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def load_rules(path: str | Path) -> RuleSet:
    return parse_rules(load_yaml(path), source=str(path))
