"""Drift detection on real text: false alarms against the budget, detection rate and delay, and
the job's throughput against raw embedding throughput, all in one run.

Text (``--corpus``, bench/drift_corpus.py): sentences from the documentation strings of Python's
standard library grouped by module family (``stdlib``, the default), or Debian package
descriptions grouped by archive section (``debian``); each with its known topics, a distinct new
topic and a near one — human-written, offline, not template-generated. Injections: the written
prompt-injection, jailbreak and exfiltration cases of this repository's eval suites.

    .venv/bin/python -m bench.drift [--trials 10] [--corpus stdlib|debian] [--reference 2000]
                                    [--only false-alarms|detection|bound|calibration|throughput ...]
                                    [--set cusum_pair_k=7 ...]

Each stream starts with the segment's reference (``--reference`` inputs: scoring from the job's
provisional size, then the reference grows to its full size and is refitted, as in the job).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy.stats import chi2

from bench.drift_corpus import CORPORA, Corpus, load
from llmgw.evals.suite import load_suite
from llmgw.events.v1 import events_pb2
from llmgw.kit.embed import SentenceEmbedder
from llmgw.services.drift.app import Batch, process_window
from llmgw.services.drift.detector import DetectorSettings, DriftDetector, Input
from llmgw.services.drift.model import CUSUM
from llmgw.services.drift.sequential import cusum_path
from llmgw.services.drift.stats import assign, g_test
from llmgw.stack import REPO

WINDOW = 50
SECTIONS = ("false-alarms", "detection", "bound", "calibration", "throughput")
# p-value bins for the information bound (finer where a new topic's p-values sit).
_BOUND_EDGES = np.array([0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])


def injections() -> list[str]:
    out = []
    for suite in ("classify-ticket", "summarize", "extract-contact"):
        for case in load_suite(REPO / "evals" / suite).cases:
            if case.kind in ("prompt-injection", "jailbreak", "data-exfiltration"):
                out.extend(v for v in case.vars.values() if len(v) > 20)
    return out


class Streams:
    """Inputs drawn from embedded pools; a session asks 1..2*session-1 questions of one topic."""

    def __init__(self, pools: dict[str, tuple[list[str], np.ndarray]], seed: int) -> None:
        self.pools = pools
        self.rng = random.Random(seed)
        self.t = 0.0

    def take(self, n: int, mix: dict[str, float], session: int = 5) -> list[Input]:
        names, weights = list(mix), list(mix.values())
        out: list[Input] = []
        while len(out) < n:
            topic = self.rng.choices(names, weights)[0]
            texts, vecs = self.pools[topic]
            for _ in range(self.rng.randint(1, 2 * session - 1) if session > 1 else 1):
                i = self.rng.randrange(len(texts))
                self.t += 1.0
                out.append(Input(vecs[i], texts[i], f"r{int(self.t)}", 0, int(self.t), self.t))
        return out[:n]


def _openings(recs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in recs if r["type"] == "incident" and r["state"] == "OPEN"]


def false_alarms(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float], settings: DetectorSettings,
                 windows: int, session: int, seeds: int) -> tuple[int, float, int, Counter[str]]:
    """(openings, expected under the budget, naive chi-square alarms, openings per detector) over
    ``seeds`` x ``windows``."""
    opened, expected, naive, by = 0, 0.0, 0, Counter[str]()
    for seed in range(seeds):
        s = Streams(pools, seed)
        det = DriftDetector(replace(settings, seed=seed))
        det.observe("s", s.take(settings.reference_size, base, session))
        model = det._segments["s"].model
        assert model is not None
        # A window detector's alpha is per window, the sequential detector's per input.
        expected += sum(th.alpha * (settings.window if name == CUSUM else 1)
                        for name, th in model.calibration.thresholds.items()) * windows
        stream = s.take(WINDOW * windows, base, session)
        found = _openings(det.observe("s", stream))
        opened += len(found)
        by.update(str(r["detector"]) for r in found)
        alpha = model.calibration.thresholds[f"topic@{WINDOW}"].alpha
        for w in range(windows):
            counts = np.bincount(assign(model.cells, np.stack([i.vector for i in stream[w * WINDOW:(w + 1) * WINDOW]])),
                                 minlength=model.cells.k + 1)
            naive += chi2.sf(g_test(model.cells.reference_counts, counts)[0], model.cells.k) < alpha
    return opened, expected, naive, by


def detection(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float],
              shifted: Callable[[Streams], list[Input]], settings: DetectorSettings, trials: int,
              horizon: int = 20, new: str = "") -> tuple[float, float | None, str, Counter[str]]:
    """(detection rate within ``horizon`` windows, median delay in inputs, how the first incident
    named it, which detector opened first) over ``trials``. Named: in how many detections the
    incident's first cluster is the new topic's own group (``cell: "new"``) with most of its
    examples from the ``new`` pool."""
    delays: list[int] = []
    first_by = Counter[str]()
    named = 0
    new_texts = {t[:300] for t in pools[new][0]} if new else set()
    for seed in range(trials):
        s = Streams(pools, 1000 + seed)
        det = DriftDetector(replace(settings, seed=seed))
        det.observe("s", s.take(settings.reference_size, base))
        det.observe("s", s.take(WINDOW * 4, base))
        stream = shifted(s)[: WINDOW * horizon]
        for w in range(horizon):
            opened = _openings(det.observe("s", stream[w * WINDOW:(w + 1) * WINDOW]))
            if opened:
                delays.append((w + 1) * WINDOW)
                first_by[str(opened[0]["detector"])] += 1
                first = (opened[0].get("clusters") or [{}])[0]
                examples = first.get("examples", [])
                if first.get("cell") == "new" and sum(e in new_texts for e in examples) * 2 > len(examples):
                    named += 1
                break
    return len(delays) / trials, (statistics.median(delays) if delays else None), (
        f"{named}/{len(delays)}" if new else "-"), first_by


def information_bound(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float], topic: str,
                      share: float, settings: DetectorSettings, seeds: int) -> tuple[float, float]:
    """(KL in nats per input, h), both averaged over the references, for the sequential
    detector's per-input p-value when ``share`` of independent inputs come from ``topic``: the new
    topic's p-value distribution is taken from its whole pool (binned), so KL is what an oracle
    knowing it exactly could gain per input. By Lorden's bound no detector of this score alone,
    at this false-alarm rate (``h = ln(1/alpha)``), has a mean delay much below h / KL on
    independent arrivals."""
    width = np.diff(_BOUND_EDGES)
    kls, hs = [], []
    for seed in range(seeds):
        det = DriftDetector(replace(settings, seed=seed))
        det.observe("s", Streams(pools, 2000 + seed).take(settings.reference_size, base, session=1))
        model = det._segments["s"].model
        assert model is not None and model.sequential is not None
        u = model.sequential.pvalues(pools[topic][1], np.random.default_rng(seed))[0]  # the distance score
        mixed = (1 - share) * width + share * np.histogram(u, _BOUND_EDGES)[0] / len(u)
        kls.append(float(np.sum(mixed * np.log(mixed / width))))
        hs.append(model.sequential.calibration.independent_bound)
    return statistics.mean(kls), statistics.mean(hs)


def oracle_bound(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float], topic: str,
                 share: float, *, session: int = 5, sessions: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """(KL in nats per input for an oracle that knows every topic's distribution and that inputs
    come in sessions, the same taking each input alone) when ``share`` of the sessions are
    ``topic``'s, sessions of 1..2*session-1 inputs as the detection rows draw them. Each topic's
    density ratio comes from a multinomial logistic regression on the embeddings, out of fold
    (5 folds): an estimate of what knowing the topic is worth, not a bound any detector of the
    reference alone could reach. Its h / KL is the oracle's delay at the detector's h."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    names = [*base, topic]
    x = np.vstack([pools[n][1] for n in names])
    y = np.concatenate([np.full(len(pools[n][1]), i) for i, n in enumerate(names)])
    prob = cross_val_predict(LogisticRegression(C=3.0, max_iter=3000), x, y, cv=5, method="predict_proba")
    log_ratio = np.log(np.clip(prob, 1e-6, 1.0) / (np.bincount(y) / len(y)))  # log p_c(x)/p(x) + a constant
    weights = np.array(list(base.values()))
    members = [np.flatnonzero(y == i) for i in range(len(names))]
    rng = np.random.default_rng(seed)

    def lr(rows: np.ndarray) -> float:
        """log LR of one session (``rows``' inputs) of the shifted mix against the reference mix."""
        total = log_ratio[rows].sum(axis=0)
        known = float(np.log(weights @ np.exp(total[:-1] - total[:-1].max())) + total[:-1].max())
        return float(np.logaddexp(np.log(1 - share), np.log(share) + total[-1] - known))

    together = alone = 0.0
    inputs = 0
    for _ in range(sessions):
        c = len(names) - 1 if rng.random() < share else int(rng.choice(len(weights), p=weights))
        rows = rng.choice(members[c], int(rng.integers(1, 2 * session)))
        together += lr(rows)
        alone += sum(lr(rows[i:i + 1]) for i in range(len(rows)))
        inputs += len(rows)
    return together / inputs, alone / inputs


