"""What text of a request is embedded: its variables (sorted by name), else the last user message."""

from __future__ import annotations

from llmgw.events.v1 import events_pb2

__all__ = ["input_text", "segment_of"]


def input_text(event: events_pb2.RequestEvent) -> str:
    if event.variables:
        return "\n".join(f"{k}: {event.variables[k]}" for k in sorted(event.variables))
    for m in reversed(event.messages):
        if m.role == "user":
            return m.content
    return ""


def segment_of(event: events_pb2.RequestEvent) -> str:
    """Detectors run per tenant + prompt (raw-message traffic is its own prompt, ``-``)."""
    return f"{event.tenant or '-'}/{event.prompt or '-'}"
