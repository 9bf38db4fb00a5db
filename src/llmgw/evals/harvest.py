"""Drift -> evals: the inputs the eval set never imagined become candidate cases.

``llmgw eval harvest --incident ID`` reads a drift incident from the drift topic, the request events
of its windows (partition -> offsets it names) from the request topic, and keeps the inputs most
like the examples of what the incident is about (its novel cell, else its leading cluster): those
examples and their nearest members. ``--segment S --since T`` instead takes a segment's traffic since a time and keeps
the inputs least like any case of the suite. Either way, inputs that duplicate a case, a waiting
candidate or each other (same normalized text, or embeddings closer than ``dedupe``) are dropped,
and the rest are appended to ``evals/<prompt>/cases/candidates.yaml``, tagged ``from-drift`` with
their source (incident, segment, request, time) and no assertions: a person adds those, then moves
the case into a cases file. The inputs are as the events carry them, redacted by the ingress.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from llmgw.evals.suite import CANDIDATES_FILE, Suite
from llmgw.inputs import embedding_text, segment_key
from llmgw.kit.errors import ConfigError

__all__ = ["FROM_DRIFT", "Embed", "Input", "candidates_path", "case_text", "dedupe", "load_candidates", "nearest_to",
           "novel_to", "parse_request_event", "variables_of", "with_source", "write_candidates"]

FROM_DRIFT = "from-drift"
Embed = Callable[[list[str]], NDArray[np.float32]]


@dataclass(frozen=True)
class Input:
    """One request's input as the request event carries it."""

    request_id: str
    prompt: str
    segment: str
    time: float
    variables: dict[str, str]
    text: str  # what the drift job embedded
    source: dict[str, Any] = field(default_factory=dict)


def parse_request_event(value: bytes, segment_by: Sequence[str]) -> Input:
    from llmgw.events.v1 import events_pb2

    ev = events_pb2.RequestEvent.FromString(value)
    variables = dict(ev.variables)
    text = ev.input_text or embedding_text(variables, [(m.role, m.content) for m in ev.messages])
    fields = {"tenant": ev.tenant, "route": ev.route, "prompt": ev.prompt, "label": ev.label,
              "prompt_version": ev.prompt_version}
    return Input(ev.request_id, ev.prompt, segment_key(fields, segment_by), ev.time, variables, text)


def variables_of(item: Input, names: Iterable[str]) -> dict[str, str] | None:
    """The case variables of an input. Without variables in the event (the tenant keeps raw input
    out) the embedded text is ``name: value`` lines; it maps back only for a one-variable prompt."""
    if item.variables:
        return item.variables
    names = list(names)
    if len(names) == 1 and item.text.startswith(f"{names[0]}: "):
        return {names[0]: item.text[len(names[0]) + 2:]}
    return None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def case_text(variables: dict[str, str]) -> str:
    return embedding_text(variables, ())


def nearest_to(items: list[Input], examples: list[str], unlike: list[str], embed: Embed, *,
               min_similarity: float) -> list[Input]:
    """The members of what the incident is about, most similar first: inputs closer to one of
    its examples than to anything ``unlike`` (the shrunk clusters' examples, the suite's cases), and
    at least ``min_similarity`` close (an example itself scores 1). Sentence embeddings place two
    questions on one new subject only moderately close, so nearness is judged against the known
    inputs rather than by a high absolute bar."""
    if not items or not examples:
        return []
    mine = embed([i.text for i in items])
    best = (mine @ embed(examples).T).max(axis=1)
    other = (mine @ embed(unlike).T).max(axis=1) if unlike else np.full(len(items), -1.0)
    order = [int(i) for i in np.argsort(-best, kind="stable") if best[i] >= min_similarity and best[i] > other[i]]
    return [with_source(items[i], similarity=round(float(best[i]), 3)) for i in order]


def novel_to(items: list[Input], known: list[str], embed: Embed) -> list[Input]:
    """The inputs least like anything ``known`` (the suite's cases), most novel first."""
    if not items:
        return []
    if not known:
        return items
    best = (embed([i.text for i in items]) @ embed(known).T).max(axis=1)
    return [with_source(items[int(i)], similarity=round(float(best[i]), 3)) for i in np.argsort(best, kind="stable")]


def with_source(item: Input, **extra: Any) -> Input:
    """The same input, its source extended (why it was chosen, where it came from)."""
    return Input(item.request_id, item.prompt, item.segment, item.time, item.variables, item.text,
                 {**item.source, **extra})


def dedupe(items: list[Input], known: list[str], embed: Embed, *, threshold: float) -> tuple[list[Input], int]:
    """Drop inputs that repeat a known text or an earlier kept input (normalized text, or an
    embedding cosine at or above ``threshold``). Returns (kept, dropped)."""
    kept: list[Input] = []
    seen = {_norm(t) for t in known}
    vectors = list(embed(known)) if known else []
    mine = embed([i.text for i in items]) if items else np.zeros((0, 0), dtype=np.float32)
    for item, vec in zip(items, mine, strict=True):
        if _norm(item.text) in seen or (vectors and float(np.max(np.stack(vectors) @ vec)) >= threshold):
            continue
        kept.append(item)
        seen.add(_norm(item.text))
        vectors.append(vec)
    return kept, len(items) - len(kept)


def candidates_path(suite: Suite) -> Path:
    return suite.root / "cases" / CANDIDATES_FILE


def load_candidates(suite: Suite) -> list[dict[str, Any]]:
    path = candidates_path(suite)
    if not path.exists():
        return []
    raw = yaml.safe_load(path.read_text()) or []
    if not isinstance(raw, list) or not all(isinstance(c, dict) and isinstance(c.get("vars"), dict) for c in raw):
        raise ConfigError(f"{path}: expected a list of candidates, each with vars")
    return raw


def write_candidates(suite: Suite, items: list[tuple[Input, dict[str, str]]]) -> Path:
    """Append candidates (input, case variables), each without assertions and with its source."""
    path = candidates_path(suite)
    existing = load_candidates(suite)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for item, variables in items:
        digest = hashlib.sha256(case_text(variables).encode()).hexdigest()[:10]
        existing.append({
            "id": f"drift-{digest}", "vars": variables, "tags": [FROM_DRIFT],
            "source": {**item.source, "segment": item.segment, "request_id": item.request_id,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.time)), "harvested_at": now},
        })
    header = ("# Candidate cases harvested from drift (`llmgw eval harvest`): inputs the suite did not cover.\n"
              "# Never run as they are: add `assert` (and the `adversarial` tag and kind where it applies), then\n"
              "# move each into a cases file. `llmgw eval validate` counts the ones waiting.\n")
    path.write_text(header + yaml.safe_dump(existing, sort_keys=False, allow_unicode=True, width=120))
    return path
