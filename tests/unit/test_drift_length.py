"""The sequential length detector (services/drift/length.py): real detector, synthetic inputs whose
texts are as long as their topic and session make them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from llmgw.commands.drift import format_record
from llmgw.services.drift.calibrate import per_window_alpha
from llmgw.services.drift.detector import DetectorSettings, DriftDetector, Input
from llmgw.services.drift.length import TAIL, SequentialLength
from llmgw.services.drift.model import CUSUM, LENGTH
from llmgw.services.drift.sequential import Betting, cusum_path
from tests.drift_synth import Topics

BASE = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
SETTINGS = DetectorSettings(reference_size=600, window=50)
# The length detector's alpha: a tenth of one detector's share (DetectorSettings.length_budget).
ALPHA = 0.1 * per_window_alpha(false_alarms_per_month=1.0, segments=1, detectors=7.1, events_per_second=1.0,
                               window=50)[0] / 50
BETTING = Betting(SETTINGS.cusum_bets, SETTINGS.cusum_power)  # as build_model fits it
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "llm.drift.schema.json").read_text())


def _worded(inputs: list[Input], rng: np.random.Generator, *, times: int = 1, share: float = 1.0) -> list[Input]:
    """Each input's text a few words long (its topic sets the typical count, a session keeps to
    it), written ``times`` over in ``share`` of the sessions (a session: a run of one topic)."""
    out, topic, stretch = [], "", 1
    for item in inputs:
        this = item.text.split()[2]  # "subjecta"
        if this != topic:
            topic, stretch = this, times if rng.random() < share else 1
            words = 4 + 3 * "abcdefgh".index(this[-1])
        text = " ".join(f"w{int(rng.integers(100))}" for _ in range(max(1, words + int(rng.integers(-2, 3)))))
        out.append(replace(item, text=" ".join([f"{this}: {text}"] * stretch)))
    return out


def _texts(inputs: list[Input]) -> list[str]:
    return [i.text for i in inputs]


def test_p_values_stay_uniform_on_lengths_with_ties_and_never_go_below_the_tail() -> None:
    """Lengths are whole numbers, a few dozen distinct ones here: ties are broken at random, so each
    direction's p-values are uniform on traffic like the reference (inputs one by one: sessions
    would make one reference's topic shares a sample's), and none is below the share of the
    reference's TAIL longest (shortest) inputs, past which the reference knows nothing."""
    topics, rng = Topics(seed=41), np.random.default_rng(0)
    reference = _texts(_worded(topics.stream(2000, BASE, session=1), rng))
    length = SequentialLength.fit(reference, betting=BETTING, block_len=10, alpha=ALPHA, rng=rng)
    assert len(set(map(len, reference))) < 100
    u = length.pvalues(_texts(_worded(topics.stream(20_000, BASE, session=1), rng)), rng)
    for row in u:
        assert abs(float((row < 0.05).mean()) - 0.05) < 0.01 and abs(float((row < 0.5).mean()) - 0.5) < 0.02
        assert row.min() >= TAIL / 2001 and (row == TAIL / 2001).mean() < 0.01


def test_longer_inputs_in_a_tenth_of_the_sessions_cross_and_stationary_traffic_does_not() -> None:
    topics, rng = Topics(seed=43), np.random.default_rng(1)
    length = SequentialLength.fit(_texts(_worded(topics.stream(600, BASE), rng)), betting=BETTING, block_len=10,
                                  alpha=ALPHA, rng=rng)
    h = length.calibration.threshold

    def top(inputs: list[Input]) -> list[float]:
        return [float(cusum_path(0.0, row, np.inf).max()) for row in length.increments(_texts(inputs), rng)[0]]

    assert max(top(_worded(topics.stream(8000, BASE), rng))) < h
    longer, shorter = top(_worded(topics.stream(2000, BASE), rng, times=3, share=0.1))
    assert longer >= h > shorter, (longer, shorter, h)
    # Empty or clipped inputs (a template that lost its variable) move the other sum.
    clipped = [replace(i, text=i.text[:3]) if k % 4 == 0 else i
               for k, i in enumerate(_worded(topics.stream(2000, BASE), rng))]
    longer, shorter = top(clipped)
    assert shorter >= h > longer, (longer, shorter, h)


