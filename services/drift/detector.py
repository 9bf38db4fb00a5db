"""Per-segment drift detection: a versioned reference, calibrated detectors, debounced incidents.

For each segment (and the global one) the detector
1. fills a **reference** from the segment's first ``reference_size`` inputs (provisional) or takes
   an analyst-accepted one; the reference never changes because of drift (it would absorb the
   shift it should flag) — only ``llmgw drift baseline accept`` replaces it;
2. fits and calibrates detectors on it (``model.build_model``: the first part fits k-means cells
   and the MMD kernel, the held-out rest sets the novelty radius and is the pool the thresholds
   are **calibrated** on by block bootstrap, see ``calibrate``);
3. per window of ``window`` inputs computes the topic-mix G-statistic and MMD² over sliding
   windows of several sizes, steps each detector's **debouncer**, confirms an opening with a
   permutation test, and explains open incidents (clusters, keywords, examples, AUC, guards).

Pure Python + numpy: the Faust agent drives it (``app.process_window``), tests call it directly.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from llmgw.kit.redact import Redactor
from llmgw.services.drift.calibrate import DetectorThreshold
from llmgw.services.drift.explain import explain, projection
from llmgw.services.drift.incidents import Debouncer
from llmgw.services.drift.length import DIRECTIONS
from llmgw.services.drift.model import (
    CUSUM,
    LENGTH,
    SEQUENTIAL,
    DetectorSettings,
    Input,
    Model,
    Reference,
    build_model,
)
from llmgw.services.drift.naming import NewGroup, evidence_group, new_group
from llmgw.services.drift.sequential import cusum_path
from llmgw.services.drift.stats import MmdReference, assign, g_batch, g_test, guards, permutation_pvalue

# DetectorSettings, Input and Reference live in ``model``; re-exported as the detector's vocabulary.
__all__ = ["DRIFT_SCHEMA_VERSION", "DetectorSettings", "DriftDetector", "Input", "Reference"]

DRIFT_SCHEMA_VERSION = 2
# The newest inputs an incident looks in for the new topic's group (explain, naming): at 5 % a
# few hundred hold 10-20 of its inputs.
_NAMING_POOL = 400
# The sequential detector's incidents are named by the inputs that carried its evidence: those of
# its current run (since its sum last left its floor) with a p-value at most this (naming.evidence_group).
# At 0.02 they were 85-100 % the new topic's in the benchmark; at 0.05 ordinary outliers crept in.
_EVIDENCE_P = 0.02


@dataclass
class _Segment:
    name: str
    collecting: list[Input] = field(default_factory=list)
    model: Model | None = None
    pending: list[Input] = field(default_factory=list)
    recent: deque[Input] = field(default_factory=deque)
    # The newest reference_size inputs: what an analyst can accept as the next baseline.
    sample: deque[Input] = field(default_factory=deque)
    debouncers: dict[str, Debouncer] = field(default_factory=dict)
    opened: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: int = 0
    unconfirmed: int = 0
    partition: int = -1  # of its newest input: where the segment lives in the input topic
    # The sequential novelty detector's running sums, one per statistic (sequential.py), and for
    # each the inputs since it last left its floor (zero; a session-aware sum's lower threshold):
    # the ones that carried its evidence.
    cusum: list[float] = field(default_factory=list)
    run: list[int] = field(default_factory=list)
    # For session-aware bets, each sum's belief that the newest input is in a new topic's session.
    belief: list[float] = field(default_factory=list)
    # The length detector's sums (longer, shorter) and their beliefs (length.py).
    length_sums: list[float] = field(default_factory=list)
    length_belief: list[float] = field(default_factory=list)
    # Inputs since the provisional reference was fitted, to grow it to reference_size.
    growing: list[Input] = field(default_factory=list)

    def reset_sums(self) -> None:
        """The sequential detectors start over (a new reference: new thresholds)."""
        self.cusum, self.run, self.belief, self.length_sums, self.length_belief = [], [], [], [], []


def _run_after(path: NDArray[np.float64], run: int, floor: float = 0.0) -> int:
    """Inputs since a sum was last at or below ``floor``, after its ``path`` through a window
    (``run`` before it)."""
    low = np.flatnonzero(path <= floor)
    return len(path) - 1 - int(low[-1]) if len(low) else run + len(path)


class DriftDetector:
    def __init__(self, settings: DetectorSettings | None = None, *, redact: Callable[[str], str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or DetectorSettings()
        self._segments: dict[str, _Segment] = {}
        self._redact = redact or Redactor().for_tenant("")
        self._clock = clock
        self._rng = np.random.default_rng(self.settings.seed)
        # The length detector's ties are broken from a stream of its own: turning it on or off
        # leaves every other detector's draws (and so its decisions) as they were.
        self._length_rng = np.random.default_rng([self.settings.seed, 1])
        self.new_references: list[Reference] = []
        # Segments whose open incidents changed since the job last saved them (see handoff).
        self.state_changed: set[str] = set()
        # Segments first seen here since the job last looked: another replica may have run them.
        self.new_segments: set[str] = set()
        # Taken (``take_new_segments``) and being looked up in the store: still new until
        # ``looked_up``. Two agents sync (the requests agent and the global one); inputs may arrive
        # for a segment between one sync taking it and adopting it.
        self.adopting: set[str] = set()
        # True when the job looks for other replicas' state (a baseline store): a segment new here
        # then says nothing until it has (it is usually taken over, not filling).
        self.defer_new_segments = False

    # ---- references ----

    def reference(self, segment: str) -> Reference | None:
        seg = self._segments.get(segment)
        return seg.model.reference if seg and seg.model else None

    def segments(self) -> list[str]:
        return sorted(self._segments)

    def recent_samples(self, segments: Collection[str] | None = None) -> list[Reference]:
        """Per segment (all, or those named), its newest inputs as a candidate reference (status
        ``recent``); also the history a replica taking the segment over starts from."""
        return [Reference(seg.name, f"{seg.name}@recent-{seg.windows}", "recent",
                          np.stack([i.vector for i in seg.sample]).astype(np.float32), [i.text for i in seg.sample],
                          [i.time for i in seg.sample])
                for seg in self._segments.values()
                if (segments is None or seg.name in segments)
                and len(seg.sample) >= min(self.settings.reference_size, 20)]

    def retain(self, keep: Callable[[str, int], bool]) -> list[str]:
        """Drop the segments ``keep(name, partition of its last input)`` refuses; returns them."""
        gone = [name for name, seg in self._segments.items() if not keep(name, seg.partition)]
        for name in gone:
            self.drop(name)
        return gone

    def set_reference(self, ref: Reference) -> list[dict[str, Any]]:
        """Use ``ref`` from now on (an accepted baseline). Open incidents of the old reference
        close: they were measured against something no longer in force."""
        seg = self._segments.setdefault(ref.segment, _Segment(ref.segment))
        out = [self._incident(seg, d, "CLOSED", self._current(seg), reason="re-baselined")
               for d in list(seg.opened)] if seg.model else []
        seg.model = build_model(ref, self.settings)
        seg.collecting.clear()
        seg.growing.clear()
        seg.debouncers.clear()
        seg.opened.clear()
        seg.reset_sums()
        return out

    # ---- windows ----

    # ---- a segment's state, handed from one replica to the next (services/drift/handoff.py) ----

    def export_state(self, segment: str) -> dict[str, Any] | None:
        """What a replica taking the segment over needs besides its reference and recent sample:
        the open incidents (so they are neither opened twice nor left open) and the counters."""
        seg = self._segments.get(segment)
        if seg is None or seg.model is None:
            return None
        return {"reference_id": seg.model.reference.id, "windows": seg.windows, "unconfirmed": seg.unconfirmed,
                "cusum": seg.cusum, "run": seg.run, "belief": seg.belief,
                "length_cusum": seg.length_sums, "length_belief": seg.length_belief,
                "debouncers": {name: {"above": d.above, "below": d.below, "incident": d.incident}
                               for name, d in seg.debouncers.items()},
                "opened": seg.opened}

    def take_new_segments(self) -> set[str]:
        """The segments first seen since the last call (called on the detector's thread, so none
        is added while they are taken). They stay quiet until ``looked_up``."""
        fresh, self.new_segments = self.new_segments, set()
        self.adopting |= fresh
        return fresh

    def looked_up(self, segments: Iterable[str], *, retry: bool = False) -> None:
        """The store was asked about these (adopted, or nobody ran them: they fill here);
        ``retry``: it could not answer, look again at the next sync."""
        done = set(segments)
        self.adopting -= done
        if retry:
            self.new_segments |= done & set(self._segments)

    def take_changed_states(self) -> set[str]:
        """The segments whose open incidents changed since the last call (detector's thread)."""
        changed, self.state_changed = self.state_changed, set()
        return changed

    def drop(self, segment: str) -> None:
        """Forget a segment (its partition moved to another replica)."""
        self._segments.pop(segment, None)
        self.state_changed.discard(segment)
        self.new_segments.discard(segment)
        self.adopting.discard(segment)

    def adopt(self, ref: Reference, recent: Reference | None, state: dict[str, Any] | None, *,
              sampling_rate: float = 1.0) -> list[dict[str, Any]]:
        """Go on with a segment another replica ran: its reference, its newest inputs as history
        (so the longer windows score at once) and, when it was measured against this very
        reference, its open incidents. The inputs this replica collected meanwhile are replayed."""
        seg = self._segments.setdefault(ref.segment, _Segment(ref.segment))
        waiting, seg.collecting = seg.collecting, []
        # Its own provisional reference, if it filled one meanwhile, is not the segment's.
        self.new_references[:] = [r for r in self.new_references if r.segment != ref.segment]
        seg.model = build_model(ref, self.settings)
        seg.pending, seg.recent, seg.sample, seg.growing = [], deque(), deque(), []
        if recent is not None:
            history = recent.inputs()
            seg.sample.extend(history[-self.settings.reference_size:])
            seg.recent.extend(history[-self._history_len():])
        seg.debouncers.clear()
        seg.opened = {}
        seg.reset_sums()
        if state is not None and state.get("reference_id") == ref.id:
            seg.windows, seg.unconfirmed = int(state["windows"]), int(state["unconfirmed"])
            # A state saved before the detector has no sums, one saved before pairs a single one.
            seg.cusum = [float(v) for v in np.atleast_1d(state.get("cusum", []))]
            seg.run = [int(v) for v in np.atleast_1d(state.get("run", []))]
            seg.belief = [float(v) for v in np.atleast_1d(state.get("belief", []))]
            # A state saved before the length detector has none: its sums start at the next window.
            seg.length_sums = [float(v) for v in state.get("length_cusum", [])]
            seg.length_belief = [float(v) for v in state.get("length_belief", [])]
            for name, d in state["debouncers"].items():
                seg.debouncers[name] = Debouncer(self._open_after(name), self.settings.close_after,
                                                 int(d["above"]), int(d["below"]), str(d["incident"]))
            seg.opened = {name: dict(info) for name, info in state["opened"].items()}
        return self.observe(ref.segment, waiting, sampling_rate=sampling_rate) if waiting else []

    def _history_len(self) -> int:
        s = self.settings
        return s.window * max(*s.mmd_multiples, *s.topic_multiples, *s.novelty_multiples)

    def observe(self, segment: str, inputs: Sequence[Input], *, sampling_rate: float = 1.0) -> list[dict[str, Any]]:
        """Feed inputs of one segment; returns window metrics records and incident records."""
        seg = self._segments.get(segment)
        if seg is None:
            seg = self._segments[segment] = _Segment(segment)
            self.new_segments.add(segment)
        out: list[dict[str, Any]] = []
        if inputs and inputs[-1].partition >= 0:
            seg.partition = inputs[-1].partition
        for item in inputs:
            if seg.model is None:
                seg.collecting.append(item)
                if len(seg.collecting) >= self._first_size():
                    self._fit_provisional(seg, seg.collecting)
                    seg.collecting = []
                continue
            self._grow(seg, item)
            seg.pending.append(item)
            seg.recent.append(item)
            seg.sample.append(item)
            if len(seg.sample) > self.settings.reference_size:
                seg.sample.popleft()
            while len(seg.recent) > self._history_len():
                seg.recent.popleft()
            if len(seg.pending) >= self.settings.window:
                out += self._window(seg, sampling_rate)
                seg.pending = []
        if seg.model is None and inputs and not (
                self.defer_new_segments and (segment in self.new_segments or segment in self.adopting)):
            out.append(self._filling(seg, sampling_rate))
        return out

    def _first_size(self) -> int:
        return min(self.settings.provisional_size, self.settings.reference_size)

    def _fit_provisional(self, seg: _Segment, inputs: Sequence[Input]) -> None:
        ref = Reference(seg.name, f"{seg.name}@{uuid.uuid4().hex[:8]}", "provisional",
                        np.stack([i.vector for i in inputs]).astype(np.float32),
                        [i.text for i in inputs], [i.time for i in inputs])
        seg.model = build_model(ref, self.settings)
        seg.reset_sums()
        self.new_references.append(ref)

    def _grow(self, seg: _Segment, item: Input) -> None:
        """A provisional reference grows to ``reference_size`` with the inputs that follow it,
        only while nothing is open: inputs seen during an incident may be the shift itself, and a
        reference must not absorb what it should flag."""
        model = seg.model
        assert model is not None
        if model.reference.status != "provisional" or len(model.reference.vectors) >= self.settings.reference_size:
            return
        if seg.opened:
            seg.growing.clear()
            return
        seg.growing.append(item)
        if len(model.reference.vectors) + len(seg.growing) >= self.settings.reference_size:
            self.new_references[:] = [r for r in self.new_references if r.segment != seg.name]
            self._fit_provisional(seg, [*model.reference.inputs(), *seg.growing])
            seg.growing.clear()
            seg.debouncers.clear()  # counts against the old thresholds

    def _filling(self, seg: _Segment, sampling_rate: float) -> dict[str, Any]:
        return {"schema_version": DRIFT_SCHEMA_VERSION, "type": "window", "segment": seg.name,
                "reference": {"status": "filling", "have": len(seg.collecting), "need": self._first_size()},
                "sampling_rate": sampling_rate, "time": self._clock()}

    def _current(self, seg: _Segment) -> list[Input]:
        return list(seg.pending) or list(seg.recent)[-self.settings.window:]

    @staticmethod
    def _behind(seg: _Segment, size: int) -> list[Input]:
        """The inputs a detector's statistic was computed on (its sliding window)."""
        return list(seg.recent)[-size:]

    def _values(self, seg: _Segment, model: Model) -> tuple[dict[str, tuple[float, int]], NDArray[np.int64]]:
        """Statistic per detector and the number of inputs it looked at, and the cells of the
        recent inputs (the pending window is their tail)."""
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
        if model.sequential is not None and seg.pending:
            # The highest the sum reached in the window: a crossing mid-window counts.
            th = model.calibration.thresholds[CUSUM]
            before = self._before(seg, len(seg.pending), model.sequential.history_len())
            if len(seg.belief) != model.sequential.statistics:  # new, or saved by an earlier version
                seg.belief = [0.0] * model.sequential.statistics
            incs, belief = model.sequential.increments(recent[-len(seg.pending):], self._rng, before,
                                                       np.array(seg.belief))
            seg.belief = [float(v) for v in belief]
            if len(seg.cusum) != len(incs) or len(seg.run) != len(incs):  # new, or saved by another version
                seg.cusum, seg.run = [0.0] * len(incs), [0] * len(incs)
            paths = self._advance(seg.cusum, incs, th, CUSUM in seg.opened, model.sequential.betting.session_len)
            # A session-aware sum seldom falls back to zero on ordinary traffic (it falls slowly):
            # its run starts where it last was at ordinary traffic's level (the lower threshold),
            # else it would reach back hundreds of inputs past where the evidence began.
            floor = th.lower if model.sequential.betting.session_len else 0.0
            seg.run = [_run_after(path, run, floor) for path, run in zip(paths, seg.run, strict=True)]
            seg.cusum = [float(path[-1]) for path in paths]
            values[CUSUM] = (max(float(path.max()) for path in paths), th.window)
        if model.length is not None and seg.pending:
            th = model.calibration.thresholds[LENGTH]
            if len(seg.length_belief) != model.length.statistics:
                seg.length_belief = [0.0] * model.length.statistics
            incs, belief = model.length.increments([i.text for i in seg.pending], self._length_rng,
                                                   np.array(seg.length_belief))
            seg.length_belief = [float(v) for v in belief]
            if len(seg.length_sums) != len(incs):
                seg.length_sums = [0.0] * len(incs)
            paths = self._advance(seg.length_sums, incs, th, LENGTH in seg.opened, model.length.betting.session_len)
            seg.length_sums = [float(path[-1]) for path in paths]
            values[LENGTH] = (max(float(path.max()) for path in paths), th.window)
        return values, labels

    def _advance(self, sums: list[float], incs: NDArray[np.float64], th: DetectorThreshold, is_open: bool,
                 session_len: int) -> list[NDArray[np.float64]]:
        """A sequential detector's sums through a window's increments: each sum's path."""
        if is_open and session_len:
            # Session-aware sums drift down slowly on ordinary traffic (about 0.006 nats per
            # input: at 5 % an input is most likely not the topic's whether it goes on or not),
            # so while the incident is open each input also pays close_drift: a shift that
            # goes on keeps the sum up, one that stopped lets it fall to the closing level in
            # a few hundred inputs. Opening is untouched (it happens before any of this).
            incs = incs - self.settings.cusum_close_drift
        # Capped so an incident can close once the shift stops (cusum_path).
        return [cusum_path(start, row, cap=1.25 * th.upper) for start, row in zip(sums, incs, strict=True)]

    @staticmethod
    def _before(seg: _Segment, tail: int, n: int) -> NDArray[np.float32] | None:
        """The ``n`` inputs before the newest ``tail`` ones: the sequential detector's pair window
        (fewer just after a hand-over; None when there are none: the batch's own inputs are then
        all the window it has)."""
        older = list(seg.sample)[-(tail + n):-tail] if n else []
        return np.stack([i.vector for i in older]) if older else None

    def _window(self, seg: _Segment, sampling_rate: float) -> list[dict[str, Any]]:
        model = seg.model
        assert model is not None
        seg.windows += 1
        out: list[dict[str, Any]] = []
        detectors: dict[str, dict[str, Any]] = {}
        values, labels = self._values(seg, model)
        for name, (value, n) in values.items():
            th = model.calibration.thresholds[name]
            deb = seg.debouncers.setdefault(name, Debouncer(self._open_after(name), self.settings.close_after))
            step = deb.step(value, th.upper, th.lower)
            if step == "OPEN":
                # The CUSUM is its own debouncer and its threshold already carries sessions and the
                # reference's error; a window permutation test would only throw its power away.
                p = None if name in SEQUENTIAL else self._confirm(seg, model, name, value, n)
                if p is None or p <= self.settings.confirm_alpha:
                    deb.opened()
                    seg.opened[name] = {"p_value": p, "opened_at": self._clock(), "value": value}
                    self.state_changed.add(seg.name)
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
                self.state_changed.add(seg.name)
            detectors[name] = {"value": round(value, 6), "upper": th.upper, "lower": th.lower,
                               "state": "open" if deb.is_open else "ok"}
        novelty = float((labels[-len(seg.pending):] == model.cells.k).mean())
        out.insert(0, {
            "schema_version": DRIFT_SCHEMA_VERSION, "type": "window", "segment": seg.name,
            "window": self._window_info(seg),
            "reference": {"id": model.reference.id, "status": model.reference.status},
            "calibration_id": model.calibration.id, "detectors": detectors,
            "novelty_share": round(novelty, 4), "unconfirmed_openings": seg.unconfirmed,
            "sampling_rate": sampling_rate, "time": self._clock(),
        })
        return out

    def _open_after(self, name: str) -> int:
        """Windows above the threshold that open an incident: the CUSUM is its own debounce."""
        return 1 if name in SEQUENTIAL else self.settings.open_after

    @staticmethod
    def _window_info(seg: _Segment) -> dict[str, Any]:
        offsets: dict[str, list[int]] = {}
        for i in seg.pending:
            if i.partition >= 0:
                lo_hi = offsets.setdefault(str(i.partition), [i.offset, i.offset])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], i.offset), max(lo_hi[1], i.offset)
        return {"index": seg.windows, "n": len(seg.pending), "offsets": offsets,
                "request_ids": [i.request_id for i in seg.pending[:10]]}

    def _confirm(self, seg: _Segment, model: Model, name: str, observed: float, n: int) -> float:
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
        # Block permutations: the window is a few sessions, not len(recent) independent inputs.
        return permutation_pvalue(mmd_stat, len(pooled_m), len(recent), first,
                                  permutations=min(s.confirm_permutations, 99), rng=self._rng,
                                  block_len=s.block_len)

    def _length_summary(self, seg: _Segment, model: Model, texts: list[str]) -> dict[str, Any]:
        """Which way the inputs moved (the higher sum's), the median length before and now, and
        the window's inputs furthest that way (redacted)."""
        assert model.length is not None
        sums = seg.length_sums or [0.0] * len(DIRECTIONS)
        lead = int(np.argmax(sums))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=lead == 0)
        return {"direction": DIRECTIONS[lead], "reference_median_chars": round(model.length.median_chars(), 1),
                "current_median_chars": float(np.median([len(t) for t in texts])) if texts else 0.0,
                "examples": [self._redact(texts[i]) for i in order[:self.settings.examples]]}

    def _new_group(self, seg: _Segment, model: Model, name: str, current: list[Input]
                   ) -> tuple[NewGroup, list[str]] | None:
        """The new topic's inputs among the recent ones, and the inputs they were found among
        (``naming``). The sequential detector looks in its run first (the inputs since its sum
        last left its floor): the group of novel inputs linked by close pairs there, else, when too few
        are linked (a topic of varied texts, caught early), the inputs that carried its evidence.
        Otherwise, or when the run is too short (just after a hand-over), the group among the
        newest ``_NAMING_POOL`` (a 5 % topic is 2-5 inputs of a 50-100 window, too few to be seen
        as a group)."""
        # The sum that is highest carried the alarm; its run and its p-values name it.
        lead = int(np.argmax(seg.cusum)) if seg.cusum and len(seg.run) == len(seg.cusum) else -1
        if name == CUSUM and model.sequential is not None and lead >= 0 and seg.run[lead] > 0:
            run = list(seg.sample)[-min(seg.run[lead], _NAMING_POOL):]
            texts, vectors = [i.text for i in run], np.stack([i.vector for i in run])
            before = self._before(seg, len(run), model.sequential.history_len())
            pvalues = model.sequential.pvalues(vectors, np.random.default_rng(self.settings.seed), before)
            found = new_group(model.neighbourhood, vectors, texts) or evidence_group(pvalues[lead], texts,
                                                                                    p_max=_EVIDENCE_P)
            if found is not None:
                return found, texts
        recent = list(seg.sample)[-_NAMING_POOL:]
        pool = recent if len(recent) > len(current) else current
        texts = [i.text for i in pool]
        group = new_group(model.neighbourhood, np.stack([i.vector for i in pool]), texts) if pool else None
        return (group, texts) if group is not None else None

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
            # A length incident names no new topic: its inputs are the reference's kinds, said longer
            # or shorter (the clusters still say which kinds moved).
            new = None if name == LENGTH else self._new_group(seg, model, name, current)
            rec["effect"], rec["clusters"] = explain(
                model, win, texts, examples=self.settings.examples, redact=self._redact, seed=self.settings.seed,
                novel_first=name.startswith("novelty"), new=new)
            rec["guards"] = guards(model.fit_texts, texts)
            if name == LENGTH and model.length is not None:
                rec["length"] = self._length_summary(seg, model, texts)
            rec["projection"] = projection(model.fit, win)
        return rec
