"""The gateway's request as the core sees it, and its validation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from llmgw.domain import Message, Output, Sampling
from llmgw.kit.errors import InvalidArgument

__all__ = ["CacheMode", "GatewayRequest"]

_ROLES = ("system", "user", "assistant", "tool")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHOICES = ("auto", "none", "required", "tool")
_FORMATS = ("text", "json_object", "json_schema")
# What both providers take as image data (Anthropic's list; OpenAI takes these and more).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_TOOLS = 128
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
    output: Output = Output()
    # A route name or "provider/model" (the first target of a route); resolved by the core.
    model: str = ""
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
            _check_message(i, m)
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
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(s, name)
            if value is not None and not -2 <= value <= 2:
                raise InvalidArgument(f"sampling.{name}", "must be between -2 and 2")
        _check_output(self.output)


def _json_object(field: str, text: str) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidArgument(field, "must be a JSON object (text)") from None
    if not isinstance(value, dict):
        raise InvalidArgument(field, "must be a JSON object")


def _check_message(i: int, m: Message) -> None:
    where = f"messages[{i}]"
    if m.role not in _ROLES:
        raise InvalidArgument(f"{where}.role", f"must be one of {', '.join(_ROLES)}")
    if m.role == "tool" and not m.tool_call_id:
        raise InvalidArgument(f"{where}.tool_call_id", "a tool message answers a tool call: give its id")
    if m.tool_calls and m.role != "assistant":
        raise InvalidArgument(f"{where}.tool_calls", "only assistant messages carry tool calls")
    if not m.content.strip() and not m.parts and not m.tool_calls and m.role != "tool":
        raise InvalidArgument(f"{where}.content", "must not be empty")
    for j, p in enumerate(m.parts):
        if p.type == "text":
            continue
        if p.type != "image":
            raise InvalidArgument(f"{where}.parts[{j}].type", "must be text or image")
        if m.role != "user":
            raise InvalidArgument(f"{where}.parts[{j}]", "images go in user messages")
        if p.url:
            if not p.url.startswith(("https://", "http://", "data:")):
                raise InvalidArgument(f"{where}.parts[{j}].url", "must be an http(s): or data: URL")
        elif p.media_type not in IMAGE_TYPES or not p.data:
            raise InvalidArgument(f"{where}.parts[{j}]", f"an image needs a url, or data with a media_type of "
                                                         f"{', '.join(IMAGE_TYPES)}")
    for j, c in enumerate(m.tool_calls):
        if not c.id or not _TOOL_NAME.match(c.name):
            raise InvalidArgument(f"{where}.tool_calls[{j}]", "needs an id and a tool name")
        _json_object(f"{where}.tool_calls[{j}].arguments", c.arguments or "{}")


def _check_output(o: Output) -> None:
    if len(o.tools) > MAX_TOOLS:
        raise InvalidArgument("tools", f"at most {MAX_TOOLS} tools")
    names = set()
    for i, t in enumerate(o.tools):
        if not _TOOL_NAME.match(t.name):
            raise InvalidArgument(f"tools[{i}].name", "1-64 letters, digits, _ or -")
        if t.name in names:
            raise InvalidArgument(f"tools[{i}].name", f"{t.name!r} is defined twice")
        names.add(t.name)
        if t.parameters:
            _json_object(f"tools[{i}].parameters", t.parameters)
    c = o.tool_choice
    if c is not None:
        if c.mode not in _CHOICES:
            raise InvalidArgument("tool_choice", f"must be one of {', '.join(_CHOICES)}")
        if c.mode in ("required", "tool") and not o.tools:
            raise InvalidArgument("tool_choice", f"{c.mode!r} needs tools")
        if c.mode == "tool" and c.name not in names:
            raise InvalidArgument("tool_choice", f"names {c.name!r}, which is not among the tools")
    f = o.response_format
    if f is not None:
        if f.type not in _FORMATS:
            raise InvalidArgument("response_format.type", f"must be one of {', '.join(_FORMATS)}")
        if f.type == "json_schema":
            _json_object("response_format.schema", f.schema)