def test_the_detector_opens_a_length_incident_that_says_which_way_then_closes() -> None:
    """The texts grow threefold while the embeddings stay where they were: the length detector
    opens (no confirmation: its threshold carries sessions), says the inputs are longer with the
    medians and the longest inputs, and closes once they are back; the novelty detector stays
    shut. Its sums go with the segment to a replica that takes it over."""
    topics, rng = Topics(seed=47), np.random.default_rng(2)
    det = DriftDetector(SETTINGS)
    det.observe("s", _worded(topics.stream(600, BASE), rng))
    assert not [r for r in det.observe("s", _worded(topics.stream(1500, BASE), rng)) if r["type"] == "incident"]
    recs = det.observe("s", _worded(topics.stream(600, BASE), rng, times=3))
    incidents = [r for r in recs if r["type"] == "incident"]
    opened = [r for r in incidents if r["state"] == "OPEN"]
    assert [r["detector"] for r in opened] == [LENGTH], [(r["detector"], r["state"]) for r in incidents]
    inc = opened[0]
    assert inc["p_value"] is None and inc["statistic"] >= inc["threshold"]
    summary = inc["length"]
    assert summary["direction"] == "longer"
    assert summary["current_median_chars"] > 2.5 * summary["reference_median_chars"]
    assert len(summary["examples"]) == SETTINGS.examples
    assert min(len(e) for e in summary["examples"]) >= summary["current_median_chars"]
    assert not any(c["cell"] == "new" for c in inc["clusters"])  # no new topic is claimed
    jsonschema.validate(json.loads(json.dumps(inc)), SCHEMA)
    assert "longer: median" in format_record(inc)
    state = det.export_state("s")
    assert state is not None and len(state["length_cusum"]) == 2 and max(state["length_cusum"]) > 0
    ref, (recent,) = det.reference("s"), det.recent_samples({"s"})
    assert ref is not None
    second = DriftDetector(SETTINGS)
    second.adopt(ref, recent, state)
    assert (second.export_state("s") or {})["length_cusum"] == state["length_cusum"]
    back = det.observe("s", _worded(topics.stream(3000, BASE), rng))
    closed = [r for r in back if r["type"] == "incident" and r["state"] == "CLOSED"]
    assert [r["detector"] for r in closed] == [LENGTH]
    assert CUSUM not in {r["detector"] for r in back if r["type"] == "incident"}


def test_a_state_saved_before_the_length_detector_adopts_and_its_sums_start_over() -> None:
    topics, rng = Topics(seed=53), np.random.default_rng(3)
    first = DriftDetector(SETTINGS)
    first.observe("s", _worded(topics.stream(700, BASE), rng))
    ref, state, (recent,) = first.reference("s"), first.export_state("s"), first.recent_samples({"s"})
    assert ref is not None and state is not None
    older = DriftDetector(SETTINGS)
    older.adopt(ref, recent, {k: v for k, v in state.items() if not k.startswith("length")})
    assert [r for r in older.observe("s", _worded(topics.stream(50, BASE), rng)) if r["type"] == "window"]
    assert len((older.export_state("s") or {})["length_cusum"]) == 2


def test_the_length_detector_takes_a_tenth_of_a_detector_share_of_the_budget() -> None:
    """Weighted Bonferroni: its alpha a tenth of the novelty CUSUM's, whose own share shrinks by
    a seventy-first, not by an eighth (a whole share would raise its h by ln(8/7))."""
    topics, rng = Topics(seed=59), np.random.default_rng(4)
    det = DriftDetector(SETTINGS)
    det.observe("s", _worded(topics.stream(600, BASE), rng))
    model = det._segments["s"].model
    assert model is not None
    th = model.calibration.thresholds
    assert th[LENGTH].alpha == pytest.approx(0.1 * th[CUSUM].alpha)
    alone = DriftDetector(replace(SETTINGS, length_cusum=False))
    alone.observe("s", _worded(Topics(seed=59).stream(600, BASE), np.random.default_rng(4)))
    assert alone._segments["s"].model is not None
    assert th[CUSUM].alpha == pytest.approx(alone._segments["s"].model.calibration.thresholds[CUSUM].alpha * 7 / 7.1)
    assert LENGTH not in alone._segments["s"].model.calibration.thresholds


def test_turning_the_length_detector_on_leaves_the_other_detectors_decisions_as_they_were() -> None:
    """Its random tie-breaks come from a stream of its own: the novelty CUSUM's sums and the
    windows' statistics are the same to the bit with it on or off."""
    def run(on: bool) -> list[dict[str, object]]:
        topics, rng = Topics(seed=61), np.random.default_rng(5)
        det = DriftDetector(replace(SETTINGS, length_cusum=on, length_budget=1e-9))
        out = det.observe("s", _worded(topics.stream(600, BASE), rng))
        out += det.observe("s", _worded(topics.stream(800, [0.3, 0.2, 0.2, 0.1, 0.2, 0.0]), rng))
        return [{k: v for k, v in r["detectors"].items() if k != LENGTH} for r in out if r["type"] == "window"]

    with_length, without = run(True), run(False)
    assert with_length == without and any(CUSUM in d for d in without)
