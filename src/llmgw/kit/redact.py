"""Redaction before anything leaves the process (events; logs mask secrets via the same patterns).

Secrets (OpenAI/Anthropic keys, bearer tokens) are always removed. Per tenant, configurable:
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

_SECRET = re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{8,}|\bBearer\s+[A-Za-z0-9._\-]{6,}")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d\s().\-]{7,}\d(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")


def mask_secrets(text: str) -> str:
    """API keys of OpenAI (sk-...) and Anthropic (sk-ant-...) and bearer tokens -> [SECRET]."""
    return _SECRET.sub("[SECRET]", text)


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


class Redactor:
    def __init__(self, config: RedactionConfig | None = None) -> None:
        self._config = config or RedactionConfig()
        self._cache: dict[str, Callable[[str], str]] = {}

    def raw_input(self, tenant: str) -> bool:
        return self._config.tenants.get(tenant, self._config.default).raw_input

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

        def redact(text: str) -> str:
            for step in steps:
                text = step(text)
            return text

        return redact
