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

**Pairs.** At 5 % of traffic, a new topic's inputs are often only somewhat far from the
reference one by one (on MiniLM's Debian descriptions about 1,600 inputs of the distance alone
before any detector of it could decide). What sets them apart is that they resemble each other.
Each input's **pair statistic** counts how many of its ``k`` nearest inputs (repeats, similarity
>= 0.98, count for neither) are among the ``window`` live inputs before its session rather than
in the reference: a new topic's inputs find their own earlier inputs there, an ordinary input
mostly the reference's (which holds several times as many). The margin (its nearest recent minus
its nearest reference similarity) orders equal counts. A count keeps its weight when the
reference holds a few inputs of the topic (a rare topic grown common) or one stray look-alike,
which take a single-nearest margin to zero. Its null is the reference's own inputs, each against
the ``window`` reference inputs before its session and the rest of the reference
(``session_out_pairs``); a live input is compared with a fixed subset of the reference as large
as that rest, so both meet the same numbers of each. The pair statistic alone is weak on real
text; combined with the distance by Fisher's rule (``-ln p_distance - ln p_pairs``, ranked
against the reference's own combinations: a conformal p-value again) it catches inputs that are
somewhat far *and* somewhat paired. That distance is taken against the same rest (for a
reference input, its window left out: ``session_out_pairs``), so recent look-alikes leave an
input far in the null as they do live. A second CUSUM runs on it beside the distance's own (which
keeps the inputs that are far but unpaired: a new kind of varied texts); an alarm is either
reaching ``h``, calibrated on both at once (``calibrate_cusum`` with two statistics: the same
simulated inputs feed both sums, and the independent-input bound becomes ``ln(2/alpha)``).

