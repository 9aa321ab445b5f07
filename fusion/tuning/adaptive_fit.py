"""Learning an :class:`~fusion.adaptive.AdaptiveWeights` map (features -> weights) on dev n-best lists.

The map is linear in the standardised features ``z``: ``w_k(z) = a_k + Σ_f b_kf z_f``. Because a
hypothesis' fused score is linear in the weights, ``Σ_k w_k(z_u) f_uhk = Σ_k a_k f_uhk + Σ_kf b_kf
(z_uf f_uhk)``: the map is an ordinary weight vector over an augmented problem whose extra columns are
``f_uhk · z_uf``. It is tuned with the smoothed objective (:mod:`fusion.tuning.smooth`) and an L2 pull of
the slopes toward 0 and of the base toward the global weights; the pull's strength is chosen by k-fold
cross-validation (``l2`` grid), so with uninformative features the map falls back to the global weights.
SNR as a continuous variable is the case of one feature, ``snr``: the weights are a smooth (linear,
clipped at ±2 standard deviations) function of the estimated SNR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.adaptive import AdaptiveWeights, FeatureSpec
from fusion.errors import LMFusionError
from fusion.tuning.optimisers import tune
from fusion.tuning.problem import TuningProblem
from fusion.tuning.stable import cross_validate

SEP = "*"


def standardise(
    features: Sequence[Mapping[str, float]], names: Sequence[str], zclip: float = 2.0
) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """``([U, F] clipped z-scores, {name: (mean, std)})``; a missing value is the mean (z = 0)."""
    norm: dict[str, tuple[float, float]] = {}
    z = np.zeros((len(features), len(names)))
    for j, f in enumerate(names):
        vals = np.array([float(d[f]) if d.get(f) is not None else np.nan for d in features], dtype=np.float64)
        ok = np.isfinite(vals)
        if not ok.any():
            raise LMFusionError(f"feature {f!r} is missing on every dev utterance")
        mu, sd = float(vals[ok].mean()), float(vals[ok].std())
        sd = sd if sd > 1e-12 else 1.0
        norm[f] = (mu, sd)
        z[:, j] = np.where(ok, np.clip((vals - mu) / sd, -zclip, zclip), 0.0)
    return z, norm


def augment(problem: TuningProblem, z: np.ndarray, names: Sequence[str], slope_on: Sequence[str]) -> TuningProblem:
    """``problem`` with extra columns ``k*f = f_uhk · z_uf`` for each ``k`` in ``slope_on``, ``f`` in ``names``."""
    cols = [problem.components.index(k) for k in slope_on]
    extra = [f"{k}{SEP}{f}" for k in slope_on for f in names]
    feats = []
    for u, f in enumerate(problem.feats):
        add = [f[:, c : c + 1] * z[u, j] for c in cols for j in range(len(names))]
        feats.append(np.concatenate([f, *add], axis=1) if add else f)
    return TuningProblem((*problem.components, *extra), feats, problem.errors, problem.ref_lengths, problem.utt_ids)


@dataclass(frozen=True)
class AdaptiveFit:
    """The learned policy and how its regularisation was chosen."""

    policy: AdaptiveWeights
    l2: float
    cv: Mapping[float, float]
    """l2 -> k-fold CV error rate."""


def _fit_once(
    aug: TuningProblem,
    fixed: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    prior: Mapping[str, float],
    l2: float,
    seed: int,
) -> dict[str, float]:
    res = tune(aug, "smooth", fixed=fixed, bounds=bounds, init=prior, prior=prior, l2=l2, seed=seed, restarts=0)
    return res.weights


def fit_adaptive(
    problem: TuningProblem,
    features: Sequence[Mapping[str, float]],
    names: Sequence[str],
    global_weights: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    *,
    fixed: Mapping[str, float] | None = None,
    spec: FeatureSpec | None = None,
    l2_grid: Sequence[float] = (0.01, 0.1, 1.0),
    k: int = 5,
    seed: int = 0,
    zclip: float = 2.0,
    provenance: Mapping[str, Any] | None = None,
) -> AdaptiveFit:
    """Fit ``w(z) = a + B z`` on dev (module docstring).

    Args:
        features: per utterance its run-time features (:func:`fusion.adaptive.nbest_features`, ``snr``).
        names: the features the map uses.
        global_weights: the globally tuned weights (the prior and the start).
        bounds: ``(lo, hi)`` of each free weight; a slope of ``k`` may move ``k`` by half its range per
            standard deviation.
        fixed: weights held constant (default ``am = 1``); they get no slope.
    """
    fixed = dict(fixed or {"am": 1.0})
    free = [c for c in problem.components if c not in fixed and c in bounds]
    rest = [c for c in problem.components if c not in fixed and c not in free]
    fixed_all = {**fixed, **{c: float(global_weights.get(c, 0.0)) for c in rest}}
    z, norm = standardise(features, names, zclip)
    aug = augment(problem, z, names, free)
    b = {c: bounds[c] for c in free}
    for c in free:
        half = 0.5 * (bounds[c][1] - bounds[c][0])
        for f in names:
            b[f"{c}{SEP}{f}"] = (-half, half)
    prior = {c: float(global_weights.get(c, 0.0)) for c in free} | {f"{c}{SEP}{f}": 0.0 for c in free for f in names}
    prior = {c: float(np.clip(v, *b[c])) for c, v in prior.items()}
    cv = {}
    for l2 in l2_grid:
        def fit(p: TuningProblem, l2: float = l2) -> dict[str, float]:
            return _fit_once(p, fixed_all, b, prior, l2, seed)

        est = cross_validate(aug, fit, k=k, seed=seed)
        cv[l2] = est.error_rate
    best = min(l2_grid, key=lambda x: (cv[x], -x))  # ties: the stronger pull
    w = _fit_once(aug, fixed_all, b, prior, best, seed)
    base = {c: w[c] for c in problem.components}
    slopes = {c: {f: w[f"{c}{SEP}{f}"] for f in names} for c in free}
    pol = AdaptiveWeights(base, slopes, norm, spec or FeatureSpec(), zclip, 0.0, dict(provenance or {}) | {"l2": best})
    return AdaptiveFit(pol, best, cv)
