"""Reports: JSON for machines, one self-contained HTML page for people."""

from __future__ import annotations

import json
from dataclasses import asdict
from html import escape
from typing import Any

from llmgw.evals.results import CaseResult, GateResult, ProviderResult, RunRecord

__all__ = ["html_report", "json_report", "matrix_lines"]


def json_report(records: list[RunRecord], baseline: RunRecord | None, gates: dict[str, list[GateResult]]) -> str:
    def summary(r: RunRecord) -> dict[str, Any]:
        return {"version": r.version, "version_id": r.version_id, "mode": r.mode, "repeat": r.repeat,
                "providers": {p: {"model": res.model, "pass_rate": round(res.pass_rate, 4),
                                  "source": res.source, "sources": res.sources, "from_model": res.from_models,
                                  "pass_hat": {str(k): round(v, 4) for k, v in res.pass_hat().items()},
                                  "cases": len(res.cases), "failed": [c.id for c in res.cases if not c.passed],
                                  "flaky": [c.id for c in res.cases if c.flaky],
                                  "passes": {c.id: [c.passes, len(c.tries)] for c in res.cases} if r.repeat > 1
                                  else {},
                                  "tags": {t: {"passed": a, "total": n} for t, (a, n) in res.tag_rates().items()}}
                              for p, res in r.providers.items()}}

    return json.dumps({"prompt": records[0].prompt if records else "",
                       "baseline": baseline.version if baseline else None,
                       "versions": [summary(r) for r in records],
                       "gate": {v: [asdict(g) for g in gs] for v, gs in gates.items()}}, indent=1, sort_keys=True)


def matrix_lines(records: list[RunRecord]) -> list[str]:
    providers = sorted({p for r in records for p in r.providers})
    lines = [f"{'version':<24}" + "".join(f"{p:>22}" for p in providers)]
    for r in records:
        cells = []
        for p in providers:
            res = r.providers.get(p)
            if res is None:
                cells.append(f"{'-':>22}")
                continue
            flaky = sum(c.flaky for c in res.cases)
            cell = f"{res.pass_rate:.0%} ({sum(c.passed for c in res.cases)}/{len(res.scored())})"
            cells.append(f"{cell + (f' {flaky} flaky' if flaky else ''):>22}")
        lines.append(f"{r.prompt + '@' + r.version:<24}" + "".join(cells))
        # What answered, so a pass rate is never read as a model's when a stand-in earned it.
        kinds = [_kind(r.providers[p].source) if p in r.providers else "-" for p in providers]
        lines.append(f"{'  source':<24}" + "".join(f"{k:>22}" for k in kinds))
    return lines


