"""Per-condition weights that cannot lose to the global ones beyond noise.

Each condition ``c`` (a key such as ``bible|babble|20`` from :func:`fusion.adaptive.condition_key`) gets
its own tuned weights ``ŵ_c``, shrunk toward the global weights ``w_g`` in proportion to its size
(empirical-Bayes style):

    ``w_c = w_g + n_c / (n_c + κ) · (ŵ_c - w_g)``

``κ`` (in utterances) is chosen by k-fold cross-validation on dev from a grid that includes ``∞`` (the
global weights for every condition). A finite ``κ`` is kept only when its cross-validated gain over
``∞`` exceeds ``margin_se`` standard errors of the paired per-utterance difference; otherwise every
condition gets ``w_g``. So on data where conditions do not differ, the result is the global weights
(the test in ``tests/test_tuning_generalise.py`` checks it on identical conditions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fusion.adaptive import ConditionTable
from fusion.errors import LMFusionError
from fusion.tuning.problem import TuningProblem
from fusion.tuning.stable import fold_ids, utterance_errors

DEFAULT_KAPPAS: tuple[float, ...] = (0.0, 10.0, 30.0, 100.0, 300.0, math.inf)
Fit = Callable[[TuningProblem], Mapping[str, float]]


def shrink(w_g: Mapping[str, float], w_c: Mapping[str, float], n_c: int, kappa: float) -> dict[str, float]:
    """``w_g + n_c / (n_c + κ) (w_c - w_g)`` per component (``κ = ∞``: ``w_g``)."""
    t = 0.0 if math.isinf(kappa) else (n_c / (n_c + kappa) if n_c + kappa > 0 else 0.0)
    keys = list(dict.fromkeys([*w_g, *w_c]))
    return {k: float(w_g.get(k, 0.0)) + t * (float(w_c.get(k, 0.0)) - float(w_g.get(k, 0.0))) for k in keys}


@dataclass(frozen=True)
class ConditionFit:
    """What :func:`fit_conditions` chose, with the cross-validation that chose it."""

    table: ConditionTable
    kappa: float
    cv_errors: Mapping[float, int]
    """κ -> total held-out errors over dev."""
    gain_se: float
    """Standard error of the chosen κ's paired held-out gain over the global weights (errors)."""
    counts: Mapping[str, int]


def _per_condition(
    problem: TuningProblem, keys: np.ndarray, fit: Fit, min_utts: int
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, int]]:
    w_g = dict(fit(problem))
    raw, counts = {}, {}
    for c in sorted(set(keys.tolist())):
        idx = np.flatnonzero(keys == c)
        counts[c] = len(idx)
        if len(idx) >= min_utts:
            raw[c] = dict(fit(problem.subset(idx)))
    return w_g, raw, counts


def _held_errors(
    problem: TuningProblem,
    keys: np.ndarray,
    idx: np.ndarray,
    w_g: Mapping[str, float],
    raw: Mapping[str, Mapping[str, float]],
    counts: Mapping[str, int],
    kappa: float,
) -> np.ndarray:
    out = np.zeros(len(idx), dtype=np.int64)
    for c in sorted(set(keys[idx].tolist())):
        sel = np.flatnonzero(keys[idx] == c)
        w = shrink(w_g, raw[c], counts[c], kappa) if c in raw else dict(w_g)
        out[sel] = utterance_errors(problem.subset(idx[sel]), w)
    return out


def fit_conditions(
    problem: TuningProblem,
    keys: Sequence[str],
    fit: Fit,
    *,
    by: Sequence[str] = (),
    kappas: Sequence[float] = DEFAULT_KAPPAS,
    k: int = 5,
    seed: int = 0,
    margin_se: float = 1.0,
    min_utts: int = 5,
    snr_edges: Sequence[float] = (),
) -> ConditionFit:
    """Tune per condition, shrink toward global, choose ``κ`` by k-fold CV (module docstring).

    Args:
        keys: ``[U]`` condition key of each utterance.
        fit: tunes weights on a problem (e.g. ``lambda p: tune(p, "smooth", ...).weights``).
        min_utts: a condition with fewer dev utterances keeps the global weights.
    """
    keys_a = np.asarray(list(keys), dtype=object)
    if len(keys_a) != problem.n_utts:
        raise LMFusionError(f"fit_conditions: {len(keys_a)} keys for {problem.n_utts} utterances")
    if not any(math.isinf(x) for x in kappas):
        kappas = (*kappas, math.inf)
    folds = fold_ids(problem.n_utts, k, seed)
    held: dict[float, np.ndarray] = {x: np.zeros(problem.n_utts, dtype=np.int64) for x in kappas}
    for j in range(k):
        tr, te = np.flatnonzero(folds != j), np.flatnonzero(folds == j)
        w_g, raw, counts = _per_condition(problem.subset(tr), keys_a[tr], fit, min_utts)
        for x in kappas:
            held[x][te] = _held_errors(problem, keys_a, te, w_g, raw, counts, x)
    base = held[math.inf]
    best, best_gain, best_se = math.inf, 0, 0.0
    for x in kappas:
        diff = base - held[x]
        gain, se = int(diff.sum()), float(np.std(diff) * math.sqrt(len(diff)))
        if gain > margin_se * se and gain > best_gain:
            best, best_gain, best_se = x, gain, se
    w_g, raw, counts = _per_condition(problem, keys_a, fit, min_utts)
    table = {} if math.isinf(best) else {c: shrink(w_g, w, counts[c], best) for c, w in raw.items()}
    prov = {"kappa": None if math.isinf(best) else best, "cv_folds": k, "counts": counts}
    return ConditionFit(
        ConditionTable(tuple(by), w_g, table, tuple(snr_edges), prov),
        best,
        {x: int(v.sum()) for x, v in held.items()},
        best_se,
        counts,
    )
