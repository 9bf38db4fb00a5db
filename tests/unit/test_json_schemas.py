"""The JSON topics' published schemas match what the code writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema

from llmgw.prompts.workflow import move_label
from llmgw.services.drift.detector import DetectorSettings, DriftDetector
from tests.drift_synth import Topics

REPO = Path(__file__).resolve().parents[2]


def _schema(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())


def test_drift_records_match_their_schemas() -> None:
    """Real records from the detector: filling, windows, and an incident's OPEN/UPDATE/CLOSED."""
    topics = Topics(seed=5)
    det = DriftDetector(DetectorSettings(reference_size=300, window=50, simulations=500))
    records = det.observe("t/r/p/production", topics.stream(330, [0.4, 0.3, 0.2, 0.1, 0, 0]))
    records += det.observe("t/r/p/production", topics.stream(800, [0.2, 0.2, 0.1, 0.1, 0.4, 0]))
    records += det.observe("t/r/p/production", topics.stream(800, [0.4, 0.3, 0.2, 0.1, 0, 0]))
    states = {r["state"] for r in records if r["type"] == "incident"}
    assert states == {"OPEN", "UPDATE", "CLOSED"}
    assert {r["type"] for r in records} == {"window", "incident"}
    for rec in records:
        schema = "llm.drift" if rec["type"] == "incident" else "llm.drift.metrics"
        jsonschema.validate(json.loads(json.dumps(rec)), _schema(schema))


def test_audit_records_match_the_schema(tmp_path: Path) -> None:
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    move = move_label(tmp_path / "prompts", "summarize@v1", "staging", actor="ci")
    jsonschema.validate(json.loads(move.to_json()), _schema("llm.audit"))


def test_drift_tail_formats_incidents_readably() -> None:
    from llmgw.commands.drift import HEADER, format_record

    topics = Topics(seed=5)
    det = DriftDetector(DetectorSettings(reference_size=300, window=50, simulations=500))
    det.observe("t/r/p/production", topics.stream(300, [0.4, 0.3, 0.2, 0.1, 0, 0]))
    recs = det.observe("t/r/p/production", topics.stream(800, [0.2, 0.2, 0.1, 0.1, 0.4, 0]))
    rec = next(r for r in recs if r["type"] == "incident" and r["detector"].startswith("novelty"))
    line = format_record(rec)
    assert HEADER.split()[:4] == ["time", "incident", "state", "segment"]
    # The whole detector name (novelty-cusum is the longest), and the new topic's own group.
    assert "OPEN" in line and f" {rec['detector']} " in line and "new" in line and "subjecte" in line
