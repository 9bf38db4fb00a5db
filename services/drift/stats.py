"""Drift statistics as pure functions on embedding matrices (rows = inputs). No Faust here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Cells",
    "assign",
    "centroid",
    "centroid_cosine_distance",
    "fit_cells",
    "g_test",
    "guards",
    "mean_max_similarity",
    "mmd2",
]

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


# ---- topic mix / novelty: k-means cells fitted on the reference, plus a novelty cell ----


@dataclass(frozen=True)
class Cells:
    """Reference clusters and the novelty radius (an input farther than ``radius`` from every
    centroid falls in the novelty cell, index ``k``)."""

    centroids: NDArray[np.float32]
    radius: float
    reference_counts: NDArray[np.int64]

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def fit_cells(reference: Matrix, *, k: int, seed: int = 0, novelty_quantile: float = 99.5) -> Cells:
    """k-means on the reference (deterministic for a seed: cluster ids are stable across re-fits
    of the same reference); the radius is the reference's own ``novelty_quantile`` distance."""
    from sklearn.cluster import KMeans

    # Repeated inputs are common (the same question many times): never ask for more clusters
    # than there are distinct points.
    k = max(1, min(k, len(np.unique(reference.round(6), axis=0))))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(reference)
    # Order clusters by size, then by centroid: ids do not depend on k-means' internal order.
    sizes = np.bincount(km.labels_, minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], tuple(np.round(km.cluster_centers_[c], 6))))
    centroids = km.cluster_centers_[order].astype(np.float32)
    labels, dists = _nearest(reference, centroids)
    radius = float(np.percentile(dists, novelty_quantile))
    return Cells(centroids, radius, np.bincount(labels, minlength=k + 1).astype(np.int64))


def _nearest(x: Matrix, centroids: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    d = np.linalg.norm(x[:, None, :] - centroids[None, :, :], axis=2)
    return d.argmin(axis=1), d.min(axis=1)


def assign(cells: Cells, x: Matrix) -> NDArray[np.int64]:
    """Cell per row: 0..k-1, or k (novelty) when farther than the radius from every centroid."""
    labels, dists = _nearest(x, cells.centroids)
    labels = labels.copy()
    labels[dists > cells.radius] = cells.k
    return labels


def g_test(
    reference_counts: NDArray[np.int64], window_counts: NDArray[np.int64]
) -> tuple[float, float, NDArray[np.float64]]:
    """G-statistic of the window's cell counts against the reference mix (add-half smoothing, so
    a cell the reference never saw — novelty — can still be tested), its chi-square p-value, and
    each cell's signed contribution (positive: the window has more of it than expected)."""
    from scipy.stats import chi2

    ref = reference_counts.astype(np.float64) + 0.5
    expected_share = ref / ref.sum()
    n = float(window_counts.sum())
    expected = expected_share * n
    observed = window_counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(observed > 0, observed * np.log(observed / expected), 0.0)
    g = float(2.0 * terms.sum())
    dof = max(1, len(window_counts) - 1)
    contributions = 2.0 * terms
    return g, float(chi2.sf(g, dof)), contributions


# ---- distribution: MMD² with an RBF kernel at several bandwidths ----


def mmd2(x: Matrix, y: Matrix, bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD² between two samples, summed over RBF bandwidths (in units of the median
    pairwise distance of the pooled sample): sensitive to diffuse shifts within known topics."""
    if len(x) < 2 or len(y) < 2:
        return 0.0
    pooled = np.vstack([x, y]).astype(np.float64)
    # |a-b|² = |a|² + |b|² - 2a·b: an (n, n) matrix, never the (n, n, dim) difference tensor.
    norms = np.sum(pooled * pooled, axis=1)
    sq = np.maximum(norms[:, None] + norms[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    median = float(np.median(sq[np.triu_indices(len(pooled), 1)])) or 1.0
    n = len(x)
    total = 0.0
    for bw in bandwidths:
        k = np.exp(-sq / (2 * bw * bw * median))
        kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
        m, w = n, len(y)
        total += ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (w * (w - 1))
                  - 2 * kxy.mean())
    return float(total)


# ---- cheap guards on the raw text: length, empty/short share, duplicates, script ----


def _text_profile(texts: list[str]) -> dict[str, float]:
    n = max(1, len(texts))
    return {
        "mean_length": sum(len(t) for t in texts) / n,
        "short_share": sum(len(t.strip()) < 3 for t in texts) / n,
        "duplicate_share": (len(texts) - len(set(texts))) / n,
        # A crude language/script signal that needs no model: the share of non-ASCII characters.
        "non_ascii_share": sum(sum(ord(c) > 127 for c in t) for t in texts) / max(1, sum(len(t) for t in texts)),
    }


def guards(reference_texts: list[str], window_texts: list[str]) -> dict[str, dict[str, float]]:
    """Reference vs current value of each guard, and their difference (ratio for the length)."""
    ref, cur = _text_profile(reference_texts), _text_profile(window_texts)
    out = {}
    for name in ref:
        delta = cur[name] / ref[name] if name == "mean_length" and ref[name] else cur[name] - ref[name]
        out[name] = {"reference": round(ref[name], 4), "current": round(cur[name], 4), "delta": round(delta, 4)}
    return out
