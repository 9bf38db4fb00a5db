"""What of a request is embedded, and which segment it belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmgw.events.v1 import events_pb2
from llmgw.inputs import SEGMENT_FIELDS, embedding_text, segment_key

__all__ = ["SEGMENT_FIELDS", "input_text", "segment_of"]



def input_text(event: events_pb2.RequestEvent, embed: Mapping[str, Sequence[str]] | None = None) -> str:
    """The variables named for the event's prompt in ``embed`` (``{"summarize": ["text"]}``), else
    all variables sorted by name, else the last user message."""
    if event.input_text:  # the tenant keeps raw input out of events: the ingress sent the text
        return event.input_text
    names = (embed or {}).get(event.prompt)
    variables = {k: v for k, v in event.variables.items() if names is None or k in names}
    # The user's text: its content and text parts (images and tool results are not embedded).
    return embedding_text(variables, ((m.role, m.content + "".join(p.text for p in m.parts if p.type == "text"))
                                      for m in event.messages))


def segment_of(event: events_pb2.RequestEvent, fields: Sequence[str] = SEGMENT_FIELDS) -> str:
    """e.g. ``acme/default/summarize/production`` (see ``llmgw.inputs.segment_key``)."""
    return segment_key({f: getattr(event, f) for f in fields}, fields)
