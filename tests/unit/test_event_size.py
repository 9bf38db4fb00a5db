"""An answer larger than the broker takes still gets its event: the text is cut and named."""

from __future__ import annotations

from llmgw.events.v1 import events_pb2
from llmgw.services.ingress.events import MAX_EVENT_BYTES, response_event


def _event(text: str) -> bytes:
    return response_event(request_id="r1", tenant="acme", at=1.0, prompt="", prompt_version="", route="default",
                          status="OK", latency_ms=1.0, text=text, redact=lambda s: s, finish_reason="stop")


def test_an_oversized_answer_is_cut_to_fit_and_the_event_says_so() -> None:
    wire = _event("é" * (1 << 20))  # 2 MiB of UTF-8
    assert len(wire) <= MAX_EVENT_BYTES
    event = events_pb2.ResponseEvent.FromString(wire)
    assert list(event.truncated_fields) == ["text"]
    assert event.text and set(event.text) == {"é"}  # cut on a character boundary
    assert event.request_id == "r1" and event.finish_reason == "stop"


def test_a_normal_answer_is_untouched() -> None:
    event = events_pb2.ResponseEvent.FromString(_event("short answer"))
    assert event.text == "short answer" and not event.truncated_fields
