"""Redaction before anything leaves the process (events; logs mask secrets via the same patterns).

Secrets are always removed: provider keys (OpenAI, Anthropic, Google), cloud and forge
credentials (AWS access keys, GitHub and Slack tokens, Stripe keys), JWTs, bearer and basic
authorization values, and the value of any ``api_key=`` / ``token: …`` / ``password=``-style pair.
Per tenant, configurable:
emails, phone numbers, card numbers (Luhn-checked, so order ids survive), custom regexes, and
whether the raw input goes out at all (``raw_input: false`` keeps only a hash and the
embedding-relevant text, itself redacted).

    default: {redact: [email, phone, card], raw_input: true}
    tenants:
      acme: {redact: [email, card], patterns: ['ACME-\\d{6}'], raw_input: false}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmgw.kit.errors import ConfigError
from llmgw.kit.settings import load_yaml

__all__ = ["RedactionConfig", "Redactor", "load_redaction", "mask_secrets"]

Kind = Literal["email", "phone", "card"]
_DEFAULT_KINDS: tuple[Kind, ...] = ("email", "phone", "card")

_SECRET = re.compile("|".join([
    r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}",  # OpenAI, Anthropic
    r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}",  # Stripe
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}",  # GitHub
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
    r"\bAIza[0-9A-Za-z_\-]{30,}",  # Google API keys
    r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}",  # JWTs
    r"\b(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{6,}",  # authorization values
]))
# name=value / name: value pairs whose name says secret; the name stays, the value goes.
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:[a-z0-9]+[_\-])*(?:api[_\-]?key|apikey|secret(?:[_\-]?access)?(?:[_\-]?key)?|access[_\-]?key|"
    r"token|password|passwd|pwd|credentials?)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]{4,})"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().\-]{7,}\d(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")


def mask_secrets(text: str) -> str:
    """Every secret format above -> [SECRET] (for a pair: its value)."""
    return _SECRET_PAIR.sub(r"\1[SECRET]", _SECRET.sub("[SECRET]", text))


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    redact: list[Kind] = Field(default_factory=lambda: list(_DEFAULT_KINDS))
    patterns: list[str] = []
    raw_input: bool = True
    # The input text (redacted as events are) on the request's span: off unless a tenant opts in.
    trace_input: bool = False

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for p in value:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"pattern {p!r}: {exc}") from exc
        return value


class RedactionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: _Policy = _Policy()
    tenants: dict[str, _Policy] = {}


def load_redaction(path: Path | None) -> RedactionConfig:
    if path is None:
        return RedactionConfig()
    try:
        return RedactionConfig.model_validate(load_yaml(path) or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc


# Per tenant policy: at most this many remembered results, of texts at most this long (so at
# most about 4 MiB per policy).
_MEMO_ENTRIES = 1024
_MEMO_MAX_CHARS = 2048


class Redactor:
    def __init__(self, config: RedactionConfig | None = None) -> None:
        self._config = config or RedactionConfig()
        self._cache: dict[str, Callable[[str], str]] = {}

    def raw_input(self, tenant: str) -> bool:
        return self._config.tenants.get(tenant, self._config.default).raw_input

    def trace_input(self, tenant: str) -> bool:
        return self._config.tenants.get(tenant, self._config.default).trace_input

    def for_tenant(self, tenant: str) -> Callable[[str], str]:
        fn = self._cache.get(tenant)
        if fn is None:
            fn = self._cache[tenant] = self._build(self._config.tenants.get(tenant, self._config.default))
        return fn

    @staticmethod
    def _build(policy: _Policy) -> Callable[[str], str]:
        steps: list[Callable[[str], str]] = [mask_secrets]
        custom = [re.compile(p) for p in policy.patterns]
        steps += [lambda s, rx=rx: rx.sub("[REDACTED]", s) for rx in custom]  # type: ignore[misc]
        if "email" in policy.redact:
            steps.append(lambda s: _EMAIL.sub("[EMAIL]", s))
        if "card" in policy.redact:  # before phone: a card number also looks like a long phone
            steps.append(lambda s: _CARD.sub(_card, s))
        if "phone" in policy.redact:
            steps.append(lambda s: _PHONE.sub("[PHONE]", s))

        # A hit's events carry the cached answer, and its repeats the same question: the same
        # texts, redacted again on every request (about 7 % of a colocated hit's CPU, profiled).
        # Redaction is a pure function of the policy and the text, so recent results are kept:
        # short texts only, a bounded count, the oldest dropped first.
        memo: dict[str, str] = {}

        def redact(text: str) -> str:
            if len(text) <= _MEMO_MAX_CHARS:
                done = memo.get(text)
                if done is not None:
                    return done
            out = text
            for step in steps:
                out = step(out)
            if len(text) <= _MEMO_MAX_CHARS:
                if len(memo) >= _MEMO_ENTRIES:
                    del memo[next(iter(memo))]
                memo[text] = out
            return out

        return redact
