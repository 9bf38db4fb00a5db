"""What the cache core needs of the semantic tier on every request, without its dependencies
(numpy, the embedding model): a service that never turns the tier on never imports them."""

from __future__ import annotations

from dataclasses import dataclass

from llmgw.domain import KeyMaterial
from llmgw.services.cache.keys import semantic_material
from llmgw.services.cache.policy import SemanticPolicy

__all__ = ["Found", "Pending", "pending_for"]


@dataclass(frozen=True, slots=True)
class Pending:
    """A semantic-eligible miss: what its store adds to the scope."""

    scope: str
    text: str

    def token(self) -> str:
        return f"{self.scope}\n{self.text}"

    @staticmethod
    def of(token: str) -> Pending | None:
        scope, sep, text = token.partition("\n")
        return Pending(scope, text) if sep and len(scope) == 64 and text else None


@dataclass(frozen=True, slots=True)
class Found:
    raw: bytes  # the exact entry's compressed protobuf
    entry_key: str
    similarity: float
    question: str


def pending_for(key: KeyMaterial, policy: SemanticPolicy) -> Pending | None:
    """The request's scope and compared text when its policy turns the tier on and it has such
    text (at most ``max_chars``); else ``None`` (exact tier only)."""
    found = semantic_material(key, policy.compare) if policy.enabled else None
    return Pending(*found) if found and len(found[1]) <= policy.max_chars else None
