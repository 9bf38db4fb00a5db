"""Synthetic embeddings with known topics and session structure, for the drift detector's tests:
a session sends 1-9 requests on one topic in a row, as conversational traffic does."""

from __future__ import annotations

import numpy as np

from llmgw.services.drift.detector import Input

DIM = 32


class Topics:
    def __init__(self, n_topics: int = 6, seed: int = 1, spread: float = 1.0) -> None:
        self.rng = np.random.default_rng(seed)
        c = self.rng.standard_normal((n_topics, DIM))
        self.centers = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.spread = spread
        self.t = 0.0

    def stream(self, n: int, mix: list[float], *, session: int = 5) -> list[Input]:
        out: list[Input] = []
        p = np.asarray(mix, dtype=float) / sum(mix)
        while len(out) < n:
            topic = int(self.rng.choice(len(p), p=p))
            for _ in range(int(self.rng.integers(1, 2 * session))):
                v = self.centers[topic] + self.spread * 0.6 * self.rng.standard_normal(DIM) / np.sqrt(DIM)
                self.t += 1.0
                out.append(Input((v / np.linalg.norm(v)).astype(np.float32),
                                 f"question about subject{'abcdefgh'[topic]} number {int(self.rng.integers(9))}",
                                 f"r{int(self.t)}", 0, int(self.t), self.t))
        return out[:n]


def close_sessions(n: int, rng: np.random.Generator, length: int = 6, spread: float = 0.05) -> np.ndarray:
    """Follow-up questions: each session's inputs sit close to a session point of their own
    (random directions: no topics), ``length`` inputs a session, in arrival order."""
    out: list[np.ndarray] = []
    while len(out) < n:
        centre = rng.standard_normal(DIM)
        for _ in range(length):
            v = centre / np.linalg.norm(centre) + spread * rng.standard_normal(DIM) / np.sqrt(DIM)
            out.append(v / np.linalg.norm(v))
    return np.asarray(out[:n], dtype=np.float32)


def rare_bursts(topics: Topics, rare: np.ndarray, n: int, mix: list[float], rng: np.random.Generator,
                every: int = 40, size: int = 6, spread: float = 0.3) -> np.ndarray:
    """Stationary traffic in which rare kinds of input come in bursts: ``topics``' sessions, and
    every ``every``-``3 * every`` inputs ``size`` look-alikes of one of the ``rare`` directions
    within sixty inputs (a thread several users take up for a while), in arrival order."""
    v = np.stack([i.vector for i in topics.stream(n, mix)])
    t = int(rng.integers(every))
    while t < n:
        centre = rare[int(rng.integers(len(rare)))]
        for j in rng.choice(np.arange(t, min(n, t + 60)), size=min(size, n - t), replace=False):
            x = centre + spread * rng.standard_normal(DIM) / np.sqrt(DIM)
            v[j] = x / np.linalg.norm(x)
        t += int(rng.integers(every, 3 * every))
    return v.astype(np.float32)
