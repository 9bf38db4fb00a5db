"""Prompt authoring workflow behind ``llmgw prompts``: new versions, promote, rollback, diff, validate.

A label move edits ``prompts/<name>/labels.yaml`` (reviewed, committed) and appends to
``prompts/<name>/labels.log.jsonl`` (who, when, from which version to which); with a label store
it reaches running services within seconds, and with Kafka it is published on ``llm.audit``.
"""

from __future__ import annotations

import difflib
import getpass
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmgw.kit.errors import ConfigError, NotFound
from llmgw.kit.kafka import AUDIT_TOPIC
from llmgw.prompts.registry import PromptVersion, Registry

__all__ = ["AUDIT_TOPIC", "LabelMove", "diff", "move_label", "new_version", "rollback_target", "validate_all"]



@dataclass(frozen=True)
class LabelMove:
    prompt: str
    label: str
    version: str
    # The immutable id (vN@digest) released by this move: validate refuses a later edit of the file.
    version_id: str
    previous: str | None
    actor: str
    reason: str
    time: float

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()


def _parse_ref(ref: str) -> tuple[str, str]:
    name, sep, version = ref.partition("@")
    if not sep or not version:
        raise ConfigError(f"expected NAME@VERSION, got {ref!r}")
    return name, version


def new_version(root: Path, name: str, *, source: str | None = None) -> Path:
    """Copy the newest (or ``source``) version to the next number; returns the new file."""
    versions = Registry.load(root).versions(name)
    src = next((v for v in versions if v.version == source), None) if source else versions[-1]
    if src is None:
        raise NotFound(f"prompt {name!r} has no version {source!r}")
    target = root / name / "versions" / f"v{int(versions[-1].version[1:]) + 1}.yaml"
    shutil.copyfile(root / name / "versions" / f"{src.version}.yaml", target)
    return target


def diff(root: Path, a: str, b: str) -> str:
    reg = Registry.load(root)
    (na, va), (nb, vb) = _parse_ref(a), _parse_ref(b)
    pa, pb = reg.get(na, va), reg.get(nb, vb)
    return "".join(difflib.unified_diff(pa.source.splitlines(True), pb.source.splitlines(True),
                                        fromfile=f"{na}@{pa.id}", tofile=f"{nb}@{pb.id}"))


def _log_path(root: Path, name: str) -> Path:
    return root / name / "labels.log.jsonl"


def history(root: Path, name: str, label: str) -> list[dict[str, Any]]:
    path = _log_path(root, name)
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["label"] == label]


def move_label(root: Path, ref: str, label: str, *, reason: str = "promote", actor: str | None = None) -> LabelMove:
    """Point ``label`` at ``NAME@VERSION`` in the files; returns the move for the store and audit."""
    name, version = _parse_ref(ref)
    reg = Registry.load(root)
    pv = reg.get(name, version)
    labels_file = root / name / "labels.yaml"
    labels = reg.labels(name)
    move = LabelMove(prompt=name, label=label, version=pv.version, version_id=pv.id, previous=labels.get(label),
                     actor=actor or getpass.getuser(), reason=reason, time=time.time())
    labels[label] = pv.version
    labels_file.write_text(yaml.safe_dump(labels, sort_keys=True))
    with _log_path(root, name).open("a") as log:
        log.write(move.to_json().decode() + "\n")
    return move


def rollback_target(root: Path, name: str, label: str) -> str:
    """The version ``label`` pointed at before its last move (``NAME@VERSION``)."""
    current = Registry.load(root).labels(name).get(label)
    for entry in reversed(history(root, name, label)):
        if entry["version"] == current and entry["previous"]:
            return f"{name}@{entry['previous']}"
    raise NotFound(f"prompt {name!r} label {label!r} has no earlier version to roll back to")


def _sample(pv: PromptVersion) -> dict[str, str]:
    samples = {"string": "sample", "integer": "1", "number": "1.5", "boolean": "true"}
    return {n: (v.choices[0] if v.choices else samples[v.type]) for n, v in pv.spec.variables.items()}


def released_ids(root: Path, name: str) -> dict[str, str]:
    """version -> the id it had when a label first pointed at it."""
    path = _log_path(root, name)
    released: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry.get("version_id"):
                    released.setdefault(entry["version"], entry["version_id"])
    return released


def validate_all(root: Path) -> list[str]:
    """Load every prompt, check released versions are unchanged, and render every variant of
    every version with sample values."""
    reg = Registry.load(root)
    lines = []
    for name in reg.names():
        released = released_ids(root, name)
        for pv in reg.versions(name):
            if released.get(pv.version, pv.id) != pv.id:
                raise ConfigError(
                    f"{name}@{pv.version} was released as {released[pv.version]} but its file now hashes to "
                    f"{pv.id}: released versions are immutable, create a new version (llmgw prompts new-version)"
                )
            providers = list(pv.spec.variants) + (["default"] if pv.spec.template else [])
            for provider in providers:
                pv.render(_sample(pv), "" if provider == "default" else provider)
            labels = [lbl for lbl, v in reg.labels(name).items() if v == pv.version]
            lines.append(f"ok   {name}@{pv.id}  variants: {', '.join(providers)}"
                         + (f"  labels: {', '.join(labels)}" if labels else ""))
    return lines
