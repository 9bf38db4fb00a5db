"""Per-segment drift state: a provisional reference from the first inputs, then one statistic per
window. The reference is never updated by drift (it would absorb the very shift it should flag)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmgw.services.drift.stats import (
    Cells,
    assign,
    centroid_cosine_distance,
    fit_cells,
    g_test,
    guards,
    mean_max_similarity,
    mmd2,
)

__all__ = ["DRIFT_SCHEMA_VERSION", "DriftDetector", "SegmentState"]

DRIFT_SCHEMA_VERSION = 1


@dataclass
class SegmentState:
    reference: list[NDArray[np.float32]] = field(default_factory=list)
    reference_texts: list[str] = field(default_factory=list)
    reference_id: str = ""
    windows: int = 0
    cells: Cells | None = None
    # The reference as one matrix, stacked once when it is complete (it never changes after).
    matrix: NDArray[np.float32] | None = None


class DriftDetector:
    def __init__(self, *, reference_size: int, alpha: float = 0.001, seed: int = 0) -> None:
        self._reference_size = reference_size
        # Per-window significance of the topic-mix test. Provisional: not yet calibrated for
        # session-correlated traffic (see docs: calibration is the next step of the drift issue).
        self._alpha = alpha
        self._seed = seed
        self._segments: dict[str, SegmentState] = {}

    def observe(
        self, segment: str, vectors: NDArray[np.float32], texts: list[str], request_ids: list[str]
    ) -> dict[str, Any] | None:
        """Feed one window of a segment; returns the drift record, or None while the reference fills."""
        state = self._segments.setdefault(segment, SegmentState())
        rows = list(vectors)
        if len(state.reference) < self._reference_size:
            take = self._reference_size - len(state.reference)
            state.reference.extend(rows[:take])
            state.reference_texts.extend(texts[:take])
            rows, texts, request_ids = rows[take:], texts[take:], request_ids[take:]
            if len(state.reference) >= self._reference_size and not state.reference_id:
                state.reference_id = f"{segment}@{uuid.uuid4().hex[:8]}"
                state.matrix = np.stack(state.reference)
                state.cells = fit_cells(state.matrix, k=max(1, min(8, len(state.matrix) // 10)), seed=self._seed)
            if not rows:
                return None
        if state.matrix is None or state.cells is None:
            return None
        ref = state.matrix
        win = np.stack(rows)
        state.windows += 1
        topic = self._topic_mix(state.cells, win, texts)
        return {
            "schema_version": DRIFT_SCHEMA_VERSION,
            "segment": segment,
            "reference_id": state.reference_id,
            "provisional": True,
            "window": {"index": state.windows, "n": len(rows), "request_ids": request_ids[:20]},
            "statistics": {
                "centroid_cosine_distance": round(centroid_cosine_distance(ref, win), 6),
                "mean_max_similarity": round(mean_max_similarity(ref, win), 6),
                "g_statistic": round(topic["g"], 4),
                "p_value": topic["p"],
                "novelty_share": round(topic["novelty_share"], 4),
                "mmd2": round(mmd2(ref, win), 6),
            },
            "drift": topic["p"] < self._alpha,
            "cells": topic["cells"],
            "guards": guards(state.reference_texts, texts),
            "examples": texts[:3],
            "time": time.time(),
        }

    @staticmethod
    def _topic_mix(cells: Cells, win: NDArray[np.float32], texts: list[str]) -> dict[str, Any]:
        """The G-test of the window's cell mix, and the cells that moved most, with examples."""
        labels = assign(cells, win)
        counts = np.bincount(labels, minlength=cells.k + 1)
        g, p, contrib = g_test(cells.reference_counts, counts)
        ref_share = cells.reference_counts / max(1, cells.reference_counts.sum())
        cur_share = counts / max(1, counts.sum())
        moved = sorted(range(cells.k + 1), key=lambda c: -contrib[c])[:3]
        return {
            "g": g,
            "p": float(f"{p:.6g}"),
            "novelty_share": float(cur_share[cells.k]),
            "cells": [
                {
                    "cell": "novel" if c == cells.k else f"c{c}",
                    "reference_share": round(float(ref_share[c]), 4),
                    "current_share": round(float(cur_share[c]), 4),
                    "contribution": round(float(contrib[c]), 4),
                    "examples": [t for t, lab in zip(texts, labels, strict=True) if lab == c][:3],
                }
                for c in moved
                if contrib[c] > 0
            ],
        }
