"""The JSON topics' published schemas match what the code writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np

from llmgw.events.v1 import events_pb2
from llmgw.prompts.workflow import move_label
from llmgw.services.drift.app import process_window
from llmgw.services.drift.detector import DriftDetector

REPO = Path(__file__).resolve().parents[2]


def _schema(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())


class _Embed:
    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([np.eye(4, dtype=np.float32)[len(t) % 4] for t in texts])


def test_drift_records_match_the_schema() -> None:
    det = DriftDetector(reference_size=2)
    values = [events_pb2.RequestEvent(request_id=f"r{i}", tenant="t", prompt="p",
                                      variables={"text": "x" * i}).SerializeToString() for i in range(6)]
    records = process_window(values, _Embed(), det)
    assert records
    for rec in records:
        jsonschema.validate(json.loads(json.dumps(rec)), _schema("llm.drift"))


def test_audit_records_match_the_schema(tmp_path: Path) -> None:
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    move = move_label(tmp_path / "prompts", "summarize@v1", "staging", actor="ci")
    jsonschema.validate(json.loads(move.to_json()), _schema("llm.audit"))


def test_drift_tail_formats_a_record_readably() -> None:
    from llmgw.drift_cli import HEADER, format_record
    from llmgw.services.drift.detector import DriftDetector as Det

    det = Det(reference_size=2)
    values = [events_pb2.RequestEvent(request_id=f"r{i}", tenant="t", prompt="p",
                                      variables={"text": "x" * i}).SerializeToString() for i in range(6)]
    line = format_record(process_window(values, _Embed(), det)[0])
    assert HEADER.split()[:3] == ["time", "segment", "n"] and ("YES" in line or " no " in line) and "%" in line