def calibration(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float], settings: DetectorSettings,
                session: int, seeds: int, length: int = 10_000, chunk: int = 500) -> list[dict[str, float]]:
    """Per statistic of the sequential detector on stationary traffic (``seeds`` streams of
    ``length`` inputs after the reference): the share of p-values below 0.01 and 0.001 (uniform
    p-values: 1 % and 0.1 %), and each stream's highest sum over its threshold (no restart, no
    cap). A share above nominal is evidence the threshold's simulation misses (it assumes the
    p-values uniform); the highest sum shows what that costs."""
    rows: list[list[np.ndarray]] = []
    tops: list[list[float]] = []
    for seed in range(seeds):
        s = Streams(pools, seed)
        reference = s.take(settings.reference_size, base, session)
        det = DriftDetector(replace(settings, seed=seed))
        det.observe("s", reference)
        model = det._segments["s"].model
        assert model is not None and model.sequential is not None
        seq, rng = model.sequential, np.random.default_rng(seed)
        vectors = np.stack([i.vector for i in [*reference, *s.take(length, base, session)]])
        start, back = len(reference), seq.history_len()
        p = np.hstack([seq.pvalues(vectors[t:t + chunk], rng, vectors[max(0, t - back):t])
                       for t in range(start, len(vectors), chunk)])
        h = seq.calibration.threshold
        tops.append([float(cusum_path(0.0, row, np.inf).max()) / h for row in seq.betting.increments(p)[0]])
        rows.append(list(p))
    out = []
    for i in range(len(rows[0])):
        u = np.concatenate([r[i] for r in rows])
        highest = [t[i] for t in tops]
        out.append({"below_0.01": float((u < 0.01).mean()), "below_0.001": float((u < 0.001).mean()),
                    "top_median": statistics.median(highest), "top_max": max(highest)})
    return out


