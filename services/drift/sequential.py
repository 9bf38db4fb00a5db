"""Sequential novelty: evidence, input by input, that a share of the traffic is unlike the reference.

A new kind of input arriving as 5 % of traffic barely moves any window statistic: 200 inputs hold
ten of its inputs among ten ordinary outliers. Accumulating evidence per input finds it far sooner
(the window detectors stay for diffuse shifts). Per input:

1. **Score**: one minus the mean cosine similarity to its ``k`` nearest reference inputs (a new
   topic is far from every reference input; a centroid distance blurs that on spread-out topics).
2. **Conformal p-value** ``u``: the share of reference inputs scored at least as high, each against
   the rest of the reference *leaving out its own session* (the ``block_len`` inputs on either side
   in arrival order: a reference input's session siblings would make it look closer to the
   reference than a fresh input ever is). Ties are broken at random, so ``u`` is uniform on
   stationary traffic.
3. **Bet**: ``log(mean_j(1 - e_j + e_j·a·u^(a-1)))``, a mixture of power bets: its exponential
   has mean at most 1 for a uniform ``u``, so the running sum is a test supermartingale; it grows
   when small ``u`` come more often than they should, whatever the share of the new topic.
4. **CUSUM**: ``S = max(0, S + bet)``; an incident opens when ``S`` reaches ``h``.

For independent inputs with exactly uniform ``u``, the CUSUM of a likelihood ratio runs at least
``e^h`` inputs between false alarms (Lorden), so ``h = ln(1/alpha)`` for a per-input false-alarm
probability ``alpha``. Live traffic is neither: sessions repeat a topic (a rare reference topic's
session brings several small ``u`` in a row) and the reference is a finite sample (its tail is
estimated, so ``u`` is not exactly uniform for the next month's inputs). ``calibrate`` therefore
simulates both — streams of block-bootstrapped reference scores against p-values computed on
another block-bootstrap replicate of the reference — counts the alarms at a grid of thresholds,
fits the exponential decay of the alarm rate in ``h`` and extrapolates it to ``alpha``; the
threshold is the larger of that and the independent-input bound.

Pure numpy; the detector (``detector``) keeps one ``S`` per segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from llmgw.services.drift.calibrate import block_bootstrap_stream
from llmgw.services.drift.stats import Matrix, top_k_mean

__all__ = ["CusumCalibration", "SequentialNovelty", "bet_increments", "calibrate_cusum", "cusum_path",
           "knn_dissimilarity", "leave_session_out_scores"]


def knn_dissimilarity(reference: Matrix, x: Matrix, k: int) -> NDArray[np.float64]:
    """One minus the mean cosine similarity of each row of ``x`` to its ``k`` nearest reference
    rows (unit vectors)."""
    return 1.0 - top_k_mean(x @ reference.T, k).astype(np.float64)


def leave_session_out_scores(reference: Matrix, k: int, block_len: int) -> NDArray[np.float64]:
    """Each reference input's score against the rest of the reference less its own session (the
    ``block_len`` inputs either side of it in arrival order), in arrival order."""
    sim = reference @ reference.T
    n = len(reference)
    gap = max(0, min(block_len, (n - k - 1) // 2))
    near = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= gap
    sim[near] = -np.inf
    # A tiny reference (a demo's) has fewer than k inputs outside a session: use what there is.
    return 1.0 - top_k_mean(sim, max(1, min(k, n - 2 * gap - 1))).astype(np.float64)


def bet_increments(u: NDArray[np.float64], bets: tuple[float, ...], power: float) -> NDArray[np.float64]:
    """log of the mixture of power bets on small p-values (mean of the exponential <= 1 under
    uniform ``u``)."""
    u = np.clip(np.asarray(u, dtype=np.float64), 1e-12, 1.0)
    e = np.asarray(bets, dtype=np.float64)[:, None]
    return np.log((1.0 - e + e * power * u[None, :] ** (power - 1.0)).mean(axis=0))


def _pvalues(sorted_null: NDArray[np.float64], scores: NDArray[np.float64],
             rng: np.random.Generator) -> NDArray[np.float64]:
    """Conformal p-values with ties broken at random: P(null >= score), uniform under the null."""
    n = len(sorted_null)
    above = n - np.searchsorted(sorted_null, scores, side="right")
    ties = np.searchsorted(sorted_null, scores, side="right") - np.searchsorted(sorted_null, scores, side="left")
    return (above + rng.random(len(scores)) * (ties + 1)) / (n + 1)


@dataclass(frozen=True)
class CusumCalibration:
    threshold: float  # h
    lower: float  # S below it for close_after windows closes an incident (the null's 90th percentile)
    alpha: float  # per-input false-alarm probability h was chosen for
    independent_bound: float  # ln(1/alpha): h for independent inputs with uniform p-values
    decay: float  # fitted d ln(alarm rate) / dh in the simulation (1 for independent inputs)
    null_mean: float
    null_p95: float


def calibrate_cusum(scores: NDArray[np.float64], *, alpha: float, bets: tuple[float, ...], power: float,
                    block_len: int, rng: np.random.Generator, replicates: int = 64,
                    length: int = 8000) -> CusumCalibration:
    """The CUSUM threshold for a per-input false-alarm probability ``alpha`` (module docstring):
    ``replicates`` simulated streams of ``length`` inputs, each scored against its own replicate
    of the reference's scores (``scores`` in arrival order)."""
    n = len(scores)
    bound = float(np.log(1.0 / alpha))
    if n < 4:
        return CusumCalibration(bound, bound / 4, alpha, bound, 1.0, 0.0, 0.0)
    incs = np.empty((replicates, length))
    for r in range(replicates):
        cal = np.sort(scores[block_bootstrap_stream(n, n, block_len, rng)])
        live = scores[block_bootstrap_stream(n, length, block_len, rng)]
        incs[r] = bet_increments(_pvalues(cal, live, rng), bets, power)
    grid = np.arange(1.0, max(bound, 2.0) + 0.5, 0.5)
    s = np.zeros((replicates, len(grid) + 1))  # the last column never restarts: the null's level
    alarms = np.zeros(len(grid))
    level = np.empty((length, replicates))
    top = np.r_[grid, np.inf]
    for t in range(length):
        s = np.maximum(s + incs[:, t, None], 0.0)
        hit = s >= top
        alarms += hit[:, :-1].sum(axis=0)
        s[hit] = 0.0
        level[t] = s[:, -1]
    rate = alarms / (replicates * length)
    # The alarm rate decays exponentially in h: fit where the simulation has counted enough alarms.
    seen = alarms >= 20
    if seen.sum() >= 3:
        slope, intercept = np.polyfit(grid[seen], np.log(rate[seen]), 1)
        decay = float(max(-slope, 1e-3))
        fitted = float((intercept - np.log(alpha)) / decay)
    else:  # too few alarms even at h = 1: the stream is quieter than independence promises
        decay, fitted = 1.0, bound
    h = max(bound, fitted)
    return CusumCalibration(round(h, 6), round(float(np.quantile(level, 0.9)), 6), alpha, round(bound, 6),
                            round(decay, 4), round(float(level.mean()), 6), round(float(np.quantile(level, 0.95)), 6))


