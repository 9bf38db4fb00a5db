"""Mutations of valid tool / image / structured-output bodies in both HTTP dialects: parsing and
validation either accept the body or refuse it with InvalidArgument naming a field, never
anything else (which the HTTP face would answer as a 500). The server-level fuzz is in
tests/integration/test_http_openai.py; this one reaches deep into the nested shapes."""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from llmgw.kit.errors import InvalidArgument
from llmgw.services.ingress import anthropic_http, openai_http

VALUES: list[Any] = [None, True, 0, -1, 1.5, 2**40, "", "x", "é\x00", [], {}, ["a"], [{}], [None], {"a": 1},
                     {"type": "text"}, {"type": "function"}, {"type": "base64"}, {"type": "url"},
                     "data:image/png;base64,xx", "data:;base64,", {"type": "tool_use", "id": 1}]
OPENAI = {
    "model": "default",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
    "seed": 1, "presence_penalty": 0.5,
}
ANTHROPIC = {
    "model": "default", "max_tokens": 10, "system": [{"type": "text", "text": "s"}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "x"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r", "is_error": True}]},
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "f"},
    "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
}


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, (*path, key))


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize(("valid", "dialect"), [(OPENAI, openai_http), (ANTHROPIC, anthropic_http)])
def test_mutated_bodies_are_accepted_or_refused_naming_a_field(valid: dict[str, Any], dialect: ModuleType) -> None:
    req = dialect.parse(valid)[0]
    req.validate_shape()  # the unmutated body is valid
    rng = random.Random(int(os.environ.get("LLMGW_FUZZ_SEED", "7")))
    refused = 0
    for _ in range(3000):
        body = copy.deepcopy(valid)
        for _ in range(rng.randint(1, 3)):
            paths = list(_paths(body))
            _set(body, rng.choice(paths), copy.deepcopy(rng.choice(VALUES)))
        body = json.loads(json.dumps(body))  # what JSON can carry (string keys only)
        try:
            dialect.parse(body)[0].validate_shape()
        except InvalidArgument as exc:
            refused += 1
            assert exc.field and "Error" not in exc.message, exc.message
    assert 0 < refused < 3000
