"""The canonical cache key.

Canonical JSON (sorted keys, no whitespace, floats as repr) of every field that changes the
answer: tenant, prompt name and immutable version, variables, every raw message (system
included), route, and all sampling parameters. Metadata and request ids are not part of it.
The key is ``<prefix>:<tenant>:<sha256>``, so a tenant's entries can never collide with another's.
"""

from __future__ import annotations

import hashlib
import json

from llmgw.domain import KeyMaterial

__all__ = ["KEY_SCHEMA", "cache_key", "canonical_json"]

# Bumped whenever the canonical form changes, so old entries are simply never read again.
KEY_SCHEMA = 1


def canonical_json(k: KeyMaterial) -> str:
    doc = {
        "schema": KEY_SCHEMA,
        "tenant": k.tenant,
        "route": k.route,
        "prompt": k.prompt,
        "prompt_version": k.prompt_version,
        "variables": dict(sorted(k.variables.items())),
        "messages": [[m.role, m.content] for m in k.messages],
        "sampling": {
            "temperature": k.sampling.temperature,
            "max_tokens": k.sampling.max_tokens,
            "top_p": k.sampling.top_p,
            "stop": list(k.sampling.stop),
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(k: KeyMaterial, *, prefix: str = "llmgw:cache") -> str:
    digest = hashlib.sha256(canonical_json(k).encode("utf-8")).hexdigest()
    # Tenant in clear (escaped) so `invalidate --tenant` is a prefix scan, never a guess.
    tenant = k.tenant.replace(":", "%3A")
    return f"{prefix}:{tenant}:{digest}"
