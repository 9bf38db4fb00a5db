"""An incident names the new topic by the group of recent inputs unlike the reference and like
each other (services/drift/naming.py), on real text: Debian package descriptions by section."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from bench.drift_corpus import CORPORA, load
from llmgw.services.drift.naming import evidence_group, new_group

DEBIAN = CORPORA["debian"]


@pytest.fixture(scope="module")
def pools(embedder: Any) -> dict[str, tuple[list[str], np.ndarray]]:
    texts = load("debian")
    return {name: (texts[name], embedder.encode(texts[name])) for name in (*DEBIAN.known, DEBIAN.distinct)}


def _draw(pools: dict[str, tuple[list[str], np.ndarray]], rng: random.Random, n: int, new_share: float
          ) -> tuple[list[str], list[str], np.ndarray]:
    """(topic, text) of n inputs at the known mix with ``new_share`` of the distinct new topic."""
    mix = {**{k: v * (1 - new_share) for k, v in DEBIAN.known.items()}, DEBIAN.distinct: new_share}
    topics = rng.choices(list(mix), list(mix.values()), k=n)
    picks = [rng.randrange(len(pools[t][0])) for t in topics]
    return topics, [pools[t][0][i] for t, i in zip(topics, picks, strict=True)], np.stack(
        [pools[t][1][i] for t, i in zip(topics, picks, strict=True)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_new_topic_at_ten_percent_is_the_group_named(pools: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    _, _, reference = _draw(pools, rng, 1000, 0.0)
    topics, texts, recent = _draw(pools, rng, 400, 0.10)
    group = new_group(reference, recent, texts)
    assert group is not None and len(group.members) >= 3
    assert sum(topics[i] == DEBIAN.distinct for i in group.members) / len(group.members) >= 0.8
    assert group.reference_share < 0.02  # the reference had (almost) none of it


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stationary_traffic_forms_no_group(pools: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    _, _, reference = _draw(pools, rng, 1000, 0.0)
    _, texts, recent = _draw(pools, rng, 400, 0.0)
    assert new_group(reference, recent, texts) is None


def test_repeated_questions_neither_make_a_group_nor_hide_one(embedder: Any) -> None:
    known = [f"How do I {verb} my {thing}?" for verb in ("reset", "change", "recover") for thing in
             ("password", "email address", "invoice", "card")]
    new = ["Which wine goes with grilled salmon?", "Is a Rioja a good match for lamb?",
           "What temperature should pinot noir be served at?"]
    reference = embedder.encode(known * 10)  # every question asked ten times: nearest neighbours are copies
    texts = known * 5 + [new[0]] * 20  # one new question asked again and again: not a topic
    assert new_group(reference, embedder.encode(texts), texts) is None
    texts = known * 5 + new * 2
    group = new_group(reference, embedder.encode(texts), texts)
    assert group is not None and {texts[i] for i in group.members} == set(new)


def test_the_evidence_group_is_the_run_inputs_below_the_p_value_most_novel_first() -> None:
    u = np.array([0.5, 0.01, 0.3, 0.002, 0.01, 0.019, 0.021, 0.0005])
    texts = ["a", "b", "c", "d", "b", "e", "f", "g"]
    group = evidence_group(u, texts, p_max=0.02)
    assert group is not None and group.basis == "evidence" and group.reference_share == 0.02
    # most novel first; "b" asked twice counts once; 0.021 is past the cut
    assert [texts[i] for i in group.members] == ["g", "d", "b", "e"]
    assert evidence_group(u, texts, p_max=0.005) is None  # two inputs are no group
