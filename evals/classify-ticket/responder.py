"""Reference responder: a keyword stand-in for a model, used only to record this suite's shipped
cassettes against the local fake providers (``llmgw eval run --record --reference``). Real
recordings replace them with ``llmgw eval run --record`` and provider keys."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_LABELS = {
    "billing": ("charge", "charged", "invoice", "refund", "payment", "card", "price", "bill", "receipt", "discount",
                "subscription", "declined"),
    "bug": ("error", "crash", "broken", "not working", "fails", "bug", "500", "exception", "freezes", "blank",
            "traceback"),
    "feature": ("add ", "would be great", "support a", "feature", "wish", "would love", "roadmap", "could you add"),
}


def respond(provider: str, model: str, system: str, messages: list[dict[str, Any]]) -> str:
    text = str(messages[-1]["content"]) if messages else ""
    text = unicodedata.normalize("NFKC", text.split("Ticket:", 1)[-1]).casefold()
    text = re.sub(r"[\u200b-\u200f\u202a-\u202e]", "", text)
    scores = {label: sum(text.count(k) for k in keys) for label, keys in _LABELS.items()}
    best = max(scores, key=lambda k: scores[k])
    label = best if scores[best] else "other"
    # Like a model, it follows the format the system prompt asks for, and chats when none is given.
    return label if "one word" in system.casefold() else f"This ticket is about {label}."
