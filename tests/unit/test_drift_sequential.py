"""The sequential novelty detector (services/drift/sequential.py): fair bets, p-values that stay
uniform on session-bursty traffic, a threshold that carries sessions, power on a new topic at 5 %,
and its incidents through the detector."""

from __future__ import annotations

import numpy as np
import pytest

from llmgw.services.drift.calibrate import per_window_alpha
from llmgw.services.drift.detector import DetectorSettings, DriftDetector, Input
from llmgw.services.drift.model import CUSUM
from llmgw.services.drift.sequential import (
    Betting,
    SequentialNovelty,
    _tail_share,
    bet_increments,
    calibrate_cusum,
    conformal_pvalues,
    cusum_path,
    knn_dissimilarity,
    leave_session_out_scores,
    session_increments,
)
from tests.drift_synth import DIM, Topics, close_sessions, rare_bursts

BASE = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
NEW = [0.38, 0.285, 0.19, 0.095, 0.05, 0.0]  # a new topic (the fifth) at 5 %
BETS, POWER, PAIR_K = DetectorSettings().cusum_bets, DetectorSettings().cusum_power, DetectorSettings().cusum_pair_k
SESSION = 5  # session-aware bets' mean session length (CUSUM_SESSION_LEN, the default; 0 is mixture bets)
# The default budget's per-input alpha: one false alarm a month, seven detectors, 1 input/s.
ALPHA = per_window_alpha(false_alarms_per_month=1, segments=1, detectors=7, events_per_second=1.0, window=50)[0] / 50


def _vectors(inputs: list[Input]) -> np.ndarray:
    return np.stack([i.vector for i in inputs])


def test_the_bets_are_fair_on_uniform_p_values() -> None:
    """E[exp(bet)] = 1 for a uniform p-value: the CUSUM is a likelihood-ratio CUSUM, so its
    run length to a false alarm is at least e^h on independent inputs."""
    # u = v^(1/a) takes the integrable singularity at 0 away: du = v^(1/a - 1) / a dv.
    v = (np.arange(200_000) + 0.5) / 200_000
    u = v ** (1 / POWER)
    assert (np.exp(bet_increments(u, BETS, POWER)) * u / v / POWER).mean() == pytest.approx(1.0, abs=1e-3)
    # and it pays on small p-values, loses a little on the rest
    assert bet_increments(np.array([0.002]), BETS, POWER)[0] > 1.0 > 0 > bet_increments(np.array([0.6]), BETS, POWER)[0]


@pytest.mark.parametrize("belief", [0.0, 0.3, 0.95])
def test_session_bets_are_fair_whatever_came_before(belief: float) -> None:
    """Each session-aware increment is a likelihood ratio whose prediction is made before the
    input is seen: E[exp(increment)] = 1 for a uniform p-value whatever the belief it starts
    from, so the sum is a likelihood-ratio CUSUM as the mixture bets' is."""
    v = (np.arange(200_000) + 0.5) / 200_000
    u = v ** (1 / POWER)  # as above: du = v^(1/a - 1) / a dv
    incs, _ = session_increments(u[:, None], power=POWER, session_len=SESSION, share=0.05,
                                 belief=np.full(len(u), belief))
    mean = (np.exp(incs[:, 0]) * u / v / POWER).mean()
    # p-values are clipped at 1e-12 (the grid's first 0.4 % of v): a shade under 1, never over.
    assert 1.0 - 4e-3 < mean < 1.0 + 1e-4, mean


