"""The prompt author's workflow on a copy of the registry: versions, promote, rollback, diff."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmgw.cli import main as cli
from llmgw.kit.errors import ConfigError, InvalidArgument, NotFound
from llmgw.prompts import Registry
from llmgw.prompts.workflow import diff, move_label, new_version, rollback_target, validate_all

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    return tmp_path / "prompts"


def test_new_version_promote_and_rollback(root: Path) -> None:
    path = new_version(root, "summarize")
    assert path.name == "v2.yaml"
    path.write_text(path.read_text().replace("one sentence:", "a few words:"))
    move = move_label(root, "summarize@v2", "production", actor="alice")
    assert (move.previous, move.version, move.actor) == ("v1", "v2", "alice")
    assert Registry.load(root).resolve("summarize").version == "v2"
    log = [json.loads(line) for line in (root / "summarize" / "labels.log.jsonl").read_text().splitlines()]
    assert log[-1]["version"] == "v2" and log[-1]["previous"] == "v1"
    assert rollback_target(root, "summarize", "production") == "summarize@v1"
    move_label(root, "summarize@v1", "production", reason="rollback")
    assert Registry.load(root).resolve("summarize").version == "v1"
    assert "a few words" in diff(root, "summarize@v1", "summarize@v2")


def test_rollback_without_history_is_refused(root: Path) -> None:
    with pytest.raises(NotFound, match="no earlier version"):
        rollback_target(root, "summarize", "production")


def test_promote_unknown_version_is_refused(root: Path) -> None:
    with pytest.raises(NotFound):
        move_label(root, "summarize@v9", "staging")


def test_validate_renders_every_variant(root: Path) -> None:
    lines = validate_all(root)
    assert any("summarize@v1" in ln and "anthropic" in ln for ln in lines)


def test_a_released_version_cannot_be_edited(root: Path) -> None:
    move_label(root, "summarize@v1", "staging")
    f = root / "summarize" / "versions" / "v1.yaml"
    f.write_text(f.read_text().replace("one sentence", "two sentences"))
    with pytest.raises(ConfigError, match="immutable"):
        validate_all(root)


def test_cli_round_trip(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["prompts", "new-version", "classify-ticket", "--dir", str(root)]) == 0
    # v2 has no eval record yet: promotion is refused (tests/integration/test_evals.py approves one).
    assert cli(["prompts", "promote", "classify-ticket@v2", "--label", "staging", "--dir", str(root)]) == 1
    assert "has no passing eval for openai, anthropic" in capsys.readouterr().err
    assert cli(["prompts", "promote", "classify-ticket@v1", "--label", "staging", "--dir", str(root)]) == 0
    assert cli(["prompts", "list", "--dir", str(root)]) == 0
    assert "staging=v1" in capsys.readouterr().out
    assert cli(["prompts", "rollback", "classify-ticket", "--label", "production", "--dir", str(root)]) == 1


class TestVariableSchema:
    def _pv(self, tmp_path: Path, variables: str):  # type: ignore[no-untyped-def]
        d = tmp_path / "p" / "versions"
        d.mkdir(parents=True)
        (d / "v1.yaml").write_text(f"variables: {variables}\ntemplate:\n  messages: [{{role: user, content: 'x'}}]\n")
        (tmp_path / "p" / "labels.yaml").write_text("production: v1\n")
        return Registry.load(tmp_path).resolve("p")

    def test_types_choices_and_defaults(self, tmp_path: Path) -> None:
        pv = self._pv(tmp_path, "{n: {type: integer}, mode: {choices: [a, b], default: a}, flag: {type: boolean, required: false}}")
        assert pv.variables({"n": "3"}) == {"n": "3", "mode": "a"}
        for bad, field in [({"n": "three"}, "variables.n"), ({"n": "1", "mode": "c"}, "variables.mode"),
                           ({"n": "1", "flag": "maybe"}, "variables.flag")]:
            with pytest.raises(InvalidArgument) as err:
                pv.variables(bad)
            assert err.value.field == field

    def test_supports_only_providers_with_a_variant(self, tmp_path: Path) -> None:
        d = tmp_path / "q" / "versions"
        d.mkdir(parents=True)
        (d / "v1.yaml").write_text("variants:\n  anthropic:\n    messages: [{role: user, content: hi}]\n")
        (tmp_path / "q" / "labels.yaml").write_text("production: v1\n")
        pv = Registry.load(tmp_path).resolve("q")
        assert pv.supports("anthropic") and not pv.supports("openai")
