"""The gateway's request as the core sees it, and its validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from llmgw.domain import Message, Sampling
from llmgw.kit.errors import InvalidArgument

__all__ = ["CacheMode", "GatewayRequest"]

_ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 1000
# More than any model answers; also what the contracts' int32 can carry (the HTTP face takes any JSON integer).
MAX_TOKENS = 1_000_000


class CacheMode(Enum):
    DEFAULT = 0
    BYPASS = 1
    REFRESH = 2


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    prompt: str = ""
    label: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    route: str = ""
    sampling: Sampling = Sampling()
    cache_mode: CacheMode = CacheMode.DEFAULT
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Every field above in one canonical encoding (the deterministic protobuf bytes), set by the
    # adapter: equal fingerprints are equal requests, so the core can recognize a repeat and reuse
    # its validation, label resolution and cache key. Empty: not known (nothing is reused).
    fingerprint: bytes = field(default=b"", compare=False, repr=False)

    def validate_shape(self) -> None:
        """Checks that need no registry; raise InvalidArgument naming the field."""
        if not self.prompt and not self.messages:
            raise InvalidArgument("prompt", "give either a registry prompt or messages")
        if self.prompt and self.messages:
            raise InvalidArgument("messages", "give either a registry prompt or messages, not both")
        if self.variables and not self.prompt:
            raise InvalidArgument("variables", "variables need a registry prompt")
        if len(self.messages) > MAX_MESSAGES:
            raise InvalidArgument("messages", f"at most {MAX_MESSAGES} messages")
        for i, m in enumerate(self.messages):
            if m.role not in _ROLES:
                raise InvalidArgument(f"messages[{i}].role", f"must be one of {', '.join(_ROLES)}")
            if not m.content.strip():
                raise InvalidArgument(f"messages[{i}].content", "must not be empty")
        if self.messages and self.messages[-1].role == "assistant":
            last = len(self.messages) - 1
            raise InvalidArgument(f"messages[{last}].role", "the last message must not be the assistant's")
        s = self.sampling
        if s.temperature is not None and not 0 <= s.temperature <= 2:
            raise InvalidArgument("sampling.temperature", "must be between 0 and 2")
        if s.max_tokens is not None and not 0 < s.max_tokens <= MAX_TOKENS:
            raise InvalidArgument("sampling.max_tokens", f"must be between 1 and {MAX_TOKENS}")
        if s.top_p is not None and not 0 < s.top_p <= 1:
            raise InvalidArgument("sampling.top_p", "must be in (0, 1]")
        if len(s.stop) > 4:
            raise InvalidArgument("sampling.stop", "at most 4 stop sequences")
