"""Per-segment drift detection: a versioned reference, calibrated detectors, debounced incidents.

For each segment (and the global one) the detector
1. fills a **reference** from the segment's first ``reference_size`` inputs (provisional) or takes
   an analyst-accepted one; the reference never changes because of drift (it would absorb the
   shift it should flag) — only ``llmgw drift baseline accept`` replaces it;
2. splits it in arrival order: the first part fits the models (k-means cells + novelty radius,
   the MMD kernel), the held-out rest is the pool the thresholds are **calibrated** on (block
   bootstrap, see ``calibrate``);
3. per window of ``window`` inputs computes the topic-mix G-statistic and MMD² over sliding
   windows of several sizes, steps each detector's **debouncer**, confirms an opening with a
   permutation test, and explains open incidents (clusters, keywords, examples, AUC, guards).

Pure Python + numpy: the Faust agent drives it (``app.process_window``), tests call it directly.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmgw.kit.redact import Redactor
from llmgw.services.drift.calibrate import (
    Calibration,
    block_bootstrap_stream,
    calibrate_statistic,
    per_window_alpha,
)
from llmgw.services.drift.incidents import Debouncer
from llmgw.services.drift.stats import (
    Cells,
    MmdReference,
    assign,
    domain_auc,
    fit_cells,
    g_batch,
    g_test,
    guards,
    keywords,
    nearest_distances,
    nearest_labels,
    permutation_pvalue,
)

__all__ = ["DRIFT_SCHEMA_VERSION", "DetectorSettings", "DriftDetector", "Input", "Reference"]

# Reference replicates the calibration cycles through (see _build).
_REPLICATES = 64

DRIFT_SCHEMA_VERSION = 2
Matrix = NDArray[np.float32]


@dataclass(frozen=True)
class DetectorSettings:
    reference_size: int = 600
    window: int = 50
    # Each detector runs over the last window x each multiple (sliding): small windows react
    # fast to strong shifts, large ones see weak ones (a new topic at a few percent).
    topic_multiples: tuple[int, ...] = (1, 4)
    # The novelty share alone, over the last window x each multiple: a new topic moves only the
    # novelty cell, while sessions make the known cells' counts swing; counting just the novel
    # inputs keeps that noise out of the statistic.
    novelty_multiples: tuple[int, ...] = (4, 8)
    mmd_multiples: tuple[int, ...] = (1, 2)
    # Inputs beyond this quantile of held-out distances to every centroid are "novel".
    novelty_quantile: float = 95.0
    # Share of the reference (in arrival order) the models are fitted on; the rest calibrates.
    fit_share: float = 0.5
    open_after: int = 2
    close_after: int = 3
    block_len: int = 10
    simulations: int = 2000
    false_alarms_per_month: float = 1.0
    expected_segments: int = 1
    # Used when the reference's own timestamps can't tell the segment's traffic rate.
    assumed_events_per_second: float = 1.0
    confirm_permutations: int = 199
    confirm_alpha: float = 0.01
    max_clusters: int = 8
    examples: int = 4
    seed: int = 0


@dataclass(frozen=True)
class Input:
    vector: NDArray[np.float32]
    text: str
    request_id: str = ""
    partition: int = -1
    offset: int = -1
    time: float = 0.0


@dataclass
class Reference:
    """A segment's reference sample; ``status`` is provisional until an analyst accepts one."""

    segment: str
    id: str
    status: str
    vectors: Matrix
    texts: list[str]
    times: list[float]
    created_at: float = field(default_factory=time.time)
    accepted_by: str = ""
    accepted_at: float = 0.0


@dataclass
class _Model:
    reference: Reference
    fit: Matrix
    fit_texts: list[str]
    cells: Cells
    fit_labels: NDArray[np.int64]
    # The held-out part of the reference (out of sample, like live inputs) and its cells.
    pool: Matrix
    pool_labels: NDArray[np.int64]
    mmd: MmdReference
    calibration: Calibration


