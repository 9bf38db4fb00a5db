"""Reference responder: a regex stand-in for a model, used only to record this suite's shipped
cassettes against the local fake providers (``llmgw eval run --record --reference``). Real
recordings replace them with ``llmgw eval run --record`` and provider keys."""

from __future__ import annotations

import json
import re
from typing import Any

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w@])\+?\(?\d[\d\s()-]{6,}\d")
_WORD = r"[A-ZÀ-Ý][\w'À-ÿ]+"
_NAME = [
    re.compile(r"(?i:my name is|i'm|i am|this is|regards,|best,|faithfully,|thanks,|saludos,|ask for|with me,|from:)"
               rf"[ \t\n]*({_WORD}(?:[ \t]+{_WORD}){{1,3}})"),
    re.compile(rf"(?:^|- |-- |FN:|Name:[ \t]*)({_WORD}(?:[ \t]+{_WORD}){{1,3}})[ \t]*(?:[,|(<]|$)", re.MULTILINE),
]
_COMPANY = [
    re.compile(r"(?:work at|from|behalf of|Company:|ORG:|Order from|at|We are)[ \t]+"
               r"((?:[A-Z][\w&-]*)(?:[ \t]+(?:[A-Z&][\w&-]*|Kft\.|LLC))*)"),
    re.compile(r"(?:\||,)[ \t]*([A-Z][\w&]*(?:[ \t]+[A-Z][\w&]*){1,3})[ \t]*(?:\||,|$)", re.MULTILINE),
    re.compile(r"^([A-Z][\w&]*(?:[ \t]+[A-Z][\w&]*){1,3}) would like", re.MULTILINE),
]


def _first(patterns: list[re.Pattern[str]], text: str) -> str | None:
    for p in patterns:
        m = p.search(text)
        if m:
            return m.group(1).strip()
    return None


def respond(provider: str, model: str, system: str, messages: list[dict[str, Any]]) -> str:
    text = str(messages[-1]["content"]) if messages else ""
    m = re.search(r"<message>\n?(.*?)\n?</message>|<<<\n(.*)\n>>>", text, re.DOTALL)
    body = next((g for g in m.groups() if g is not None), "") if m else text
    email = _EMAIL.search(body)
    phone = _PHONE.search(body)
    name = _first(_NAME, body)
    company = _first(_COMPANY, body)
    return json.dumps({"name": name, "email": email.group(0).lower() if email else None,
                       "phone": phone.group(0).strip() if phone else None, "company": company})