@dataclass(frozen=True)
class SequentialNovelty:
    """A reference's kNN scorer, null scores and CUSUM calibration."""

    reference: Matrix
    null_scores: NDArray[np.float64]  # sorted
    k: int
    bets: tuple[float, ...]
    power: float
    calibration: CusumCalibration

    @classmethod
    def fit(cls, reference: Matrix, *, k: int, bets: tuple[float, ...], power: float, block_len: int, alpha: float,
            rng: np.random.Generator) -> SequentialNovelty:
        scores = leave_session_out_scores(reference, k, block_len)
        cal = calibrate_cusum(scores, alpha=alpha, bets=bets, power=power, block_len=block_len, rng=rng)
        return cls(reference, np.sort(scores), k, bets, power, cal)

    def pvalues(self, x: Matrix, rng: np.random.Generator) -> NDArray[np.float64]:
        """Each input's conformal p-value (in order): small when it is far from the reference."""
        return _pvalues(self.null_scores, knn_dissimilarity(self.reference, x, self.k), rng)

    def increments(self, x: Matrix, rng: np.random.Generator) -> NDArray[np.float64]:
        """Each input's bet (in order)."""
        return bet_increments(self.pvalues(x, rng), self.bets, self.power)


def cusum_path(start: float, increments: NDArray[np.float64], cap: float) -> NDArray[np.float64]:
    """``S`` after each increment, from ``start``; capped so an incident can close once the new
    inputs stop (an uncapped sum would take as long to come down as the shift lasted)."""
    out = np.empty(len(increments))
    s = start
    for i, inc in enumerate(increments):
        s = min(cap, max(0.0, s + float(inc)))
        out[i] = s
    return out
