"""The embedding-relevant text of a request: its variables (sorted by name), else the last user
message; and the drift segment a request belongs to. One definition shared by the ingress (events
without raw input; request events keyed by segment) and the drift job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

__all__ = ["SEGMENT_FIELDS", "embedding_text", "input_sha256", "segment_key"]

# What a drift segment is made of, by default; also what the ingress keys llm.requests by, so all
# of a segment's inputs land on one partition and reach exactly one drift replica.
SEGMENT_FIELDS = ("tenant", "route", "prompt", "label")


def segment_key(values: Mapping[str, str], fields: Iterable[str] = SEGMENT_FIELDS) -> str:
    """e.g. ``acme/default/summarize/production``; '-' for an empty field (raw-message traffic has
    no prompt)."""
    return "/".join(values.get(f) or "-" for f in fields)


def embedding_text(variables: Mapping[str, str], messages: Iterable[tuple[str, str]]) -> str:
    if variables:
        return "\n".join(f"{k}: {variables[k]}" for k in sorted(variables))
    last = ""
    for role, content in messages:
        if role == "user":
            last = content
    return last


def input_sha256(variables: Mapping[str, str], messages: Iterable[tuple[str, str]]) -> str:
    doc = {"variables": dict(sorted(variables.items())), "messages": [list(m) for m in messages]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
