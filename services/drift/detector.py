"""Per-segment drift state: a provisional reference from the first inputs, then one statistic per
window. The reference is never updated by drift (it would absorb the very shift it should flag)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmgw.services.drift.stats import centroid_cosine_distance, mean_max_similarity

__all__ = ["DRIFT_SCHEMA_VERSION", "DriftDetector", "SegmentState"]

DRIFT_SCHEMA_VERSION = 1


@dataclass
class SegmentState:
    reference: list[NDArray[np.float32]] = field(default_factory=list)
    reference_id: str = ""
    windows: int = 0


class DriftDetector:
    def __init__(self, *, reference_size: int) -> None:
        self._reference_size = reference_size
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
            rows, texts, request_ids = rows[take:], texts[take:], request_ids[take:]
            if len(state.reference) >= self._reference_size and not state.reference_id:
                state.reference_id = f"{segment}@{uuid.uuid4().hex[:8]}"
            if not rows:
                return None
        if not state.reference_id:
            return None
        ref = np.stack(state.reference)
        win = np.stack(rows)
        state.windows += 1
        return {
            "schema_version": DRIFT_SCHEMA_VERSION,
            "segment": segment,
            "reference_id": state.reference_id,
            "provisional": True,
            "window": {"index": state.windows, "n": len(rows), "request_ids": request_ids[:20]},
            "statistics": {
                "centroid_cosine_distance": round(centroid_cosine_distance(ref, win), 6),
                "mean_max_similarity": round(mean_max_similarity(ref, win), 6),
            },
            "examples": texts[:3],
            "time": time.time(),
        }
