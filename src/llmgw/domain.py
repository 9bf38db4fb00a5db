"""Plain value types shared by every core. No gRPC or protobuf types here: cores stay testable
without a server, and ``llmgw.convert`` is the one place that maps these to and from protobuf."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    "Output",
    "Part",
    "Prepared",
    "ResponseFormat",
    "RouteCall",
    "Sampling",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "assemble_tool_calls",
    "prompt_text",
    "schema_object",
]


# Finish reasons of a complete answer, in both providers' words. Only these are cacheable; an
# answer cut by max_tokens (LENGTH_FINISH) only where the cache policy opts in; anything else
# (content_filter, refusal, none at all) never.
COMPLETE_FINISH = frozenset({"stop", "end_turn", "stop_sequence", "tool_calls", "tool_use"})
LENGTH_FINISH = frozenset({"length", "max_tokens"})


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a message's content: text, or an image by URL (https: or data:) or as base64
    ``data`` with its ``media_type``."""

    type: str  # "text" | "image"
    text: str = ""
    url: str = ""
    media_type: str = ""
    data: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's form; Anthropic's ``input`` is dumped to it)

    @property
    def input(self) -> dict[str, Any]:
        """The arguments as the object Anthropic's ``input`` is: text that is not a JSON object
        (a model can write anything) is kept, under "arguments" or "value", never dropped."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {"arguments": self.arguments}
        return value if isinstance(value, dict) else {"value": value}


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of tool call ``index``: the first carries id and name, later ones more arguments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


def assemble_tool_calls(deltas: Iterable[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The whole calls a stream of deltas makes (arguments of a call that sent none: ``{}``)."""
    calls: dict[int, list[str]] = {}
    for d in deltas:
        call = calls.setdefault(d.index, ["", "", ""])
        call[0] = call[0] or d.id
        call[1] = call[1] or d.name
        call[2] += d.arguments
    return tuple(ToolCall(c[0], c[1], c[2] or "{}") for _, c in sorted(calls.items()))


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str = ""
    # Content as parts (text and images, in order) when it is more than text; ``content`` is then "".
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls the model asked for
    tool_call_id: str = ""  # tool: the call this result answers

    @property
    def text(self) -> str:
        """The message's text: ``content`` and its text parts (what is counted and embedded)."""
        if not self.parts:
            return self.content
        return self.content + "".join(p.text for p in self.parts if p.type == "text")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: str = ""  # JSON Schema of the arguments, as canonical JSON object text ("" = any object)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: str = "auto"  # "auto" | "none" | "required" | "tool"
    name: str = ""  # mode "tool": which


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: str = "text"  # "text" | "json_object" | "json_schema"
    name: str = ""
    schema: str = ""  # json_schema: the schema as canonical JSON object text
    strict: bool = False

    @property
    def json(self) -> bool:
        return self.type in ("json_object", "json_schema")


@dataclass(frozen=True, slots=True)
class Output:
    """What shape the answer may take: the tools it may call and the format it must follow. Part
    of the cache key; translated for each provider by the router's adapters."""

    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    # Where a provider has them (OpenAI); Anthropic's adapter drops them.
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def with_defaults(self, defaults: Sampling) -> Sampling:
        """Fill unset fields from a route's defaults (the caller's values win)."""

        def pick(mine: Any, theirs: Any) -> Any:
            return mine if mine is not None else theirs

        return Sampling(
            temperature=pick(self.temperature, defaults.temperature),
            max_tokens=pick(self.max_tokens, defaults.max_tokens),
            top_p=pick(self.top_p, defaults.top_p),
            stop=self.stop or defaults.stop,
            seed=pick(self.seed, defaults.seed),
            presence_penalty=pick(self.presence_penalty, defaults.presence_penalty),
            frequency_penalty=pick(self.frequency_penalty, defaults.frequency_penalty),
        )


def schema_object(text: str) -> dict[str, Any]:
    """A JSON schema from its canonical text (tool parameters, a response format); "" is any object."""
    return json.loads(text) if text else {"type": "object", "properties": {}}


def prompt_text(system: str, messages: Iterable[Message], output: Output) -> str:
    """All a prompt sends that a tokenizer should count: system, message texts, tool calls and
    results, tool schemas and a response schema (images are not counted: providers price them apart)."""
    texts = [system]
    for m in messages:
        texts.append(m.text)
        texts += [c.name + c.arguments for c in m.tool_calls]
    texts += [t.name + t.description + t.parameters for t in output.tools]
    if output.response_format is not None:
        texts.append(output.response_format.schema)
    return "".join(texts)


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
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Chunk:
    """A streamed piece (text and/or tool-call deltas); the final one carries the whole
    completion's metadata."""

    delta: str = ""
    final: bool = False
    completion: Completion | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()

    @property
    def sent_text(self) -> str:
        """What this chunk sent the caller, as text: what a stream cut after it is charged for."""
        return self.delta + "".join(d.name + d.arguments for d in self.tool_calls)


@dataclass(slots=True)
class Prepared:
    """The first target's attempt made ready while the ingress waits on its limiter and cache
    (a router in the ingress's process only): the target's rendered prompt and whether its
    provider budget was granted (not granted: the router asks again, the normal way), with the
    reservation to settle ("" when the granted limits count only requests).
    Whoever ``claim``s it first owns it: the router to use it, or the ingress to give the grant
    back when no call follows (a hit, a refusal, a cancel)."""

    provider: str
    model: str
    system: str
    messages: tuple[Message, ...]
    prompt_tokens: int
    granted: bool
    reservation: str
    # The grant's ``Decision.void`` (a limiter core in this process): what gives back its
    # requests too; None: only the reservation's tokens can go back.
    void: Callable[[], Coroutine[Any, Any, None]] | None = None
    claimed: bool = False

    def claim(self) -> bool:
        if self.claimed:
            return False
        self.claimed = True
        return True


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
    output: Output = Output()
    # Absolute time.monotonic() by which the answer is needed (the caller's gRPC deadline).
    deadline: float | None = None
    # In process only (never sent to a remote router): see ``Prepared``.
    prepared: Prepared | None = None


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
    output: Output = Output()
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
    # The streamed chunks as produced (text and tool-call deltas), so a replay keeps their
    # boundaries; () for plain responses.
    chunks: tuple[Chunk, ...] = ()
    stored_at: float = 0.0
    finish_reason: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    def replay(self) -> tuple[Chunk, ...]:
        """The chunks to stream: as produced, or for a plain response its text and each tool call whole."""
        if self.chunks:
            return self.chunks
        calls = tuple(Chunk(tool_calls=(ToolCallDelta(i, c.id, c.name, c.arguments),))
                      for i, c in enumerate(self.tool_calls))
        return ((Chunk(delta=self.text),) if self.text or not calls else ()) + calls


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
    # A hit: "exact" or "semantic" (the same question asked another way), with the similarity.
    tier: str = ""
    similarity: float = 0.0
    # A miss the semantic tier may index: handed back to ``store`` with the answer.
    semantic: str = ""


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
    # In process only (a limiter core's decision; never sent over gRPC): gives back everything
    # this admission charged, requests included — for a call that ends up not being made.
    void: Callable[[], Coroutine[Any, Any, None]] | None = field(default=None, compare=False, repr=False)
