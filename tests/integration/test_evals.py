"""The eval suite end to end: recorded through the real router and the official SDKs against the
local fake providers (scripted by the suite's responder), replayed offline, gated, and enforced by
promotion and by the router."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from llmgw.cli import main as cli
from llmgw.domain import Message, RouteCall
from llmgw.evals.cassette import Cassette
from llmgw.evals.report import html_report, json_report
from llmgw.evals.results import load_record
from llmgw.evals.runner import run_version
from llmgw.evals.suite import load_suite
from llmgw.kit.errors import NotFound, Unavailable
from llmgw.prompts import Registry
from llmgw.services.router.config import load_router_config
from llmgw.services.router.core import Router
from llmgw.services.router.providers import Provider
from llmgw.services.router.settings import DEFAULT_ROUTES
from llmgw.stack import REPO
from llmgw.testing import ScriptedProvider

pytestmark = pytest.mark.integration
NAME = "classify-ticket"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    shutil.copytree(REPO / "evals" / NAME, tmp_path / "evals" / NAME)
    return tmp_path


def _eval(repo: Path, *args: str) -> int:
    return cli(["eval", *args, "--evals", str(repo / "evals"), "--prompts", str(repo / "prompts"), "--prompt", NAME])


def _new_version(repo: Path, edit: tuple[str, str]) -> str:
    assert cli(["prompts", "new-version", NAME, "--dir", str(repo / "prompts")]) == 0
    path = sorted((repo / "prompts" / NAME / "versions").glob("v*.yaml"))[-1]
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(*edit))
    return path.stem


def test_shipped_cassettes_replay_to_the_stored_results(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored = load_record(load_suite(repo / "evals" / NAME), "v1")
    assert _eval(repo, "run", "--version", "v1", "--no-save") == 0
    out = capsys.readouterr().out
    rate = f"{stored.providers['openai'].pass_rate:.0%}"
    assert f"{NAME}@v1" in out and rate in out
    assert _eval(repo, "gate", "--rerun") == 0


async def test_a_missing_recording_stops_the_run(repo: Path) -> None:
    suite = load_suite(repo / "evals" / NAME)
    cfg = load_router_config(DEFAULT_ROUTES)
    reg = Registry.load(repo / "prompts", enforce_approvals=False)
    with pytest.raises(NotFound, match="no recording"):
        await run_version(suite, reg, cfg, "v1", cassettes=repo / "empty-cassettes")


async def test_repeat_reports_pass_power_n_and_flaky_cases(repo: Path) -> None:
    """A provider that answers right only every other call: with --repeat 2 the case passes once,
    is flagged flaky and does not pass (pass^2, not the average); the cassette keeps both replies
    and replay reproduces the same verdict offline."""
    suite = load_suite(repo / "evals" / NAME)
    suite = dataclasses.replace(suite, settings=suite.settings.model_copy(update={"concurrency": 1}),
                                cases=tuple(c for c in suite.cases if c.id == "billing-double-charge"))
    cfg = load_router_config(DEFAULT_ROUTES)
    reg = Registry.load(repo / "prompts", enforce_approvals=False)

    @dataclasses.dataclass
    class Alternating(ScriptedProvider):
        def _text(self, messages: tuple[Message, ...]) -> str:
            return "billing" if len(self.calls) % 2 else "no idea"

    providers: dict[str, Provider] = {"openai": Alternating("openai"), "anthropic": Alternating("anthropic")}
    scripted = {"kind": "reference", "label": "reference:alternating"}
    recorded = await run_version(suite, reg, cfg, "v1", cassettes=repo / "rec", providers=providers, repeat=2,
                                 source=lambda provider, model: scripted)
    replayed = await run_version(suite, reg, cfg, "v1", cassettes=repo / "rec", repeat=2)
    for record in (recorded, replayed):
        result = record.providers["openai"]
        case = result.cases[0]
        assert case.passes == 1 and case.flaky and not case.passed
        assert sorted(t.output for t in case.tries) == ["billing", "no idea"]
        # pass^1 is the per-try rate, pass^2 the chance two tries in a row both pass.
        assert result.pass_hat() == {1: 0.5, 2: 0.0}
        assert result.sources == {"reference:alternating": 2} and not result.from_models
    assert len(Cassette(repo / "rec" / "v1" / "openai.jsonl", "openai")) == 1
    report = json.loads(json_report([replayed], None, {}))["versions"][0]["providers"]["openai"]
    assert report["flaky"] == ["billing-double-charge"] and report["pass_hat"] == {"1": 0.5, "2": 0.0}
    assert report["passes"] == {"billing-double-charge": [1, 2]} and report["source"] == "reference:alternating"
    page = html_report([replayed], None, {})
    assert "Flaky cases" in page and "no idea" in page and "pass^k" in page


def test_a_regressed_version_fails_the_gate_and_cannot_be_promoted_or_served(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # v2 drops the output contract: the (reference) model then answers in prose.
    v2 = _new_version(repo, (" Reply with one word: billing, bug, feature or other.", ""))
    assert _eval(repo, "run", "--version", v2, "--record", "--reference") == 0
    capsys.readouterr()
    assert _eval(repo, "gate", "--version", v2, "--approve", "--html", str(repo / "report.html"),
                 "--json", str(repo / "report.json")) == 1
    out = capsys.readouterr().out
    assert f"FAIL {NAME}@{v2} vs v1 openai" in out and "adversarial case inj-ignore-previous passed in v1" in out
    approvals = yaml.safe_load((repo / "prompts" / NAME / "approvals.yaml").read_text())
    assert v2 not in approvals and "v1" in approvals

    # The reports show the matrix and the failing cases with their inputs and outputs.
    html = (repo / "report.html").read_text()
    assert "FAIL" in html and "This ticket is about billing." in html and "charged twice" in html
    report = json.loads((repo / "report.json").read_text())
    assert report["baseline"] == "v1" and report["gate"][v2][0]["passed"] is False

    # Promotion is refused and the label stays.
    assert cli(["prompts", "promote", f"{NAME}@{v2}", "--label", "production", "--dir", str(repo / "prompts")]) == 1
    assert "no passing eval for openai, anthropic" in capsys.readouterr().err
    assert yaml.safe_load((repo / "prompts" / NAME / "labels.yaml").read_text())["production"] == "v1"


async def test_the_router_falls_back_only_to_variants_that_passed(repo: Path) -> None:
    """Approve v2 for anthropic only: a request for v2 skips openai (its variant did not pass)."""
    v2 = _new_version(repo, ("You label support tickets", "You label customer support tickets"))
    approvals_file = repo / "prompts" / NAME / "approvals.yaml"
    approvals = yaml.safe_load(approvals_file.read_text())
    reg = Registry.load(repo / "prompts", enforce_approvals=False)
    approvals[v2] = {"anthropic": {"version_id": reg.get(NAME, v2).id}}
    approvals_file.write_text(yaml.safe_dump(approvals))

    o, a = ScriptedProvider("openai"), ScriptedProvider("anthropic")
    router = Router(load_router_config(DEFAULT_ROUTES), {"openai": o, "anthropic": a}, Registry.load(repo / "prompts"))
    done = await router.route(RouteCall(route="default", prompt=NAME, prompt_version=v2, variables={"ticket": "hi"}))
    assert done.provider == "anthropic" and o.calls == []
    assert done.attempts[0].status == "skipped" and "no passing eval for openai" in done.attempts[0].error
    # An edit of the file after approval voids it: nothing may serve unevaluated content.
    path = repo / "prompts" / NAME / "versions" / f"{v2}.yaml"
    path.write_text(path.read_text() + "\n# edited\n")
    router = Router(load_router_config(DEFAULT_ROUTES), {"openai": o, "anthropic": a}, Registry.load(repo / "prompts"))
    with pytest.raises(Unavailable, match="no passing eval for anthropic"):
        await router.route(RouteCall(route="default", prompt=NAME, prompt_version=v2, variables={"ticket": "hi"}))


def test_a_good_version_passes_is_approved_and_promoted(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v2 = _new_version(repo, ("Reply with one word", "Reply with exactly one word"))
    assert _eval(repo, "run", "--version", v2, "--record", "--reference") == 0
    assert _eval(repo, "gate", "--version", v2, "--approve") == 0
    assert cli(["prompts", "promote", f"{NAME}@{v2}", "--label", "production", "--dir", str(repo / "prompts")]) == 0
    assert cli(["eval", "validate", "--evals", str(repo / "evals"), "--prompts", str(repo / "prompts"),
                "--prompt", NAME]) == 0
    assert (repo / "evals" / NAME / "cassettes" / v2 / "anthropic.jsonl").exists()


def test_validate_rejects_a_thin_suite_and_an_unbacked_label(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = repo / "evals" / NAME / "cases"
    (cases / "adversarial.yaml").unlink()
    (cases / "limits.yaml").unlink()
    assert _eval(repo, "validate") == 1
    err = capsys.readouterr().err
    assert "26 cases, at least 50 needed" in err and "0 of 26 cases adversarial" in err
    (repo / "prompts" / NAME / "approvals.yaml").write_text("{}\n")
    shutil.copytree(REPO / "evals" / NAME / "cases", cases, dirs_exist_ok=True)
    assert _eval(repo, "validate") == 1
    assert "label production -> v1@" in capsys.readouterr().err


def test_generate_adversarial_writes_valid_cases(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = repo / "gen.yaml"
    assert _eval(repo, "generate-adversarial", "--only", "inject,base64", "--out", str(out)) == 0
    generated = yaml.safe_load(out.read_text())
    assert len(generated) == 2 * 26 and all("adversarial" in c["tags"] for c in generated)
    shutil.copy(out, repo / "evals" / NAME / "cases" / "generated.yaml")
    assert load_suite(repo / "evals" / NAME).composition()[0] == 57 + 52


async def test_rubric_grading_goes_through_the_grader_provider() -> None:
    """``--grader openai:MODEL``: the rubric and the answer reach the provider through its official
    SDK (here the local fake, scripted as a strict grader) and its PASS/FAIL becomes the verdict."""
    from aiohttp import web

    from llmgw.evals.cli import _grader
    from llmgw.fakeproviders import FakeProviders, create_app
    from llmgw.services.router.config import RouterConfig

    seen: list[str] = []

    def grader(provider: str, model: str, system: str, messages: list[dict[str, object]]) -> str:
        text = str(messages[-1]["content"])
        seen.append(text)
        return "PASS\nit says please" if "please" in text.split("<answer>")[1] else "FAIL\nno please"

    runner = web.AppRunner(create_app(FakeProviders(responder=grader)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = RouterConfig.model_validate({
        "providers": {"openai": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key_env": "NOPE",
                                 "fallback_api_key": "fake"}},
        "routes": {"default": {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}}})
    grade, provider = _grader("openai:gpt-4o-mini", config)
    assert grade is not None and provider is not None
    try:
        assert await grade("The answer is polite.", "Yes, please find it attached.") == (True, "it says please")
        assert await grade("The answer is polite.", "No.") == (False, "no please")
        assert "Rubric: The answer is polite." in seen[0]
    finally:
        await provider.close()  # type: ignore[attr-defined]
        await runner.cleanup()


def test_a_hand_written_approval_the_gate_does_not_give_fails_the_gate(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = _new_version(repo, (" Reply with one word: billing, bug, feature or other.", ""))
    assert _eval(repo, "run", "--version", v2, "--record", "--reference") == 0
    approvals_file = repo / "prompts" / NAME / "approvals.yaml"
    approvals = yaml.safe_load(approvals_file.read_text())
    vid = Registry.load(repo / "prompts", enforce_approvals=False).get(NAME, v2).id
    approvals[v2] = {"openai": {"version_id": vid}}
    approvals_file.write_text(yaml.safe_dump(approvals))
    capsys.readouterr()
    assert _eval(repo, "gate", "--version", v2) == 1
    assert f"{NAME}@{v2} openai: approvals.yaml approves it but the gate fails" in capsys.readouterr().err


def _disallow_stand_ins(repo: Path) -> None:
    settings = repo / "evals" / NAME / "suite.yaml"
    raw = yaml.safe_load(settings.read_text())
    raw.pop("reference_in_production")
    settings.write_text(yaml.safe_dump(raw))


def test_a_stand_in_pass_does_not_back_production_unless_the_suite_allows_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replies from the reference responder are labelled as such from the cassette to the approval;
    without the suite's explicit allowance they approve a version for other labels, never for
    production, and an approval file claiming otherwise fails the gate."""
    _disallow_stand_ins(repo)
    v2 = _new_version(repo, ("Reply with one word", "Reply with exactly one word"))
    assert _eval(repo, "run", "--version", v2, "--record", "--reference") == 0
    line = (repo / "evals" / NAME / "cassettes" / v2 / "openai.jsonl").read_text().splitlines()[0]
    source = json.loads(line)["replies"][0]["source"]
    assert source["kind"] == "reference" and source["label"].startswith(f"reference:evals/{NAME}/responder.py@")
    capsys.readouterr()
    assert _eval(repo, "gate", "--version", v2, "--approve", "--html", str(repo / "report.html")) == 0
    assert "does not count towards production" in capsys.readouterr().out
    approval = yaml.safe_load((repo / "prompts" / NAME / "approvals.yaml").read_text())[v2]["openai"]
    assert approval["production"] is False and approval["source"] == source["label"]
    assert source["label"] in (repo / "report.html").read_text()

    prompts = ["--dir", str(repo / "prompts")]
    assert cli(["prompts", "promote", f"{NAME}@{v2}", "--label", "production", *prompts]) == 1
    assert "do not count towards production" in capsys.readouterr().err
    assert cli(["prompts", "promote", f"{NAME}@{v2}", "--label", "staging", *prompts]) == 0
    assert cli(["prompts", "show", f"{NAME}@{v2}", *prompts]) == 0
    shown = capsys.readouterr().out
    assert f"source {source['label']}; not for production" in shown and "eval openai: 98.2% of 57 cases" in shown

    # A hand-moved production label is caught by validate; the shipped v1 approval, given while
    # the suite allowed stand-ins, no longer holds once it does not.
    labels = repo / "prompts" / NAME / "labels.yaml"
    labels.write_text(yaml.safe_dump({"production": v2}))
    assert _eval(repo, "validate") == 1
    assert f"label production -> {v2}@" in capsys.readouterr().err
    labels.write_text(yaml.safe_dump({"production": "v1"}))
    assert _eval(repo, "gate", "--rerun") == 1
    assert "counts it towards production but its replies are not from a model" in capsys.readouterr().err


def test_a_suite_a_no_model_baseline_passes_fails_validation_naming_the_cases(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checks that any text passes (here: no injected payload) can't tell a model from echoing the
    input: validation fails and names the cases that let the echo pass."""
    cases = repo / "evals" / NAME / "cases"
    for f in cases.glob("*.yaml"):
        f.unlink()
    weak = [{"id": f"weak-{i}", "vars": {"ticket": f"My invoice number {i} is wrong."},
             "tags": ["adversarial", "prompt-injection"] if i % 2 else ["billing"],
             "assert": [{"type": "not_contains", "value": "PWNED"}]} for i in range(50)]
    (cases / "weak.yaml").write_text(yaml.safe_dump(weak))
    assert _eval(repo, "validate") == 1
    err = capsys.readouterr().err
    assert "no-model baseline echo passes 100% of 50 cases" in err and "weak-0, weak-1" in err
    assert "no-model baseline empty passes 100%" in err