def _kind(source: str) -> str:
    return source.split(":", 1)[0] if source.startswith(("model:", "reference:", "mixed:")) else source


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}th{background:#f4f4f4}
.ok{background:#e6f4e6}.bad{background:#fbe3e3}.warn{background:#fff4d6}pre{white-space:pre-wrap;max-width:60em;margin:0}
h2{margin-top:1.5em}.small{color:#666;font-size:12px}"""


def _rate_cell(rate: float, ok: bool | None = None, source: str = "") -> str:
    cls = "ok" if ok or (ok is None and rate >= 0.9) else "bad" if ok is False or rate < 0.7 else "warn"
    where = f"<div class=small>{escape(source)}</div>" if source else ""
    return f'<td class="{cls}">{rate:.1%}{where}</td>'


def _case_rows(cases: list[CaseResult], before: dict[str, CaseResult]) -> str:
    rows = []
    for c in cases:
        last = c.tries[-1]
        failed = "; ".join(f"{v['type']}: {v['reason']}" for v in last.verdicts if v["passed"] is False)
        prev = before.get(c.id)
        was = "" if prev is None else ("passed" if prev.passed else "failed")
        rows.append(f"<tr><td>{escape(c.id)}<div class=small>{escape(', '.join(c.tags))}</div></td>"
                    f"<td><pre>{escape(json.dumps(c.vars, ensure_ascii=False)[:1500])}</pre></td>"
                    f"<td><pre>{escape((last.output or last.error)[:1500])}</pre></td>"
                    f"<td>{escape(failed)}</td><td>{c.passes}/{len(c.tries)}</td><td>{was}</td></tr>")
    return "".join(rows)


def _repeats(res: ProviderResult, repeat: int) -> str:
    """pass^k for k = 1..repeats: how often k tries of a case in a row all pass."""
    if repeat < 2:
        return ""
    hats = res.pass_hat()
    return ("<table><tr><th>k</th>" + "".join(f"<th>{k}</th>" for k in hats) + "</tr><tr><td>pass^k</td>"
            + "".join(_rate_cell(v) for v in hats.values()) + "</tr></table>")


def html_report(records: list[RunRecord], baseline: RunRecord | None, gates: dict[str, list[GateResult]]) -> str:
    prompt = records[0].prompt if records else ""
    providers = sorted({p for r in records for p in r.providers})
    parts = [f"<!doctype html><meta charset=utf-8><title>evals: {escape(prompt)}</title><style>{_CSS}</style>",
             f"<h1>Evals: {escape(prompt)}</h1>",
             f"<p class=small>baseline: {escape(baseline.version_id) if baseline else 'none'}</p>",
             "<h2>Version x provider</h2><table><tr><th>version</th>"
             + "".join(f"<th>{escape(p)}</th>" for p in providers) + "<th>gate</th></tr>"]
    for r in ([baseline] if baseline and baseline.version not in {x.version for x in records} else []) + records:
        row = f"<tr><td>{escape(r.version_id)}</td>"
        for p in providers:
            res = r.providers.get(p)
            row += _rate_cell(res.pass_rate, source=res.source) if res else "<td>-</td>"
        verdicts = gates.get(r.version)
        if verdicts is None:
            row += "<td>baseline</td>" if baseline and r.version == baseline.version else "<td>-</td>"
        else:
            ok = all(g.passed for g in verdicts)
            why = "<br>".join(escape(f"{g.provider}: {x}") for g in verdicts
                              for x in [*g.reasons, *([] if g.production else ["does not count towards production"])])
            row += f'<td class="{"ok" if ok else "bad"}">{"PASS" if ok else "FAIL"}<div class=small>{why}</div></td>'
        parts.append(row + "</tr>")
    parts.append("</table>")
    for r in records:
        for p, res in sorted(r.providers.items()):
            base = baseline.providers.get(p) if baseline else None
            before = {c.id: c for c in base.cases} if base else {}
            standing = "recorded from a model" if res.from_models else "not from a model: a stand-in's score"
            parts.append(f"<h2>{escape(r.version)} on {escape(p)} ({escape(res.model)})</h2>"
                         f"<p>source: <b>{escape(res.source)}</b> ({standing})</p>"
                         + _repeats(res, r.repeat) +
                         "<table><tr><th>tag</th><th>passed</th><th>rate</th><th>baseline</th></tr>")
            base_tags = base.tag_rates() if base else {}
            for tag, (a, n) in res.tag_rates().items():
                b = base_tags.get(tag)
                parts.append(f"<tr><td>{escape(tag)}</td><td>{a}/{n}</td>{_rate_cell(a / n)}"
                             f"<td>{f'{b[0]}/{b[1]}' if b else '-'}</td></tr>")
            parts.append("</table>")
            flaky = [c for c in res.cases if c.flaky]
            if flaky:
                parts.append("<h3>Flaky cases (outcome differs across repeats)</h3><table><tr><th>case</th>"
                             "<th>passes</th><th>outputs</th></tr>" + "".join(
                                 f"<tr><td>{escape(c.id)}</td><td>{c.passes}/{len(c.tries)}</td><td>"
                                 + "<hr>".join(f"<pre>{escape((t.output or t.error)[:500])}</pre>"
                                               for t in c.tries) + "</td></tr>" for c in flaky) + "</table>")
            failing = [c for c in res.cases if not c.passed and not c.skipped]
            changed = [c for c in res.cases if c.id in before and before[c.id].passed != c.passed]
            if changed:
                parts.append("<h3>Changed against the baseline</h3><table><tr><th>case</th><th>input</th>"
                             "<th>output</th><th>failed checks</th><th>passes</th><th>baseline</th></tr>"
                             + _case_rows(changed, before) + "</table>")
            if failing:
                parts.append("<h3>Failing cases</h3><table><tr><th>case</th><th>input</th><th>output</th>"
                             "<th>failed checks</th><th>passes</th><th>baseline</th></tr>"
                             + _case_rows(failing, before) + "</table>")
    return "\n".join(parts)
