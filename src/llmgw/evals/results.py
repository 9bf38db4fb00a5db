"""Run records (per prompt version, every provider), the gate, and approvals.

    evals/<prompt>/results/<vN>.json     the latest run of that version (committed: the baseline)
    prompts/<prompt>/approvals.yaml      provider variants that passed the gate, by version id
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmgw.evals.provenance import from_models, summary
from llmgw.evals.suite import Suite
from llmgw.kit.errors import NotFound
from llmgw.prompts.registry import APPROVALS_FILE, Registry, read_approvals

__all__ = ["CaseResult", "GateResult", "ProviderResult", "RunRecord", "Try", "gate", "load_record",
           "missing_approvals", "record_path", "write_approvals"]


@dataclass
class Try:
    """One independent run of a case."""

    output: str
    error: str
    verdicts: list[dict[str, Any]]

    @property
    def passed(self) -> bool | None:
        """None: some check could not run here (and nothing failed)."""
        states = [v["passed"] for v in self.verdicts]
        if any(s is False for s in states):
            return False
        return None if any(s is None for s in states) else True


@dataclass
class CaseResult:
    id: str
    tags: list[str]
    vars: dict[str, str]
    tries: list[Try]

    @property
    def adversarial(self) -> bool:
        return "adversarial" in self.tags

    @property
    def passes(self) -> int:
        return sum(t.passed is True for t in self.tries)

    @property
    def skipped(self) -> bool:
        return any(t.passed is None for t in self.tries) and not any(t.passed is False for t in self.tries)

    @property
    def passed(self) -> bool:
        """pass^N: every repeat passed."""
        return bool(self.tries) and self.passes == len(self.tries)

    @property
    def flaky(self) -> bool:
        return 0 < self.passes < len(self.tries)


@dataclass
class ProviderResult:
    provider: str
    model: str
    cases: list[CaseResult]
    # Source label -> replies scored (``llmgw.evals.provenance``); empty in results older than sources.
    sources: dict[str, int] = field(default_factory=dict)

    def scored(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.skipped]

    @property
    def source(self) -> str:
        return summary(self.sources)

    @property
    def from_models(self) -> bool:
        return from_models(self.sources)

    @property
    def pass_rate(self) -> float:
        scored = self.scored()
        return sum(c.passed for c in scored) / len(scored) if scored else 0.0

    def pass_hat(self) -> dict[int, float]:
        """pass^k for k = 1..repeats: the chance that k independent tries of a case all pass,
        estimated per case from its c passes in n tries as C(c, k) / C(n, k), averaged over the
        scored cases. pass^1 is the mean per-try pass rate; pass^n is ``pass_rate``."""
        scored = self.scored()
        n = min((len(c.tries) for c in scored), default=0)
        return {k: sum(math.comb(c.passes, k) / math.comb(len(c.tries), k) for c in scored) / len(scored)
                for k in range(1, n + 1)}

    def tag_rates(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for c in self.scored():
            for tag in c.tags:
                p, n = out.get(tag, (0, 0))
                out[tag] = (p + c.passed, n + 1)
        return dict(sorted(out.items()))


@dataclass
class RunRecord:
    prompt: str
    version: str
    version_id: str
    suite_digest: str
    repeat: int
    mode: str  # replay | record
    run_at: float
    providers: dict[str, ProviderResult] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        raw = json.loads(text)
        providers = {
            name: ProviderResult(p["provider"], p["model"], [
                CaseResult(c["id"], c["tags"], c["vars"], [Try(**t) for t in c["tries"]]) for c in p["cases"]
            ], p.get("sources", {}))
            for name, p in raw.pop("providers").items()
        }
        return cls(**raw, providers=providers)


def record_path(suite: Suite, version: str) -> Path:
    return suite.root / "results" / f"{version}.json"


def load_record(suite: Suite, version: str) -> RunRecord:
    path = record_path(suite, version)
    if not path.exists():
        raise NotFound(f"no eval results for {suite.prompt}@{version} ({path}): run `llmgw eval run`")
    return RunRecord.from_json(path.read_text())


@dataclass
class GateResult:
    provider: str
    passed: bool
    pass_rate: float
    baseline_rate: float | None
    reasons: list[str]
    # Cases that passed in the baseline and fail now (adversarial ones fail the gate outright).
    regressions: list[str]
    fixed: list[str]
    # What answered (``llmgw.evals.provenance``), and whether this pass may back a production label:
    # only replies from real models do, unless the suite explicitly allows stand-ins (``production_note``).
    source: str = ""
    production: bool = False
    production_note: str = ""


def _production(suite: Suite, result: ProviderResult) -> tuple[bool, str]:
    if result.from_models:
        return True, ""
    allowed = suite.settings.reference_in_production
    if allowed:
        return True, f"stand-in replies allowed for production by {suite.root.name}/suite.yaml: {allowed}"
    return False, (f"not from a model ({result.source}): does not count towards production "
                   f"(record with provider keys, or set reference_in_production in {suite.root.name}/suite.yaml)")


def gate(suite: Suite, candidate: RunRecord, baseline: RunRecord | None, providers: list[str]) -> list[GateResult]:
    """Per provider of the route: does ``candidate`` pass against ``baseline``?"""
    out = []
    for provider in providers:
        reasons: list[str] = []
        result = candidate.providers.get(provider)
        if candidate.suite_digest != suite.digest:
            reasons.append("results are from a different suite (cases or settings changed): re-run the evals")
        if result is None:
            out.append(GateResult(provider, False, 0.0, None, [*reasons, "no results for this provider"], [], []))
            continue
        production, note = _production(suite, result)
        rate = result.pass_rate
        if rate < suite.settings.min_pass_rate:
            reasons.append(f"pass rate {rate:.1%} below the suite's minimum {suite.settings.min_pass_rate:.1%}")
        base = baseline.providers.get(provider) if baseline else None
        base_name = baseline.version if baseline else ""
        regressions: list[str] = []
        fixed: list[str] = []
        if base is not None:
            before = {c.id: c for c in base.cases}
            for c in result.cases:
                prev = before.get(c.id)
                if prev is None or prev.skipped or c.skipped:
                    continue
                if prev.passed and not c.passed:
                    regressions.append(c.id)
                    if c.adversarial:
                        reasons.append(f"adversarial case {c.id} passed in {base_name} and fails now")
                elif c.passed and not prev.passed:
                    fixed.append(c.id)
            if rate < base.pass_rate - suite.settings.max_regression:
                reasons.append(f"pass rate {rate:.1%} dropped from {base.pass_rate:.1%} in {base_name}")
        out.append(GateResult(provider, not reasons, rate, base.pass_rate if base else None, reasons,
                              regressions, fixed, result.source, production, note))
    return out


def write_approvals(prompts_root: Path, record: RunRecord, results: list[GateResult], *, by: str) -> Path:
    """Record which provider variants of this exact version passed; a failed gate withdraws any
    earlier approval of the version for that provider."""
    path = prompts_root / record.prompt / APPROVALS_FILE
    approvals = read_approvals(path)
    entry = approvals.setdefault(record.version, {})
    for r in results:
        if r.passed:
            entry[r.provider] = {"version_id": record.version_id, "pass_rate": round(r.pass_rate, 4),
                                 "cases": len(record.providers[r.provider].cases), "repeat": record.repeat,
                                 "suite": record.suite_digest[:12], "by": by, "source": r.source,
                                 "production": r.production,
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if r.production_note:
                entry[r.provider]["production_note"] = r.production_note
        else:
            entry.pop(r.provider, None)
    if not entry:
        approvals.pop(record.version)
    header = "# Written by `llmgw eval gate`: provider variants of each version that passed its evals.\n"
    path.write_text(header + yaml.safe_dump(approvals, sort_keys=True))
    return path


def missing_approvals(prompts_root: Path, name: str, version_id: str, route_providers: list[str],
                      label: str = "") -> list[str]:
    """The providers of the route without a passing eval of this exact content (for the
    ``production`` label: one that counts towards production). Only a gated prompt (one with
    approvals) needs them: a label may point at it only when this is empty."""
    pv = Registry.load(prompts_root).get(name, version_id)
    if pv.approved is None:
        return []
    return [p for p in route_providers if p not in pv.approved_for(label)]
