"""Minimum-Bayes-risk selection over an n-best under the fused posterior.

With fused scores ``s_h = f_h · w`` and a scale ``α``, the posterior is ``p = softmax(α s)``; the MBR
choice is ``argmin_h Σ_h' p_h' d(h, h')`` with ``d`` the word (or character) edit distance, i.e. the
hypothesis closest on average to the others: the consensus. ``α → ∞`` gives the MAP 1-best. The scale is
tuned on dev (:func:`tune_mbr_scale`) from a grid relative to the spread of the fused scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fusion.errors import LMFusionError
from fusion.metrics import Unit, edit_distance, units_of
from fusion.tuning.problem import TuningProblem

DEFAULT_SCALES: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
"""Multiples of ``1 / median within-list std`` of the fused scores tried by :func:`tune_mbr_scale`."""


def pairwise_distances(texts: Sequence[str], unit: Unit = "word") -> np.ndarray:
    """``[n, n]`` symmetric edit distances between the hypotheses (identical texts computed once)."""
    toks = [units_of(t, unit) for t in texts]
    n = len(toks)
    d = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = 0 if texts[i] == texts[j] else edit_distance(toks[i], toks[j])
    return d


def posterior(scores: np.ndarray, scale: float) -> np.ndarray:
    """``softmax(scale · scores)``."""
    s = scale * np.asarray(scores, dtype=np.float64)
    p = np.exp(s - s.max())
    return p / p.sum()


def mbr_index(scores: np.ndarray, dist: np.ndarray, scale: float) -> int:
    """Index of the minimum expected-distance hypothesis (first on ties); -1 for an empty list."""
    if len(scores) == 0:
        return -1
    if dist.shape != (len(scores), len(scores)):
        raise LMFusionError(f"mbr_index: {len(scores)} scores but distances of shape {dist.shape}")
    risk = dist @ posterior(scores, scale)
    return int(np.argmin(risk))


def mbr_select(texts: Sequence[str], scores: np.ndarray, scale: float, unit: Unit = "word") -> int:
    """MBR choice among ``texts`` with fused ``scores`` (computes the distances)."""
    return mbr_index(np.asarray(scores, np.float64), pairwise_distances(texts, unit), scale)


def mbr_errors(
    problem: TuningProblem, dists: Sequence[np.ndarray], weights: Mapping[str, float], scale: float
) -> np.ndarray:
    """``[U]`` errors of each utterance's MBR choice under ``weights`` and ``scale``."""
    w = problem.weight_vector(weights)
    out = np.empty(problem.n_utts, dtype=np.int64)
    for u, (f, e, d) in enumerate(zip(problem.feats, problem.errors, dists, strict=True)):
        i = mbr_index(f @ w, d, scale)
        out[u] = int(problem.ref_lengths[u]) if i < 0 else int(e[i])
    return out


def score_spread(problem: TuningProblem, weights: Mapping[str, float]) -> float:
    """Median within-list standard deviation of the fused scores (1.0 when flat)."""
    w = problem.weight_vector(weights)
    stds = [float(np.std(f @ w)) for f in problem.feats if len(f) > 1]
    med = float(np.median(stds)) if stds else 0.0
    return med if med > 1e-12 else 1.0


def tune_mbr_scale(
    problem: TuningProblem,
    dists: Sequence[np.ndarray],
    weights: Mapping[str, float],
    multiples: Sequence[float] = DEFAULT_SCALES,
) -> tuple[float, float]:
    """``(scale, dev error rate)`` of the best scale on the grid ``multiples / spread`` (ties: the larger scale,
    the closer to MAP)."""
    total = problem._check_rate_defined()
    base = 1.0 / score_spread(problem, weights)
    best: tuple[int, float] | None = None
    for m in sorted(multiples, reverse=True):
        e = int(mbr_errors(problem, dists, weights, base * m).sum())
        if best is None or e < best[0]:
            best = (e, base * m)
    assert best is not None
    return best[1], best[0] / total