**Sessions.** Users ask several questions on one subject in a row, so a new topic's inputs come
in runs. Mixture bets (step 3) treat each input on its own: at 5 % of traffic each input is most
likely not the topic's, and every input pays that dilution. Session-aware bets
(``session_increments``, ``Betting`` with a ``session_len``) are the likelihood ratio of a
two-state hidden Markov model instead — an input is in a new topic's session or not, sessions
last ``session_len`` inputs on average and hold ``share`` of the traffic — so once a run of small
p-values has begun, the next inputs are expected to be small too and pay little dilution: a run
counts for more than as many scattered ones. Each increment's prediction is made before its input
is seen, so it stays a likelihood ratio (mean 1 for uniform ``u`` whatever came before) and the
threshold is calibrated as before, the filter simulated as it runs live; the null's own runs (a
rare reference topic's sessions) raise ``h`` there as they should. The model expects few new
inputs, so on ordinary traffic the sum falls slowly (about 0.006 nats an input against the
mixture bets' 0.09): the detector makes an open incident's sum pay a further ``close_drift`` an
input so it can close once the topic stops. Measured on the benchmark's corpora (docs/drift.md).

Pure numpy; the detector (``detector``) keeps one ``S`` and one belief per statistic and segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from llmgw.services.drift.calibrate import block_bootstrap_stream
from llmgw.services.drift.stats import Matrix, top_k_mean

__all__ = ["Betting", "CusumCalibration", "PairNull", "SequentialNovelty", "bet_increments", "calibrate_cusum",
           "conformal_pvalues", "cusum_path", "knn_dissimilarity", "leave_session_out_scores", "live_pairs",
           "rest_size", "session_increments", "session_out_pairs"]

# A repeat (a retry, a template filled in the same way) is not a second input of a topic: pairs
# this similar count for neither side of a pair statistic.
_DUPLICATE = 0.98


def knn_dissimilarity(reference: Matrix, x: Matrix, k: int) -> NDArray[np.float64]:
    """One minus the mean cosine similarity of each row of ``x`` to its ``k`` nearest reference
    rows (unit vectors)."""
    return _dissimilarity(x @ reference.T, k)


def _dissimilarity(reference_sim: Matrix, k: int) -> NDArray[np.float64]:
    return 1.0 - top_k_mean(reference_sim, k).astype(np.float64)


def leave_session_out_scores(reference: Matrix, k: int, block_len: int, sim: Matrix | None = None
                             ) -> NDArray[np.float64]:
    """Each reference input's score against the rest of the reference less its own session (the
    ``block_len`` inputs either side of it in arrival order), in arrival order. ``sim``: the
    reference's similarity to itself, when the caller has it already."""
    n = len(reference)
    gap = max(0, min(block_len, (n - k - 1) // 2))
    near = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= gap
    sim = np.where(near, np.float32(-np.inf), reference @ reference.T if sim is None else sim)
    # A tiny reference (a demo's) has fewer than k inputs outside a session: use what there is.
    return 1.0 - top_k_mean(sim, max(1, min(k, n - 2 * gap - 1))).astype(np.float64)


def _repeats_out(sim: NDArray[np.float32], allowed: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """``sim`` with the columns not allowed, and repeats, at -inf (they count for neither side)."""
    keep = sim < _DUPLICATE if allowed is None else allowed & (sim < _DUPLICATE)
    return np.where(keep, sim, -np.inf).astype(np.float64)


def _pair_counts(recent: NDArray[np.float64], reference: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Each row's pair statistic from its similarities to the recent inputs before its session
    and to the reference (-inf: not a candidate): how many of its ``k`` nearest are recent ones,
    plus 0.49 x (its nearest recent minus its nearest reference similarity), which orders equal
    counts and never outweighs one."""
    both = np.concatenate([recent, reference], axis=1)
    k = max(1, min(k, both.shape[1]))
    top = np.argpartition(-both, k - 1, axis=1)[:, :k]
    count = ((top < recent.shape[1]) & np.isfinite(np.take_along_axis(both, top, axis=1))).sum(axis=1)
    nearest = [m.max(axis=1, initial=-1.0) for m in (recent, reference)]  # -1: no candidate
    return count + 0.49 * (nearest[0] - nearest[1])


def rest_size(n: int, window: int, block_len: int) -> int:
    """How many reference inputs a reference input's pair statistic is taken against (the rest)."""
    return n - 2 * block_len - window - 1


def session_out_pairs(reference: Matrix, window: int, block_len: int, k: int, sim: Matrix | None = None, *,
                      score_k: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each reference input's pair statistic as live traffic would give it (``live_pairs``): its
    ``k`` nearest among the ``window`` inputs before its session (in arrival order, circularly)
    and the rest of the reference (all but that window and its own session: ``rest_size``
    inputs, as many as a live input is compared with); and its distance score (``score_k``
    nearest) against that rest alone. ``sim`` as for ``leave_session_out_scores``.

    The distance that goes with a pair statistic leaves the window out too: a live input's
    recent look-alikes are not in the reference, so they pair it *and* leave it far; a reference
    input's would otherwise pair it and bring it near, and the reference's own combinations
    would miss the inputs both paired and far that stationary traffic brings (on bursty Debian
    text, about four times as many past the combination's 99.9th percentile as it should)."""
    n = len(reference)
    sim = reference @ reference.T if sim is None else sim
    lag = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n
    before = (lag > block_len) & (lag <= block_len + window)
    rest = (lag > block_len + window) & (lag < n - block_len)
    rest_sim = sim[rest].reshape(n, rest_size(n, window, block_len))
    return (_pair_counts(_repeats_out(sim[before].reshape(n, window)), _repeats_out(rest_sim), k),
            _dissimilarity(rest_sim, score_k))


def live_pairs(reference_sim: Matrix, history: Matrix, x: Matrix, window: int, block_len: int, k: int
               ) -> NDArray[np.float64]:
    """Each row of ``x``'s pair statistic: its ``k`` nearest among the ``window`` live inputs
    before its own session (the ``block_len`` inputs just before it are taken for its session)
    and the reference inputs of ``reference_sim`` (``x`` against a ``rest_size`` subset of the
    reference: the share of recent inputs among the nearest depends on how many there are of
    each, so a live input meets the same numbers as the null's). ``history`` holds the inputs
    before ``x``, newest last."""
    stream = np.vstack([history, x]) if len(history) else x
    lag = (len(history) + np.arange(len(x)))[:, None] - np.arange(len(stream))[None, :]
    before = (lag > block_len) & (lag <= block_len + window)
    return _pair_counts(_repeats_out(x @ stream.T, before), _repeats_out(reference_sim), k)


def _tail_share(sorted_null: NDArray[np.float64], v: NDArray[np.float64], *, own: bool = False
                ) -> NDArray[np.float64]:
    """(null values >= v, plus one) / (n + 1): a rank p-value; ``own`` when ``v`` are the null's
    own values (each already counts itself)."""
    n = len(sorted_null)
    return (n - np.searchsorted(sorted_null, v, side="left") + (0 if own else 1)) / (n + 1)


def _fisher(score_p: NDArray[np.float64], pair_p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fisher's combination: large when both are smallish (a new topic's inputs are somewhat far
    and somewhat paired), which neither shows alone at 5 % of traffic."""
    return -np.log(score_p) - np.log(pair_p)


def bet_increments(u: NDArray[np.float64], bets: tuple[float, ...], power: float) -> NDArray[np.float64]:
    """log of the mixture of power bets on small p-values (mean of the exponential <= 1 under
    uniform ``u``)."""
    u = np.clip(np.asarray(u, dtype=np.float64), 1e-12, 1.0)
    e = np.asarray(bets, dtype=np.float64)[:, None]
    return np.log((1.0 - e + e * power * u[None, :] ** (power - 1.0)).mean(axis=0))


def session_increments(u: NDArray[np.float64], *, power: float, session_len: int, share: float,
                       belief: NDArray[np.float64] | float = 0.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Session-aware bets (module docstring, "Sessions"): each row of ``u`` (rows, inputs) is a
    stream of p-values; the log-likelihood ratio of each input under a two-state hidden Markov
    model (in a new topic's session: ``u`` has density ``power·u^(power-1)``; otherwise uniform),
    whose sessions last ``session_len`` inputs on average and start so that ``share`` of the
    inputs are in one. ``belief``: each row's probability of being in such a session before its
    first input (0: not). Returns the increments and each row's belief after its last input.

    The prediction is made before the input is seen, so each increment's exponential has mean 1
    for a uniform ``u`` whatever came before: the running sum is a likelihood-ratio CUSUM as the
    mixture bets' is. What it adds: a run of small p-values counts for more than as many
    scattered ones, since a new topic's inputs come in sessions (a user asks several questions
    on one subject); the dilution a rare topic pays (at 5 % of traffic an input is most likely
    not from it) is paid about once per session, not once per input."""
    u = np.clip(np.atleast_2d(np.asarray(u, dtype=np.float64)), 1e-12, 1.0)
    stay = 1.0 - 1.0 / max(session_len, 2)
    enter = share * (1.0 - stay) / (1.0 - share)
    alternative = power * u ** (power - 1.0)
    pi = np.broadcast_to(np.asarray(belief, dtype=np.float64), u.shape[:1]).copy()
    out = np.empty_like(u)
    for t in range(u.shape[1]):
        ahead = pi * stay + (1.0 - pi) * enter
        ratio = 1.0 - ahead + ahead * alternative[:, t]
        out[:, t] = np.log(ratio)
        pi = ahead * alternative[:, t] / ratio
    return out, pi


@dataclass(frozen=True)
class Betting:
    """How p-values become CUSUM increments: per-input mixture bets (``session_len`` 0: each
    input on its own, ``bet_increments``) or session-aware ones (``session_increments``)."""

    bets: tuple[float, ...]
    power: float
    session_len: int = 0
    share: float = 0.05

    def increments(self, u: NDArray[np.float64], belief: NDArray[np.float64] | None = None
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``u`` (rows, inputs) -> (increments, each row's belief after them; zeros for mixture bets)."""
        u = np.atleast_2d(u)
        if self.session_len:
            return session_increments(u, power=self.power, session_len=self.session_len, share=self.share,
                                      belief=0.0 if belief is None else belief)
        return np.vstack([bet_increments(row, self.bets, self.power) for row in u]), np.zeros(len(u))


def conformal_pvalues(sorted_null: NDArray[np.float64], scores: NDArray[np.float64],
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
    independent_bound: float  # ln(m/alpha): h for m sums over independent inputs with uniform p-values
    decay: float  # fitted d ln(alarm rate) / dh in the simulation (1 for independent inputs)
    null_mean: float
    null_p95: float


def calibrate_cusum(scores: NDArray[np.float64], *, alpha: float, betting: Betting, block_len: int,
                    rng: np.random.Generator, replicates: int = 64, length: int = 8000, floor: float = 0.0
                    ) -> CusumCalibration:
    """The CUSUM threshold for a per-input false-alarm probability ``alpha`` (module docstring):
    ``replicates`` simulated streams of ``length`` inputs, each scored against its own replicate
    of the reference's scores (``scores`` in arrival order). With several statistics per input
    (``scores`` of shape (statistics, n)), one CUSUM runs on each and an alarm is any of them
    reaching ``h``: they are simulated on the same inputs, so their dependence is in the rate.
    ``betting`` is simulated as it runs live, and p-values below ``floor`` are taken as ``floor``
    (as a detector that floors its own does)."""
    stats = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = stats.shape
    bound = float(np.log(m / alpha))  # a union bound over the m sums
    if n < 4:
        return CusumCalibration(bound, bound / 4, alpha, bound, 1.0, 0.0, 0.0)
    u = np.empty((replicates, m, length))
    for r in range(replicates):
        cal, live = block_bootstrap_stream(n, n, block_len, rng), block_bootstrap_stream(n, length, block_len, rng)
        for i in range(m):
            u[r, i] = np.maximum(conformal_pvalues(np.sort(stats[i, cal]), stats[i, live], rng), floor)
    incs = betting.increments(u.reshape(replicates * m, length))[0].reshape(u.shape)
    grid = np.arange(1.0, max(bound, 2.0) + 0.5, 0.5)
    s = np.zeros((replicates, m, len(grid) + 1))  # the last column never restarts: the null's level
    alarms = np.zeros(len(grid))
    level = np.empty((length, replicates))
    top = np.r_[grid, np.inf]
    for t in range(length):
        s = np.maximum(s + incs[:, :, t, None], 0.0)
        hit = (s >= top).any(axis=1)  # (replicates, grid + 1): any sum crossed
        alarms += hit[:, :-1].sum(axis=0)
        s[np.broadcast_to(hit[:, None, :], s.shape)] = 0.0
        level[t] = s[:, :, -1].max(axis=1)
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
    # The closing level is ordinary traffic's 90th percentile, never above half of h: a sum whose
    # null level runs high (a small reference's) would otherwise close each window it opens.
    lower = min(float(np.quantile(level, 0.9)), h / 2)
    return CusumCalibration(round(h, 6), round(lower, 6), alpha, round(bound, 6),
                            round(decay, 4), round(float(level.mean()), 6), round(float(np.quantile(level, 0.95)), 6))


@dataclass(frozen=True)
class PairNull:
    """What the pair statistic needs besides the distance's: its window and ``k``, the reference
    inputs a live input is compared with (``rest_size`` of them), and the reference's own pair
    statistics and combinations (both sorted)."""

    window: int
    block_len: int
    k: int
    rest: NDArray[np.int64]
    scores: NDArray[np.float64]  # distances against the rest (session_out_pairs)
    values: NDArray[np.float64]
    combined: NDArray[np.float64]


@dataclass(frozen=True)
class SequentialNovelty:
    """A reference's kNN scorer, null scores and CUSUM calibration; with a pair ``window`` a second
    statistic per input, distance and pair statistic combined (module docstring, "Pairs")."""

    reference: Matrix
    null_scores: NDArray[np.float64]  # sorted
    k: int
    betting: Betting
    calibration: CusumCalibration
    pairs: PairNull | None = None  # None: distance alone
    # Further pair windows, a sum each (DetectorSettings.cusum_pair_window2): each its own rest
    # and null; the calibration runs every sum at once.
    more_pairs: tuple[PairNull, ...] = ()

    @classmethod
    def fit(cls, reference: Matrix, *, k: int, bets: tuple[float, ...], power: float, block_len: int, alpha: float,
            rng: np.random.Generator, window: int = 0, pair_k: int = 5, more_windows: tuple[int, ...] = (),
            session_len: int = 0, share: float = 0.05) -> SequentialNovelty:
        betting = Betting(bets, power, session_len, share)
        sim = reference @ reference.T  # once, for the distance's null and the pairs'
        scores = leave_session_out_scores(reference, k, block_len, sim)
        # The pair window needs a reference with room for it, its session and a rest to compare
        # against (a demo's reference has none: distance alone).
        room = (len(reference) - 2 * block_len) // 3
        window = min(window, room)
        if window < 2:
            cal = calibrate_cusum(scores, alpha=alpha, betting=betting, block_len=block_len, rng=rng)
            return cls(reference, np.sort(scores), k, betting, cal)
        windows = [window, *(w for w in more_windows if 2 <= w <= room)]
        nulls = []  # (window, distances against the rest, pair statistics, combinations), sorted
        for w in windows:
            paired, rest_scores = session_out_pairs(reference, w, block_len, pair_k, sim, score_k=k)
            null_rest, null_paired = np.sort(rest_scores), np.sort(paired)
            nulls.append((w, null_rest, null_paired, _fisher(_tail_share(null_rest, rest_scores, own=True),
                                                             _tail_share(null_paired, paired, own=True))))
        cal = calibrate_cusum(np.vstack([scores, *(c for *_, c in nulls)]), alpha=alpha, betting=betting,
                              block_len=block_len, rng=rng)
        # Each window's rest is drawn after the calibration (the one-window draws as before).
        made = [PairNull(w, block_len, pair_k,
                         np.sort(rng.permutation(len(reference))[:rest_size(len(reference), w, block_len)]),
                         null_rest, null_paired, np.sort(combined)) for w, null_rest, null_paired, combined in nulls]
        return cls(reference, np.sort(scores), k, betting, cal, made[0], tuple(made[1:]))

    @property
    def statistics(self) -> int:
        """How many sums run: distance, and distance with pairs for each pair window."""
        return 1 if self.pairs is None else 2 + len(self.more_pairs)

    def history_len(self) -> int:
        """How many inputs before a batch ``pvalues`` looks at."""
        if self.pairs is None:
            return 0
        return max(p.window for p in (self.pairs, *self.more_pairs)) + self.pairs.block_len

    def pvalues(self, x: Matrix, rng: np.random.Generator, history: Matrix | None = None) -> NDArray[np.float64]:
        """Each input's conformal p-values, one row per statistic (inputs in order): small when
        it is far from the reference; in the second row, also when many of its nearest inputs are
        recent ones outside its session (``history``: the ``history_len()`` inputs before ``x``,
        newest last) rather than reference ones. Each row is uniform on traffic like the
        reference."""
        sim = x @ self.reference.T  # once for the distance and the pairs
        scores = _dissimilarity(sim, self.k)
        rows = [conformal_pvalues(self.null_scores, scores, rng)]
        for pairs in (self.pairs, *self.more_pairs) if self.pairs is not None else ():
            rest_sim = sim[:, pairs.rest]
            paired = self._pair_statistics(pairs, rest_sim, x, history)
            combined = _fisher(_tail_share(pairs.scores, _dissimilarity(rest_sim, self.k)),
                               _tail_share(pairs.values, paired))
            rows.append(conformal_pvalues(pairs.combined, combined, rng))
        return np.vstack(rows)

    def pair_statistics(self, x: Matrix, history: Matrix | None = None) -> NDArray[np.float64]:
        """Each input's pair statistic (``live_pairs``; ``history`` as for ``pvalues``)."""
        if self.pairs is None:
            raise ValueError("fitted without a pair window")
        return self._pair_statistics(self.pairs, x @ self.reference[self.pairs.rest].T, x, history)

    @staticmethod
    def _pair_statistics(pairs: PairNull, rest_sim: Matrix, x: Matrix, history: Matrix | None
                         ) -> NDArray[np.float64]:
        """``rest_sim``: ``x`` against the reference inputs it is compared with (``pairs.rest``)."""
        before = history if history is not None else x[:0]
        # history_len() is the longest window's: a shorter window needs only its own tail (live_pairs
        # would mask the rest out after computing its similarities).
        if len(before) > pairs.window + pairs.block_len:
            before = before[len(before) - pairs.window - pairs.block_len:]
        return live_pairs(rest_sim, before, x, pairs.window, pairs.block_len, pairs.k)

    def increments(self, x: Matrix, rng: np.random.Generator, history: Matrix | None = None,
                   belief: NDArray[np.float64] | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each input's bet, one row per statistic (inputs in order), and each statistic's belief
        after them (``Betting``; ``belief``: the one after the inputs before ``x``, None: zeros)."""
        return self.betting.increments(self.pvalues(x, rng, history), belief)


def cusum_path(start: float, increments: NDArray[np.float64], cap: float) -> NDArray[np.float64]:
    """``S`` after each increment, from ``start``; capped so an incident can close once the new
    inputs stop (an uncapped sum would take as long to come down as the shift lasted)."""
    out = np.empty(len(increments))
    s = start
    for i, inc in enumerate(increments):
        s = min(cap, max(0.0, s + float(inc)))
        out[i] = s
    return out