def throughput(embedder: SentenceEmbedder, texts: list[str], settings: DetectorSettings,
               timed: int = 2048) -> tuple[float, float]:
    """(raw embedding texts/s, job events/s through process_window), interleaved in one run, in the
    steady state: the segments' references are filled and fitted first (a one-time cost of a few
    seconds per segment, untimed), then ``timed`` events are timed."""
    warm = settings.reference_size + 2 * WINDOW
    texts = [texts[i % len(texts)] for i in range(warm + timed)]
    events = [events_pb2.RequestEvent(request_id=f"r{i}", tenant="acme", route="default", prompt="ask",
                                      label="production", variables={"q": t}, time=float(i)).SerializeToString()
              for i, t in enumerate(texts)]
    batch = Batch(embedder, DriftDetector(settings))
    for start in range(0, warm, 64):
        process_window(events[start:min(start + 64, warm)], batch)
    raw_s, job_s = 0.0, 0.0
    for n, start in enumerate(range(warm, len(texts), 64)):
        chunk, raws = texts[start:start + 64], events[start:start + 64]
        # Alternate which goes first, so warm caches favour neither.
        for which in ((0, 1) if n % 2 else (1, 0)):
            t0 = time.perf_counter()
            if which == 0:
                embedder.encode(chunk)
                raw_s += time.perf_counter() - t0
            else:
                process_window(raws, batch)
                job_s += time.perf_counter() - t0
    return timed / raw_s, timed / job_s


