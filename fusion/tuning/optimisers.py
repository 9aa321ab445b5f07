"""The optimisers behind :func:`tune`: grid, coordinate descent, optuna TPE and MERT, over cached scores.

A :class:`TuningProblem` holds, per utterance ``u``, the component scores of its ``n_u`` hypotheses
(``feats[u]``, shape ``[n_u, C]``, natural log) and each hypothesis' edit distance to the reference
(``errors[u]``). Under weights ``w`` an utterance's 1-best is ``argmax_h feats[u][h] @ w`` (the first
hypothesis on exact ties) and the corpus error rate is ``Σ_u errors[u][best_u] / Σ_u ref_lengths[u]``.
An utterance with no hypotheses counts all its reference units as deletions.

Optimisers (:func:`tune`):

* ``"grid"``: every point of a regular grid (vectorised, in chunks);
* ``"coordinate"``: coordinate descent over 1-D grids until a pass changes nothing;
* ``"optuna"``: optuna's TPE sampler (``pip install lmfusion[tune]``);
* ``"mert"``: Och's (2003) exact line search. Along ``w + γ d`` every hypothesis' score is a line
  ``a_h + γ b_h``, the 1-best of an utterance is the upper envelope of its lines, so it changes only
  at the envelope's breakpoints; the corpus error is piecewise constant in ``γ`` and its minimum over
  the merged breakpoints of all utterances is exact. Powell-style passes over the coordinate axes and
  random directions, from the start point and from random restarts.

One weight (``am`` by default) is held fixed: the argmax is invariant to scaling all weights.
Every optimiser's result is re-evaluated with :func:`error_rate`, and the start point is returned
when nothing beats it, so a tuned result is never worse on dev than where it started.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.tuning.linesearch import line_search
from fusion.tuning.problem import TuningProblem, total_errors, total_errors_batch
from fusion.tuning.prune import prune_dominated
from fusion.tuning.smooth import tune_smooth
from fusion.tuning.space import DEFAULT_FIXED, METHODS, PRUNE_AFTER, Method, Space, TuningResult, _Out


def _points(space: Space, points: int | Mapping[str, int]) -> list[np.ndarray]:
    out = []
    for j, k in enumerate(space.names):
        n = int(points.get(k, 20)) if isinstance(points, Mapping) else int(points)
        if n < 1:
            raise LMFusionError(f"grid points for {k!r} must be >= 1")
        out.append(np.linspace(space.lo[j], space.hi[j], n) if n > 1 else np.array([0.5 * (space.lo[j] + space.hi[j])]))
    return out


def _tune_grid(
    space: Space, rng: np.random.Generator, *, seed: int, points: int | Mapping[str, int] = 20, chunk: int = 4096
) -> _Out:
    axes = _points(space, points)
    grid = np.array(list(itertools.product(*axes)), dtype=np.float64)
    best_e, best_x = None, space.clip(space.init_raw)
    trace: list[tuple[int, int]] = []
    for start in range(0, len(grid), chunk):
        xs = grid[start : start + chunk]
        W = np.tile(space.base, (len(xs), 1))
        W[:, space.free] = xs
        errs = total_errors_batch(space.problem, W)
        i = int(np.argmin(errs))
        if best_e is None or errs[i] < best_e:
            best_e, best_x = int(errs[i]), xs[i]
            trace.append((start + i + 1, best_e))
    return best_x, len(grid), trace, {"grid_shape": [len(a) for a in axes]}


def _tune_coordinate(
    space: Space, rng: np.random.Generator, *, seed: int, points: int = 41, max_passes: int = 10
) -> _Out:
    x = space.clip(space.init_raw.copy())
    e = total_errors(space.problem, space.full(x))
    n_evals, trace = 1, [(1, e)]
    for _ in range(max_passes):
        moved = False
        for j in range(len(space.free)):
            vals = np.linspace(space.lo[j], space.hi[j], points)
            xs = np.tile(x, (len(vals), 1))
            xs[:, j] = vals
            W = np.tile(space.base, (len(vals), 1))
            W[:, space.free] = xs
            errs = total_errors_batch(space.problem, W)
            n_evals += len(vals)
            i = int(np.argmin(errs))
            if errs[i] < e:
                x, e, moved = xs[i], int(errs[i]), True
                trace.append((n_evals, e))
        if not moved:
            break
    return x, n_evals, trace, {}


def _tune_optuna(
    space: Space, rng: np.random.Generator, *, seed: int, n_trials: int = 200, show_progress: bool = False
) -> _Out:
    try:
        import optuna
    except ImportError:
        raise LMFusionError("method 'optuna' needs optuna: pip install 'lmfusion[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prob = space.problem
    trace: list[tuple[int, int]] = []
    best = [math.inf]

    def objective(trial: Any) -> float:
        x = np.array([trial.suggest_float(k, space.lo[j], space.hi[j]) for j, k in enumerate(space.names)])
        e = total_errors(prob, space.full(x))
        if e < best[0]:
            best[0] = e
            trace.append((trial.number + 1, e))
        return float(e)

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({k: float(v) for k, v in zip(space.names, space.clip(space.init_raw), strict=True)})
    study.optimize(objective, n_trials=n_trials, show_progress_bar=show_progress)
    x = np.array([study.best_params[k] for k in space.names])
    return x, n_trials, trace, {}


def _feasible(space: Space, x: np.ndarray, dx: np.ndarray) -> tuple[float, float]:
    """The γ range keeping ``x + γ dx`` inside the bounds."""
    lo, hi = -math.inf, math.inf
    for j in range(len(x)):
        if dx[j] > 0:
            lo = max(lo, (space.lo[j] - x[j]) / dx[j])
            hi = min(hi, (space.hi[j] - x[j]) / dx[j])
        elif dx[j] < 0:
            lo = max(lo, (space.hi[j] - x[j]) / dx[j])
            hi = min(hi, (space.lo[j] - x[j]) / dx[j])
    return min(lo, 0.0), max(hi, 0.0)


def _tune_mert(
    space: Space,
    rng: np.random.Generator,
    *,
    seed: int,
    restarts: int = 1,
    random_directions: int = 1,
    max_line_searches: int = 200,
    seed_grid: int = 3,
    prune: bool | str = "auto",
) -> _Out:
    """Powell-style exact line searches from the start point (or the best point of a coarse grid with
    ``seed_grid`` points per weight, when that grid is better and has at most 729 points) and from
    ``restarts`` random points. Directions cycle through the axes plus ``random_directions`` random
    unit vectors; a start stops after a full cycle without improvement (or ``max_line_searches``).
    With ``prune``, hypotheses dominated everywhere in the box are dropped first (exactly: the line
    searches see the same envelopes); ``"auto"`` prunes once :data:`PRUNE_AFTER` line searches have run,
    when the pruning's cost (about 20 line searches' worth) is likely to be repaid."""
    if prune not in (True, False, "auto"):
        raise LMFusionError(f"mert: prune must be True, False or 'auto', got {prune!r}")
    prob = space.problem
    pruned = False

    def do_prune() -> TuningProblem:  # hypotheses that lose everywhere in the box never touch an envelope
        return prune_dominated(space.problem, space.full(space.lo), space.full(space.hi))

    if prune is True:
        prob, pruned = do_prune(), True
    m = len(space.free)
    n_evals = 0
    trace: list[tuple[int, int]] = []
    best_x, best_e = None, None
    starts = [space.clip(space.init_raw.copy())]
    if seed_grid >= 2 and seed_grid**m <= 729:  # start from the coarse grid's best instead, if it is better
        axes = [np.linspace(space.lo[j], space.hi[j], seed_grid) for j in range(m)]
        xs = np.array([starts[0], *itertools.product(*axes)], dtype=np.float64)
        W = np.tile(space.base, (len(xs), 1))
        W[:, space.free] = xs
        errs = total_errors_batch(prob, W)
        n_evals += len(xs)
        starts = [xs[int(np.argmin(errs))]]
    starts += [space.random(rng) for _ in range(restarts)]
    n_ls = 0
    for x in starts:
        e = total_errors(prob, space.full(x))
        n_evals += 1
        failures, k = 0, 0
        cycle = m + (random_directions if m > 1 else 0)
        while failures < cycle and n_ls < max_line_searches * len(starts):
            if k % cycle < m:
                dx = np.eye(m)[k % cycle]
            else:
                v = rng.normal(size=m)
                dx = v / np.linalg.norm(v)
            k += 1
            failures += 1
            lo, hi = _feasible(space, x, dx)
            if hi - lo <= 0:
                continue
            if prune == "auto" and not pruned and n_ls == PRUNE_AFTER:  # pruning pays off on long runs
                prob, pruned = do_prune(), True
            d = np.zeros(len(prob.components))
            d[space.free] = dx
            res = line_search(prob, space.full(x), d, lo, hi)
            n_ls += 1
            if res.best_errors < e and res.gamma != 0.0:
                x_new = space.clip(x + res.gamma * dx)
                e_new = total_errors(prob, space.full(x_new))
                n_evals += 1
                if e_new < e:
                    x, e, failures = x_new, e_new, 0
        if best_e is None or e < best_e:
            best_x, best_e = x, e
            trace.append((n_evals + n_ls, e))
    assert best_x is not None
    extra = {"line_searches": n_ls, "starts": len(starts), "hyps_searched": prob.n_hyps, "pruned": pruned}
    return best_x, n_evals + n_ls, trace, extra


def tune(
    problem: TuningProblem,
    method: Method | str = "mert",
    fixed: Mapping[str, float] = DEFAULT_FIXED,
    init: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
    **opts: Any,
) -> TuningResult:
    """Find weights minimising the dev error rate of ``problem``.

    Args:
        method: ``"mert"`` (exact line searches; opts ``restarts=1`` random starts, ``random_directions=1``
            per cycle, ``seed_grid=3`` points per weight of the coarse grid that may replace the start,
            ``prune="auto"``, ``max_line_searches=200`` per start), ``"smooth"`` (the annealed expected
            error of :mod:`fusion.tuning.smooth`; opts ``restarts=4``, ``anneal``, ``l2=0`` pull toward
            ``prior`` (default the start point), ``seed_grid=3``), ``"grid"`` (opts ``points=20`` per free
            weight, an int or a per-name mapping), ``"coordinate"`` (opts ``points=41``, ``max_passes=10``)
            or ``"optuna"`` (opts ``n_trials=200``).
        fixed: weights held constant (scale invariance: fix one, usually ``am=1``).
        init: the start point for the free weights (default 0 each); the result is never worse
            than it on ``problem``.
        bounds: ``name -> (lo, hi)`` per free weight (default :func:`default_bounds`, fixed ranges; pass
            :func:`fusion.tuning.stable.scale_aware_bounds` for ranges from the scores' own spread, as
            ``lmfusion tune`` does, and check :func:`fusion.tuning.stable.bound_warnings` on the result).
        seed: seeds restarts, random directions and optuna's sampler.

    Returns:
        A :class:`TuningResult` with all weights (fixed included) and the dev error rate.
    """
    if method not in METHODS:
        raise LMFusionError(f"unknown tuning method {method!r}; choose one of {', '.join(METHODS)}")
    total = problem._check_rate_defined()
    space = Space(problem, fixed, bounds, init)
    t0 = time.perf_counter()
    x_start = space.init_raw
    e_start = total_errors(problem, space.full(x_start))
    rng = np.random.default_rng(seed)
    fns: dict[str, Callable[..., _Out]] = {
        "mert": _tune_mert,
        "smooth": tune_smooth,
        "grid": _tune_grid,
        "coordinate": _tune_coordinate,
        "optuna": _tune_optuna,
    }
    fn = fns[method]
    x_best, n_evals, trace, extra = fn(space, rng, seed=seed, **opts)
    extra = {
        **extra,
        "bounds": {k: (float(lo), float(hi)) for k, lo, hi in zip(space.names, space.lo, space.hi, strict=True)},
    }
    e_best = total_errors(problem, space.full(x_best))  # the canonical evaluation decides
    if e_best >= e_start:
        x_best, e_best = x_start, e_start
    return TuningResult(
        weights=problem.weights_dict(space.full(x_best)),
        error_rate=e_best / total,
        method=method,
        start_weights=problem.weights_dict(space.full(x_start)),
        start_error_rate=e_start / total,
        n_evals=n_evals + 2,
        seconds=time.perf_counter() - t0,
        trace=tuple((n, e / total) for n, e in trace),
        extra=extra,
    )


