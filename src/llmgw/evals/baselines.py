"""No-model baselines: what a suite gives to answers that involve no model at all.

A suite that echoing the input, returning its first sentence, answering nothing or always giving
the same answer can nearly pass does not measure a model. Each baseline answers every case that a
model would answer (cases expecting the gateway to reject the request are left out: no answer is
involved); a baseline scoring at or above ``min_pass_rate - baseline_margin`` is a problem that
names the cases that let it pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from llmgw.evals.assertions import Checker
from llmgw.evals.results import Try
from llmgw.evals.suite import Case, Equals, JsonSchema, Suite

__all__ = ["BaselineScore", "baseline_problems", "score_baselines"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _input(case: Case) -> str:
    return "\n".join(case.vars[k] for k in sorted(case.vars))


def _first_sentence(case: Case) -> str:
    text = " ".join(_input(case).split())
    return next((s for s in _SENTENCE_END.split(text) if s.strip()), "")


def _constants(suite: Suite) -> list[str]:
    """Answers a lazy model could always give: every label an ``equals`` asks for, and for a JSON
    suite an object with every schema property null."""
    out: dict[str, None] = {}
    for case in suite.cases:
        for a in case.assert_:
            if isinstance(a, Equals):
                out[a.value] = None
            elif isinstance(a, JsonSchema):
                props = a.schema_.get("properties")
                if isinstance(props, dict):
                    out[json.dumps(dict.fromkeys(props))] = None
    return list(out)


def _always(value: str) -> Callable[[Case], str]:
    return lambda case: value


@dataclass(frozen=True)
class BaselineScore:
    name: str
    pass_rate: float
    scored: int
    passed: tuple[str, ...]  # the ids of the cases it passes


async def _score(checker: Checker, cases: list[Case], name: str, answer: Callable[[Case], str]) -> BaselineScore:
    passed, scored = [], 0
    for case in cases:
        verdicts = await checker.check(answer(case), case, "")
        outcome = Try(answer(case), "", [{"passed": v.passed} for v in verdicts]).passed
        if outcome is None:
            continue  # a check that cannot run here (a rubric without a grader) scores nothing
        scored += 1
        if outcome:
            passed.append(case.id)
    return BaselineScore(name, len(passed) / scored if scored else 0.0, scored, tuple(passed))


async def score_baselines(suite: Suite, checker: Checker | None = None) -> list[BaselineScore]:
    """echo, first-sentence, empty, and the best-scoring constant answer."""
    checker = checker or Checker(suite)
    cases = [c for c in suite.cases if not c.expects_error]
    fixed: list[tuple[str, Callable[[Case], str]]] = [
        ("echo", _input), ("first-sentence", _first_sentence), ("empty", lambda c: "")]
    out = [await _score(checker, cases, name, answer) for name, answer in fixed]
    constants = [await _score(checker, cases, f"constant {value[:60]!r}", _always(value))
                 for value in _constants(suite)]
    if constants:
        out.append(max(constants, key=lambda s: s.pass_rate))
    return out


def baseline_problems(suite: Suite, scores: list[BaselineScore]) -> list[str]:
    bar = suite.settings.min_pass_rate - suite.settings.baseline_margin
    return [f"{suite.prompt}: no-model baseline {s.name} passes {s.pass_rate:.0%} of {s.scored} cases, at or above "
            f"{bar:.0%} (min_pass_rate {suite.settings.min_pass_rate:.0%} - baseline_margin "
            f"{suite.settings.baseline_margin:.0%}): the suite can't tell a model from none; it passes "
            f"{', '.join(s.passed)}" for s in scores if s.scored and s.pass_rate >= bar]