def _session_stream(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """p-values of a stream in sessions of 1-9 inputs; a new topic's sessions (``share`` of the
    inputs) bring p-values only somewhat small (u = w^3: below 0.01 a fifth of the time), the
    rest uniform."""
    out: list[float] = []
    while len(out) < n:
        new = rng.random() < share
        out += list(rng.random(int(rng.integers(1, 10))) ** (3 if new else 1))
    return np.asarray(out[:n])


def test_session_bets_find_a_topic_that_comes_in_sessions_sooner() -> None:
    """Fails with per-input mixture bets alone: a new topic's inputs come in sessions, and a run
    of somewhat small p-values counts for more than as many scattered ones when the bets expect
    sessions (the dilution a 5 % topic pays is paid about once per session, not per input).
    Both thresholds calibrated the same way on the same null; the mixture bets' sum is also
    slower to cross on most streams."""
    rng = np.random.default_rng(5)
    null = rng.random(2000)
    h = {n: calibrate_cusum(null, alpha=ALPHA, betting=Betting(BETS, POWER, n), block_len=10,
                            rng=np.random.default_rng(0)).threshold for n in (0, SESSION)}
    first: dict[int, list[int]] = {0: [], SESSION: []}
    for _ in range(20):
        u = _session_stream(rng, 3000, 0.05)[None, :]
        mixture = cusum_path(0.0, bet_increments(u[0], BETS, POWER), cap=np.inf)
        session = cusum_path(0.0, session_increments(u, power=POWER, session_len=SESSION, share=0.05)[0][0],
                             cap=np.inf)
        for n, path in ((0, mixture), (SESSION, session)):
            crossed = np.flatnonzero(path >= h[n])
            first[n].append(int(crossed[0]) if len(crossed) else 3000)
    assert np.median(first[SESSION]) < 0.8 * np.median(first[0]), first
    assert sum(a < b for a, b in zip(first[SESSION], first[0], strict=True)) >= 14, first


def test_p_values_stay_uniform_on_session_traffic_only_when_the_session_is_left_out() -> None:
    """A reference input's own session siblings are its nearest neighbours; a fresh input has no
    siblings in the reference. Scored with them, the reference looks closer-knit than fresh
    traffic ever is and fresh inputs get small p-values all the time."""
    rng = np.random.default_rng(1)
    ref, fresh = close_sessions(600, rng), close_sessions(3000, rng)
    scores = knn_dissimilarity(ref, fresh, 5)
    kept = conformal_pvalues(np.sort(leave_session_out_scores(ref, 5, 10)), scores, rng)
    naive = conformal_pvalues(np.sort(leave_session_out_scores(ref, 5, 0)), scores, rng)
    assert 0.4 < kept.mean() < 0.6 and (kept < 0.05).mean() < 0.1
    assert (naive < 0.05).mean() > 0.5


def test_the_threshold_carries_runs_of_small_p_values_beyond_the_independent_bound() -> None:
    rng = np.random.default_rng(2)
    iid = rng.random(600)
    bound = float(np.log(1 / ALPHA))
    for session_len in (0, SESSION):  # mixture bets, and session-aware ones
        plain = calibrate_cusum(iid, alpha=ALPHA, betting=Betting(BETS, POWER, session_len), block_len=10, rng=rng)
        assert plain.independent_bound == pytest.approx(bound)
        assert plain.threshold <= bound * 1.1 and plain.decay > 0.8
        # The same scores in runs: the high ones arrive ten at a time, as a rare topic's sessions do.
        runs = np.sort(iid).reshape(-1, 10)[rng.permutation(60)].ravel()
        bursty = calibrate_cusum(runs, alpha=ALPHA, betting=Betting(BETS, POWER, session_len), block_len=10,
                                 rng=rng)
        assert bursty.threshold > plain.threshold * 1.3 and bursty.decay < plain.decay, (session_len, bursty)


def _next_topic(topics: Topics, n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stationary traffic with a new topic next to the first at ``share``: its centre 0.7 from the
    first topic's, its inputs tight around it (0.3, the known topics' 0.6). Each of its inputs is
    only somewhat far from the reference; they are much closer to one another. The stream, and
    which of its inputs are the new topic's."""
    live = _vectors(topics.stream(n, BASE))
    dim = live.shape[1]
    own = rng.standard_normal(dim)
    centre = topics.centers[0] + 0.7 * own / np.linalg.norm(own)
    new = rng.random(n) < share
    for i in np.flatnonzero(new):
        v = centre + 0.3 * rng.standard_normal(dim) / np.sqrt(dim)
        live[i] = v / np.linalg.norm(v)
    return live, new


@pytest.mark.parametrize("more_windows", [(), (150,)])
def test_pair_p_values_stay_uniform_on_session_traffic(more_windows: tuple[int, ...]) -> None:
    """The pair statistic's null is the reference's own inputs against the window before their
    session: on fresh traffic like it (sessions of a topic in a row), its p-values are uniform,
    a second, shorter pair window's as well (each window its own rest and null)."""
    topics = Topics(seed=21)
    seq = SequentialNovelty.fit(_vectors(topics.stream(1200, BASE)), k=5, bets=BETS, power=POWER, block_len=10,
                                alpha=ALPHA, rng=np.random.default_rng(0), window=300, more_windows=more_windows)
    rows = 2 + len(more_windows)
    assert seq.statistics == rows and seq.history_len() == 310
    fresh = _vectors(topics.stream(4000, BASE))
    p = seq.pvalues(fresh[310:], np.random.default_rng(1), history=fresh[:310])
    assert p.shape == (rows, 4000 - 310)
    for row in p:
        assert 0.42 < row.mean() < 0.58 and (row < 0.05).mean() < 0.08, (row.mean(), (row < 0.05).mean())


def test_combinations_stay_calibrated_when_rare_kinds_of_input_come_in_bursts() -> None:
    """Fails when the combination's null takes a reference input's distance against the whole
    reference: where rare kinds of input come in bursts (a few look-alikes within sixty inputs),
    a live input's look-alikes are recent, not in the reference, so they pair it and leave it
    far; a reference input's, in the window before it, would pair it and bring it near. The null
    then lacks the inputs both paired and far that such traffic brings (2.1 % of p-values below
    0.002 that way, against 0.2 % for uniform ones)."""
    pooled = []
    for seed in range(3):
        topics, rng = Topics(seed=40 + seed), np.random.default_rng(seed)
        rare = rng.standard_normal((30, DIM))
        rare /= np.linalg.norm(rare, axis=1, keepdims=True)
        ref, fresh = rare_bursts(topics, rare, 2000, BASE, rng), rare_bursts(topics, rare, 6000, BASE, rng)
        seq = SequentialNovelty.fit(ref, k=5, bets=BETS, power=POWER, block_len=10, alpha=ALPHA,
                                    rng=np.random.default_rng(0), window=400)
        back, p_rng = seq.history_len(), np.random.default_rng(1)
        pooled += [seq.pvalues(fresh[t:t + 1000], p_rng, history=fresh[t - back:t])[1]
                   for t in range(back, len(fresh), 1000)]
    p = np.concatenate(pooled)
    assert (p < 0.002).mean() < 0.008 and (p < 0.01).mean() < 0.02, ((p < 0.002).mean(), (p < 0.01).mean())


def test_a_close_knit_new_topic_is_found_with_its_pairs_not_by_its_distance_alone() -> None:
    """Fails without pairs: a new topic at 5 % whose inputs are only somewhat far from the
    reference (distance alone stays far below its threshold) but close to one another."""
    topics, rng = Topics(seed=23), np.random.default_rng(123)
    ref = _vectors(topics.stream(2000, BASE))
    live, new = _next_topic(topics, 3000, 0.05, rng)
    alone = SequentialNovelty.fit(ref, k=5, bets=BETS, power=POWER, block_len=10, alpha=ALPHA,
                                  rng=np.random.default_rng(0))
    paired = SequentialNovelty.fit(ref, k=5, bets=BETS, power=POWER, block_len=10, alpha=ALPHA,
                                   rng=np.random.default_rng(0), window=400)
    assert alone.statistics == 1
    top_alone = cusum_path(0.0, alone.increments(live, np.random.default_rng(1))[0][0], cap=np.inf).max()
    assert top_alone < alone.calibration.threshold
    incs, _ = paired.increments(live, np.random.default_rng(1))
    distance, pairs = (cusum_path(0.0, row, cap=np.inf).max() for row in incs)
    assert distance < paired.calibration.threshold <= pairs, (distance, pairs, paired.calibration.threshold)
    # What carried it: the new inputs' distances are only somewhat small, their pair statistics
    # are past what the reference's own inputs show.
    later = new & (np.arange(len(live)) >= 1000)
    assert np.median(paired.pvalues(live, np.random.default_rng(2))[0][later]) > 0.02
    assert paired.pairs is not None
    stat = paired.pair_statistics(live)
    assert np.median(stat[later]) > np.quantile(paired.pairs.values, 0.95)


def test_a_rare_topic_grown_common_keeps_its_pair_evidence() -> None:
    """Fails with a single-nearest pair margin: the reference holds a rare topic (1 % of it) that
    grows to 5 %. Its inputs' nearest reference input is often one of its own, which takes the
    margin (nearest recent minus nearest reference) towards zero (median p-value 0.06 here); more
    of their nearest are still recent ones than an ordinary input's, which the count sees."""
    topics = Topics(seed=33)
    ref = _vectors(topics.stream(2000, [0.4, 0.3, 0.2, 0.09, 0.01, 0.0]))
    stream = topics.stream(1500, NEW)
    live = _vectors(stream)
    grown = np.array(["subjecte" in i.text for i in stream]) & (np.arange(len(stream)) >= 400)
    seq = SequentialNovelty.fit(ref, k=5, bets=BETS, power=POWER, block_len=10, alpha=ALPHA,
                                rng=np.random.default_rng(0), window=400, pair_k=PAIR_K)
    assert seq.pairs is not None
    stat = seq.pair_statistics(live)
    p = _tail_share(seq.pairs.values, stat)
    assert np.median(p[grown]) < 0.02 and np.median(p[~grown]) > 0.4, (np.median(p[grown]), np.median(p[~grown]))


def test_a_new_topic_at_five_percent_crosses_and_stationary_traffic_does_not() -> None:
    topics = Topics(seed=11)
    rng = np.random.default_rng(0)
    seq = SequentialNovelty.fit(_vectors(topics.stream(600, BASE)), k=5, bets=BETS, power=POWER, block_len=10,
                                alpha=ALPHA, rng=rng)
    h = seq.calibration.threshold
    quiet = cusum_path(0.0, seq.increments(_vectors(topics.stream(6000, BASE)), rng)[0][0], cap=np.inf)
    assert quiet.max() < h
    shifted = cusum_path(0.0, seq.increments(_vectors(topics.stream(1000, NEW)), rng)[0][0], cap=np.inf)
    assert shifted.max() >= h, (shifted.max(), h)


@pytest.mark.parametrize("session_len", [0, SESSION])
def test_the_detector_opens_a_cusum_incident_that_names_the_new_topic_then_closes(session_len: int) -> None:
    """Opens once while the topic goes on, names it, and closes once it stops, with mixture bets
    and with session-aware ones: a session-aware sum falls too slowly on ordinary traffic to close
    within 3,000 inputs without the close drift an open incident's sum pays
    (``cusum_close_drift``)."""
    topics = Topics(seed=13)
    det = DriftDetector(DetectorSettings(reference_size=600, window=50, cusum_session_len=session_len))
    det.observe("s", topics.stream(600, BASE))
    assert not [r for r in det.observe("s", topics.stream(2000, BASE)) if r["type"] == "incident"]
    recs = det.observe("s", topics.stream(1500, NEW))
    opened = [r for r in recs if r["type"] == "incident" and r["state"] == "OPEN" and r["detector"] == CUSUM]
    assert len(opened) == 1, [r["detectors"].get(CUSUM) for r in recs if r["type"] == "window"]
    inc = opened[0]
    assert inc["p_value"] is None and inc["statistic"] >= inc["threshold"]
    group = inc["clusters"][0]
    assert group["cell"] == "new" and all("subjecte" in e for e in group["examples"])
    back = det.observe("s", topics.stream(3000, BASE))
    assert [r for r in back if r["type"] == "incident" and r["state"] == "CLOSED" and r["detector"] == CUSUM]
    # Its running sum goes with the segment to the replica that takes it over.
    assert "cusum" in (det.export_state("s") or {})


def test_session_aware_bets_wait_for_the_full_reference() -> None:
    """A provisional reference (a few dozen sessions) holds each known topic at a share some
    points off the traffic's; a session-aware sum forgets slowly and adds that up (the Debian
    benchmark's bursty stream opened on one: docs/drift.md). Its sums bet input by input until
    the reference is full, then session-aware."""
    topics = Topics(seed=31)
    det = DriftDetector(DetectorSettings(reference_size=900, provisional_size=300, window=50,
                                         cusum_session_len=SESSION))
    det.observe("s", topics.stream(300, BASE))
    provisional = det._segments["s"].model
    assert provisional is not None and provisional.sequential is not None
    assert provisional.reference.status == "provisional" and provisional.sequential.betting.session_len == 0
    det.observe("s", topics.stream(700, BASE))
    full = det._segments["s"].model
    assert full is not None and full.sequential is not None and len(full.reference.vectors) == 900
    assert full.sequential.betting.session_len == SESSION


def test_a_new_kind_of_input_too_varied_to_form_a_group_is_named_by_the_inputs_that_carried_the_evidence() -> None:
    """Inputs each unlike the reference *and* unlike each other (a new topic of varied texts, seen
    early) link no close pairs, so no group forms among the recent inputs; the sequential
    detector's incident still names them: the inputs of its run with small p-values."""
    topics = Topics(seed=17)
    rng = np.random.default_rng(3)
    det = DriftDetector(DetectorSettings(reference_size=600, window=50))
    det.observe("s", topics.stream(1100, BASE))
    stream = topics.stream(1500, BASE)
    # Each half-way between a known topic and a direction of its own: far from the reference's
    # inputs (small p-values), yet closer to them than to one another (no close pairs).
    for at in sorted(rng.choice(len(stream), 120, replace=False), reverse=True):
        centre = topics.centers[int(rng.integers(4))]
        own = rng.standard_normal(centre.shape[0])
        own -= (own @ centre) * centre
        v = 0.5 * centre + np.sqrt(0.75) * own / np.linalg.norm(own)
        stream.insert(int(at), Input(v.astype(np.float32), f"scattered question {at}"))
    opened = [r for r in det.observe("s", stream)
              if r["type"] == "incident" and r["state"] == "OPEN" and r["detector"] == CUSUM]
    assert opened, "the sequential detector did not open"
    group = opened[0]["clusters"][0]
    assert group["cell"] == "new" and group["basis"] == "evidence", (group.get("examples"), group.get("size"))
    assert len(group["examples"]) == 4 and all(e.startswith("scattered") for e in group["examples"])


def test_each_sum_goes_to_the_replica_that_takes_the_segment_over_and_an_older_state_still_adopts() -> None:
    topics = Topics(seed=29)
    first = DriftDetector(DetectorSettings(reference_size=600, window=50))
    first.observe("s", topics.stream(600, BASE))
    first.observe("s", topics.stream(500, NEW))
    ref, state = first.reference("s"), first.export_state("s")
    (recent,) = first.recent_samples({"s"})
    assert ref is not None and state is not None
    assert len(state["cusum"]) == len(state["run"]) == 2 and max(state["cusum"]) > 0, state["cusum"]
    second = DriftDetector(DetectorSettings(reference_size=600, window=50))
    second.adopt(ref, recent, state)
    assert (second.export_state("s") or {})["cusum"] == state["cusum"]
    # and each session-aware sum's belief with it
    assert len(state["belief"]) == 2 and (second.export_state("s") or {})["belief"] == state["belief"]
    # A state saved before pairs holds one sum: adopted, the sums start over at the next window.
    older = DriftDetector(DetectorSettings(reference_size=600, window=50))
    older.adopt(ref, recent, {k: v for k, v in {**state, "cusum": 3.0, "run": 40}.items() if k != "belief"})
    recs = older.observe("s", topics.stream(50, BASE))
    assert [r for r in recs if r["type"] == "window"]
    assert len((older.export_state("s") or {})["cusum"]) == 2
