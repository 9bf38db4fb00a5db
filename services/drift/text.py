"""What text of a request is embedded: its variables (sorted by name), else the last user message."""

from __future__ import annotations

from llmgw.events.v1 import events_pb2
from llmgw.inputs import embedding_text

__all__ = ["input_text", "segment_of"]


def input_text(event: events_pb2.RequestEvent) -> str:
    if event.input_text:  # the tenant keeps raw input out of events: the ingress sent the text
        return event.input_text
    return embedding_text(event.variables, ((m.role, m.content) for m in event.messages))


def segment_of(event: events_pb2.RequestEvent) -> str:
    """Detectors run per tenant + prompt (raw-message traffic is its own prompt, ``-``)."""
    return f"{event.tenant or '-'}/{event.prompt or '-'}"
