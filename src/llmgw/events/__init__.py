"""The event contracts (``v1``: protobuf) and what readers of the topics share."""

from __future__ import annotations

from google.protobuf.message import DecodeError

__all__ = ["request_id_of"]


def request_id_of(topic: str, key: bytes | None, value: bytes) -> str:
    """The request a record is about. ``llm.responses`` is keyed by it; ``llm.requests`` is keyed
    by the drift segment (so a segment stays on one partition) and carries it in the event; so do
    its replays (``llm.requests.replay.<t>``)."""
    if "requests" in topic.split("."):
        from llmgw.events.v1 import events_pb2

        try:
            rid = events_pb2.RequestEvent.FromString(value).request_id
        except DecodeError:
            rid = ""
        if rid:
            return rid
    return key.decode(errors="replace") if key else ""
