"""Thresholds calibrated by simulation on the reference's own traffic, keeping its session and
burst structure (circular block bootstrap), not by assuming independent events.

Conversational traffic sends several requests on one topic in a row; a window of 50 such
requests holds far fewer independent draws than 50, and a chi-square or permutation null that
assumes independence alarms constantly. Resampling whole blocks of consecutive reference events
keeps that correlation in the simulated windows, so the null distribution is the one live
windows actually have.

Pure functions on arrays; the detector calls them once per reference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Calibration", "DetectorThreshold", "block_bootstrap_stream", "block_bootstrap_windows",
           "calibrate_statistic", "per_window_alpha", "tail_quantile"]

SECONDS_PER_MONTH = 30 * 24 * 3600.0


@dataclass(frozen=True)
class DetectorThreshold:
    detector: str
    window: int
    # Open side: a window above ``upper`` crosses; the incident closes after windows below ``lower``.
    upper: float
    lower: float
    alpha: float  # the per-window exceedance probability ``upper`` was chosen for
    null_mean: float
    null_p95: float


@dataclass(frozen=True)
class Calibration:
    thresholds: dict[str, DetectorThreshold]
    block_len: int
    simulations: int
    windows_per_month: float
    id: str = ""

    @classmethod
    def make(cls, thresholds: dict[str, DetectorThreshold], *, block_len: int, simulations: int,
             windows_per_month: float) -> Calibration:
        body = json.dumps({k: asdict(v) for k, v in sorted(thresholds.items())} | {"block": block_len}, sort_keys=True)
        return cls(thresholds, block_len, simulations, windows_per_month,
                   "cal-" + hashlib.sha256(body.encode()).hexdigest()[:10])


def per_window_alpha(*, false_alarms_per_month: float, segments: int, detectors: float,
                     events_per_second: float, window: int) -> tuple[float, float]:
    """(alpha per window and detector, windows per month): the month's false-alarm budget split
    evenly across segments and detectors (Bonferroni: valid whatever their dependence).
    ``detectors`` counts shares: a detector given a fraction of one (``model.build_model``)
    counts that fraction and runs at that fraction of the alpha (weighted Bonferroni)."""
    windows_per_month = max(1.0, events_per_second * SECONDS_PER_MONTH / max(1, window))
    alpha = false_alarms_per_month / max(1, segments) / max(1.0, detectors) / windows_per_month
    return min(0.5, alpha), windows_per_month


def block_bootstrap_windows(n_pool: int, window: int, count: int, block_len: int,
                            rng: np.random.Generator) -> NDArray[np.int64]:
    """``count`` windows of ``window`` indices into a pool of ``n_pool`` events in arrival order,
    each built from circular blocks of ``block_len`` consecutive events."""
    block_len = max(1, min(block_len, n_pool))
    blocks = -(-window // block_len)
    starts = rng.integers(0, n_pool, size=(count, blocks))
    idx = (starts[:, :, None] + np.arange(block_len)[None, None, :]) % n_pool
    return idx.reshape(count, blocks * block_len)[:, :window]


def tail_quantile(null: NDArray[np.float64], alpha: float) -> float:
    """The 1-alpha quantile of a null sample. Below what the simulation can see (alpha < 5/n) it
    extrapolates by peaks over threshold: a generalized Pareto distribution fitted to the
    excesses over the 95th percentile, its shape clipped to [0, 0.5]: a heavy tail keeps its
    weight (up to where the fit on a few hundred excesses is stable), and no tail is taken to
    end. A negative shape puts an end point just past the largest simulated value, which says
    only that the simulation saw nothing larger: on session-bursty streams it put the MMD,
    G and novelty-share thresholds below live traffic's 99.9th percentile (docs/drift.md)."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    n = len(null)
    if alpha * n >= 5:
        return float(np.quantile(null, 1 - alpha))
    u = float(np.quantile(null, 0.95))
    excess = null[null > u] - u
    if len(excess) < 10 or float(excess.std()) == 0.0:
        beta = float(excess.mean()) if len(excess) else max(1e-9, abs(u) * 0.1)
        return u + beta * float(np.log(0.05 / alpha))
    from scipy.stats import genpareto

    shape, _, scale = genpareto.fit(excess, floc=0.0)
    shape = float(np.clip(shape, 0.0, 0.5))
    if abs(shape) < 1e-6:
        return u + float(scale) * float(np.log(0.05 / alpha))
    return u + float(scale) / shape * ((0.05 / alpha) ** shape - 1.0)


def block_bootstrap_stream(n_pool: int, length: int, block_len: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """One simulated stream of ``length`` events: circular blocks of consecutive pool events."""
    return block_bootstrap_windows(n_pool, length, 1, block_len, rng)[0]


def calibrate_statistic(name: str, window: int, statistic: Callable[[NDArray[np.int64]], NDArray[np.float64]],
                        n_pool: int, *, alpha: float, block_len: int, simulations: int, step: int,
                        open_after: int, rng: np.random.Generator) -> DetectorThreshold:
    """Thresholds for one detector from ``simulations`` consecutive null windows.

    The windows are cut from one simulated stream, every ``step`` events, exactly as live windows
    are, so their correlation (a session spanning two windows) is in the simulation too. An
    incident opens after ``open_after`` consecutive crossings, so the upper threshold is the
    1-alpha tail quantile of the rolling minimum over ``open_after`` windows: alpha is then the
    simulated chance that a window *opens* an incident, not merely crosses. ``statistic`` maps a
    (count, window) index matrix to one value per window."""
    stream = block_bootstrap_stream(n_pool, step * simulations + window, block_len, rng)
    ends = np.arange(window, len(stream) + 1, step)[:simulations]
    idx = stream[ends[:, None] - window + np.arange(window)[None, :]]
    null = statistic(idx)
    k = max(1, open_after)
    debounced = np.lib.stride_tricks.sliding_window_view(null, k).min(axis=1) if len(null) >= k else null
    upper = tail_quantile(debounced, alpha)
    return DetectorThreshold(name, window, round(upper, 8), round(float(np.quantile(null, 0.9)), 8), alpha,
                             round(float(null.mean()), 8), round(float(np.quantile(null, 0.95)), 8))
