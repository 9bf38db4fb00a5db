"""What the fake providers answer, and what they refuse, for tools, JSON output and images.

Deterministic, so tests can assert on it, and strict where the real APIs are strict, so a wrong
translation fails as it would against the real provider: a tool result that answers no earlier
call, a ``system`` role in Anthropic's messages, an image source of the wrong shape are 400s.

- Tools offered (and tool choice not "none"), last turn the user's: the model calls the named
  tool, else the first one, with arguments built from its schema (strings get the user's text).
- Last turn a tool result: "[<provider>:<model>] The tool said: <result>".
- JSON asked for (OpenAI ``response_format``, Anthropic ``output_config.format``): an object
  built from the schema (``{"answer": ...}`` for json_object).
- Images in the last user turn: the answer ends with " [image: <media type> base64]" or
  " [image: url]" per image, as the provider received it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "Refused", "anthropic_answer", "json_chunks", "openai_answer"]


class Refused(Exception):
    """The request is one the real API would refuse with a 400 (the message says why)."""


@dataclass(frozen=True)
class Answer:
    text: str = ""
    # (id, name, arguments as JSON text)
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)


def example(schema: Any, text: str) -> Any:
    """A value that fits ``schema``, strings filled with ``text``."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        return {k: example(v, text) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items"), text)]
    return {"string": text, "integer": 42, "number": 42, "boolean": True}.get(str(kind))


def json_chunks(text: str, pieces: int = 3) -> list[str]:
    """JSON text cut in a few pieces, as providers stream arguments."""
    size = max(1, -(-len(text) // pieces))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _call_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _image_note(kind: str) -> str:
    return f" [image: {kind}]"


def _tool_call(prefix: str, model: str, tools: list[tuple[str, Any]], chosen: str, text: str
               ) -> tuple[str, str, str]:
    by_name = dict(tools)
    name = chosen if chosen in by_name else tools[0][0]
    args = example(by_name[name] or {"type": "object"}, text)
    return _call_id(prefix, model, name, text), name, json.dumps(args if isinstance(args, dict) else {})


# ---- OpenAI ----


def _openai_content(content: Any, where: str) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts, images = [], []
    for part in content:
        if part.get("type") == "text":
            texts.append(part.get("text", ""))
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:image/") and ";base64," in url:
                images.append(f"{url[5:url.index(';')]} base64")
            elif url.startswith(("https://", "http://")):
                images.append("url")
            else:
                raise Refused(f"{where}: invalid image_url")
        else:
            raise Refused(f"{where}: unknown part type {part.get('type')!r}")
    return "".join(texts), images


def openai_answer(body: dict[str, Any], model: str, plain: str) -> Answer:
    """``plain``: the answer without tools or JSON (the caller's quote of the last user turn)."""
    messages = body.get("messages") or []
    called: set[str] = set()
    last_text, images = "", list[str]()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in called:
                raise Refused(f"messages[{i}]: a tool message must answer a tool call of an earlier assistant message")
        elif role == "assistant":
            called |= {c.get("id") for c in m.get("tool_calls") or []}
        elif role == "user":
            last_text, images = _openai_content(m.get("content"), f"messages[{i}].content")
        elif role not in ("system", "developer"):
            raise Refused(f"messages[{i}].role: {role!r}")
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return Answer(f"[openai:{model}] The tool said: {_openai_content(last.get('content'), 'tool')[0]}")
    tools = [(t["function"]["name"], t["function"].get("parameters")) for t in body.get("tools") or []]
    choice = body.get("tool_choice") or "auto"
    if tools and choice != "none":
        chosen = choice["function"]["name"] if isinstance(choice, dict) else ""
        return Answer(tool_calls=[_tool_call("call_", model, tools, chosen, last_text)])
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return Answer(json.dumps(example(fmt["json_schema"]["schema"], last_text)))
    if fmt.get("type") == "json_object":
        return Answer(json.dumps({"answer": plain}))
    return Answer(plain + "".join(_image_note(k) for k in images))


# ---- Anthropic ----

_MEDIA = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _anthropic_image(block: dict[str, Any], where: str) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64" and source.get("media_type") in _MEDIA and source.get("data"):
        return f"{source['media_type']} base64"
    if source.get("type") == "url" and str(source.get("url", "")).startswith(("https://", "http://")):
        return "url"
    raise Refused(f"{where}.source: invalid image source")


def anthropic_answer(body: dict[str, Any], model: str, plain: str) -> Answer:
    messages = body.get("messages") or []
    previous_calls: set[str] = set()
    last_text, images, results = "", list[str](), list[str]()
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            raise Refused(f"messages[{i}].role: unexpected role {role!r} (the system prompt is a top-level field)")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        calls: set[str] = set()
        results, texts, images = [], [], []
        for j, b in enumerate(blocks):
            kind = b.get("type")
            if kind == "tool_use" and role == "assistant" and isinstance(b.get("input"), dict):
                calls.add(b.get("id"))
            elif kind == "tool_result" and role == "user":
                if b.get("tool_use_id") not in previous_calls:
                    raise Refused(f"messages[{i}].content[{j}]: tool_result answers no tool_use of the previous turn")
                inner = b.get("content")
                results.append(inner if isinstance(inner, str) else "".join(x.get("text", "") for x in inner or []))
            elif kind == "image" and role == "user":
                images.append(_anthropic_image(b, f"messages[{i}].content[{j}]"))
            elif kind == "text":
                texts.append(b.get("text", ""))
            else:
                raise Refused(f"messages[{i}].content[{j}]: unexpected block {kind!r} in a {role} turn")
        previous_calls = calls
        if role == "user":
            last_text = "".join(texts)
    if results and not last_text:
        return Answer(f"[anthropic:{model}] The tool said: {' | '.join(results)}")
    tools = [(t["name"], t.get("input_schema")) for t in body.get("tools") or []]
    choice = body.get("tool_choice") or {"type": "auto"}
    if tools and choice.get("type") != "none":
        return Answer(tool_calls=[_tool_call("toolu_", model, tools, str(choice.get("name") or ""), last_text)])
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        value = example(fmt.get("schema"), last_text)
        return Answer(json.dumps(value if value else {"answer": plain}))
    return Answer(plain + "".join(_image_note(k) for k in images))
