"""Drift statistics as pure functions on embedding matrices (rows = inputs). No Faust here."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["centroid", "centroid_cosine_distance", "mean_max_similarity"]

Matrix = NDArray[np.float32]


def _unit(v: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def centroid(x: Matrix) -> NDArray[np.float32]:
    """Unit-length mean direction of the rows."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("centroid needs a non-empty 2-D matrix")
    return _unit(x.mean(axis=0))


def centroid_cosine_distance(reference: Matrix, window: Matrix) -> float:
    """1 - cos(reference centroid, window centroid): 0 for the same topic mix, larger as it moves."""
    return float(1.0 - np.dot(centroid(reference), centroid(window)))


def mean_max_similarity(reference: Matrix, window: Matrix) -> float:
    """Average over window rows of the cosine similarity to the nearest reference row: low values
    mean inputs unlike anything in the reference (novelty)."""
    ref = reference / np.clip(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12, None)
    win = window / np.clip(np.linalg.norm(window, axis=1, keepdims=True), 1e-12, None)
    return float((win @ ref.T).max(axis=1).mean())
