"""Tuning you can trust on held-out data: which components to tune, bounds from the scores' own scale,
a warning when a weight ends on a bound, the spread over seeds, and a k-fold cross-validated estimate.

**Default components** (:func:`default_components`, used by ``lmfusion tune`` without ``--components``):
``am`` (held at 1), the word bonus ``words`` when present, and the LM components, i.e. every other
column except counts (``tokens``, ``chars``, names starting with ``oov``) and except the recogniser's own
``lm`` when another LM is present (the recogniser's LM is kept when it is the only LM). Tuning the
recogniser's LM beside a new one usually over-fits: it is a strongly correlated copy of the same signal.

**Bounds** (:func:`scale_aware_bounds`): for each free component ``k`` the ratio
``r_k = spread(fixed part) / spread(k)``, where a spread is the median over lists of the within-list
standard deviation, is the weight at which ``k`` moves hypothesis scores as much as the fixed part
(``am``) does. LM-like weights search ``[0, 4 r_k]``, length bonuses ``[-2 r_k, 2 r_k]`` but no wider
than the largest LM range (a bonus trades against the LMs), subtracted terms (``ilm``, ``source_lm``)
``[-4 r_k, 0]``. A weight within 5 % of the range from a bound gets a warning
(:func:`bound_warnings`), except a 0 that a component's range starts or ends at (switching it off).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.tuning.optimisers import tune
from fusion.tuning.problem import TuningProblem, best_indices, error_rate
from fusion.tuning.space import LENGTH_COMPONENTS, SUBTRACTED_COMPONENTS, TuningResult

COUNT_COMPONENTS = ("tokens", "chars")
RECOGNISER_LM = "lm"


def default_components(available: Sequence[str]) -> list[str]:
    """The components ``tune`` weighs when none are named (the rule is in the module docstring)."""
    names = list(dict.fromkeys(available))
    lms = [
        c
        for c in names
        if c != "am" and c not in LENGTH_COMPONENTS and c not in COUNT_COMPONENTS and not c.startswith("oov")
    ]
    if RECOGNISER_LM in lms and len(lms) > 1:
        lms.remove(RECOGNISER_LM)
    out = ["am"] if "am" in names else []
    out += [c for c in names if c in lms]
    if "words" in names:
        out.append("words")
    return out


def _spread(problem: TuningProblem, v: np.ndarray) -> float:
    stds = [float(np.std(f @ v)) for f in problem.feats if len(f) > 1]
    return float(np.median(stds)) if stds else 0.0


def scale_aware_bounds(problem: TuningProblem, fixed: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Default ``(lo, hi)`` of every free weight from the spread of the scores (module docstring).

    A component that never varies within a list (or a fixed part that never does) gets the fixed
    fallback of :func:`~fusion.tuning.space.default_bounds` scaled by 1.
    """
    comps = problem.components
    base = np.array([float(fixed.get(k, 0.0)) for k in comps])
    ref = _spread(problem, base)
    out: dict[str, tuple[float, float]] = {}
    lengths = []
    for j, k in enumerate(comps):
        if k in fixed:
            continue
        e = np.zeros(len(comps))
        e[j] = 1.0
        s = _spread(problem, e)
        r = ref / s if s > 0 and ref > 0 else 1.0
        r = float(f"{r:.2g}")  # round bounds to two significant digits: readable, and stable across data sets
        if k in LENGTH_COMPONENTS:
            out[k] = (-2.0 * r, 2.0 * r)
            lengths.append(k)
        elif k in SUBTRACTED_COMPONENTS:
            out[k] = (-4.0 * r, 0.0)
        else:
            out[k] = (0.0, 4.0 * r)
    lm_top = max((hi for k, (lo, hi) in out.items() if k not in lengths), default=0.0)
    for k in lengths:  # a length bonus trades against the LMs: no wider than their largest range
        if lm_top > 0:
            out[k] = (max(out[k][0], -lm_top), min(out[k][1], lm_top))
    return out


