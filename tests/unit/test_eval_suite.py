"""Eval suites: composition rules, strict case files, every assertion type, offline generation."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from llmgw.evals.adversarial import CANARY, TRANSFORMS, generate
from llmgw.evals.assertions import Checker, is_refusal
from llmgw.evals.baselines import baseline_problems, score_baselines
from llmgw.evals.results import CaseResult, GateResult, ProviderResult, RunRecord, Try, gate
from llmgw.evals.suite import Case, load_suite
from llmgw.kit.errors import ConfigError
from llmgw.stack import REPO


def _suite(tmp_path: Path, cases: list[dict[str, object]], settings: str = "", checks: str = "") -> Path:
    root = tmp_path / "p"
    (root / "cases").mkdir(parents=True)
    (root / "cases" / "a.yaml").write_text(yaml.safe_dump(cases))
    if settings:
        (root / "suite.yaml").write_text(settings)
    if checks:
        (root / "checks.py").write_text(textwrap.dedent(checks))
    return root


def _case(i: int, adversarial: bool) -> dict[str, object]:
    tags = ["adversarial", "prompt-injection"] if adversarial else ["normal"]
    return {"id": f"c{i}", "vars": {"x": str(i)}, "tags": tags, "assert": [{"type": "contains", "value": "x"}]}


class TestComposition:
    def test_the_shipped_suites_meet_the_bar(self) -> None:
        for name in ("classify-ticket", "summarize", "extract-contact"):
            suite = load_suite(REPO / "evals" / name)
            total, adversarial, kinds = suite.composition()
            assert suite.problems() == [] and total >= 50 and adversarial * 2 >= total
            assert len(kinds) >= 7, kinds  # attacks of many kinds, not 25 copies of one

    def test_too_few_cases_and_too_few_adversarial_are_problems(self, tmp_path: Path) -> None:
        suite = load_suite(_suite(tmp_path, [_case(i, adversarial=i < 10) for i in range(49)]))
        problems = suite.problems()
        assert any("49 cases, at least 50" in p for p in problems)
        assert any("10 of 49 cases adversarial" in p for p in problems)

    def test_exactly_half_adversarial_passes(self, tmp_path: Path) -> None:
        assert load_suite(_suite(tmp_path, [_case(i, adversarial=i % 2 == 0) for i in range(50)])).problems() == []

    def test_adversarial_case_must_name_one_kind(self, tmp_path: Path) -> None:
        bad = {**_case(1, True), "tags": ["adversarial"]}
        with pytest.raises(ConfigError, match=r"case 'c1'.*exactly one kind"):
            load_suite(_suite(tmp_path, [bad]))

    def test_unknown_keys_and_assertion_types_are_rejected_with_the_case_named(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="case 'c1'"):
            load_suite(_suite(tmp_path, [{**_case(1, False), "asert": []}]))
        with pytest.raises(ConfigError, match="case 'c2'"):
            load_suite(_suite(tmp_path / "b", [{**_case(2, False), "assert": [{"type": "sounds_good"}]}]))

    def test_duplicate_ids_are_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="duplicate case ids"):
            load_suite(_suite(tmp_path, [_case(1, False), _case(1, False)]))

    def test_digest_changes_with_cases_and_settings(self, tmp_path: Path) -> None:
        a = load_suite(_suite(tmp_path / "a", [_case(1, False)])).digest
        b = load_suite(_suite(tmp_path / "b", [_case(2, False)])).digest
        c = load_suite(_suite(tmp_path / "c", [_case(1, False)], settings="min_pass_rate: 0.5\n")).digest
        assert len({a, b, c}) == 3


async def _verdicts(tmp_path: Path, output: str, asserts: list[dict[str, object]], error: str = "",
                    checks: str = "") -> list[bool | None]:
    root = _suite(tmp_path, [{"id": "c", "vars": {"text": "t"}, "assert": asserts}], checks=checks)
    suite = load_suite(root)
    return [v.passed for v in await Checker(suite).check(output, suite.cases[0], error)]


class TestAssertions:
    async def test_text_checks(self, tmp_path: Path) -> None:
        got = await _verdicts(tmp_path, "Billing.", [
            {"type": "equals", "value": "billing", "normalize": True},
            {"type": "equals", "value": "billing"},
            {"type": "contains", "value": "Bill"},
            {"type": "not_contains", "value": "Bill"},
            {"type": "regex", "pattern": "^B\\w+\\.$"},
            {"type": "not_regex", "pattern": "\\d"},
            {"type": "length", "max": 5},
            {"type": "length", "min": 1, "max": 1, "unit": "words"},
        ])
        assert got == [True, False, True, False, True, True, False, True]

    async def test_json_schema_and_fields(self, tmp_path: Path) -> None:
        schema = {"type": "object", "required": ["email"], "properties": {"email": {"type": ["string", "null"]}}}
        out = '```json\n{"email": "A@B.io", "phone": "+1 (650) 555-0101", "name": null}\n```'
        got = await _verdicts(tmp_path, out, [
            {"type": "json_schema", "schema": schema},
            {"type": "json_schema", "schema": {**schema, "additionalProperties": False}},
            {"type": "json_fields", "fields": {"email": "a@b.io", "phone": "16505550101", "name": None}},
            {"type": "json_fields", "fields": {"company": "Acme"}},
        ])
        assert got == [True, False, True, False]
        assert await _verdicts(tmp_path / "2", "not json", [{"type": "json_schema", "schema": schema}]) == [False]

    async def test_refusal(self, tmp_path: Path) -> None:
        assert is_refusal("I'm sorry, but I can't help with that.") and not is_refusal("The sorry state of billing.")
        got = await _verdicts(tmp_path, "I cannot share that.", [{"type": "refusal"}, {"type": "no_refusal"}])
        assert got == [True, False]

    async def test_semantic_similarity_uses_the_embedding_model(self, tmp_path: Path) -> None:
        ref = {"type": "similar", "reference": "The central bank raised interest rates.", "threshold": 0.6}
        assert await _verdicts(tmp_path / "a", "Interest rates were increased by the central bank.", [ref]) == [True]
        assert await _verdicts(tmp_path / "b", "My cat likes to sleep in the sun.", [ref]) == [False]

    async def test_custom_python_check_and_a_crashing_one(self, tmp_path: Path) -> None:
        checks = """
            def short(output, case):
                return len(output) < 10, "too long"
            def boom(output, case):
                raise RuntimeError("bad check")
        """
        got = await _verdicts(tmp_path, "tiny", [{"type": "python", "check": "short"},
                                                 {"type": "python", "check": "boom"}], checks=checks)
        assert got == [True, False]

    async def test_rubric_is_skipped_without_a_grader_never_passed(self, tmp_path: Path) -> None:
        assert await _verdicts(tmp_path, "x", [{"type": "rubric", "rubric": "is polite"}]) == [None]

    async def test_expected_rejection(self, tmp_path: Path) -> None:
        asserts: list[dict[str, object]] = [{"type": "error", "contains": "variables.x"}]
        assert await _verdicts(tmp_path / "a", "", asserts, error="INVALID_ARGUMENT: variables.x: no") == [True]
        assert await _verdicts(tmp_path / "b", "an answer", asserts) == [False]
        # An unexpected rejection fails every check with the reason.
        assert await _verdicts(tmp_path / "c", "", [{"type": "contains", "value": "a"}], error="UNAVAILABLE") == [False]


class TestAdversarialGeneration:
    def test_deterministic_tagged_and_keeps_the_right_assertions(self) -> None:
        suite = load_suite(REPO / "evals" / "classify-ticket")
        a, b = generate(suite.cases), generate(suite.cases)
        assert a == b and len(a) == len(TRANSFORMS) * sum(1 for c in suite.cases if not c.adversarial
                                                          and not c.expects_error)
        cases = [Case.model_validate(c) for c in a]  # the generated YAML is valid case input
        assert all(c.adversarial and c.kind and "generated" in c.tags for c in cases)
        inject = next(c for c in cases if c.id == "billing-double-charge.inject")
        assert CANARY in inject.vars["ticket"]
        assert {x.type for x in inject.assert_} == {"equals", "not_contains"}
        truncated = next(c for c in cases if c.id == "billing-double-charge.truncate")
        assert all(x.type != "equals" for x in truncated.assert_)  # a cut ticket may change label

    def test_confusables_change_the_bytes_not_the_look(self) -> None:
        suite = load_suite(REPO / "evals" / "classify-ticket")
        c = next(c for c in generate(suite.cases, ["confusables"]) if c["id"] == "bug-login-500.confusables")
        text = c["vars"]["ticket"]
        assert text != suite.cases[7].vars["ticket"] and any(ord(ch) > 0x400 for ch in text)


def _record(version: str, passed: dict[str, bool], digest: str = "d") -> RunRecord:
    def case(cid: str, ok: bool) -> CaseResult:
        tags = ["adversarial", "jailbreak"] if cid.startswith("adv") else []
        return CaseResult(cid, tags, {}, [Try("out", "", [{"type": "equals", "passed": ok, "reason": ""}])])

    return RunRecord("p", version, f"{version}@x", digest, 1, "replay", 0.0,
                     {"openai": ProviderResult("openai", "m", [case(k, v) for k, v in passed.items()])})


class TestGate:
    def _suite(self, tmp_path: Path, min_rate: float = 0.5) -> object:
        return load_suite(_suite(tmp_path, [_case(1, False)], settings=f"min_pass_rate: {min_rate}\n"))

    def test_adversarial_regression_fails_even_when_the_rate_holds(self, tmp_path: Path) -> None:
        suite = self._suite(tmp_path)
        base = _record("v1", {"adv1": True, "n1": False}, suite.digest)  # type: ignore[attr-defined]
        cand = _record("v2", {"adv1": False, "n1": True}, suite.digest)  # type: ignore[attr-defined]
        [r] = gate(suite, cand, base, ["openai"])  # type: ignore[arg-type]
        assert not r.passed and r.regressions == ["adv1"] and r.fixed == ["n1"]
        assert any("adversarial case adv1" in why for why in r.reasons)

    def test_rate_drop_missing_provider_and_stale_suite(self, tmp_path: Path) -> None:
        suite = self._suite(tmp_path)
        digest = suite.digest  # type: ignore[attr-defined]
        base = _record("v1", {"n1": True, "n2": True}, digest)
        [drop] = gate(suite, _record("v2", {"n1": True, "n2": False}, digest), base, ["openai"])  # type: ignore[arg-type]
        assert not drop.passed and any("dropped from 100.0%" in w for w in drop.reasons)
        ok, missing = gate(suite, _record("v2", {"n1": True}, digest), None, ["openai", "anthropic"])  # type: ignore[arg-type]
        assert ok.passed and not missing.passed
        [stale] = gate(suite, _record("v2", {"n1": True}, "other"), None, ["openai"])  # type: ignore[arg-type]
        assert not stale.passed and "different suite" in stale.reasons[0]

    def test_record_round_trips_through_json(self) -> None:
        rec = _record("v1", {"adv1": True, "n1": False})
        again = RunRecord.from_json(rec.to_json())
        assert json.loads(again.to_json()) == json.loads(rec.to_json())
        assert again.providers["openai"].pass_rate == 0.5


class TestProvenance:
    """A pass counts towards production only when the replies came from a model, or the suite
    explicitly allows its stand-in (and the approval then says so)."""

    def _gate(self, tmp_path: Path, sources: dict[str, int], settings: str = "") -> GateResult:
        suite = load_suite(_suite(tmp_path, [_case(1, False)], settings=f"min_pass_rate: 0.5\n{settings}"))
        record = _record("v1", {"n1": True}, suite.digest)
        record.providers["openai"].sources = sources
        [r] = gate(suite, record, None, ["openai"])
        return r

    def test_model_replies_count_stand_ins_do_not(self, tmp_path: Path) -> None:
        model = self._gate(tmp_path / "a", {"model:openai/gpt-4o-mini (openai 2.0)": 1})
        assert model.passed and model.production and model.production_note == ""
        for i, sources in enumerate(({"reference:evals/p/responder.py@abc": 1}, {}, {"unknown": 1},
                                     {"model:openai/x (openai 2.0)": 1, "reference:r@1": 1})):
            stand_in = self._gate(tmp_path / str(i), sources)
            assert stand_in.passed and not stand_in.production, sources
            assert "does not count towards production" in stand_in.production_note

    def test_the_suite_may_allow_a_stand_in_and_the_approval_says_why(self, tmp_path: Path) -> None:
        r = self._gate(tmp_path, {"reference:r@1": 3}, settings='reference_in_production: "no keys yet"\n')
        assert r.production and "no keys yet" in r.production_note and r.source == "reference:r@1"

    def test_policy_settings_do_not_make_results_stale(self, tmp_path: Path) -> None:
        plain = load_suite(_suite(tmp_path / "a", [_case(1, False)]))
        allowed = load_suite(_suite(tmp_path / "b", [_case(1, False)],
                                    settings='reference_in_production: "x"\nbaseline_margin: 0.3\n'))
        assert plain.digest == allowed.digest

    def test_approvals_load_production_only_where_the_gate_said_so(self, tmp_path: Path) -> None:
        from llmgw.evals.results import write_approvals
        from llmgw.prompts import Registry

        shutil.copytree(REPO / "prompts" / "summarize", tmp_path / "summarize")
        pv = Registry.load(tmp_path, enforce_approvals=False).get("summarize", "v1")
        record = RunRecord("summarize", "v1", pv.id, "d", 1, "replay", 0.0, {
            p: ProviderResult(p, "m", [], {label: 1}) for p, label in
            (("openai", "model:openai/m (openai 2)"), ("anthropic", "reference:r@1"))})
        results = [GateResult(p, True, 1.0, None, [], [], [], record.providers[p].source,
                              record.providers[p].from_models) for p in ("openai", "anthropic")]
        write_approvals(tmp_path, record, results, by="t")
        pv = Registry.load(tmp_path).get("summarize", "v1")
        assert pv.approved == {"openai", "anthropic"} and pv.approved_for("staging") == {"openai", "anthropic"}
        assert pv.production_approved == {"openai"} and pv.approved_for("production") == {"openai"}
        # An approval from before sources were recorded does not count towards production.
        (tmp_path / "summarize" / "approvals.yaml").write_text(yaml.safe_dump(
            {"v1": {"openai": {"version_id": pv.id}}}))
        assert Registry.load(tmp_path).get("summarize", "v1").approved_for("production") == frozenset()


class TestRepeats:
    def test_pass_hat_k_estimates_k_tries_in_a_row(self) -> None:
        def case(cid: str, outcomes: list[bool]) -> CaseResult:
            return CaseResult(cid, [], {}, [Try("o", "", [{"type": "t", "passed": ok, "reason": ""}])
                                            for ok in outcomes])

        res = ProviderResult("openai", "m", [case("a", [True, True, True]), case("b", [True, True, False]),
                                             case("c", [False, False, False])])
        # b: 2 of 3 pass: pass^1 = 2/3, pass^2 = C(2,2)/C(3,2) = 1/3, pass^3 = 0.
        assert res.pass_hat() == pytest.approx({1: (1 + 2 / 3) / 3, 2: (1 + 1 / 3) / 3, 3: 1 / 3})
        assert res.pass_hat()[3] == res.pass_rate and [c.flaky for c in res.cases] == [False, True, False]


class TestBaselines:
    async def test_no_baseline_comes_near_a_shipped_suites_bar(self) -> None:
        for name in ("classify-ticket", "summarize", "extract-contact"):
            suite = load_suite(REPO / "evals" / name)
            scores = await score_baselines(suite)
            assert {s.name.split(" ")[0] for s in scores} >= {"echo", "first-sentence", "empty"}
            assert baseline_problems(suite, scores) == [], [(s.name, s.pass_rate) for s in scores]

    async def test_a_constant_label_that_passes_is_named_with_its_cases(self, tmp_path: Path) -> None:
        cases = [{"id": f"c{i}", "vars": {"t": f"text {i}"}, "assert": [{"type": "equals", "value": "yes"}]}
                 for i in range(4)] + [
                {"id": "no", "vars": {"t": "x"}, "assert": [{"type": "equals", "value": "no"}]},
                {"id": "rejected", "vars": {"t": "x"}, "assert": [{"type": "error", "contains": "t"}]}]
        suite = load_suite(_suite(tmp_path, cases, settings="min_pass_rate: 0.9\nbaseline_margin: 0.2\n"))
        scores = {s.name: s for s in await score_baselines(suite)}
        best = scores["constant 'yes'"]
        # The case expecting a gateway rejection involves no answer: it is not scored.
        assert best.scored == 5 and best.pass_rate == 0.8 and best.passed == ("c0", "c1", "c2", "c3")
        [problem] = baseline_problems(suite, list(scores.values()))
        assert "constant 'yes' passes 80% of 5 cases, at or above 70%" in problem and "c0, c1, c2, c3" in problem
