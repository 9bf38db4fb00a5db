"""The embedding-relevant text of a request: its variables (sorted by name), else the last user
message. One definition shared by the ingress (events without raw input) and the drift job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

__all__ = ["embedding_text", "input_sha256"]


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
