"""Och's exact line search: the corpus error along ``w + γ d`` from each utterance's upper envelope."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from fusion.errors import LMFusionError
from fusion.tuning.problem import TuningProblem, combine_cm, first_argmax


# ----------------------------------------------------------------------------------------------
# Exact line search (MERT)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineSearchResult:
    """The error profile along ``w + γ d`` for ``γ`` in ``[lo, hi]``.

    Attributes:
        edges: ``[K+1]`` increasing interval edges (``edges[0] = lo``, ``edges[-1] = hi``).
        errors: ``[K]`` total errors inside each open interval ``(edges[i], edges[i+1])``.
        gamma: the midpoint of the best interval (nearest to ``γ = 0`` among equals).
        best_errors: errors at ``gamma``.
    """

    edges: np.ndarray
    errors: np.ndarray
    gamma: float
    best_errors: int


def _merge_tol(lo: float, hi: float) -> float:
    """Breakpoints closer than this are one point; intervals narrower than it are not candidates."""
    return 1e-9 * max(1.0, hi - lo, abs(lo), abs(hi))


def line_search(problem: TuningProblem, w: np.ndarray, d: np.ndarray, lo: float, hi: float) -> LineSearchResult:
    """Exact error profile along ``w + γ d``, ``γ ∈ [lo, hi]``, by sweeping each utterance's upper envelope.

    All utterances are swept together: at each step every utterance moves from its current envelope line
    to the next one (the steeper line with the nearest intersection), so the number of numpy steps is the
    longest envelope, not the number of utterances. Where several lines meet at one point the sweep may
    visit them one by one; the zero-width intervals between are merged away.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise LMFusionError(f"line_search: bad interval [{lo}, {hi}]")
    p = problem._padded
    a = combine_cm(p.feats_cm, w) + p.bias  # padding: -inf intercept, slope 0: never on an envelope
    b = combine_cm(p.feats_cm, d)
    errors = p.errors
    # 1-best at lo (first on ties; a steeper tied line takes over at γ = lo in the first sweep step)
    cur = np.argmax(a + lo * b, axis=1)
    err0 = int(np.take_along_axis(errors, cur[:, None], axis=1).sum())

    bp_g: list[np.ndarray] = []
    bp_d: list[np.ndarray] = []
    act = np.nonzero(p.has_hyps)[0]
    g = np.full(len(cur), lo, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        while act.size:
            full = act.size == len(cur)
            ca = cur[act]
            aa = a if full else a[act]
            ba = b if full else b[act]
            ar = np.arange(len(act))
            a_c = aa[ar, ca][:, None]
            b_c = ba[ar, ca][:, None]
            den = ba - b_c
            x = np.divide(a_c - aa, den, out=np.full(den.shape, np.inf), where=den > 0)
            np.maximum(x, g[act][:, None], out=x)
            nxt = np.argmin(x, axis=1)  # the nearest crossing; the first line on exact ties
            xmin = x[ar, nxt]
            go = xmin < hi
            if not go.any():
                break
            rows = act[go]
            nx = nxt[go]
            bp_g.append(xmin[go])
            bp_d.append(errors[rows, nx] - errors[rows, cur[rows]])
            cur[rows] = nx
            g[rows] = xmin[go]
            act = rows

    if bp_g:
        gs = np.concatenate(bp_g)
        ds = np.concatenate(bp_d)
        order = np.argsort(gs, kind="stable")
        gs, ds = gs[order], ds[order]
        # merge breakpoints at the same γ (up to rounding: lines through one point rarely meet exactly)
        tol = _merge_tol(lo, hi)
        start = np.concatenate([[0], np.nonzero(np.diff(gs) > tol)[0] + 1])
        uniq = gs[start]
        dsum = np.add.reduceat(ds, start)
        edges = np.concatenate([[lo], uniq, [hi]])
        errs = err0 + np.concatenate([[0], np.cumsum(dsum)])
    else:
        edges = np.array([lo, hi], dtype=np.float64)
        errs = np.array([err0], dtype=np.int64)
    width = np.diff(edges)
    ok = width > _merge_tol(lo, hi)
    if not ok.any():  # a degenerate interval [lo, lo]
        return LineSearchResult(edges, errs, float(lo), int(errs[0]))
    best = errs[ok].min()
    mids = 0.5 * (edges[:-1] + edges[1:])
    choose = ok & (errs == best)
    # prefer the interval holding γ = 0 (no move), else the nearest to it
    dist = np.where((edges[:-1] <= 0) & (0 <= edges[1:]), 0.0, np.abs(mids))
    i = int(np.argmin(np.where(choose, dist, np.inf)))
    tol = _merge_tol(lo, hi)
    gamma = 0.0 if edges[i] + tol < 0 < edges[i + 1] - tol else float(mids[i])
    return LineSearchResult(edges, errs.astype(np.int64), gamma, int(errs[i]))


def line_search_reference(problem: TuningProblem, w: np.ndarray, d: np.ndarray, lo: float, hi: float) -> int:
    """Minimum total errors along ``w + γ d`` on ``(lo, hi)`` by brute force: the slow reference.

    Exact rational arithmetic (the float inputs are converted exactly): every pairwise intersection of
    every utterance's lines is a candidate breakpoint, and the 1-bests (first on exact ties) are found
    at the midpoint of every pair of consecutive candidates.
    """
    from fractions import Fraction

    wq = [Fraction(float(x)) for x in w]
    dq = [Fraction(float(x)) for x in d]
    lines = []
    for f in problem.feats:
        fq = [[Fraction(float(x)) for x in row] for row in f]
        lines.append(
            [
                (
                    sum((x * y for x, y in zip(row, wq, strict=True)), Fraction(0)),
                    sum((x * y for x, y in zip(row, dq, strict=True)), Fraction(0)),
                )
                for row in fq
            ]
        )
    qlo, qhi = Fraction(float(lo)), Fraction(float(hi))
    pts = {qlo, qhi}
    for ls in lines:
        for (ai, bi), (aj, bj) in itertools.combinations(ls, 2):
            if bi != bj:
                x = (aj - ai) / (bi - bj)
                if qlo < x < qhi:
                    pts.add(x)
    srt = sorted(pts)
    best: int | None = None
    for x0, x1 in itertools.pairwise(srt):
        g = (x0 + x1) / 2
        errs = 0
        for ls, e, n in zip(lines, problem.errors, problem.ref_lengths, strict=True):
            errs += int(e[first_argmax([a + g * b for a, b in ls])]) if ls else int(n)
        best = errs if best is None else min(best, errs)
    assert best is not None
    return best