@dataclass
class _Segment:
    name: str
    collecting: list[Input] = field(default_factory=list)
    model: _Model | None = None
    pending: list[Input] = field(default_factory=list)
    recent: deque[Input] = field(default_factory=deque)
    # The newest reference_size inputs: what an analyst can accept as the next baseline.
    sample: deque[Input] = field(default_factory=deque)
    debouncers: dict[str, Debouncer] = field(default_factory=dict)
    opened: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: int = 0
    unconfirmed: int = 0


class DriftDetector:
    def __init__(self, settings: DetectorSettings | None = None, *, redact: Callable[[str], str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or DetectorSettings()
        self._segments: dict[str, _Segment] = {}
        self._redact = redact or Redactor().for_tenant("")
        self._clock = clock
        self._rng = np.random.default_rng(self.settings.seed)
        self.new_references: list[Reference] = []

    # ---- references ----

    def reference(self, segment: str) -> Reference | None:
        seg = self._segments.get(segment)
        return seg.model.reference if seg and seg.model else None

    def segments(self) -> list[str]:
        return sorted(self._segments)

    def recent_samples(self) -> list[Reference]:
        """Per segment, its newest inputs as a candidate reference (status ``recent``)."""
        return [Reference(seg.name, f"{seg.name}@recent-{seg.windows}", "recent",
                          np.stack([i.vector for i in seg.sample]).astype(np.float32), [i.text for i in seg.sample],
                          [i.time for i in seg.sample])
                for seg in self._segments.values() if len(seg.sample) >= min(self.settings.reference_size, 20)]

    def set_reference(self, ref: Reference) -> list[dict[str, Any]]:
        """Use ``ref`` from now on (an accepted baseline). Open incidents of the old reference
        close: they were measured against something no longer in force."""
        seg = self._segments.setdefault(ref.segment, _Segment(ref.segment))
        out = [self._incident(seg, d, "CLOSED", self._current(seg), reason="re-baselined")
               for d in list(seg.opened)] if seg.model else []
        seg.model = self._build(ref)
        seg.collecting.clear()
        seg.debouncers.clear()
        seg.opened.clear()
        return out

    def _build(self, ref: Reference) -> _Model:
        s = self.settings
        n_fit = max(2, int(len(ref.vectors) * s.fit_share))
        fit, pool = ref.vectors[:n_fit], ref.vectors[n_fit:]
        if len(pool) < 2:  # a tiny reference: calibrate on the fit part itself (optimistic, documented)
            pool = fit
        cells = fit_cells(fit, k=max(1, min(s.max_clusters, n_fit // 15)), seed=s.seed,
                          novelty_quantile=s.novelty_quantile, holdout=pool)
        mmd = MmdReference.of(fit)
        detectors = [*(f"topic@{s.window * m}" for m in s.topic_multiples),
                     *(f"novelty@{s.window * m}" for m in s.novelty_multiples),
                     *(f"mmd@{s.window * m}" for m in s.mmd_multiples)]
        span = (ref.times[-1] - ref.times[0]) if len(ref.times) > 1 else 0.0
        rate = (len(ref.times) - 1) / span if span > 0 else s.assumed_events_per_second
        alpha, per_month = per_window_alpha(false_alarms_per_month=s.false_alarms_per_month,
                                            segments=s.expected_segments, detectors=len(detectors),
                                            events_per_second=rate, window=s.window)
        rng = np.random.default_rng(s.seed)
        pool_labels = assign(cells, pool)
        k1 = cells.k + 1
        # Reference uncertainty: a live window is compared with a reference that is itself a
        # finite, session-correlated sample (its cluster shares, its novelty radius). Each
        # simulated window is compared with a block-bootstrap replicate of the reference instead
        # of the one reference, so the null includes that error too (else a reference that
        # happens to under-represent a topic, or a radius that happens to be tight, would be
        # taken for the truth and live traffic would false-alarm against it).
        fit_reps = np.stack([block_bootstrap_stream(n_fit, n_fit, s.block_len, rng) for _ in range(_REPLICATES)])
        pool_reps = np.stack([block_bootstrap_stream(len(pool), len(pool), s.block_len, rng)
                              for _ in range(_REPLICATES)])
        fit_near = nearest_labels(cells, fit)
        pool_near, pool_dist = nearest_labels(cells, pool), nearest_distances(cells, pool)
        radii = np.percentile(pool_dist[pool_reps], s.novelty_quantile, axis=1)
        ref_counts = np.stack([np.bincount(fit_near[r], minlength=k1).astype(np.float64) for r in fit_reps])
        ref_counts[:, cells.k] = cells.reference_counts[cells.k]

        def novel(idx: NDArray[np.int64]) -> NDArray[np.bool_]:
            return pool_dist[idx] > radii[np.arange(len(idx)) % _REPLICATES][:, None]

        def topic_null(idx: NDArray[np.int64]) -> NDArray[np.float64]:
            labels = np.where(novel(idx), cells.k, pool_near[idx])
            counts = np.stack([np.bincount(row, minlength=k1) for row in labels])
            rep = np.arange(len(idx)) % _REPLICATES
            return np.array([g_batch(ref_counts[r], c[None, :])[0] for r, c in zip(rep, counts, strict=True)])

        calibrate = functools.partial(calibrate_statistic, n_pool=len(pool), alpha=alpha, block_len=s.block_len,
                                      step=s.window, open_after=s.open_after, rng=rng)
        thresholds = {f"topic@{s.window * m}": calibrate(f"topic@{s.window * m}", s.window * m, topic_null,
                                                         simulations=s.simulations // m)
                      for m in s.topic_multiples}
        for m in s.novelty_multiples:
            name = f"novelty@{s.window * m}"
            thresholds[name] = calibrate(name, s.window * m, lambda idx: novel(idx).mean(axis=1),
                                         simulations=s.simulations // m)
        for m in s.mmd_multiples:
            name = f"mmd@{s.window * m}"
            thresholds[name] = calibrate(name, s.window * m,
                                         lambda idx: mmd.mmd2_batch(pool, idx, replicates=fit_reps),
                                         simulations=max(200, s.simulations // 2))
        calibration = Calibration.make(thresholds, block_len=s.block_len, simulations=s.simulations,
                                       windows_per_month=per_month)
        return _Model(ref, fit, ref.texts[:n_fit], cells, assign(cells, fit), pool, pool_labels, mmd, calibration)

    # ---- windows ----

    def observe(self, segment: str, inputs: Sequence[Input], *, sampling_rate: float = 1.0) -> list[dict[str, Any]]:
        """Feed inputs of one segment; returns window metrics records and incident records."""
        seg = self._segments.setdefault(segment, _Segment(segment))
        out: list[dict[str, Any]] = []
        for item in inputs:
            if seg.model is None:
                seg.collecting.append(item)
                if len(seg.collecting) >= self.settings.reference_size:
                    ref = Reference(segment, f"{segment}@{uuid.uuid4().hex[:8]}", "provisional",
                                    np.stack([i.vector for i in seg.collecting]).astype(np.float32),
                                    [i.text for i in seg.collecting], [i.time for i in seg.collecting])
                    seg.model = self._build(ref)
                    seg.collecting.clear()
                    self.new_references.append(ref)
                continue
            seg.pending.append(item)
            seg.recent.append(item)
            seg.sample.append(item)
            if len(seg.sample) > self.settings.reference_size:
                seg.sample.popleft()
            while len(seg.recent) > self.settings.window * max(*self.settings.mmd_multiples,
                                                               *self.settings.topic_multiples,
                                                               *self.settings.novelty_multiples):
                seg.recent.popleft()
            if len(seg.pending) >= self.settings.window:
                out += self._window(seg, sampling_rate)
                seg.pending = []
        if seg.model is None and inputs:
            out.append(self._filling(seg, sampling_rate))
        return out

    def _filling(self, seg: _Segment, sampling_rate: float) -> dict[str, Any]:
        return {"schema_version": DRIFT_SCHEMA_VERSION, "type": "window", "segment": seg.name,
                "reference": {"status": "filling", "have": len(seg.collecting), "need": self.settings.reference_size},
                "sampling_rate": sampling_rate, "time": self._clock()}

    def _current(self, seg: _Segment) -> list[Input]:
        return list(seg.pending) or list(seg.recent)[-self.settings.window:]

    @staticmethod
    def _behind(seg: _Segment, size: int) -> list[Input]:
        """The inputs a detector's statistic was computed on (its sliding window)."""
        return list(seg.recent)[-size:]

    def _values(self, seg: _Segment, model: _Model) -> dict[str, tuple[float, int]]:
        """Statistic per detector and the number of inputs it looked at."""
        s = self.settings
        recent = np.stack([i.vector for i in seg.recent])
        labels = assign(model.cells, recent)
        values = {}
        for m in s.topic_multiples:
            size = s.window * m
            if len(recent) >= size:
                counts = np.bincount(labels[-size:], minlength=model.cells.k + 1)
                values[f"topic@{size}"] = (float(g_batch(model.cells.reference_counts, counts[None, :])[0]), size)
        for m in s.novelty_multiples:
            size = s.window * m
            if len(recent) >= size:
                values[f"novelty@{size}"] = (float((labels[-size:] == model.cells.k).mean()), size)
        for m in s.mmd_multiples:
            size = s.window * m
            if len(recent) >= size:
                values[f"mmd@{size}"] = (model.mmd.mmd2(recent[-size:]), size)
        return values

    def _window(self, seg: _Segment, sampling_rate: float) -> list[dict[str, Any]]:
        model = seg.model
        assert model is not None
        seg.windows += 1
        out: list[dict[str, Any]] = []
        detectors: dict[str, dict[str, Any]] = {}
        for name, (value, n) in self._values(seg, model).items():
            th = model.calibration.thresholds[name]
            deb = seg.debouncers.setdefault(name, Debouncer(self.settings.open_after, self.settings.close_after))
            step = deb.step(value, th.upper, th.lower)
            if step == "OPEN":
                p = self._confirm(seg, model, name, value, n)
                if p <= self.settings.confirm_alpha:
                    deb.opened()
                    seg.opened[name] = {"p_value": p, "opened_at": self._clock(), "value": value}
                    out.append(self._incident(seg, name, "OPEN", self._behind(seg, th.window), sampling_rate))
                else:
                    deb.reject()
                    seg.unconfirmed += 1
            elif step == "UPDATE":
                seg.opened[name]["value"] = value
                out.append(self._incident(seg, name, "UPDATE", self._behind(seg, th.window), sampling_rate))
            elif step == "CLOSED":
                out.append(self._incident(seg, name, "CLOSED", self._behind(seg, th.window), sampling_rate))
                deb.closed()
                del seg.opened[name]
            detectors[name] = {"value": round(value, 6), "upper": th.upper, "lower": th.lower,
                               "state": "open" if deb.is_open else "ok"}
        win = np.stack([i.vector for i in seg.pending])
        novelty = float((assign(model.cells, win) == model.cells.k).mean())
        out.insert(0, {
            "schema_version": DRIFT_SCHEMA_VERSION, "type": "window", "segment": seg.name,
            "window": self._window_info(seg),
            "reference": {"id": model.reference.id, "status": model.reference.status},
            "calibration_id": model.calibration.id, "detectors": detectors,
            "novelty_share": round(novelty, 4), "unconfirmed_openings": seg.unconfirmed,
            "sampling_rate": sampling_rate, "time": self._clock(),
        })
        return out

    @staticmethod
    def _window_info(seg: _Segment) -> dict[str, Any]:
        offsets: dict[str, list[int]] = {}
        for i in seg.pending:
            if i.partition >= 0:
                lo_hi = offsets.setdefault(str(i.partition), [i.offset, i.offset])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], i.offset), max(lo_hi[1], i.offset)
        return {"index": seg.windows, "n": len(seg.pending), "offsets": offsets,
                "request_ids": [i.request_id for i in seg.pending[:10]]}

    def _confirm(self, seg: _Segment, model: _Model, name: str, observed: float, n: int) -> float:
        """Permutation test of reference vs the window behind the statistic (off the hot path:
        only when a detector is about to open)."""
        s = self.settings
        recent = np.stack([i.vector for i in list(seg.recent)[-n:]])
        if name.startswith(("topic", "novelty")):
            # Held-out reference vs window: both out of sample for the cells (the fit part would
            # look less novel than any fresh input and confirm shifts that are not there).
            win_labels = assign(model.cells, recent)
            pooled = np.r_[model.pool_labels, win_labels]
            k1 = model.cells.k + 1
            total = np.bincount(pooled, minlength=k1)

            def stat(idx: NDArray[np.int64]) -> float:
                w = np.bincount(pooled[idx], minlength=k1)
                return g_test(total - w, w)[0]

            win_counts = np.bincount(win_labels, minlength=k1)
            observed_g = g_test(total - win_counts, win_counts)[0]
            return permutation_pvalue(stat, len(pooled), len(win_labels), observed_g,
                                      permutations=s.confirm_permutations, rng=self._rng)
        pooled_m = np.vstack([model.fit, recent])
        n_fit = len(model.fit)

        def mmd_stat(idx: NDArray[np.int64]) -> float:
            mask = np.zeros(len(pooled_m), bool)
            mask[idx] = True
            return MmdReference.of(pooled_m[~mask]).mmd2(pooled_m[mask]) if n_fit > 1 else 0.0

        first = MmdReference.of(model.fit).mmd2(recent)
        # MMD permutations refit the kernel per permutation: cap B, it's the expensive test.
        return permutation_pvalue(mmd_stat, len(pooled_m), len(recent), first,
                                  permutations=min(s.confirm_permutations, 99), rng=self._rng)

    def _incident(self, seg: _Segment, name: str, state: str, current: list[Input], sampling_rate: float = 1.0,
                  reason: str = "") -> dict[str, Any]:
        model = seg.model
        assert model is not None
        th = model.calibration.thresholds[name]
        info = seg.opened.get(name, {})
        win = np.stack([i.vector for i in current]) if current else model.fit[:0]
        texts = [i.text for i in current]
        rec: dict[str, Any] = {
            "schema_version": DRIFT_SCHEMA_VERSION, "type": "incident",
            "incident_id": seg.debouncers[name].incident if name in seg.debouncers else "",
            "state": state, "segment": seg.name, "detector": name, "window_size": th.window,
            "reference": {"id": model.reference.id, "status": model.reference.status},
            "calibration_id": model.calibration.id,
            "statistic": round(float(info.get("value", 0.0)), 6), "threshold": th.upper, "lower_threshold": th.lower,
            "p_value": info.get("p_value"), "opened_at": info.get("opened_at"),
            "window": self._window_info(seg), "sampling_rate": sampling_rate, "time": self._clock(),
        }
        if reason:
            rec["reason"] = reason
        if len(win) >= 2 and state != "CLOSED":
            rec["effect"], rec["clusters"] = self._explain(model, win, texts, novel_first=name.startswith("novelty"))
            rec["guards"] = guards(model.fit_texts, texts)
            rec["projection"] = _projection(model.fit, win)
        return rec

    def _explain(self, model: _Model, win: Matrix, texts: list[str], *,
                 novel_first: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Effect sizes and the clusters that moved most (a novelty incident leads with the novel
        cell: that is what its detector measured)."""
        cells = model.cells
        labels = assign(cells, win)
        dists = nearest_distances(cells, win)
        counts = np.bincount(labels, minlength=cells.k + 1)
        _, _, contrib = g_test(cells.reference_counts, counts)
        ref_share = cells.reference_counts / max(1, cells.reference_counts.sum())
        cur_share = counts / max(1, counts.sum())
        auc, lo, hi = domain_auc(model.fit, win, seed=self.settings.seed)
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
                "examples": [self._redact(t)[:300] for t in mine[: self.settings.examples]],
            })
        return effect, clusters


def _projection(reference: Matrix, window: Matrix, max_points: int = 120) -> dict[str, list[list[float]]]:
    """Both samples on the reference's first two principal components (for the incident report)."""
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axes = vt[:2].T

    def pts(x: Matrix) -> list[list[float]]:
        return [[round(float(a), 4), round(float(b), 4)] for a, b in ((x[:max_points] - mean) @ axes)]

    return {"reference": pts(reference), "current": pts(window)}
