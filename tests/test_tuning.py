"""Tuning over cached scores: fast paths against plain references, MERT against grids, never worse."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.errors import LMFusionError, WeightsError
from fusion.tuning import (
    TuningProblem,
    best_indices,
    dominated_reference,
    error_rate,
    error_rate_reference,
    line_search,
    line_search_reference,
    prune_dominated,
    total_errors,
    total_errors_batch,
    tune,
)

COMPS = ("am", "lm", "words")


def random_problem(
    seed: int, u: int = 40, n: int = 8, c: int = 3, integer: bool = False, empty: bool = True
) -> TuningProblem:
    """Random scores and errors; integer scores make exact ties and coincident breakpoints common."""
    rng = np.random.default_rng(seed)
    feats, errors = [], []
    for _ in range(u):
        k = int(rng.integers(0 if empty else 1, n + 1))
        f = rng.integers(-3, 4, size=(k, c)).astype(float) if integer else rng.normal(size=(k, c))
        feats.append(f)
        errors.append(rng.integers(0, 6, size=k))
    return TuningProblem(COMPS[:c], feats, errors, rng.integers(1, 9, size=u))


def correlated_problem(seed: int, u: int = 150, n: int = 12) -> TuningProblem:
    """A problem with structure: the 'lm' score is informative about the errors, 'words' mildly so."""
    rng = np.random.default_rng(seed)
    feats, errors = [], []
    for _ in range(u):
        e = rng.integers(0, 6, size=n)
        am = rng.normal(size=n) * 2.0
        lm = -1.5 * e + rng.normal(size=n) * 2.0
        words = rng.integers(3, 9, size=n).astype(float)
        feats.append(np.stack([am, lm, words], axis=1))
        errors.append(e + (words < 5))
    return TuningProblem(COMPS, feats, errors, rng.integers(4, 10, size=u))


# ----------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------
@given(st.integers(0, 10_000), st.booleans(), st.lists(st.floats(-3, 3, allow_subnormal=False), min_size=3, max_size=3))
@settings(max_examples=150, deadline=None)
def test_vectorised_error_rate_matches_plain_loop(seed: int, integer: bool, w: list[float]) -> None:
    p = random_problem(seed, integer=integer)
    if integer:
        w = [float(round(x)) for x in w]  # exact ties: the first hypothesis must win in both
    weights = dict(zip(COMPS, w, strict=True))
    assert error_rate(p, weights) == error_rate_reference(p, weights)
    W = np.array([w, [1.0, 0.5, -0.5], [0.0, 0.0, 0.0]])
    assert list(total_errors_batch(p, W)) == [total_errors(p, row) for row in W] or integer
    # with exact ties the matrix product may round differently; without them it must agree
    if not integer:
        assert list(total_errors_batch(p, W, max_elems=7)) == [total_errors(p, row) for row in W]


def test_ties_pick_the_first_hypothesis_and_empty_lists_count_deletions() -> None:
    feats = [np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), np.zeros((0, 2))]
    errors = [np.array([3, 0, 1]), np.zeros(0, np.int64)]
    p = TuningProblem(("am", "lm"), feats, errors, np.array([4, 2]))
    assert list(best_indices(p, {"am": 1.0})) == [0, -1]
    assert error_rate(p, {"am": 1.0}) == pytest.approx((3 + 2) / 6)
    assert error_rate_reference(p, {"am": 1.0}) == pytest.approx((3 + 2) / 6)
    assert p.oracle_error_rate() == pytest.approx(2 / 6)
    assert p.first_error_rate() == pytest.approx(5 / 6)


def test_problem_validation() -> None:
    with pytest.raises(LMFusionError, match="hypotheses but"):
        TuningProblem(("am",), [np.zeros((2, 1))], [np.zeros(3)], np.array([1]))
    with pytest.raises(LMFusionError, match="non-finite"):
        TuningProblem(("am",), [np.array([[np.nan]])], [np.zeros(1)], np.array([1]))
    with pytest.raises(LMFusionError, match="feature arrays"):
        TuningProblem(("am",), [np.zeros((1, 1))], [np.zeros(1)], np.array([1, 2]))
    p = random_problem(0)
    with pytest.raises(WeightsError, match="unknown"):
        error_rate(p, {"nope": 1.0})
    with pytest.raises(WeightsError, match="lacks"):
        tune(p, "grid", fixed={"acoustic": 1.0})
    with pytest.raises(WeightsError, match="bounds"):
        tune(p, "grid", bounds={"lm": (2.0, 1.0)})
    with pytest.raises(LMFusionError, match="unknown tuning method"):
        tune(p, "simplex")


def test_subset_keeps_rows() -> None:
    p = random_problem(3, u=10)
    s = p.subset([2, 5])
    assert s.n_utts == 2 and list(s.ref_lengths) == [p.ref_lengths[2], p.ref_lengths[5]]
    w = {"am": 1.0, "lm": 0.3}
    errs = sum(int(p.errors[i][best_indices(p, w)[i]]) if len(p.errors[i]) else int(p.ref_lengths[i]) for i in (2, 5))
    assert total_errors(s, s.weight_vector(w)) == errs


# ----------------------------------------------------------------------------------------------
# Exact line search
# ----------------------------------------------------------------------------------------------
WEIGHT = st.integers(-200, 200).map(lambda x: x / 100)  # weights people use, not denormals


@given(
    st.integers(0, 10_000),
    st.booleans(),
    st.lists(WEIGHT, min_size=3, max_size=3),
    st.lists(WEIGHT, min_size=3, max_size=3),
)
@settings(max_examples=60, deadline=None)
def test_line_search_matches_brute_force_breakpoints(seed: int, integer: bool, w: list[float], d: list[float]) -> None:
    p = random_problem(seed, u=10, n=5, integer=integer)
    w_, d_ = np.array(w), np.array(d)
    if integer:
        w_, d_ = np.round(w_), np.round(d_)
    res = line_search(p, w_, d_, -3.0, 4.0)
    assert res.best_errors == line_search_reference(p, w_, d_, -3.0, 4.0)
    if integer:
        # hypotheses with different scores can have the same line along d (tied for every γ); at a point
        # off the integers the rounding of Σ w_k f_k then decides the tie, so only the minimum is exact
        return
    # the reported point really has the reported error, and so does every interval's midpoint
    assert total_errors(p, w_ + res.gamma * d_) == res.best_errors
    for i in range(len(res.errors)):
        if res.edges[i + 1] - res.edges[i] > 1e-6:
            g = 0.5 * (res.edges[i] + res.edges[i + 1])
            assert total_errors(p, w_ + g * d_) == res.errors[i]


def test_mert_equals_fine_grid_on_a_two_weight_problem() -> None:
    """am fixed at 1, lm free: MERT is exact in one dimension, so it matches a very fine grid."""
    p = correlated_problem(11, u=120).subset(range(120))
    p2 = TuningProblem(("am", "lm"), [f[:, :2] for f in p.feats], p.errors, p.ref_lengths)
    bounds = {"lm": (0.0, 3.0)}
    mert = tune(p2, "mert", fixed={"am": 1.0}, bounds=bounds, restarts=0)
    grid = tune(p2, "grid", fixed={"am": 1.0}, bounds=bounds, points=3001)
    assert mert.error_rate == pytest.approx(grid.error_rate, abs=1e-12)
    assert mert.error_rate < mert.start_error_rate
    # and on a smaller problem, the exact brute-force reference along the whole lm axis agrees
    small = p2.subset(range(25))
    exact = line_search_reference(small, np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.0, 3.0)
    m_small = tune(small, "mert", fixed={"am": 1.0}, bounds=bounds, restarts=0)
    assert round(m_small.error_rate * small.total_ref_length) == min(
        exact, round(m_small.start_error_rate * small.total_ref_length)
    )


def test_mert_is_no_worse_than_a_grid_with_two_free_weights() -> None:
    p = correlated_problem(5)
    bounds = {"lm": (0.0, 2.0), "words": (-3.0, 3.0)}
    mert = tune(p, "mert", bounds=bounds, seed=1)
    grid = tune(p, "grid", bounds=bounds, points=41)
    assert mert.error_rate <= grid.error_rate
    assert mert.error_rate == pytest.approx(error_rate_reference(p, mert.weights))
    assert mert.weights["am"] == 1.0


# ----------------------------------------------------------------------------------------------
# Every optimiser: never worse than the start; grid equals brute force
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mert", "grid", "coordinate", "optuna"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tuned_weights_never_worse_than_start(method: str, seed: int) -> None:
    pytest.importorskip("optuna") if method == "optuna" else None
    p = random_problem(seed, u=30, integer=seed == 2)
    rng = np.random.default_rng(seed)
    init = {"lm": float(rng.uniform(0, 2)), "words": float(rng.uniform(-3, 3))}
    opts = {"n_trials": 15} if method == "optuna" else {"points": 6} if method == "grid" else {}
    res = tune(p, method, init=init, seed=seed, **opts)
    start = error_rate_reference(p, {"am": 1.0, **init})
    assert res.start_error_rate == pytest.approx(start)
    assert res.error_rate <= start
    assert res.error_rate == pytest.approx(error_rate_reference(p, res.weights))
    assert res.weights["am"] == 1.0


def test_start_outside_bounds_is_still_the_guarantee() -> None:
    p = correlated_problem(2, u=60)
    good = tune(p, "mert", bounds={"lm": (0, 3), "words": (-3, 3)})
    # start at a good point but search a box that excludes it
    res = tune(p, "grid", init=good.weights, bounds={"lm": (2.5, 3.0), "words": (2.5, 3.0)}, points=3)
    assert res.error_rate <= good.error_rate


def test_grid_finds_the_brute_force_minimum_of_its_points() -> None:
    p = random_problem(7, u=25)
    bounds = {"lm": (0.0, 2.0), "words": (-1.0, 1.0)}
    res = tune(p, "grid", bounds=bounds, points=5)
    brute = min(
        error_rate_reference(p, {"am": 1.0, "lm": a, "words": b})
        for a, b in itertools.product(np.linspace(0, 2, 5), np.linspace(-1, 1, 5))
    )
    assert res.error_rate == pytest.approx(min(brute, res.start_error_rate))


def test_mert_restarts_are_seeded() -> None:
    p = correlated_problem(4, u=60)
    a = tune(p, "mert", seed=3, restarts=3)
    b = tune(p, "mert", seed=3, restarts=3)
    assert a.weights == b.weights and a.error_rate == b.error_rate
    assert a.extra["line_searches"] > 0


# ----------------------------------------------------------------------------------------------
# Pruning hypotheses dominated in the box
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruning_matches_the_pairwise_reference_and_keeps_every_error_count(seed: int) -> None:
    p = random_problem(seed, u=30, n=20, integer=seed == 2) if seed != 1 else correlated_problem(seed, u=30, n=25)
    lo, hi = np.array([1.0, 0.0, -2.0]), np.array([1.0, 2.0, 2.0])
    for exact in (True, False):
        q = prune_dominated(p, lo, hi, exact=exact)
        for f, g in zip(p.feats, q.feats, strict=True):
            want = f[~dominated_reference(f, lo, hi)]
            if exact:
                assert np.array_equal(g, want)
            else:  # the fast pass drops a subset of what the exhaustive test drops
                assert all(any(np.array_equal(row, r) for r in f) for row in g) and len(g) >= len(want)
        rng = np.random.default_rng(seed)
        for _ in range(30):
            w = lo + (hi - lo) * rng.random(3)
            assert total_errors(q, w) == total_errors(p, w)
    assert prune_dominated(p, lo, hi).n_hyps < p.n_hyps


def test_mert_with_and_without_pruning_agree() -> None:
    p = correlated_problem(8, u=80)
    a = tune(p, "mert", seed=2, prune=True)
    b = tune(p, "mert", seed=2, prune=False)
    c = tune(p, "mert", seed=2, prune="auto", restarts=6)  # long enough to prune part-way
    d = tune(p, "mert", seed=2, prune=False, restarts=6)
    assert a.weights == b.weights and a.error_rate == b.error_rate
    assert c.weights == d.weights and c.error_rate == d.error_rate
    assert a.extra["hyps_searched"] < b.extra["hyps_searched"]
    assert c.extra["pruned"] and not d.extra["pruned"]