def bound_warnings(result: TuningResult, *, tol: float = 0.05) -> list[str]:
    """One message per weight that ended within ``tol`` of its range from a bound (a 0 bound excepted)."""
    out = []
    for k, (lo, hi) in result.extra.get("bounds", {}).items():
        w = result.weights[k]
        eps = tol * max(hi - lo, 1e-12)
        for side, b in (("lower", lo), ("upper", hi)):
            if abs(w - b) <= eps and b != 0.0:
                out.append(
                    f"weight {k}={w:.4g} ended on its {side} bound {b:g} (range {lo:g}:{hi:g}); "
                    "the optimum may lie outside: widen --bounds"
                )
    return out


@dataclass(frozen=True)
class SeedSpread:
    """Results of the same tuning under several seeds, and the one kept."""

    results: tuple[TuningResult, ...]
    seeds: tuple[int, ...]
    chosen: TuningResult

    @property
    def dev_rates(self) -> list[float]:
        return [r.error_rate for r in self.results]

    def rates_on(self, problem: TuningProblem) -> list[float]:
        """Each seed's error rate on another problem (e.g. test)."""
        return [error_rate(problem, r.weights) for r in self.results]

    def weight_ranges(self) -> dict[str, tuple[float, float]]:
        keys = self.chosen.weights
        return {k: (min(r.weights[k] for r in self.results), max(r.weights[k] for r in self.results)) for k in keys}


def tune_seeds(problem: TuningProblem, seeds: Sequence[int], method: str = "smooth", **kw: Any) -> SeedSpread:
    """Tune once per seed; keep the lowest dev error (ties: the first seed). Each seed is deterministic."""
    if not seeds:
        raise LMFusionError("tune_seeds: no seeds")
    results = tuple(tune(problem, method, seed=int(s), **kw) for s in seeds)
    chosen = min(results, key=lambda r: r.error_rate)
    return SeedSpread(results, tuple(int(s) for s in seeds), chosen)


def fold_ids(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``[n]`` fold number of each utterance: a seeded permutation cut into ``k`` near-equal folds."""
    if k < 2 or k > n:
        raise LMFusionError(f"k-fold CV needs 2 <= k <= {n} utterances, got k={k}")
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[perm] = np.arange(n) % k
    return out


@dataclass(frozen=True)
class CVEstimate:
    """A k-fold cross-validated error rate: each fold scored with weights tuned on the other folds."""

    error_rate: float
    fold_rates: tuple[float, ...]
    errors: np.ndarray  # [U] held-out errors of each utterance
    k: int

    @property
    def spread(self) -> float:
        return statistics.pstdev(self.fold_rates) if len(self.fold_rates) > 1 else 0.0


def utterance_errors(problem: TuningProblem, weights: Mapping[str, float]) -> np.ndarray:
    """``[U]`` errors of each utterance's 1-best under ``weights``."""
    idx = best_indices(problem, weights)
    return np.array(
        [int(e[i]) if i >= 0 else int(n) for e, i, n in zip(problem.errors, idx, problem.ref_lengths, strict=True)],
        dtype=np.int64,
    )


def cross_validate(
    problem: TuningProblem,
    fit: Callable[[TuningProblem], Mapping[str, float]],
    *,
    k: int = 5,
    seed: int = 0,
    folds: np.ndarray | None = None,
) -> CVEstimate:
    """Held-out error of ``fit`` (a function from a problem to weights) by k-fold cross-validation."""
    total = problem._check_rate_defined()
    f = fold_ids(problem.n_utts, k, seed) if folds is None else np.asarray(folds)
    errs = np.zeros(problem.n_utts, dtype=np.int64)
    rates = []
    for j in range(int(f.max()) + 1):
        held = np.flatnonzero(f == j)
        train = np.flatnonzero(f != j)
        w = fit(problem.subset(train))
        sub = problem.subset(held)
        errs[held] = utterance_errors(sub, w)
        n = int(sub.ref_lengths.sum())
        rates.append(float(errs[held].sum()) / n if n else math.nan)
    return CVEstimate(float(errs.sum()) / total, tuple(rates), errs, int(f.max()) + 1)
