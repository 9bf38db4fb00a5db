"""Drift statistics as pure functions on embedding matrices (rows = inputs). No Faust here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Cells",
    "MmdReference",
    "assign",
    "centroid",
    "centroid_cosine_distance",
    "domain_auc",
    "fit_cells",
    "g_batch",
    "g_test",
    "guards",
    "keywords",
    "mean_max_similarity",
    "mmd2",
    "nearest_distances",
    "nearest_labels",
    "permutation_pvalue",
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


def top_k_mean(sim: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Row-wise mean of the ``k`` largest entries (the similarity to the ``k`` nearest)."""
    k = max(1, min(k, sim.shape[1]))
    return np.partition(sim, sim.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


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
    # Per cell; the novelty cell gets the share its radius defines (1 - quantile), not zero: the
    # reference would put that share of fresh inputs there too.
    reference_counts: NDArray[np.float64]

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def fit_cells(reference: Matrix, *, k: int, seed: int = 0, novelty_quantile: float = 99.5,
              holdout: Matrix | None = None) -> Cells:
    """k-means on the reference (deterministic for a seed: cluster ids are stable across re-fits
    of the same reference). The novelty radius is the ``novelty_quantile`` distance of the
    ``holdout`` inputs (out of sample: k-means pulls centroids toward its own points, so an
    in-sample radius is too tight for fresh inputs), else of the reference itself."""
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
    radius_from = _nearest(holdout, centroids)[1] if holdout is not None and len(holdout) else dists
    radius = float(np.percentile(radius_from, novelty_quantile))
    counts = np.bincount(labels, minlength=k + 1).astype(np.float64)
    counts[k] = len(reference) * (1 - novelty_quantile / 100)
    return Cells(centroids, radius, counts)


def _nearest(x: Matrix, centroids: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    d = np.linalg.norm(x[:, None, :] - centroids[None, :, :], axis=2)
    return d.argmin(axis=1), d.min(axis=1)


def nearest_labels(cells: Cells, x: Matrix) -> NDArray[np.int64]:
    """Each row's nearest centroid, novelty radius ignored."""
    return _nearest(x, cells.centroids)[0]


def nearest_distances(cells: Cells, x: Matrix) -> NDArray[np.float32]:
    """Each row's distance to its nearest centroid (how unlike the reference it is)."""
    return _nearest(x, cells.centroids)[1]


def assign(cells: Cells, x: Matrix) -> NDArray[np.int64]:
    """Cell per row: 0..k-1, or k (novelty) when farther than the radius from every centroid."""
    labels, dists = _nearest(x, cells.centroids)
    labels = labels.copy()
    labels[dists > cells.radius] = cells.k
    return labels


def g_test(
    reference_counts: NDArray[np.float64] | NDArray[np.int64], window_counts: NDArray[np.int64]
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


# ---- fixed-bandwidth MMD² against one reference, batched for calibration ----


def _sq_dists(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.maximum(np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T, 0.0)


@dataclass(frozen=True)
class MmdReference:
    """A reference sample with its kernel bandwidths fixed (multiples of the reference's median
    pairwise squared distance), so live windows and simulated null windows see the same kernel."""

    matrix: NDArray[np.float64]
    median_sq: float
    bandwidths: tuple[float, ...]
    # Mean off-diagonal kernel value within the reference: the constant term of MMD².
    k_rr: float

    @classmethod
    def of(cls, reference: Matrix, bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0)) -> MmdReference:
        r = reference.astype(np.float64)
        sq = _sq_dists(r, r)
        median = float(np.median(sq[np.triu_indices(len(r), 1)])) if len(r) > 1 else 1.0
        ref = cls(r, median or 1.0, bandwidths, 0.0)
        k = ref.kernel(sq)
        n = len(r)
        return cls(r, ref.median_sq, bandwidths, float((k.sum() - np.trace(k)) / max(1, n * (n - 1))))

    def kernel(self, sq: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(sum(np.exp(-sq / (2 * bw * bw * self.median_sq)) for bw in self.bandwidths))

    def mmd2(self, window: Matrix) -> float:
        w = window.astype(np.float64)
        if len(w) < 2:
            return 0.0
        kww = self.kernel(_sq_dists(w, w))
        m = len(w)
        return float((kww.sum() - np.trace(kww)) / (m * (m - 1)) + self.k_rr
                     - 2 * self.kernel(_sq_dists(w, self.matrix)).mean())

    def mmd2_batch(self, pool: Matrix, windows: NDArray[np.int64], chunk: int = 64,
                   replicates: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        """MMD² of many windows given as index rows into ``pool`` (kernels computed once).

        ``replicates`` (rows of indices into the reference, e.g. bootstrap resamples) stand in for
        the reference in turn, window i against replicate i mod R: the null then includes the
        reference's own sampling error, which a live window meets too."""
        p = pool.astype(np.float64)
        kpp = self.kernel(_sq_dists(p, p))
        kpf = self.kernel(_sq_dists(p, self.matrix))
        if replicates is None:
            kpr_rows = kpf.mean(axis=1)[None, :]
            k_rr = np.array([self.k_rr])
        else:
            kff = self.kernel(_sq_dists(self.matrix, self.matrix))
            kpr_rows = np.stack([kpf[:, r].mean(axis=1) for r in replicates])
            k_rr = np.array([_mean_distinct(kff, r) for r in replicates])
        rep = np.arange(len(windows)) % len(k_rr)
        out = np.empty(len(windows))
        for s in range(0, len(windows), chunk):
            idx = windows[s:s + chunk]
            block = kpp[idx[:, :, None], idx[:, None, :]]
            # A bootstrap window can hold the same pool event twice; live windows never hold a
            # pair of identical inputs, so such pairs are left out (else the null is inflated).
            distinct = idx[:, :, None] != idx[:, None, :]
            within = (block * distinct).sum(axis=(1, 2)) / np.maximum(distinct.sum(axis=(1, 2)), 1)
            r = rep[s:s + chunk]
            cross = np.take_along_axis(kpr_rows[r], idx, axis=1).mean(axis=1)
            out[s:s + chunk] = within + k_rr[r] - 2 * cross
        return out


def _mean_distinct(k: NDArray[np.float64], idx: NDArray[np.int64]) -> float:
    """Mean kernel value over pairs of a resample that are not the same original input."""
    block = k[idx[:, None], idx[None, :]]
    distinct = idx[:, None] != idx[None, :]
    return float((block * distinct).sum() / max(1, distinct.sum()))


def g_batch(reference_counts: NDArray[np.float64], window_counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """G-statistic of many windows (rows of cell counts) at once, as ``g_test`` computes it."""
    ref = reference_counts.astype(np.float64) + 0.5
    share = ref / ref.sum()
    obs = window_counts.astype(np.float64)
    expected = share[None, :] * obs.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(obs > 0, obs * np.log(obs / expected), 0.0)
    return np.asarray(2.0 * terms.sum(axis=1))


# ---- effect sizes and explanations ----


def domain_auc(reference: Matrix, window: Matrix, seed: int = 0) -> tuple[float, float, float]:
    """How well a classifier tells window inputs from reference inputs: cross-validated ROC AUC
    of a logistic regression (0.5 = indistinguishable), with a 95 % Hanley-McNeil interval."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([reference, window])
    y = np.r_[np.zeros(len(reference)), np.ones(len(window))]
    folds = int(min(5, len(reference), len(window)))
    if folds < 2:
        return 0.5, 0.0, 1.0
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=500, C=1.0), x, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, scores))
    n1, n0 = len(window), len(reference)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    se = float(np.sqrt(max(0.0, auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc))
                       / (n0 * n1)))
    return round(auc, 4), round(max(0.0, auc - 1.96 * se), 4), round(min(1.0, auc + 1.96 * se), 4)


_STOP = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "from", "has", "have", "how", "i", "if",
    "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "please", "so", "that", "the", "their",
    "them", "then", "there", "this", "to", "us", "was", "we", "what", "when", "where", "which", "who", "why", "will",
    "with", "you", "your", "should", "could", "would", "does", "did", "get", "got", "any", "all",
))


def _words(text: str) -> list[str]:
    import re

    return [w for w in re.findall(r"[a-zà-ÿ][a-zà-ÿ'-]{2,}", text.lower()) if w not in _STOP]


def keywords(current: list[str], reference: list[str], top: int = 5) -> list[str]:
    """Words much more frequent in ``current`` than in ``reference`` (smoothed lift x count)."""
    from collections import Counter

    cur = Counter(w for t in current for w in set(_words(t)))
    ref = Counter(w for t in reference for w in set(_words(t)))
    n_cur, n_ref = max(1, len(current)), max(1, len(reference))

    def score(w: str) -> float:
        return (cur[w] / n_cur) / ((ref[w] + 1) / (n_ref + 1)) * np.log1p(cur[w])

    def lift(w: str) -> float:
        return (cur[w] / n_cur) / ((ref[w] + 1) / (n_ref + 1))

    return [w for w in sorted(cur, key=lambda w: (-score(w), w)) if cur[w] >= 2 and lift(w) >= 1.5][:top]


def permutation_pvalue(statistic: Callable[[NDArray[np.int64]], float], n_total: int, n_window: int,
                       observed: float, *, permutations: int, rng: np.random.Generator, block_len: int = 1) -> float:
    """p = (1 + #{permuted >= observed}) / (1 + B): ``statistic`` gets the indices (into the pooled
    reference + window sample, each in arrival order) that play the window in one permutation.

    With ``block_len`` > 1 whole runs of that many consecutive inputs move together (a block
    permutation): on conversational traffic the exchangeable units are sessions, not requests,
    and a window of 100 inputs from a dozen sessions differs from the reference far more than
    100 independent draws would; permuting single inputs would call that a shift."""
    if block_len <= 1:
        hits = sum(statistic(rng.permutation(n_total)[:n_window]) >= observed for _ in range(permutations))
        return (1 + hits) / (1 + permutations)
    n_ref = n_total - n_window
    blocks = [np.arange(i, min(i + block_len, n_ref)) for i in range(0, n_ref, block_len)]
    blocks += [np.arange(i, min(i + block_len, n_total)) for i in range(n_ref, n_total, block_len)]
    sizes = np.array([len(b) for b in blocks])
    hits = 0
    for _ in range(permutations):
        order = rng.permutation(len(blocks))
        enough = int(np.searchsorted(np.cumsum(sizes[order]), n_window)) + 1  # blocks to cover the window
        hits += statistic(np.concatenate([blocks[b] for b in order[:enough]])[:n_window]) >= observed
    return (1 + hits) / (1 + permutations)
