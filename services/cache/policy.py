"""Cache policy per prompt and route, loaded strictly from YAML (``CACHE_POLICY_FILE``).

    default: {cacheable: deterministic, ttl_s: 3600, max_entry_bytes: 262144}
    rules:                                   # first match wins; unset fields come from default
      - match: {prompt: classify-ticket}
        ttl_s: 86400
      - match: {route: creative}
        cacheable: never

      - match: {prompt: support-faq}
        semantic: {enabled: true, threshold: 0.8, ttl_s: 3600}   # the semantic tier (docs/cache.md)

``cacheable``: ``deterministic`` (temperature 0, or unset with a route default of 0), ``always``
(also sampled answers: the same question gets the first answer), or ``never``.
``cache_length``: also store answers cut off by max_tokens (default false). Whatever the policy,
an answer without a normal finish reason (truncated, filtered) is never stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmgw.domain import COMPLETE_FINISH, LENGTH_FINISH, KeyMaterial
from llmgw.kit.errors import ConfigError
from llmgw.kit.settings import load_yaml

__all__ = ["CachePolicy", "Policy", "SemanticPolicy", "load_policy"]

Cacheable = Literal["deterministic", "always", "never"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SemanticPolicy(_Strict):
    """The semantic tier of one prompt or route: off unless ``enabled``."""

    enabled: bool = False
    # Cosine floor for a candidate; the verifier decides (services/cache/semantic/verify.py).
    threshold: float = Field(default=0.8, ge=0.5, le=1.0)
    # How long a semantic entry may answer others (never past its exact entry's TTL).
    ttl_s: int = Field(default=3600, gt=0)
    # What is compared by meaning: the last user message, or "variable:<name>" of a prompt.
    compare: str = Field(default="last_user_message", pattern=r"^(last_user_message|variable:.+)$")
    # The whole semantic lookup (embedding, index, verifier, entry) after an exact miss; past it, a miss.
    budget_ms: int = Field(default=150, gt=0, le=5000)
    # Per scope (tenant x prompt version x everything but the compared text); a full scope starts over.
    max_entries: int = Field(default=5000, gt=0)
    # Longer texts stay exact-only: the verifier's rules are for questions, and embedding a long
    # text costs the model thread what several short questions do.
    max_chars: int = Field(default=1000, gt=0)


class Policy(_Strict):
    cacheable: Cacheable = "deterministic"
    ttl_s: int = Field(default=3600, gt=0)
    max_entry_bytes: int = Field(default=256 * 1024, gt=0)
    # Also store answers cut off by max_tokens (finish "length" / "max_tokens"): the same
    # request would be cut the same way, but a caller may not expect a partial answer.
    cache_length: bool = False
    semantic: SemanticPolicy = SemanticPolicy()

    def stores(self, finish_reason: str) -> bool:
        """Only complete answers are stored: a finish reason of a normal end (or of max_tokens,
        when opted in). An empty one (a truncated stream, an old router) never."""
        return finish_reason in COMPLETE_FINISH or (self.cache_length and finish_reason in LENGTH_FINISH)


class _Override(_Strict):
    cacheable: Cacheable | None = None
    ttl_s: int | None = Field(default=None, gt=0)
    max_entry_bytes: int | None = Field(default=None, gt=0)
    cache_length: bool | None = None
    semantic: SemanticPolicy | None = None


class _Match(_Strict):
    prompt: str | None = None
    route: str | None = None


class _Rule(_Override):
    match: _Match


class CachePolicy(_Strict):
    default: Policy = Policy()
    rules: list[_Rule] = []

    def for_request(self, prompt: str, route: str) -> Policy:
        for rule in self.rules:
            m = rule.match
            if (m.prompt is None or m.prompt == prompt) and (m.route is None or m.route == route):
                update = {name: getattr(rule, name) for name in _Override.model_fields
                          if getattr(rule, name) is not None}
                return self.default.model_copy(update=update)
        return self.default

    @property
    def semantic_anywhere(self) -> bool:
        """Any rule (or the default) turns the semantic tier on: the embedder is loaded at start."""
        return self.default.semantic.enabled or any(r.semantic is not None and r.semantic.enabled for r in self.rules)

    def allows(self, key: KeyMaterial, *, unset_temperature_is_deterministic: bool = True) -> bool:
        policy = self.for_request(key.prompt, key.route)
        if policy.cacheable == "never":
            return False
        if policy.cacheable == "always":
            return True
        t = key.sampling.temperature
        return t == 0 or (t is None and unset_temperature_is_deterministic)


def load_policy(path: Path | None, *, ttl_s: int = 3600, max_entry_bytes: int = 256 * 1024) -> CachePolicy:
    """The file's policy, or a default built from the plain TTL_S / MAX_ENTRY_BYTES settings."""
    if path is None:
        return CachePolicy(default=Policy(ttl_s=ttl_s, max_entry_bytes=max_entry_bytes))
    try:
        return CachePolicy.model_validate(load_yaml(path) or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
