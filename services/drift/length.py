"""Sequential length: evidence, input by input, that inputs have grown longer or shorter.

A change in how long inputs are is often what matters to an operator before any change of topic:
a client that starts pasting whole documents into a prompt variable (tokens, cost, latency), a
template bug that sends empty or truncated variables, a new integration that sends a paragraph
where a question went. The embedding barely sees it (MiniLM embeds three sentences of a topic
near one of them: the window detectors found the benchmark's length shift in 7 of 10 runs on
one corpus and none on the other, docs/benchmarks.md), while the length itself says it at once.

Per input, the length in characters (its log: a ratio is what is compared) gets two conformal
p-values against the reference's lengths, one for "at least this long", one for "at most this
short", ties broken at random (lengths are whole numbers), none below the share of the
reference's ``TAIL`` longest (shortest) inputs. Each feeds a CUSUM of the novelty detector's
mixture bets (``sequential.Betting``, input by input; ``model.build_model`` says why not
session-aware ones), calibrated the same way (``calibrate_cusum`` with both statistics at once:
sessions and the reference's finite sample are in the simulation, floor included). A shift of the
whole traffic crosses within a few dozen inputs; a share of it takes longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from llmgw.services.drift.sequential import Betting, CusumCalibration, calibrate_cusum, conformal_pvalues

__all__ = ["DIRECTIONS", "TAIL", "SequentialLength", "log_lengths"]

# The two sums, in order.
DIRECTIONS = ("longer", "shorter")
# The reference knows its tails down to about its tenth longest (and shortest) input: past that, a
# p-value says no more than being among them. Lengths are often bounded (a form field, a one-line
# description), and an input one character past a reference that happened to stop short of the
# bound would otherwise bet as if it were far beyond it (on the benchmark's Debian text a stationary
# stream carried a sum to 0.9 of h that way, inputs of 78-80 characters against a longest of 77).
TAIL = 10


def _floor(n: int) -> float:
    """The smallest p-value against a reference of ``n`` lengths (``TAIL``): live and simulated alike."""
    return TAIL / (n + 1)


def log_lengths(texts: Sequence[str]) -> NDArray[np.float64]:
    """log(1 + characters) of each text."""
    return np.log1p(np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts)))


@dataclass(frozen=True)
class SequentialLength:
    """A reference's lengths (sorted) and the calibration of the two sums run on them."""

    null: NDArray[np.float64]
    betting: Betting
    calibration: CusumCalibration
    statistics = len(DIRECTIONS)

    @classmethod
    def fit(cls, texts: Sequence[str], *, betting: Betting, block_len: int, alpha: float,
            rng: np.random.Generator) -> SequentialLength:
        x = log_lengths(texts)
        cal = calibrate_cusum(np.vstack([x, -x]), alpha=alpha, betting=betting, block_len=block_len, rng=rng,
                              floor=_floor(len(x)))
        return cls(np.sort(x), betting, cal)

    def pvalues(self, texts: Sequence[str], rng: np.random.Generator) -> NDArray[np.float64]:
        """(2, inputs): small when an input is longer than the reference's (first row) or shorter
        (second); each uniform on traffic like the reference, above its floor (``TAIL``)."""
        x = log_lengths(texts)
        u = np.vstack([conformal_pvalues(self.null, x, rng), conformal_pvalues(-self.null[::-1], -x, rng)])
        return np.maximum(u, _floor(len(self.null)))

    def increments(self, texts: Sequence[str], rng: np.random.Generator, belief: NDArray[np.float64] | None = None
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each input's bet per direction and each sum's belief after them (as
        ``SequentialNovelty.increments``)."""
        return self.betting.increments(self.pvalues(texts, rng), belief)

    def median_chars(self) -> float:
        """The reference's median length in characters."""
        return float(np.expm1(np.median(self.null)))
