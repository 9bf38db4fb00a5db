"""The canonical cache key.

Canonical JSON (sorted keys, no whitespace) of every field that changes the answer: tenant,
prompt name and immutable version, variables (defaults filled in), every raw message (system
included, with its image parts, tool calls and tool results), the tools offered, the tool choice
and the response format, route and a digest of its targets (provider and model: a route edit is a new key), and
all sampling parameters as they run (the caller's, then the prompt version's, then the route's
defaults). Metadata and request ids are not part of it.

Redis layout (``:`` separates, each part escaped):

    <prefix>:<tenant>:<prompt or ->:<version or ->:{<sha256>}   an entry
    <prefix>!lock:{<sha256>}                                    single-flight lock of an entry
    <prefix>!stats:{<tenant>}[:<prompt>]                        counters
    <prefix>!sem:<tenant>:<prompt or ->:<version or ->:{<scope>}  semantic entries of one scope
    <prefix>!semhits:{<tenant>}                                 recent semantic hits (capped list)

The braces are Redis Cluster hash tags: an entry and its lock share a slot (the lookup and store
scripts touch both), entries spread over every shard by their digest, and a tenant's two counters
share one. User text is escaped so it can never form a tag of its own.

Tenant, prompt and version are in clear so ``llmgw cache invalidate`` is a pattern scan; an entry
of one tenant can never be read under another's key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import astuple
from typing import Any

from llmgw.domain import KeyMaterial, Message, Output

__all__ = ["KEY_SCHEMA", "cache_key", "canonical_json", "entry_pattern", "lock_key", "semantic_hits_key",
           "semantic_key", "semantic_material", "semantic_pattern", "stats_key"]

# Bumped whenever the canonical form or the entry layout changes, so old entries are simply never
# read again (2: entries became hashes carrying their savings, see core._LOOKUP).
KEY_SCHEMA = 5  # 3: effective sampling and the route's targets; 4: parts, tool calls, tools, response format;
#                5: hash tags (Redis Cluster)


# Escape what would break the layout or a SCAN pattern (str.translate: this runs on every lookup).
_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in ":%*?[]\\{}"})


def _part(text: str) -> str:
    return text.translate(_ESCAPES) or "-"


def canonical_json(k: KeyMaterial) -> str:
    doc = {
        "schema": KEY_SCHEMA,
        "tenant": k.tenant,
        "route": k.route,
        "targets": k.targets,
        "prompt": k.prompt,
        "prompt_version": k.prompt_version,
        "variables": dict(sorted(k.variables.items())),
        "messages": [_message(m) for m in k.messages],
        "sampling": {
            "temperature": k.sampling.temperature,
            "max_tokens": k.sampling.max_tokens,
            "top_p": k.sampling.top_p,
            "stop": list(k.sampling.stop),
            "seed": k.sampling.seed,
            "presence_penalty": k.sampling.presence_penalty,
            "frequency_penalty": k.sampling.frequency_penalty,
        },
        "output": _output(k.output),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _message(m: Message) -> list[Any]:
    if not (m.parts or m.tool_calls or m.tool_call_id):
        return [m.role, m.content]  # the common case stays short
    return [m.role, m.content, [astuple(p) for p in m.parts], [astuple(c) for c in m.tool_calls], m.tool_call_id]


def _output(o: Output) -> list[Any] | None:
    """Tools (in order: the order is part of what the model sees), tool choice and response format."""
    if o == Output():
        return None
    return [[astuple(t) for t in o.tools], astuple(o.tool_choice) if o.tool_choice else None,
            astuple(o.response_format) if o.response_format else None]


def cache_key(k: KeyMaterial, *, prefix: str = "llmgw:cache") -> str:
    # Computed once per KeyMaterial (k.memo): the material is immutable, and a colocated ingress
    # hands the same one in for every repeat of a request.
    key = k.memo.get(prefix)
    if key is None:
        digest = hashlib.sha256(canonical_json(k).encode("utf-8")).hexdigest()
        key = k.memo[prefix] = f"{prefix}:{_part(k.tenant)}:{_part(k.prompt)}:{_part(k.prompt_version)}:{{{digest}}}"
    return key


def lock_key(key: str, *, prefix: str = "llmgw:cache") -> str:
    return f"{prefix}!lock:{key.rsplit(':', 1)[-1]}"


def stats_key(tenant: str, prompt: str | None = None, *, prefix: str = "llmgw:cache") -> str:
    base = f"{prefix}!stats:{{{_part(tenant)}}}"
    return base if prompt is None else f"{base}:{_part(prompt)}"


def entry_pattern(*, prefix: str, tenant: str | None = None, prompt: str | None = None,
                  version: str | None = None) -> str:
    """A SCAN pattern for the entries to invalidate; ``None`` matches anything."""
    parts = [_part(x) if x is not None else "*" for x in (tenant, prompt)]
    if version is None:
        parts.append("*")
    else:  # "v2" means every content of v2 ("v2@*"); "v2@abc…" one exact content
        parts.append(_part(version) + ("" if "@" in version else "@*"))
    return f"{prefix}:{':'.join(parts)}:*"


# The compared text's place in a semantic scope: every other part of the key stays exact.
_BLANK = "\u0000compared-by-meaning\u0000"


def semantic_material(k: KeyMaterial, compare: str) -> tuple[str, str] | None:
    """(scope digest, the text compared by meaning), or ``None`` when the request has no such text
    (the last message is not plain user text, the variable is missing or empty): exact tier only.
    The scope is the exact key's material with that text blanked: tenant, prompt version, route,
    targets, sampling, tools, system prompt and earlier turns all stay exact."""
    if compare.startswith("variable:"):
        name = compare.split(":", 1)[1]
        text = k.variables.get(name, "")
        if not text.strip():
            return None
        blanked = dataclasses.replace(k, variables={**k.variables, name: _BLANK})
    else:
        if not k.messages:
            return None
        last = k.messages[-1]
        if last.role != "user" or last.parts or last.tool_calls or last.tool_call_id or not last.content.strip():
            return None
        text = last.content
        blanked = dataclasses.replace(k, messages=(*k.messages[:-1], dataclasses.replace(last, content=_BLANK)))
    digest = hashlib.sha256(f"semantic:{compare}:{canonical_json(blanked)}".encode()).hexdigest()
    return digest, text


def semantic_key(entry_key: str, scope: str, *, prefix: str = "llmgw:cache") -> str:
    """The scope's key beside an exact entry's: same tenant, prompt and version parts (so one
    invalidation pattern covers both tiers), the scope digest as its hash tag."""
    middle = entry_key[len(prefix) + 1:entry_key.rindex(":")]
    return f"{prefix}!sem:{middle}:{{{scope}}}"


def semantic_hits_key(tenant: str, *, prefix: str = "llmgw:cache") -> str:
    return f"{prefix}!semhits:{{{_part(tenant)}}}"


def semantic_pattern(entries: str, *, prefix: str) -> str:
    """The semantic scopes an ``entry_pattern`` covers (same tenant, prompt and version parts)."""
    return f"{prefix}!sem{entries[len(prefix):]}"
