"""Plain value types shared by every core. No gRPC or protobuf types here: cores stay testable
without a server, and ``llmgw.convert`` is the one place that maps these to and from protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "COMPLETE_FINISH",
    "LENGTH_FINISH",
    "Attempt",
    "CacheEntry",
    "Chunk",
    "Completion",
    "Decision",
    "KeyMaterial",
    "LimitStatus",
    "LookupResult",
    "Message",
    "RouteCall",
    "Sampling",
    "Usage",
]


# Finish reasons of a complete answer, in both providers' words. Only these are cacheable; an
# answer cut by max_tokens (LENGTH_FINISH) only where the cache policy opts in; anything else
# (content_filter, refusal, none at all) never.
COMPLETE_FINISH = frozenset({"stop", "end_turn", "stop_sequence", "tool_calls", "tool_use"})
LENGTH_FINISH = frozenset({"length", "max_tokens"})


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    def with_defaults(self, defaults: Sampling) -> Sampling:
        """Fill unset fields from a route's defaults (the caller's values win)."""
        return Sampling(
            temperature=self.temperature if self.temperature is not None else defaults.temperature,
            max_tokens=self.max_tokens if self.max_tokens is not None else defaults.max_tokens,
            top_p=self.top_p if self.top_p is not None else defaults.top_p,
            stop=self.stop or defaults.stop,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    # None: the model has no price in the pricing table ("unpriced", never $0).
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: str
    model: str
    status: str  # "ok" | "error" | "skipped"
    error: str = ""
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    provider: str
    model: str
    usage: Usage = Usage()
    attempts: tuple[Attempt, ...] = ()
    finish_reason: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A streamed piece; the final one carries the whole completion's metadata."""

    delta: str
    final: bool = False
    completion: Completion | None = None


@dataclass(frozen=True, slots=True)
class RouteCall:
    """What the router needs: a registry prompt (name + immutable version + variables) or raw messages."""

    route: str
    request_id: str = ""
    tenant: str = ""
    prompt: str = ""
    prompt_version: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    sampling: Sampling = Sampling()
    # Absolute time.monotonic() by which the answer is needed (the caller's gRPC deadline).
    deadline: float | None = None


# ---- cache ----


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """Everything that changes a completion's answer, and nothing that doesn't."""

    tenant: str
    route: str
    prompt: str = ""
    prompt_version: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    # The effective sampling: the caller's, then the prompt version's, then the route's defaults.
    sampling: Sampling = Sampling()
    # Digest of the route's targets (provider and model, in order), so a route edit is a new key.
    targets: str = ""
    # Values derived from this material, filled in once by whoever derives them (the cache's key,
    # by prefix: services/cache/keys.py). The ingress reuses one KeyMaterial for a request's
    # repeats, so a hit serializes and hashes nothing. Not part of equality; ``replace`` starts empty.
    memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    text: str
    provider: str
    model: str
    usage: Usage = Usage()
    # The streamed chunks as produced, so a replay keeps their boundaries; () for plain responses.
    chunks: tuple[str, ...] = ()
    stored_at: float = 0.0
    finish_reason: str = ""


@dataclass(frozen=True, slots=True)
class LookupResult:
    key: str
    hit: bool = False
    entry: CacheEntry | None = None
    cacheable: bool = True
    # Single-flight: this caller makes the provider call and its store releases the others...
    leader: bool = False
    # ...or an identical request already does: wait for its entry (bounded) instead.
    in_flight: bool = False
    # Leader: the lock's owner token (only the owner stores or releases). In flight: how long the
    # leader's lock still holds (the waiters wait exactly that: a dead leader frees them then).
    lock_token: str = ""
    lock_ttl_ms: int = 0


# ---- limiter ----


@dataclass(frozen=True, slots=True)
class LimitStatus:
    name: str
    unit: str  # "requests" | "tokens"
    limit: int
    remaining: int
    reset_after_ms: int
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_ms: int = 0
    limit_name: str = ""
    statuses: tuple[LimitStatus, ...] = ()
    reservation_id: str = ""
