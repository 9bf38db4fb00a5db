"""The drift detector's math: calibration that holds on session-correlated traffic, power on real
shifts, debounced and confirmed incidents that explain themselves, load shedding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import chi2

from llmgw.services.drift.calibrate import block_bootstrap_windows, per_window_alpha, tail_quantile
from llmgw.services.drift.detector import DetectorSettings, DriftDetector, Input
from llmgw.services.drift.incidents import Debouncer
from llmgw.services.drift.model import SEQUENTIAL
from llmgw.services.drift.sampling import Shedder
from llmgw.services.drift.stats import (
    MmdReference,
    assign,
    domain_auc,
    g_batch,
    g_test,
    keywords,
    permutation_pvalue,
)
from tests.drift_synth import DIM, Topics, close_sessions

BASE = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
# A loose budget (alpha ~ 1 % per window) so a test of a few hundred windows can measure it.
LOOSE = {"false_alarms_per_month": 2e3, "expected_segments": 1, "assumed_events_per_second": 1.0}


def _detector(**kw: object) -> DriftDetector:
    return DriftDetector(DetectorSettings(**{"reference_size": 300, "window": 50, "simulations": 2000, **kw}))  # type: ignore[arg-type]


def _incidents(recs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in recs if r["type"] == "incident"]


class TestCalibration:
    def test_false_alarms_stay_within_budget_on_session_bursty_traffic(self) -> None:
        """Where a chi-square test that assumes independent requests alarms on most windows,
        the block-bootstrap calibration keeps openings near the budget."""
        topics = Topics(seed=3)
        det = _detector(**LOOSE)
        det.observe("s", topics.stream(300, BASE))
        model = det._segments["s"].model
        assert model is not None
        alpha = model.calibration.thresholds["topic@50"].alpha
        windows = 300
        recs = det.observe("s", topics.stream(50 * windows, BASE))
        opened = [r for r in _incidents(recs) if r["state"] == "OPEN"]
        budget = alpha * windows * 3  # three detectors share... each has alpha: at most 3 alpha per window
        assert len(opened) <= max(3, 2 * budget), (len(opened), budget)
        # The naive test on the same kind of windows: p < alpha (independence) fires constantly.
        naive = sum(
            chi2.sf(g_test(model.cells.reference_counts,
                           np.bincount(assign(model.cells, np.stack([i.vector for i in w])),
                                       minlength=model.cells.k + 1))[0], model.cells.k) < alpha
            for w in (topics.stream(50, BASE) for _ in range(100)))
        assert naive > 30

    @pytest.mark.parametrize("seed", [2, 5])
    def test_window_thresholds_at_the_default_budget_hold_on_bursty_traffic(self, seed: int) -> None:
        """At the strict default budget (3.2e-6 per window and detector here) the thresholds are
        extrapolated far past what the simulation sees. With the tails allowed to end (a GPD fit
        of negative shape) and the longer windows fitted on a quarter of the simulations, these
        two references put thresholds below live traffic's 99.9th percentile: 5 and 8 openings
        of the topic and MMD windows in 1,000 windows, where six detectors' budget is 0.019; with
        only those fixed, novelty@400 still opened 12 in one."""
        topics = Topics(seed=seed)
        det = _detector(reference_size=600, provisional_size=600, cusum=False, seed=seed)
        det.observe("s", topics.stream(600, BASE, session=6))
        model = det._segments["s"].model
        assert model is not None
        live = np.stack([i.vector for i in topics.stream(50 * 1000, BASE, session=6)])
        labels = assign(model.cells, live)
        opened = {}
        for name in ("topic@50", "topic@200", "novelty@200", "novelty@400", "mmd@50", "mmd@100"):
            th = model.calibration.thresholds[name]
            ends = np.arange(th.window, len(live) + 1, 50)
            if name.startswith("novelty"):
                values = np.array([(labels[e - th.window:e] == model.cells.k).mean() for e in ends])
            elif name.startswith("topic"):
                counts = np.stack([np.bincount(labels[e - th.window:e], minlength=model.cells.k + 1) for e in ends])
                values = g_batch(model.cells.reference_counts, counts)
            else:
                values = np.array([model.mmd.mmd2(live[e - th.window:e]) for e in ends])
            # Opening takes open_after (2) windows in a row above the threshold.
            opened[name] = int((np.minimum(values[1:], values[:-1]) > th.upper).sum())
        assert sum(opened.values()) <= 1, opened

    def test_alpha_splits_the_monthly_budget_across_segments_and_detectors(self) -> None:
        alpha, per_month = per_window_alpha(false_alarms_per_month=1, segments=10, detectors=3,
                                            events_per_second=1.0, window=50)
        assert per_month == pytest.approx(30 * 24 * 3600 / 50)
        assert alpha == pytest.approx(1 / 10 / 3 / per_month)

    def test_tail_quantile_extrapolates_beyond_the_simulation(self) -> None:
        null = np.random.default_rng(0).exponential(1.0, 20000)
        assert tail_quantile(null, 0.01) == pytest.approx(np.log(100), rel=0.05)
        # 1e-6 can't be seen in 20 000 draws; the fitted exponential tail still lands near ln(1e6).
        assert tail_quantile(null, 1e-6) == pytest.approx(np.log(1e6), rel=0.1)

    def test_block_bootstrap_keeps_runs_of_consecutive_events(self) -> None:
        w = block_bootstrap_windows(100, 25, 50, 10, np.random.default_rng(0))
        assert w.shape == (50, 25)
        steps = np.diff(w, axis=1) % 100
        assert (steps == 1).mean() > 0.8  # mostly consecutive: 9 of 10 steps inside a block

    def test_a_block_permutation_does_not_take_a_few_sessions_for_a_shift(self) -> None:
        """A window of 96 inputs from 8 sessions of 12 close follow-ups, against a reference of
        the same kind: permuting single inputs calls it a shift (every permuted window spans
        dozens of sessions), permuting sessions does not."""
        rng = np.random.default_rng(4)
        ref, window = close_sessions(360, rng, length=12), close_sessions(96, rng, length=12)
        pooled = np.vstack([ref, window])

        def mmd(idx: np.ndarray) -> float:
            mask = np.zeros(len(pooled), bool)
            mask[idx] = True
            return MmdReference.of(pooled[~mask]).mmd2(pooled[mask])

        observed = MmdReference.of(ref).mmd2(window)
        single = permutation_pvalue(mmd, len(pooled), len(window), observed, permutations=99, rng=rng)
        blocks = permutation_pvalue(mmd, len(pooled), len(window), observed, permutations=99, rng=rng, block_len=12)
        assert single <= 0.02 and blocks > 0.1, (single, blocks)

    @pytest.mark.parametrize(("block_len", "confirmed"), [(12, False), (1, True)])
    def test_the_detector_confirms_an_mmd_crossing_by_permuting_sessions(self, block_len: int,
                                                                         confirmed: bool) -> None:
        """The same as above through the detector's own confirmation: a window of a few fresh
        sessions is no shift when whole sessions (``block_len``) are permuted; permuting single
        inputs (``block_len`` 1) would confirm it."""
        rng = np.random.default_rng(4)
        det = _detector(reference_size=720, provisional_size=720, block_len=block_len, cusum=False)
        det.observe("s", [Input(v, f"r{i}") for i, v in enumerate(close_sessions(720, rng, length=12))])
        det.observe("s", [Input(v, f"w{i}") for i, v in enumerate(close_sessions(100, rng, length=12))])
        seg = det._segments["s"]
        assert seg.model is not None
        window = np.stack([i.vector for i in list(seg.recent)[-100:]])
        p = det._confirm(seg, seg.model, "mmd@100", seg.model.mmd.mmd2(window), 100)
        assert (p <= 0.02) if confirmed else (p > 0.1), p

    def test_a_permutation_p_value_is_never_zero(self) -> None:
        rng = np.random.default_rng(0)
        p = permutation_pvalue(lambda idx: 0.0, 10, 5, 1.0, permutations=99, rng=rng)
        assert p == pytest.approx(1 / 100)


class TestIncidents:
    def test_a_new_topic_opens_one_confirmed_incident_that_names_it_then_closes(self) -> None:
        topics = Topics(seed=5)
        det = _detector()  # the default budget: one false alarm a month
        det.observe("s", topics.stream(300, BASE))
        assert not _incidents(det.observe("s", topics.stream(1000, BASE)))
        shifted = det.observe("s", topics.stream(800, [0.28, 0.21, 0.14, 0.07, 0.3, 0.0]))
        opened = [r for r in _incidents(shifted) if r["state"] == "OPEN"]
        assert opened, [r["detectors"] for r in shifted if r["type"] == "window"]
        # Window detectors open confirmed by a permutation test; the CUSUM carries no p-value.
        assert all(i["p_value"] is not None and i["p_value"] <= 0.01 for i in opened if i["detector"] not in SEQUENTIAL)
        # Each detector keeps its own incident; the novelty detector's names the new topic first.
        inc = next(i for i in opened if i["detector"].startswith("novelty@"))
        assert inc["statistic"] > inc["threshold"] and inc["calibration_id"].startswith("cal-")
        # First the new topic's own group: every example is about it.
        group, top = inc["clusters"][:2]
        assert group["cell"] == "new" and group["current_share"] > 2 * group["reference_share"] and group["size"] >= 3
        assert "subjecte" in group["keywords"] and all("subjecte" in e for e in group["examples"])
        assert top["cell"] == "novel" and top["current_share"] > 2 * top["reference_share"] and top["lift"] > 2
        # The novel cell also holds the 5 % of ordinary inputs beyond the radius: most, not all.
        assert "subjecte" in top["keywords"] and sum("subjecte" in e for e in top["examples"]) * 2 > len(top["examples"])
        assert 3 <= len(top["examples"]) <= 5
        novelty = inc["effect"]["novelty_share"]
        assert inc["effect"]["domain_auc"]["auc"] > 0.55 and novelty["current"] > 2 * novelty["reference"]
        assert inc["window"]["offsets"]["0"][0] <= inc["window"]["offsets"]["0"][1]
        back = det.observe("s", topics.stream(2000, BASE))
        closed = {r["incident_id"] for r in _incidents(back) if r["state"] == "CLOSED"}
        assert {i["incident_id"] for i in opened} <= closed

    def test_a_diffuse_shift_of_every_input_is_caught_by_mmd(self) -> None:
        """Every input moves a little the same way (say, a new client rephrases everything): the
        topic mix barely changes, the distribution does."""
        topics = Topics(seed=7)
        det = _detector(**LOOSE)
        det.observe("s", topics.stream(600, BASE))
        d = topics.rng.standard_normal(DIM)
        d /= np.linalg.norm(d)
        moved = [dataclasses.replace(i, vector=((i.vector + 0.4 * d) / np.linalg.norm(i.vector + 0.4 * d))
                                     .astype(np.float32)) for i in topics.stream(600, BASE)]
        assert any(r["detector"].startswith("mmd@") for r in _incidents(det.observe("s", moved))
                   if r["state"] == "OPEN")

    def test_rebaselining_closes_open_incidents_and_uses_the_new_reference(self) -> None:
        topics = Topics(seed=5)
        det = _detector()
        det.observe("s", topics.stream(300, BASE))
        det.observe("s", topics.stream(500, [0.2, 0.2, 0.1, 0.1, 0.4, 0.0]))
        assert det._segments["s"].opened
        sample = det.recent_samples()[0]
        sample.status, sample.id = "accepted", "s@new"
        closed = det.set_reference(sample)
        assert closed and all(r["state"] == "CLOSED" and r["reason"] == "re-baselined" for r in closed)
        assert det.reference("s") is sample
        assert not _incidents(det.observe("s", topics.stream(500, [0.2, 0.2, 0.1, 0.1, 0.4, 0.0])))

    def test_a_provisional_reference_grows_to_its_full_size_only_while_nothing_is_open(self) -> None:
        topics = Topics(seed=17)
        det = _detector(reference_size=600, provisional_size=300)
        det.observe("s", topics.stream(300, BASE))
        first = det.reference("s")
        assert first is not None and len(first.vectors) == 300
        det.observe("s", topics.stream(300, BASE))
        grown = det.reference("s")
        assert grown is not None and len(grown.vectors) == 600 and grown.status == "provisional"
        assert grown.id != first.id and grown.texts[:300] == first.texts
        # The store gets the grown one (a short one not saved yet is superseded).
        assert [r.id for r in det.new_references] == [grown.id]
        # A shift while it is still short opens an incident: the reference does not take it in.
        shifted = _detector(reference_size=600, provisional_size=300)
        shifted.observe("s", topics.stream(300, BASE))
        short = shifted.reference("s")
        shifted.observe("s", topics.stream(600, [0.1, 0.1, 0.1, 0.1, 0.6, 0.0]))
        assert shifted._segments["s"].opened and shifted.reference("s") is short


class TestDebouncer:
    def test_opens_after_k_crossings_and_closes_below_the_lower_threshold(self) -> None:
        d = Debouncer(open_after=2, close_after=2)
        assert [d.step(v, 10, 5) for v in (11, 4, 11)] == [None, None, None]
        assert d.step(12, 10, 5) == "OPEN"
        d.opened()
        assert [d.step(v, 10, 5) for v in (7, 11, 4)] == [None, "UPDATE", None]
        assert d.step(6, 10, 5) is None  # hysteresis: between the thresholds resets the close count
        assert [d.step(4, 10, 5), d.step(3, 10, 5)] == [None, "CLOSED"]


class TestExplanations:
    def test_domain_auc_separates_shifted_samples_with_an_interval(self) -> None:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((100, 8))
        auc, lo, hi = domain_auc(a, rng.standard_normal((60, 8)) + 1.0)
        same, slo, _ = domain_auc(a, rng.standard_normal((60, 8)))
        assert auc > 0.85 and lo < auc < hi and slo < 0.65 and same < 0.7

    def test_keywords_are_words_that_grew(self) -> None:
        ref = ["reset my password please", "billing question about invoice"] * 10
        cur = ["refund for crypto wallet", "crypto wallet refund now", "my password again"]
        words = keywords(cur, ref)
        assert set(words) == {"crypto", "refund", "wallet"}  # "password" did not grow


class TestShedding:
    def test_samples_when_arrivals_outrun_embedding_and_is_deterministic(self) -> None:
        s = Shedder(utilization=0.8)
        assert s.keep("a") and s.rate == 1.0
        s.observe_embedding(200, 1.0)  # 200 texts/s
        s.observe_arrivals([i / 1000 for i in range(1001)])  # 1000 events/s
        assert s.rate == pytest.approx(0.16, rel=0.01)
        kept = [s.keep(f"r{i}") for i in range(5000)]
        assert 0.13 < sum(kept) / 5000 < 0.19 and kept == [s.keep(f"r{i}") for i in range(5000)]
        for _ in range(6):  # back to 10 events/s: the rate recovers
            s.observe_arrivals([i / 10 for i in range(11)])
        assert s.rate == 1.0
