"""Reference responder: an extractive stand-in for a model (first sentence of the text, made
to fit), used only to record this suite's shipped cassettes against the local fake providers
(``llmgw eval run --record --reference``). Real recordings replace them with provider keys."""

from __future__ import annotations

import re
from typing import Any

_INSTRUCTION = re.compile(r"(?i)^(ignore|reply|translate|pretend|you are|hypothetically|before|print|what did|please|"
                          r"if you|#+ system|respond)")


def _source(messages: list[dict[str, Any]]) -> str:
    text = str(messages[-1]["content"]) if messages else ""
    inner = re.search(r"<text>(.*)</text>", text, re.DOTALL)
    if inner:
        return inner.group(1)
    return text.split("Summarize in one sentence:", 1)[-1]


def respond(provider: str, model: str, system: str, messages: list[dict[str, Any]]) -> str:
    text = re.sub(r"<[^>]+>", " ", _source(messages))
    text = re.sub(r"\s+", " ", text).strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    # Skip sentences that address the model: a summarizer reports content, not commands.
    content = [s for s in sentences if not _INSTRUCTION.match(s) and len(s.split()) > 2]
    if not content:
        return "The text contains no content to summarize."
    best = content[0].rstrip(".!? ")
    best = re.sub(r"[.!?]", ",", best)[:240]
    return best + "."
