"""The semantic tier's error, measured: per cosine threshold, how many true paraphrases hit, what
share of hits is wrong and how many hard negatives hit, for a plain cosine threshold (what other
gateways ship) beside llmgw's (cosine floor + verifier), on the same MiniLM embeddings; then what
a lookup costs.

    .venv/bin/python -m bench.semantic_cache

The labelled pairs are in bench/data (written for this benchmark): ``semantic_paraphrases.tsv``
and ``semantic_negatives.tsv`` (the verifier's rules were written looking at them) and
``semantic_heldout.tsv`` (written after the rules were fixed; never used to change them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from llmgw.kit.embed import SentenceEmbedder
from llmgw.services.cache.semantic.verify import parse, verify

DATA = Path(__file__).resolve().parent / "data"
THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75)
DEFAULT_THRESHOLD = 0.8  # services/cache/policy.py SemanticPolicy.threshold


def _rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text().splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def load() -> dict[str, list[tuple[str, str, str]]]:
    """Corpus name -> (kind, a, b); kind "paraphrase" should hit, every other kind must not."""
    dev = [("paraphrase", a, b) for a, b in _rows("semantic_paraphrases.tsv")]
    dev += [(k, a, b) for k, a, b in _rows("semantic_negatives.tsv")]
    held = [(k, a, b) for k, a, b in _rows("semantic_heldout.tsv")]
    return {"written with the rules": dev, "held out": held}


def _table(name: str, pairs: list[tuple[str, str, str]], sims: np.ndarray) -> None:
    positive = np.array([k == "paraphrase" for k, _, _ in pairs])
    verified = np.array([verify(a, b).same for _, a, b in pairs])
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    print(f"\n{name}: {n_pos} paraphrase pairs, {n_neg} hard negatives")
    print(f"{'threshold':>9} | {'plain cosine: hit':>17} {'wrong share':>11} {'neg hit':>8} | "
          f"{'llmgw: hit':>10} {'wrong share':>11} {'neg hit':>8}")
    for t in THRESHOLDS:
        above = sims >= t
        cells = []
        for hit in (above, above & verified):
            tp, fp = int((hit & positive).sum()), int((hit & ~positive).sum())
            wrong = fp / (tp + fp) if tp + fp else 0.0
            cells.append(f"{tp / n_pos:>{17 if not cells else 10}.1%} {wrong:>11.1%} {fp / n_neg:>8.1%}")
        mark = "  <- default" if t == DEFAULT_THRESHOLD else ""
        print(f"{t:>9.2f} | {cells[0]} | {cells[1]}{mark}")
    kinds = sorted({k for k, _, _ in pairs} - {"paraphrase"})
    above = sims >= DEFAULT_THRESHOLD
    print("  negatives that cleared the cosine floor, and how many the verifier let through, by kind:")
    for kind in kinds:
        idx = np.array([k == kind for k, _, _ in pairs])
        print(f"    {kind:<14} {int((above & idx).sum()):>3} over {DEFAULT_THRESHOLD} -> "
              f"{int((above & idx & verified).sum())} served")


def _costs(embedder: SentenceEmbedder, pairs: list[tuple[str, str, str]], queries: int) -> None:
    """p50 of one lookup after an exact miss: embed the question (uncached), search a scope of
    every stored question in the sets (exact dot product), verify the best candidates."""
    stored = [a for _, a, _ in pairs]
    matrix = embedder.encode(stored)
    parsed = [parse(s) for s in stored]
    asks = [b for _, _, b in pairs][:queries]
    plain, full, verify_only = [], [], []
    for q in asks:
        t0 = time.perf_counter()
        v = embedder.encode([q + " "])[0]  # a trailing space: never a memo hit in any layer
        sims = matrix @ v
        order = np.argsort(-sims)[:8]
        t1 = time.perf_counter()
        pq = parse(q)
        for i in order:
            if sims[i] < DEFAULT_THRESHOLD or verify(pq, parsed[int(i)]).same:
                break
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        full.append(t2 - t0)
        verify_only.append(t2 - t1)
    p50 = statistics.median
    print(f"\nlookup cost, p50 over {len(asks)} questions against a scope of {len(stored)} entries:")
    print(f"  plain cosine (embed + search)   {p50(plain) * 1000:7.2f} ms   1.00x")
    print(f"  llmgw (embed + search + verify) {p50(full) * 1000:7.2f} ms   {p50(full) / p50(plain):.2f}x")
    print(f"  of which the verifier           {p50(verify_only) * 1000:7.3f} ms")
    print("  (plus one Redis round trip to sync the scope and one to read the entry: see docs/cache.md)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=200, help="questions timed for the lookup cost")
    args = ap.parse_args()
    embedder = SentenceEmbedder()
    corpora = load()
    for name, pairs in corpora.items():
        a = embedder.encode([p[1] for p in pairs])
        b = embedder.encode([p[2] for p in pairs])
        _table(name, pairs, (a * b).sum(axis=1))
    _costs(embedder, [p for pairs in corpora.values() for p in pairs], args.queries)


if __name__ == "__main__":
    main()
