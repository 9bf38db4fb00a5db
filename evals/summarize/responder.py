"""Reference responder: an extractive stand-in for a model (the text's first two content
sentences, joined into one and made to fit), used only to record this suite's shipped cassettes
against the local fake providers (``llmgw eval run --record --reference``). Its replies are
labelled ``reference:`` in the cassettes, results and approvals; real recordings replace them
with provider keys. It is not a baseline: the suite's no-model baselines (``llmgw eval validate``)
echo the text or return its first sentence, and fail."""

from __future__ import annotations

import re
from typing import Any

_INSTRUCTION = re.compile(r"(?i)^(ignore|reply|translate|pretend|you are|hypothetically|before|print|what did|please|"
                          r"if you|#+ system|respond|assistant:|user:|answer that|quote it|new task)")
# Openers that carry no content of their own (greetings, background).
_FILLER = re.compile(r"(?i)^(hi|hello|dear|team|reminder)\b.*\b(hope|weekend)\b|long been|long thought|has updated")


def _source(messages: list[dict[str, Any]]) -> str:
    text = str(messages[-1]["content"]) if messages else ""
    inner = re.search(r"<text>(.*)</text>", text, re.DOTALL)
    if inner:
        return inner.group(1)
    return text.split("Summarize in one sentence:", 1)[-1]


def respond(provider: str, model: str, system: str, messages: list[dict[str, Any]]) -> str:
    text = re.sub(r"<[^>]+>|\{[{%].*?[%}]\}", " ", _source(messages))
    text = re.sub(r"\s+", " ", text).strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    # Skip sentences that address the model (a summarizer reports content, not commands) and
    # openers with no content; keep two, so a later key fact makes it into the one sentence.
    content = [s for s in sentences if not _INSTRUCTION.match(s) and not _FILLER.search(s) and len(s.split()) > 2]
    if not content:
        return "The text contains no content to summarize."
    parts = [re.sub(r"[.!?]+", ",", s.rstrip(".!? ")).strip(", ") for s in content[:2]]
    joined = "; ".join(p[0].lower() + p[1:] if i and not p[:2].isupper() else p for i, p in enumerate(parts))
    return joined[:240] + "."
