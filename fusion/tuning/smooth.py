"""A smoothed tuning objective: the expected error under the fused posterior (minimum-risk style).

Under weights ``w`` each utterance's hypotheses get the posterior ``p_uh = softmax_h(a · s_uh / σ(w))``
with ``s_uh = f_uh · w`` and ``σ(w)² = wᵀ M w``, ``M`` the mean within-list covariance of the components:
the scores are put on a unit within-list spread, so the sharpness ``a`` means the same whatever the size
of the weights (without it, growing the LM weights sharpens the posterior and the optimum drifts to the
bounds). The objective is the expected corpus error

    ``R_a(w) = Σ_u Σ_h p_uh e_uh / Σ_u n_u  +  l2 · Σ_k ((w_k - prior_k) / σ_k)²``

(``σ_k`` each free weight's bound width), with its exact gradient. As ``a`` grows, ``R_a`` tends to the
1-best error that MERT minimises; a small ``a`` averages over many hypotheses and is smooth, so small
changes of the dev set move the optimum little. :func:`tune_smooth` anneals ``a`` upward
(:data:`DEFAULT_ANNEAL`), minimising each ``R_a`` by L-BFGS-B inside the bounds from the previous
solution, from the start point, the best point of a coarse grid and seeded random restarts, and keeps
the end point with the fewest 1-best errors (ties: the lower expected error at the final sharpness).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from fusion.errors import LMFusionError
from fusion.tuning.problem import TuningProblem, combine_cm, total_errors, total_errors_batch
from fusion.tuning.space import Space, _Out

DEFAULT_ANNEAL: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
"""Sharpness ``a`` of the normalised posterior, visited in increasing order by :func:`tune_smooth`."""


def _expected(problem: TuningProblem, w: np.ndarray, scale: float) -> tuple[float, np.ndarray, float]:
    """``(value, Σ c_uh f_uh [C], Σ c_uh s_uh)`` with ``c_uh = p_uh (e_uh - ē_u) / N`` and ``s = feats · w``."""
    total = problem._check_rate_defined()
    p = problem._padded
    raw = combine_cm(p.feats_cm, np.asarray(w, np.float64))
    s = scale * raw + p.bias
    s = s - np.where(p.has_hyps, s.max(axis=1), 0.0)[:, None]
    q = np.exp(s)
    q /= np.where(p.has_hyps, q.sum(axis=1), 1.0)[:, None]
    err = p.errors.astype(np.float64)
    exp_u = (q * err).sum(axis=1)
    value = float(np.where(p.has_hyps, exp_u, err[:, 0]).sum()) / total
    centred = q * (err - exp_u[:, None]) / total  # [U, N]; zero on padding and on empty lists
    return value, np.einsum("un,cun->c", centred, p.feats_cm), float((centred * np.where(p.valid, raw, 0.0)).sum())


def expected_error(
    problem: TuningProblem, w: np.ndarray, scale: float, *, grad: bool = False
) -> tuple[float, np.ndarray | None]:
    """``(Σ_u E_p[e_u] / N, gradient [C] or None)`` under ``p = softmax(scale · feats · w)`` per list."""
    value, gf, _ = _expected(problem, w, scale)
    return value, (scale * gf if grad else None)


def score_covariance(problem: TuningProblem) -> np.ndarray:
    """``[C, C]`` mean over lists (of two or more hypotheses) of the within-list covariance of the components."""
    c = len(problem.components)
    acc, n = np.zeros((c, c)), 0
    for f in problem.feats:
        if len(f) > 1:
            fc = f - f.mean(axis=0)
            acc += fc.T @ fc / len(f)
            n += 1
    return acc / n if n else np.eye(c)


def normalised_expected_error(
    problem: TuningProblem, w: np.ndarray, a: float, cov: np.ndarray
) -> tuple[float, np.ndarray]:
    """Expected error under ``softmax(a · s / σ(w))`` with ``σ(w)² = wᵀ cov w`` (the mean within-list variance
    of the fused score), and its gradient: the posterior's sharpness is ``a`` whatever the weights' size."""
    w = np.asarray(w, np.float64)
    mw = cov @ w
    sigma = float(np.sqrt(max(float(w @ mw), 1e-24)))
    value, gf, t = _expected(problem, w, a / sigma)
    return value, (a / sigma) * gf - t * a * mw / sigma**3


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
    space: Space, problem: TuningProblem, x0: np.ndarray, a: float, l2: float, prior: np.ndarray, cov: np.ndarray
) -> np.ndarray:
    from scipy.optimize import minimize

    width = np.where(space.hi > space.lo, space.hi - space.lo, 1.0)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = normalised_expected_error(problem, space.full(x), a, cov)
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
    cov = score_covariance(prob)
    best: tuple[int, float, np.ndarray] | None = None
    trace: list[tuple[int, int]] = []
    for x in starts:
        for a in sorted(anneal):
            x = _minimise(space, prob, x, a, l2, pri, cov)
        v, _ = normalised_expected_error(prob, space.full(x), max(anneal), cov)
        e = total_errors(prob, space.full(x))
        n_evals += len(anneal)
        if best is None or (e, v) < (best[0], best[1]):  # pooled over starts: 1-best errors, then smoothness
            best = (e, v, x)
            trace.append((n_evals, e))
    assert best is not None
    return best[2], n_evals, trace, {"anneal": list(anneal), "l2": l2, "starts": len(starts)}
