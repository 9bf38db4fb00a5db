"""Generated code matches proto/ (it is never edited by hand), and the public contract holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmgw.gateway.v1 import gateway_pb2

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "proto", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *protos],
        cwd=REPO, check=True,
    )
    stale = [
        str(gen.relative_to(tmp_path))
        for gen in tmp_path.rglob("*.py*")
        if gen.read_bytes() != (REPO / "src" / gen.relative_to(tmp_path)).read_bytes()
    ]
    assert stale == [], f"run `make proto`: stale generated files {stale}"


def test_public_field_names() -> None:
    fields = {f.name for f in gateway_pb2.CompleteRequest.DESCRIPTOR.fields}
    assert fields == {"prompt", "label", "variables", "messages", "route", "sampling", "cache_mode", "metadata",
                      "tools", "tool_choice", "response_format", "model"}
    resp = {f.name for f in gateway_pb2.CompleteResponse.DESCRIPTOR.fields}
    assert resp == {"request_id", "text", "provider", "model", "prompt_version", "cache_hit", "usage", "attempts",
                    "finish_reason", "tool_calls", "cache_tier", "cache_similarity"}
    assert [v.name for v in gateway_pb2.CompleteRequest.CacheMode.DESCRIPTOR.values] == ["DEFAULT", "BYPASS", "REFRESH"]


def test_contracts_only_change_additively() -> None:
    import json

    from llmgw.contracts import LOCK, breaking_changes, snapshot

    assert breaking_changes(json.loads(LOCK.read_text()), snapshot()) == []


def test_the_evolution_check_catches_breaking_changes() -> None:
    from llmgw.contracts import breaking_changes

    old = {"m": {"a": [1, 9, 0], "b": [2, 9, 0]}}
    assert breaking_changes(old, {"m": {"a": [1, 9, 0], "b": [2, 9, 0], "c": [3, 9, 0]}}) == []
    assert breaking_changes(old, {"m": {"a": [1, 9, 0]}}) == ["m.b: field removed (reserve its number instead)"]
    assert "changed" in breaking_changes(old, {"m": {"a": [1, 5, 0], "b": [2, 9, 0]}})[0]
    assert "reuses number 2" in breaking_changes(old, {"m": {"a": [1, 9, 0], "b2": [2, 9, 0], "b": [4, 9, 0]}})[1]