def _setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` for --set, the value parsed as the field's own type."""
    name, _, value = text.partition("=")
    default = getattr(DetectorSettings(), name, None)
    if default is None or not value:
        raise argparse.ArgumentTypeError(f"not FIELD=VALUE with a DetectorSettings field: {text!r}")
    try:
        if isinstance(default, bool):
            return name, value.lower() in ("1", "true", "yes", "on")
        if isinstance(default, tuple):  # e.g. cusum_bets=0.1,0.2
            return name, tuple(type(default[0])(v) for v in value.split(","))
        return name, type(default)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {type(default).__name__}: {value!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--windows", type=int, default=200, help="windows per false-alarm run (and seed)")
    ap.add_argument("--reference", type=int, default=DetectorSettings().reference_size,
                    help="inputs in a segment's full reference")
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="stdlib",
                    help="the text (bench/drift_corpus.py): its known topics, a distinct and a near new one")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="run these sections only (e.g. detection after a change to how incidents are named)")
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", type=_setting,
                    help="measure a detector setting other than its default, e.g. cusum_pair_k=7")
    args = ap.parse_args()
    corpus = CORPORA[args.corpus]
    known, new, near = list(corpus.known), corpus.distinct, corpus.near

    texts = {k: v for k, v in load(args.corpus).items() if k in (*known, new, near)}
    texts["injection"] = injections()
    embedder = SentenceEmbedder()
    t0 = time.perf_counter()
    pools = {name: (ts, embedder.encode(ts)) for name, ts in texts.items()}
    n_texts = sum(len(t) for t in texts.values())
    print(f"corpus: {n_texts} sentences ({', '.join(f'{k} {len(v)}' for k, v in texts.items())}), "
          f"embedded in {time.perf_counter() - t0:.1f} s")
    longer = {k: [" ".join(v[i:i + 3]) for i in range(0, len(v) - 2, 3)] for k, v in texts.items() if k in known}
    for k, v in longer.items():
        pools[f"{k}-long"] = (v, embedder.encode(v))

    base = dict(corpus.known)
    strict = DetectorSettings(**{"reference_size": args.reference, "window": WINDOW, **dict(args.set)})
    if args.set:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in args.set))
    # A budget loose enough (about 1 % per window and detector) that a run can count its alarms.
    loose = replace(strict, false_alarms_per_month=strict.expected_segments * 3 * 0.01 * 30 * 24 * 3600 / WINDOW)

    if "false-alarms" in args.only:
        print_false_alarms(pools, base, strict, loose, args)
    if "detection" in args.only:
        print_detection(pools, base, strict, args.trials, corpus)
    if "bound" in args.only:
        print_bound(pools, base, strict, min(args.trials, 3), corpus)
    if "calibration" in args.only:
        print_calibration(pools, base, strict, min(args.trials, 5))
    if "throughput" in args.only:
        sample = [t for ts in texts.values() for t in ts]
        random.Random(0).shuffle(sample)
        raw, job = throughput(embedder, sample, strict)
        print(f"\nthroughput: raw embedding {raw:.0f} texts/s, drift job {job:.0f} events/s "
              f"-> {job / raw:.2f}x (target >= 0.8)")


def print_false_alarms(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float],
                       strict: DetectorSettings, loose: DetectorSettings, args: argparse.Namespace) -> None:
    print(f"\nfalse alarms: {args.windows} windows per seed, {args.trials} seeds at the default budget and 3 at "
          f"the loose one (window {WINDOW}, reference {args.reference})")
    print(f"{'traffic':<22} {'budget':<8} {'openings':>9} {'per 2,000':>10} {'expected':>9} {'naive chi2':>11}"
          "  by detector")
    for label, session in (("stationary (iid)", 1), ("session-bursty", 6)):
        for name, st, seeds in (("default", strict, args.trials), ("loose", loose, 3)):
            opened, expected, naive, by = false_alarms(pools, base, st, args.windows, session, seeds)
            per = opened / (seeds * args.windows * WINDOW) * 2000
            print(f"{label:<22} {name:<8} {opened:>9} {per:>10.3f} {expected:>9.3f} {naive:>11}  {dict(by)}")


def print_bound(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float],
                strict: DetectorSettings, references: int, corpus: Corpus) -> None:
    print(f"\ninformation bound: the per-input score's KL per input when the share comes from the topic "
          f"(independent arrivals, {references} references); no detector of that score alone "
          "has a mean delay much below h / KL")
    print(f"{'topic':<26} {'share':>6} {'KL (nats/input)':>16} {'h':>6} {'h / KL (inputs)':>16}")
    hs = {}
    for topic, kind in ((corpus.distinct, "distinct"), (corpus.near, "near")):
        for share in (0.05, 0.10):
            kl, h = hs[topic, share] = information_bound(pools, base, topic, share, strict, references)
            print(f"{f'{kind} ({topic})':<26} {share:>6.0%} {kl:>16.4f} {h:>6.1f} {h / kl:>16.0f}")
    print("\noracle: knowing each topic's distribution (a classifier on the embeddings, out of fold) and the "
          "sessions (1-9 inputs, as the detection rows); what the detector's score leaves on the table")
    print(f"{'topic':<26} {'share':>6} {'KL sessions':>12} {'h / KL':>7} {'KL inputs alone':>16} {'h / KL':>7}")
    for topic, kind in ((corpus.distinct, "distinct"), (corpus.near, "near")):
        for share in (0.05, 0.10):
            h = hs[topic, share][1]
            together, alone = oracle_bound(pools, base, topic, share)
            print(f"{f'{kind} ({topic})':<26} {share:>6.0%} {together:>12.4f} {h / together:>7.0f} {alone:>16.4f} "
                  f"{h / alone:>7.0f}")


def print_calibration(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float],
                      strict: DetectorSettings, seeds: int) -> None:
    print(f"\ncalibration: the sequential detector's p-values on stationary traffic ({seeds} streams of "
          "10,000 inputs per row; uniform: 1 % below 0.01, 0.1 % below 0.001), and each stream's highest "
          "sum over its h (no restart)")
    print(f"{'traffic':<22} {'statistic':<18} {'< 0.01':>8} {'< 0.001':>8} {'highest / h (median, max)':>27}")
    for label, session in (("stationary (iid)", 1), ("session-bursty", 6)):
        for name, row in zip(("distance", "distance + pairs"), calibration(pools, base, strict, session, seeds),
                             strict=False):
            print(f"{label:<22} {name:<18} {row['below_0.01']:>8.2%} {row['below_0.001']:>8.2%} "
                  f"{row['top_median']:>18.2f}, {row['top_max']:.2f}")


def print_detection(pools: dict[str, tuple[list[str], np.ndarray]], base: dict[str, float],
                    strict: DetectorSettings, trials: int, corpus: Corpus) -> None:
    new, near = corpus.distinct, corpus.near
    print(f"\ndetection (default budget), {trials} trials, within 20 windows of the shift")
    print(f"{'shift':<34} {'detected':>9} {'median delay (inputs)':>22} {'named (group of the new topic)':>31}"
          "  first detector")

    def row(label: str, result: tuple[float, float | None, str, Counter[str]]) -> None:
        rate, delay, named, by = result
        print(f"{label:<34} {rate:>9.0%} {delay if delay is not None else '-':>22} {named:>31}  {dict(by)}")

    row("no shift (control: false alarms)", detection(pools, base, lambda s: s.take(WINDOW * 20, base), strict,
                                                       trials))
    for topic, kind in ((new, "new topic"), (near, "near new topic")):
        for share in (0.02, 0.05, 0.10, 0.20):
            mix = {**{k: v * (1 - share) for k, v in base.items()}, topic: share}
            row(f"{kind} at {share:.0%}", detection(pools, base, lambda s, m=mix: s.take(WINDOW * 20, m), strict,
                                                     trials, new=topic))
    long_mix = {f"{k}-long": v for k, v in base.items()}
    row("length/format (3 sentences each)", detection(pools, base, lambda s: s.take(WINDOW * 20, long_mix), strict,
                                                       trials))
    # The same, in a tenth of the sessions only (the length detector's share case).
    some_long = {**{k: v * 0.9 for k, v in base.items()}, **{f"{k}-long": v * 0.1 for k, v in base.items()}}
    row("longer inputs (10 % of sessions)", detection(pools, base, lambda s: s.take(WINDOW * 20, some_long), strict,
                                                      trials))
    inj_mix = {**{k: v * 0.9 for k, v in base.items()}, "injection": 0.1}
    row("prompt-injection burst (10 %)", detection(pools, base, lambda s: s.take(WINDOW * 20, inj_mix, session=3),
                                                    strict, trials, new="injection"))



if __name__ == "__main__":
    main()
