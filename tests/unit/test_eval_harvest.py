"""Drift -> evals, the parts without Kafka: choosing an incident's inputs, dropping what the suite
already has, and writing candidates that wait for review (the real embedding model throughout;
the path through the real drift job and Kafka is in tests/integration/test_drift_broker.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from llmgw.cli import main as cli
from llmgw.evals.harvest import (
    Embed,
    Input,
    dedupe,
    load_candidates,
    nearest_to,
    novel_to,
    parse_request_event,
    variables_of,
    write_candidates,
)
from llmgw.evals.suite import load_suite
from llmgw.events.v1 import events_pb2
from llmgw.stack import REPO


@pytest.fixture(scope="module")
def embed() -> Embed:
    from llmgw.kit.embed import SentenceEmbedder

    return SentenceEmbedder().encode


def _input(i: int, question: str) -> Input:
    return Input(f"r{i}", "ask", "t/ask", 1_700_000_000.0 + i, {"question": question}, f"question: {question}")


PASSWORD = ["How do I reset my password?", "I forgot my password, what now?", "Can I change my password from the app?"]
WINE = ["Which wine goes best with grilled salmon?", "Is a Rioja a good match for lamb?",
        "What temperature should I serve pinot noir at?"]


def test_an_incidents_inputs_are_the_members_of_its_grown_cluster(embed: Embed) -> None:
    items = [_input(i, q) for i, q in enumerate(PASSWORD + WINE + ["Can I pair red wine with fish today?"])]
    grew = ["question: Which wine goes best with grilled salmon?", "question: Can I pair red wine with fish?"]
    known = ["question: How do I reset my password?", "question: Why was I charged twice?"]
    picked = nearest_to(items, grew, known, embed, min_similarity=0.1)
    assert {p.variables["question"] for p in picked} == {*WINE, "Can I pair red wine with fish today?"}
    assert picked[0].source["similarity"] >= picked[-1].source["similarity"]


def test_a_segments_inputs_are_ranked_by_how_new_they_are_to_the_suite(embed: Embed) -> None:
    items = [_input(i, q) for i, q in enumerate(PASSWORD + WINE)]
    ranked = novel_to(items, [f"question: {q}" for q in PASSWORD], embed)
    assert {r.variables["question"] for r in ranked[:3]} == set(WINE)


def test_duplicates_of_cases_candidates_and_each_other_are_dropped(embed: Embed) -> None:
    items = [_input(0, "how do I reset my password"),                  # the case, normalized
             _input(1, "How can I reset my password?"),                # a near copy of the case
             _input(2, "Which wine goes best with grilled salmon?"),
             _input(3, "Which wine goes best with grilled salmon please?"),  # a near copy of the one kept
             _input(4, "Is a Rioja a good match for lamb?")]
    kept, dropped = dedupe(items, ["question: How do I reset my password?"], embed, threshold=0.92)
    assert [k.request_id for k in kept] == ["r2", "r4"] and dropped == 3


def test_variables_come_from_the_event_or_map_back_for_a_one_variable_prompt() -> None:
    ev = events_pb2.RequestEvent(request_id="r1", tenant="acme", prompt="ask", route="default", label="production",
                                 time=5.0, variables={"question": "Is it safe?"})
    item = parse_request_event(ev.SerializeToString(), ["tenant", "route", "prompt", "label"])
    assert item.segment == "acme/default/ask/production" and item.text == "question: Is it safe?"
    assert variables_of(item, ["question"]) == {"question": "Is it safe?"}
    # A tenant that keeps raw input out: only the redacted embedded text is in the event.
    hidden = events_pb2.RequestEvent(request_id="r2", tenant="acme", prompt="ask",
                                     input_text="question: Call me at [PHONE]", input_sha256="ab")
    item = parse_request_event(hidden.SerializeToString(), ["tenant", "prompt"])
    assert variables_of(item, ["question"]) == {"question": "Call me at [PHONE]"}
    assert variables_of(item, ["question", "context"]) is None


def test_candidates_wait_for_review_without_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    shutil.copytree(REPO / "evals" / "classify-ticket", tmp_path / "evals" / "classify-ticket")
    suite = load_suite(tmp_path / "evals" / "classify-ticket")
    item = Input("r9", "classify-ticket", "acme/default/classify-ticket/production", 1.7e9,
                 {"ticket": "Which wine pairs with salmon?"}, "ticket: Which wine pairs with salmon?",
                 {"incident": "inc-1"})
    path = write_candidates(suite, [(item, item.variables)])
    [cand] = load_candidates(suite)
    assert cand["tags"] == ["from-drift"] and "assert" not in cand
    assert cand["source"]["incident"] == "inc-1" and cand["source"]["request_id"] == "r9"
    assert yaml.safe_load(path.read_text()) == [cand]
    # Not a case until a person adds assertions: the suite is unchanged, validate counts them.
    again = load_suite(tmp_path / "evals" / "classify-ticket")
    assert again.digest == suite.digest and len(again.cases) == len(suite.cases)
    assert cli(["eval", "validate", "--evals", str(tmp_path / "evals"), "--prompts", str(tmp_path / "prompts"),
                "--prompt", "classify-ticket"]) == 0
    assert "1 drift candidates await review" in capsys.readouterr().out
