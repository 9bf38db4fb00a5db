"""One HTML page per drift incident, charts as inline SVG (no plotting library, no network):
reference vs current inputs on two principal components, cluster shares, the statistic over time."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["harvest_command", "incident_page"]

_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.small{color:#666;font-size:12px}svg{background:#fafafa;border:1px solid #ddd;margin:.5em 0}"""


def _scale(values: list[float], lo_px: float, hi_px: float) -> tuple[float, float]:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = (hi - lo) or 1.0
    return lo, (hi_px - lo_px) / span


def _scatter(projection: dict[str, list[list[float]]], w: int = 420, h: int = 320) -> str:
    pts = projection.get("reference", []) + projection.get("current", [])
    xlo, xs = _scale([p[0] for p in pts], 10, w - 10)
    ylo, ys = _scale([p[1] for p in pts], 10, h - 10)
    dots = [f'<circle cx="{10 + (x - xlo) * xs:.1f}" cy="{h - 10 - (y - ylo) * ys:.1f}" r="3" fill="{c}" '
            f'fill-opacity="{o}"/>'
            for key, c, o in (("reference", "#888", 0.5), ("current", "#d33", 0.8)) for x, y in projection.get(key, [])]
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="projection">{"".join(dots)}</svg>'
            '<div class=small>grey: reference, red: current window '
            '(first two principal components of the reference)</div>')


def _bars(clusters: list[dict[str, Any]], w: int = 420) -> str:
    rows, y = [], 10
    for c in clusters:
        for key, color in (("reference_share", "#888"), ("current_share", "#d33")):
            rows.append(f'<rect x="110" y="{y}" width="{c[key] * (w - 120):.1f}" height="12" fill="{color}"/>')
            y += 14
        rows.append(f'<text x="5" y="{y - 10}" font-size="12">{escape(c["cell"])}</text>')
        y += 10
    return f'<svg width="{w}" height="{y}" role="img" aria-label="cluster shares">{"".join(rows)}</svg>'


def _line(series: list[tuple[float, float]], threshold: float, w: int = 640, h: int = 200) -> str:
    if not series:
        return "<p class=small>no window metrics found for this segment and detector</p>"
    xlo, xs = _scale([t for t, _ in series], 10, w - 10)
    values = [v for _, v in series] + [threshold]
    ylo, ys = _scale(values, 10, h - 10)
    path = " ".join(f"{'M' if i == 0 else 'L'}{10 + (t - xlo) * xs:.1f},{h - 10 - (v - ylo) * ys:.1f}"
                    for i, (t, v) in enumerate(series))
    ty = h - 10 - (threshold - ylo) * ys
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="statistic over time">'
            f'<line x1="0" x2="{w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#d33" stroke-dasharray="4"/>'
            f'<path d="{path}" fill="none" stroke="#226"/></svg>'
            '<div class=small>statistic per window; dashed: calibrated threshold</div>')


def incident_page(history: list[dict[str, Any]], windows: list[dict[str, Any]], *, bootstrap: str = "<bootstrap>",
                  segment_by: str = "") -> str:
    """``history``: the incident's records (OPEN first); ``windows``: the segment's window metrics.
    The page ends with the command that turns the incident's inputs into candidate eval cases."""
    first = history[0]
    last = history[-1]
    explained = next((r for r in reversed(history) if r.get("clusters")), first)
    detector = first["detector"]
    series = [(w["time"], w["detectors"][detector]["value"]) for w in windows
              if detector in w.get("detectors", {})]
    effect = explained.get("effect", {})
    auc = effect.get("domain_auc", {})
    rows = "".join(
        f"<tr><td>{escape(c['cell'])}</td><td>{c['reference_share']:.1%}</td><td>{c['current_share']:.1%}</td>"
        f"<td>{c['lift']}</td><td>{escape(', '.join(c['keywords']))}</td>"
        f"<td>{'<br>'.join(escape(e) for e in c['examples'])}</td></tr>" for c in explained.get("clusters", []))
    guards = "".join(f"<tr><td>{escape(k)}</td><td>{v['reference']}</td><td>{v['current']}</td>"
                     f"<td>{v['delta']}</td></tr>" for k, v in explained.get("guards", {}).items())
    return "\n".join([
        f"<!doctype html><meta charset=utf-8><title>drift incident {escape(first['incident_id'])}</title>"
        f"<style>{_CSS}</style>",
        f"<h1>Drift incident {escape(first['incident_id'])}: {escape(last['state'])}</h1>",
        f"<p>segment <b>{escape(first['segment'])}</b>, detector <b>{escape(detector)}</b> "
        f"(window {first['window_size']}), statistic {first['statistic']:.4g} &gt; threshold {first['threshold']:.4g}, "
        f"confirming p = {first['p_value']}; reference {escape(first['reference']['id'])} "
        f"({escape(first['reference']['status'])}), calibration {escape(first['calibration_id'])}, "
        f"sampling rate {first['sampling_rate']:.0%}</p>",
        f"<p>effect: novelty share {effect.get('novelty_share', {}).get('reference', 0):.1%} → "
        f"{effect.get('novelty_share', {}).get('current', 0):.1%}, MMD² {effect.get('mmd2', 0):.4g}, "
        f"domain-classifier AUC {auc.get('auc', 0.5):.2f} (95 % CI {auc.get('ci95', [0, 1])[0]:.2f} to "
        f"{auc.get('ci95', [0, 1])[1]:.2f})</p>",
        "<h2>Statistic over time</h2>", _line(series, first["threshold"]),
        "<h2>What changed</h2>",
        "<table><tr><th>cluster</th><th>reference</th><th>current</th><th>lift</th><th>keywords</th>"
        f"<th>examples (redacted)</th></tr>{rows}</table>",
        _bars(explained.get("clusters", [])),
        "<h2>Reference vs current</h2>", _scatter(explained.get("projection", {})),
        f"<h2>Guards</h2><table><tr><th>guard</th><th>reference</th><th>current</th><th>delta</th></tr>{guards}</table>",
        "<h2>History</h2><table><tr><th>state</th><th>time</th><th>statistic</th><th>offsets</th></tr>"
        + "".join(f"<tr><td>{r['state']}</td><td>{r['time']:.0f}</td><td>{r['statistic']:.4g}</td>"
                  f"<td>{escape(str(r['window'].get('offsets')))}</td></tr>" for r in history) + "</table>",
        "<h2 id=harvest>Turn these inputs into eval cases</h2>"
        "<p>The inputs behind this incident are what the prompt's eval suite never imagined. This writes "
        "the novel cluster's examples and their nearest members, deduplicated against the suite, to "
        "<code>evals/&lt;prompt&gt;/cases/candidates.yaml</code> for review (docs/evals.md, \"Drift to evals\"):</p>"
        f"<pre>{escape(harvest_command(first['incident_id'], bootstrap, segment_by))}</pre>",
    ])


def harvest_command(incident_id: str, bootstrap: str, segment_by: str = "") -> str:
    return (f"llmgw eval harvest --bootstrap {bootstrap} --incident {incident_id}"
            + (f" --segment-by {segment_by}" if segment_by else ""))
