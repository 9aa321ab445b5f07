"""A smoothed tuning objective: the expected error under the fused posterior (minimum-risk style).

Under weights ``w`` and a scale ``α`` each utterance's hypotheses get the posterior
``p_uh = softmax_h(α · f_uh · w)``; the objective is the expected corpus error

    ``R_α(w) = Σ_u Σ_h p_uh e_uh / Σ_u n_u  +  l2 · Σ_k ((w_k - prior_k) / σ_k)²``

with gradient ``∂R/∂w_k = α / N · Σ_u Σ_h p_uh (e_uh - ē_u) f_uhk`` (``ē_u`` the expected error of ``u``).
As ``α`` grows, ``R_α`` tends to the 1-best error that MERT minimises; a small ``α`` averages over many
hypotheses and is smooth, so small changes of the dev set move the optimum little. :func:`tune_smooth`
anneals ``α`` from a scale set by the spread of the scores (``α₀ = 1 / median within-list std`` of the
fused score at the start point) upward, minimising each ``R_α`` by L-BFGS-B inside the bounds from the
previous solution, and keeps, over every start, the end point with the lowest expected error at the
final scale (ties: fewer 1-best errors), so restarts are pooled by one smooth criterion.
``σ_k`` of the L2 pull is each free weight's bound width.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from fusion.errors import LMFusionError
from fusion.tuning.problem import TuningProblem, combine_cm, total_errors, total_errors_batch
from fusion.tuning.space import Space, _Out

DEFAULT_ANNEAL: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
"""Multiples of the base scale ``α₀`` visited in order by :func:`tune_smooth`."""


def expected_error(
    problem: TuningProblem, w: np.ndarray, scale: float, *, grad: bool = False
) -> tuple[float, np.ndarray | None]:
    """``(Σ_u E_p[e_u] / N, gradient [C] or None)`` under ``p = softmax(scale · feats · w)`` per list."""
    total = problem._check_rate_defined()
    p = problem._padded
    s = scale * combine_cm(p.feats_cm, np.asarray(w, np.float64)) + p.bias
    s = s - np.where(p.has_hyps, s.max(axis=1), 0.0)[:, None]
    q = np.exp(s)
    q /= np.where(p.has_hyps, q.sum(axis=1), 1.0)[:, None]
    err = p.errors.astype(np.float64)
    exp_u = (q * err).sum(axis=1)
    value = float(np.where(p.has_hyps, exp_u, err[:, 0]).sum()) / total
    if not grad:
        return value, None
    centred = q * (err - exp_u[:, None])  # [U, N]; zero on padding and on empty lists
    g = scale * np.einsum("un,cun->c", centred, p.feats_cm) / total
    return value, g


def expected_error_reference(problem: TuningProblem, w: np.ndarray, scale: float) -> float:
    """:func:`expected_error` as a plain per-utterance loop (the slow reference)."""
    total = problem._check_rate_defined()
    acc = 0.0
    for f, e, n in zip(problem.feats, problem.errors, problem.ref_lengths, strict=True):
        if len(f) == 0:
            acc += float(n)
            continue
        s = scale * (f @ np.asarray(w, np.float64))
        q = np.exp(s - s.max())
        acc += float((q / q.sum()) @ e)
    return acc / total


def base_scale(problem: TuningProblem, w: np.ndarray) -> float:
    """``1 / median within-list standard deviation`` of the fused scores at ``w`` (1.0 when they are flat)."""
    stds = [float(np.std(f @ w)) for f in problem.feats if len(f) > 1]
    med = float(np.median(stds)) if stds else 0.0
    return 1.0 / med if med > 1e-12 else 1.0


def _minimise(
    space: Space, problem: TuningProblem, x0: np.ndarray, scale: float, l2: float, prior: np.ndarray
) -> np.ndarray:
    from scipy.optimize import minimize

    width = np.where(space.hi > space.lo, space.hi - space.lo, 1.0)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = expected_error(problem, space.full(x), scale, grad=True)
        assert g is not None
        z = (x - prior) / width
        return v + l2 * float(z @ z), g[space.free] + 2.0 * l2 * z / width

    res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=list(zip(space.lo, space.hi, strict=True)))
    return np.clip(np.asarray(res.x, np.float64), space.lo, space.hi)


def tune_smooth(
    space: Space,
    rng: np.random.Generator,
    *,
    seed: int,
    restarts: int = 4,
    anneal: Sequence[float] = DEFAULT_ANNEAL,
    l2: float = 0.0,
    prior: Mapping[str, float] | None = None,
    seed_grid: int = 3,
) -> _Out:
    """Minimise the annealed expected error from the start, the best point of a coarse grid (``seed_grid``
    points per weight, at most 729 points) and ``restarts`` random points; see the module docstring.

    Args:
        anneal: multiples of the base scale, visited in increasing order from each start.
        l2: strength of the pull toward ``prior`` (0: none), in expected-error units per squared bound width.
        prior: ``name -> weight`` the free weights are pulled toward (default: the start point).
    """
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        raise LMFusionError("method 'smooth' needs scipy: pip install 'lmfusion[tune]'") from None
    if not anneal or any(a <= 0 for a in anneal):
        raise LMFusionError(f"smooth: anneal multiples must be positive, got {list(anneal)}")
    if l2 < 0:
        raise LMFusionError(f"smooth: l2 must be >= 0, got {l2}")
    prob = space.problem
    x_init = space.clip(space.init_raw.copy())
    unknown = [k for k in (prior or {}) if k not in space.names]
    if unknown:
        raise LMFusionError(f"smooth: prior names {unknown}, which are not free weights ({space.names})")
    pri = np.array([float((prior or {}).get(k, x)) for k, x in zip(space.names, x_init, strict=True)])
    starts = [x_init]
    m = len(space.free)
    n_evals = 0
    if seed_grid >= 2 and seed_grid**m <= 729:
        axes = [np.linspace(space.lo[j], space.hi[j], seed_grid) for j in range(m)]
        xs = np.array(list(itertools.product(*axes)), dtype=np.float64)
        W = np.tile(space.base, (len(xs), 1))
        W[:, space.free] = xs
        errs = total_errors_batch(prob, W)
        n_evals += len(xs)
        starts.append(xs[int(np.argmin(errs))])
    starts += [space.random(rng) for _ in range(restarts)]
    n_fixed = len(starts) - restarts  # the start point and the grid's best do not depend on the seed
    alpha0 = base_scale(prob, space.full(starts[n_fixed - 1]))
    final = alpha0 * max(anneal)
    best: tuple[float, int, np.ndarray] | None = None
    trace: list[tuple[int, int]] = []
    for x in starts:
        for a in sorted(anneal):
            x = _minimise(space, prob, x, alpha0 * a, l2, pri)
        v, _ = expected_error(prob, space.full(x), final)
        e = total_errors(prob, space.full(x))
        n_evals += len(anneal)
        if best is None or (v, e) < (best[0], best[1]):  # pooled over starts: the smoothed objective decides
            best = (v, e, x)
            trace.append((n_evals, e))
    assert best is not None
    return best[2], n_evals, trace, {"base_scale": alpha0, "anneal": list(anneal), "l2": l2, "starts": len(starts)}
