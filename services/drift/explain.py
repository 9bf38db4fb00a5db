"""What an incident says about the shift: effect sizes, the clusters that moved (with keywords and
redacted examples), and a 2-D projection for the report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from llmgw.services.drift.model import Matrix, Model
from llmgw.services.drift.naming import NewGroup
from llmgw.services.drift.stats import assign, domain_auc, g_test, keywords, nearest_distances

__all__ = ["explain", "projection"]


def explain(model: Model, win: Matrix, texts: list[str], *, examples: int, redact: Callable[[str], str], seed: int,
            novel_first: bool = False, new: tuple[NewGroup, list[str]] | None = None
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Effect sizes and the clusters that moved most. First, when the detector found one (``new``:
    the group and the recent inputs its members index, see ``naming``), the new topic itself
    (``cell: "new"``), named by its own words and examples; then the reference's cells (a novelty
    incident leads with the novel cell: that is what its detector measured)."""
    cells = model.cells
    labels = assign(cells, win)
    dists = nearest_distances(cells, win)
    counts = np.bincount(labels, minlength=cells.k + 1)
    _, _, contrib = g_test(cells.reference_counts, counts)
    ref_share = cells.reference_counts / max(1, cells.reference_counts.sum())
    cur_share = counts / max(1, counts.sum())
    auc, lo, hi = domain_auc(model.fit, win, seed=seed)
    effect = {"novelty_share": {"reference": round(float(ref_share[cells.k]), 4),
                                "current": round(float(cur_share[cells.k]), 4)},
              "mmd2": round(model.mmd.mmd2(win), 6),
              "domain_auc": {"auc": auc, "ci95": [lo, hi]}}
    clusters = []
    for c in sorted(range(cells.k + 1), key=lambda c: (not (novel_first and c == cells.k), -contrib[c]))[:3]:
        if contrib[c] <= 0:
            continue
        # Examples: a novel cell's most novel inputs, a known cell's most typical ones.
        order = sorted((i for i in range(len(texts)) if labels[i] == c),
                       key=lambda i: -dists[i] if c == cells.k else dists[i])
        mine = [texts[i] for i in order]
        # The novel cell also holds the few ordinary inputs just past the radius: describe it
        # by its more novel half. Repeated texts (a session asking again) count once.
        described = list(dict.fromkeys(mine[: max(5, len(mine) // 2)] if c == cells.k else mine))
        ref_texts = [t for t, lab in zip(model.fit_texts, model.fit_labels, strict=True) if lab != c]
        clusters.append({
            "cell": "novel" if c == cells.k else f"c{c}",
            "reference_share": round(float(ref_share[c]), 4), "current_share": round(float(cur_share[c]), 4),
            "lift": round(float(cur_share[c] / max(ref_share[c], 0.5 / max(1, cells.reference_counts.sum()))), 2),
            "keywords": keywords(described, ref_texts),
            "examples": [redact(t)[:300] for t in mine[: examples]],
        })
    if new is not None:
        group, pool_texts = new
        members = [pool_texts[i] for i in group.members]
        in_group = set(members)
        share = sum(t in in_group for t in pool_texts) / len(pool_texts)
        n_ref = max(1, cells.reference_counts.sum())
        clusters.insert(0, {
            "cell": "new", "basis": group.basis, "size": len(members), "of": len(pool_texts),
            "reference_share": round(group.reference_share, 4), "current_share": round(share, 4),
            "lift": round(share / max(group.reference_share, 0.5 / n_ref), 2),
            "keywords": keywords(members, model.fit_texts),
            "examples": [redact(t)[:300] for t in members[:examples]],
        })
    return effect, clusters


def projection(reference: Matrix, window: Matrix, max_points: int = 120) -> dict[str, list[list[float]]]:
    """Both samples on the reference's first two principal components (for the incident report)."""
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axes = vt[:2].T

    def pts(x: Matrix) -> list[list[float]]:
        return [[round(float(a), 4), round(float(b), 4)] for a, b in ((x[:max_points] - mean) @ axes)]

    return {"reference": pts(reference), "current": pts(window)}
