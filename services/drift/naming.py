"""The new topic an incident is about, found among the recent inputs themselves.

A novelty cell holds the new topic's inputs and also the ordinary inputs that happen to fall past
its radius, so describing the cell describes a mix. What an analyst needs is the group of inputs
that are unlike the reference *and* like each other: a new kind of question arrives as many
similar inputs, an outlier arrives alone. So: an input is novel when its closeness to the
reference (mean cosine similarity to its ``k`` nearest reference inputs) is below what all but
the most isolated ``isolated_share`` of reference inputs have to their own neighbours. Two novel
inputs (repeated texts once) are a close pair when they are as similar as a reference input is to
its nearest neighbour for all but the loosest quarter (``tight_quantile``), or more similar to
each other than either is to anything in the reference. The group starts at the novel input with
the most close pairs and takes every novel input reached through close pairs; fewer than
``min_size`` is no group (on stationary traffic pairs of outliers do form; threes did not).
Defaults chosen on the two benchmark corpora (figures in docs/drift.md).

The sequential detector has a better witness than any grouping: the inputs that carried its
evidence (``evidence_group``). Its sum climbs on inputs with small p-values and falls back to
its floor on ordinary traffic (zero; a session-aware sum, which falls slowly, its lower threshold),
so the inputs since it last left that floor with a small p-value are, in the
benchmark, nearly all the new topic's — even when they are too few, or too spread out in the
embedding (a topic of varied texts), for the close-pair rule to link three of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from llmgw.services.drift.stats import Matrix, top_k_mean

__all__ = ["Neighbourhood", "NewGroup", "evidence_group", "new_group"]


@dataclass(frozen=True)
class NewGroup:
    members: list[int]  # indices into the window, most central (or most novel) first
    reference_share: float  # share of the reference as close to the group's centre (what it had of it)
    basis: str = "group"  # "group": linked by close pairs; "evidence": what moved the sequential detector


@dataclass(frozen=True)
class Neighbourhood:
    """What ``new_group`` needs of a reference, computed once per reference (an incident asks for
    it at every record it writes)."""

    reference: Matrix  # distinct rows
    k: int
    novel_below: float
    tight: float

    @classmethod
    def of(cls, reference: Matrix, *, k: int = 5, isolated_share: float = 0.05,
           tight_quantile: float = 0.25) -> Neighbourhood:
        # Repeated inputs (the same question asked again) once, or "nearest neighbour" means "itself".
        reference = np.unique(reference, axis=0)
        if len(reference) < k + 2:
            return cls(reference, k, -np.inf, np.inf)
        ref_sim = reference @ reference.T
        np.fill_diagonal(ref_sim, -np.inf)
        novel_below = float(np.quantile(top_k_mean(ref_sim, k), isolated_share))
        # "As close as the same topic": a reference input's similarity to its nearest neighbour.
        tight = float(np.quantile(ref_sim.max(axis=1), tight_quantile))
        return cls(reference, k, novel_below, tight)


def new_group(reference: Matrix | Neighbourhood, window: Matrix, texts: list[str], *,
              min_size: int = 3) -> NewGroup | None:
    """The largest tight group of window inputs unlike the reference, or None (fewer than
    ``min_size`` distinct inputs in it). Vectors are unit-length (cosine = dot product)."""
    near = reference if isinstance(reference, Neighbourhood) else Neighbourhood.of(reference)
    reference, k, novel_below, tight = near.reference, near.k, near.novel_below, near.tight
    if len(reference) < k + 2 or len(window) < min_size:
        return None
    first: dict[str, int] = {}  # a session asking again counts once: each text's first index
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    distinct = list(first.values())
    win = window[distinct]
    novel = np.flatnonzero(top_k_mean(win @ reference.T, k) < novel_below)
    if len(novel) < min_size:
        return None
    # Close pairs: as close as the same topic (``tight``), or closer to each other than either is
    # to anything in the reference (a new topic's inputs resemble each other more than the old).
    sim = win[novel] @ win[novel].T
    np.fill_diagonal(sim, -np.inf)
    to_ref = (win[novel] @ reference.T).max(axis=1)
    close = (sim >= tight) | (sim > np.maximum.outer(to_ref, to_ref))
    # The group: the input with the most close novel neighbours, and every novel input reached
    # from it through close pairs (a topic's inputs are close to some of its others, not to all).
    seed = int(np.argmax(close.sum(axis=1)))
    reached = close[seed].copy()
    reached[seed] = True
    frontier = reached.copy()
    while frontier.any():
        grown = close[frontier].any(axis=0) & ~reached
        reached |= grown
        frontier = grown
    group = novel[reached] if close[seed].any() else novel[:0]
    if len(group) < min_size:
        return None
    centre = win[group].mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    order = group[np.argsort(-(win[group] @ centre))]
    # What the reference had of this topic: its inputs as close to the centre as the group's least central member.
    floor = float((win[group] @ centre).min())
    return NewGroup([distinct[i] for i in order], float(np.mean(reference @ centre >= floor)))


def evidence_group(pvalues: NDArray[np.float64], texts: list[str], *, p_max: float,
                   min_size: int = 3) -> NewGroup | None:
    """The inputs (``texts``: the sequential detector's run, oldest first) whose conformal p-value
    is at most ``p_max``, most novel first, repeated texts once; None when fewer than
    ``min_size``. What the reference had of them is ``p_max`` by construction: its own inputs,
    scored the same way, fall at or below ``p_max`` that often."""
    first: dict[str, int] = {}
    for i in np.argsort(pvalues, kind="stable"):
        if pvalues[i] > p_max:
            break
        first.setdefault(texts[i], int(i))
    if len(first) < min_size:
        return None
    return NewGroup(list(first.values()), p_max, "evidence")
