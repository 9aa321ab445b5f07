"""Tuning fusion weights over cached component scores: no search or LM is ever re-run per trial.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from fusion.errors import LMFusionError, WeightsError

Method = Literal["mert", "grid", "coordinate", "optuna"]
METHODS: tuple[str, ...] = ("mert", "grid", "coordinate", "optuna")

DEFAULT_FIXED: Mapping[str, float] = MappingProxyType({"am": 1.0})
LENGTH_COMPONENTS = ("words", "tokens", "chars")
PRUNE_AFTER = 32
"""MERT with ``prune="auto"`` drops dominated hypotheses after this many line searches."""
SUBTRACTED_COMPONENTS = ("ilm", "source_lm")


def default_bounds(component: str) -> tuple[float, float]:
    """Search range for a free weight when none is given: length bonuses ``[-5, 5]``, subtracted
    terms (``ilm``, ``source_lm``) ``[-1, 0]``, every other (LM-like) component ``[0, 2]``."""
    if component in LENGTH_COMPONENTS:
        return (-5.0, 5.0)
    if component in SUBTRACTED_COMPONENTS:
        return (-1.0, 0.0)
    return (0.0, 2.0)


# ----------------------------------------------------------------------------------------------
# The problem
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Padded:
    feats: np.ndarray  # [U, N, C], zeros in padding
    feats_cm: np.ndarray  # [C, U, N], the same, component-major (contiguous per component)
    errors: np.ndarray  # [U, N]; an empty utterance's row is all ref_length
    valid: np.ndarray  # [U, N] bool
    has_hyps: np.ndarray  # [U] bool
    bias: np.ndarray  # [U, N]: 0 for a hypothesis, -inf for padding


@dataclass(frozen=True, eq=False)
class TuningProblem:
    """Cached component scores and error counts of n-best lists: what every optimiser reads.

    Attributes:
        components: score component names, the columns of every ``feats[u]``.
        feats: per utterance a ``[n_u, C]`` float array of natural-log component scores.
        errors: per utterance a ``[n_u]`` array of edit distances to the reference.
        ref_lengths: ``[U]`` reference lengths (words or characters).
        utt_ids: optional utterance ids (for reports).
    """

    components: tuple[str, ...]
    feats: list[np.ndarray]
    errors: list[np.ndarray]
    ref_lengths: np.ndarray
    utt_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        comps = tuple(self.components)
        if not comps:
            raise LMFusionError("TuningProblem: no components")
        if len(set(comps)) != len(comps):
            raise LMFusionError(f"TuningProblem: duplicate component names {comps}")
        c = len(comps)
        feats = [
            np.asarray(f, dtype=np.float64).reshape(-1, c) if np.size(f) == 0 else np.asarray(f, np.float64)
            for f in self.feats
        ]
        errors = [np.asarray(e, dtype=np.int64).reshape(-1) for e in self.errors]
        lens = np.asarray(self.ref_lengths, dtype=np.int64).reshape(-1)
        if not (len(feats) == len(errors) == len(lens)):
            raise LMFusionError(
                f"TuningProblem: {len(feats)} feature arrays, {len(errors)} error arrays, {len(lens)} ref lengths"
            )
        for u, (f, e) in enumerate(zip(feats, errors, strict=True)):
            name = self.utt_ids[u] if u < len(self.utt_ids) else str(u)
            if f.ndim != 2 or f.shape[1] != c:
                raise LMFusionError(f"TuningProblem: utterance {name}: feats shape {f.shape}, expected [n, {c}]")
            if f.shape[0] != e.shape[0]:
                raise LMFusionError(f"TuningProblem: utterance {name}: {f.shape[0]} hypotheses but {len(e)} errors")
            if not np.all(np.isfinite(f)):
                raise LMFusionError(f"TuningProblem: utterance {name}: non-finite component score")
            if np.any(e < 0):
                raise LMFusionError(f"TuningProblem: utterance {name}: negative error count")
        if np.any(lens < 0):
            raise LMFusionError("TuningProblem: negative reference length")
        if self.utt_ids and len(self.utt_ids) != len(lens):
            raise LMFusionError(f"TuningProblem: {len(self.utt_ids)} utt_ids for {len(lens)} utterances")
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "feats", feats)
        object.__setattr__(self, "errors", errors)
        object.__setattr__(self, "ref_lengths", lens)
        object.__setattr__(self, "utt_ids", tuple(self.utt_ids))

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_utts(self) -> int:
        return len(self.feats)

    @property
    def n_hyps(self) -> int:
        return sum(len(f) for f in self.feats)

    @property
    def total_ref_length(self) -> int:
        return int(self.ref_lengths.sum())

    def _check_rate_defined(self) -> int:
        total = self.total_ref_length
        if total <= 0:
            raise LMFusionError("error rate is undefined: the references are empty")
        return total

    @cached_property
    def _padded(self) -> _Padded:
        u = self.n_utts
        n = max((len(f) for f in self.feats), default=0)
        n = max(n, 1)
        c = len(self.components)
        feats = np.zeros((u, n, c), dtype=np.float64)
        errors = np.repeat(self.ref_lengths[:, None], n, axis=1).astype(np.int64)
        valid = np.zeros((u, n), dtype=bool)
        for i, (f, e) in enumerate(zip(self.feats, self.errors, strict=True)):
            k = len(f)
            feats[i, :k] = f
            errors[i, :k] = e
            valid[i, :k] = True
        cm = np.ascontiguousarray(np.moveaxis(feats, 2, 0))
        has = np.asarray(valid.any(axis=1), dtype=bool)
        return _Padded(feats, cm, errors, valid, has, np.where(valid, 0.0, -np.inf))

    # -- weights -------------------------------------------------------------------------------
    def weight_vector(self, weights: Mapping[str, float]) -> np.ndarray:
        """``[C]`` weights in component order; components missing from ``weights`` weigh 0."""
        unknown = [k for k in weights if k not in self.components]
        if unknown:
            raise WeightsError(f"weights name unknown components {unknown}; the problem has {list(self.components)}")
        w = np.array([float(weights.get(k, 0.0)) for k in self.components], dtype=np.float64)
        if not np.all(np.isfinite(w)):
            raise WeightsError(f"non-finite weight in {dict(weights)}")
        return w

    def weights_dict(self, w: np.ndarray) -> dict[str, float]:
        return {k: float(x) for k, x in zip(self.components, w, strict=True)}

    # -- derived problems and bounds --------------------------------------------------------
    def subset(self, indices: Sequence[int] | np.ndarray) -> TuningProblem:
        """The problem restricted to the given utterances (e.g. a dev/test split)."""
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        return TuningProblem(
            self.components,
            [self.feats[i] for i in idx],
            [self.errors[i] for i in idx],
            self.ref_lengths[idx] if idx else np.zeros(0, np.int64),
            tuple(self.utt_ids[i] for i in idx) if self.utt_ids else (),
        )

    def oracle_error_rate(self) -> float:
        """Error rate of the best hypothesis of every list (a lower bound for any weights)."""
        total = self._check_rate_defined()
        best = sum(int(e.min()) if len(e) else int(n) for e, n in zip(self.errors, self.ref_lengths, strict=True))
        return best / total

    def first_error_rate(self) -> float:
        """Error rate of each list's first hypothesis (the recogniser's own 1-best, in decoder order)."""
        total = self._check_rate_defined()
        return sum(int(e[0]) if len(e) else int(n) for e, n in zip(self.errors, self.ref_lengths, strict=True)) / total


# ----------------------------------------------------------------------------------------------
# Pure scoring functions
# ----------------------------------------------------------------------------------------------
def combine(feats: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Σ_k feats[..., k] * w[k]``, accumulated component by component in a fixed order.

    Every path that picks 1-bests (the reference loop, the vectorised evaluator, ``apply_weights``)
    uses this so that exact ties resolve identically everywhere.
    """
    f = np.asarray(feats, dtype=np.float64)
    s = f[..., 0] * w[0]
    for k in range(1, f.shape[-1]):
        s = s + f[..., k] * w[k]
    return s


def combine_cm(feats_cm: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`combine` over component-major features ``[C, ...]``: the same operations in the same order."""
    s = feats_cm[0] * w[0]
    for k in range(1, feats_cm.shape[0]):
        s = s + feats_cm[k] * w[k]
    return s


def first_argmax(scores: Sequence[Any]) -> int:
    """Index of the first maximum (plain loop; the reference tie rule)."""
    best, arg = -math.inf, -1
    for i, s in enumerate(scores):
        if arg < 0 or s > best:
            best, arg = s, i
    return arg


def best_indices(problem: TuningProblem, weights: Mapping[str, float] | np.ndarray) -> np.ndarray:
    """``[U]`` index of each utterance's 1-best under ``weights`` (``-1`` for an empty list)."""
    w = problem.weight_vector(weights) if isinstance(weights, Mapping) else np.asarray(weights, np.float64)
    p = problem._padded
    s = np.where(p.valid, combine_cm(p.feats_cm, w), -np.inf)
    idx = np.argmax(s, axis=1)
    return np.where(p.has_hyps, idx, -1)


def total_errors(problem: TuningProblem, w: np.ndarray) -> int:
    """Total edit distance of the 1-bests under the weight vector ``w`` ``[C]`` (vectorised)."""
    p = problem._padded
    s = np.where(p.valid, combine_cm(p.feats_cm, w), -np.inf)
    idx = np.argmax(s, axis=1)  # an empty row is all -inf -> 0, whose error is the ref length
    return int(np.take_along_axis(p.errors, idx[:, None], axis=1).sum())


def error_rate(problem: TuningProblem, weights: Mapping[str, float]) -> float:
    """Corpus error rate of the 1-bests under ``weights`` (vectorised over utterances)."""
    total = problem._check_rate_defined()
    return total_errors(problem, problem.weight_vector(weights)) / total


def error_rate_reference(problem: TuningProblem, weights: Mapping[str, float]) -> float:
    """:func:`error_rate` as a plain per-utterance loop: the slow reference."""
    total = problem._check_rate_defined()
    w = problem.weight_vector(weights)
    errs = 0
    for f, e, n in zip(problem.feats, problem.errors, problem.ref_lengths, strict=True):
        if len(f) == 0:
            errs += int(n)
            continue
        errs += int(e[first_argmax(list(combine(f, w)))])
    return errs / total


def total_errors_batch(problem: TuningProblem, W: np.ndarray, *, max_elems: int = 1 << 22) -> np.ndarray:
    """Total errors for each row of ``W`` ``[G, C]`` at once (one matrix product per chunk).

    Used by the grid and coordinate optimisers; the winner is re-checked with :func:`total_errors`.
    """
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    p = problem._padded
    u, n, c = p.feats.shape
    flat_t = p.feats_cm.reshape(c, u * n)
    bias = np.where(p.valid, 0.0, -np.inf)[None]  # [1, U, N]
    out = np.empty(len(W), dtype=np.int64)
    step = max(1, max_elems // max(1, u * n))
    for start in range(0, len(W), step):
        chunk = W[start : start + step]
        s = (chunk @ flat_t).reshape(len(chunk), u, n) + bias
        idx = np.argmax(s, axis=2)  # [g, U]
        out[start : start + len(chunk)] = np.take_along_axis(p.errors[None], idx[..., None], axis=2).sum(axis=(1, 2))
    return out


def _wmax(lo: np.ndarray, hi: np.ndarray) -> float:
    return float(np.maximum(np.abs(lo), np.abs(hi)).sum())


def dominated_reference(feats: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``[n]`` bools: hypothesis ``i`` loses to one single ``j`` for every ``w`` in the box (plain loops)."""
    n = len(feats)
    margin = 1e-9 * max(1.0, float(np.abs(feats).max(initial=0.0)) * _wmax(lo, hi))
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            worst = sum(min(dk * lo[k], dk * hi[k]) for k, dk in enumerate(feats[j] - feats[i]))
            if worst > margin:
                out[i] = True
                break
    return out


def _keep_in_box(p: _Padded, lo: np.ndarray, hi: np.ndarray, *, exact: bool, top: int = 12) -> np.ndarray:
    """``[U, N]`` mask of hypotheses not shown to be dominated in the box.

    Every hypothesis is tested against the ``top`` best-scoring ones at the box centre (cheap, and where
    dominators usually are). With ``exact``, the survivors are then tested pairwise (utterances sorted by
    survivor count, so each chunk is padded only to its own width), which drops exactly the hypotheses
    :func:`dominated_reference` drops.
    """
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    free = [k for k in range(len(lo)) if half[k] > 0]
    u, n = p.valid.shape

    def worst(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        """min over the box of (f_b - f_a) · w for fa [C, u, A], fb [C, u, B] -> [u, A, B]."""
        out = combine_cm(fb, mid)[:, None, :] - combine_cm(fa, mid)[:, :, None]
        for k in free:
            out -= half[k] * np.abs(fb[k][:, None, :] - fa[k][:, :, None])
        return out

    margin = 1e-9 * np.maximum(1.0, np.abs(p.feats_cm).max(axis=(0, 2)) * _wmax(lo, hi))[:, None, None]  # [U,1,1]
    keep = p.valid.copy()
    if n > top:
        score = combine_cm(p.feats_cm, mid) + p.bias
        cand = np.argpartition(-score, top, axis=1)[:, :top]
        rows = np.arange(u)[:, None]
        beaten = worst(p.feats_cm, p.feats_cm[:, rows, cand]) > margin  # [U, N, top]
        beaten &= p.valid[rows, cand][:, None, :]  # padding is no dominator
        keep &= ~beaten.any(axis=2)
    if not exact:
        return keep
    counts = keep.sum(axis=1)
    order = np.argsort(counts, kind="stable")
    survivors = np.argsort(~keep, axis=1, kind="stable")  # kept hypotheses first, in order
    for s in range(0, u, 256):
        r = order[s : s + 256]
        width = int(counts[r].max(initial=0))
        if width < 2:
            continue
        idx = survivors[r, :width]  # [c, width]
        ok = np.arange(width)[None, :] < counts[r][:, None]
        f = p.feats_cm[:, r[:, None], idx]  # [C, c, width]
        lost = ((worst(f, f) > margin[r]) & ok[:, None, :]).any(axis=2) & ok  # [c, width]
        rr, cc = np.nonzero(lost)
        keep[r[rr], idx[rr, cc]] = False
    return keep


def prune_dominated(problem: TuningProblem, lo: np.ndarray, hi: np.ndarray, *, exact: bool = True) -> TuningProblem:
    """Drop hypotheses that cannot be a 1-best for any weights in the box ``lo <= w <= hi``.

    Hypothesis ``i`` is dropped when a single other hypothesis ``j`` beats it everywhere in the box:
    ``min_w (f_j - f_i) · w > 0``, which for a box is ``Σ_k min(Δ_k lo_k, Δ_k hi_k) > 0`` (a small
    margin guards against rounding). Such an ``i`` is never the argmax nor tied for it, so every
    1-best, and so every error count, is unchanged for weights in the box. Order is kept.

    Each hypothesis is first tested against the 12 best at the box centre (fast, prunes most); with
    ``exact`` (the default) the survivors are then tested against each other.
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    p = problem._padded
    keep = _keep_in_box(p, lo, hi, exact=exact)
    counts = keep.sum(axis=1)
    width = max(int(counts.max(initial=0)), 1)
    idx = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    valid = np.arange(width)[None, :] < counts[:, None]
    feats = np.where(valid[:, :, None], np.take_along_axis(p.feats, idx[:, :, None], axis=1), 0.0)
    errors = np.where(valid, np.take_along_axis(p.errors, idx, axis=1), problem.ref_lengths[:, None])
    out = object.__new__(TuningProblem)  # every part is derived from a validated problem: skip re-validation
    object.__setattr__(out, "components", problem.components)
    object.__setattr__(out, "feats", [feats[i, :c] for i, c in enumerate(counts)])
    object.__setattr__(out, "errors", [errors[i, :c] for i, c in enumerate(counts)])
    object.__setattr__(out, "ref_lengths", problem.ref_lengths)
    object.__setattr__(out, "utt_ids", problem.utt_ids)
    cm = np.ascontiguousarray(np.moveaxis(feats, 2, 0))
    out.__dict__["_padded"] = _Padded(feats, cm, errors, valid, valid.any(axis=1), np.where(valid, 0.0, -np.inf))
    return out


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


# ----------------------------------------------------------------------------------------------
# Results and the tune() entry point
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuningResult:
    """What :func:`tune` found.

    Attributes:
        weights: every component's weight (fixed ones included).
        error_rate: the dev error rate at ``weights`` (re-evaluated with :func:`error_rate`).
        method: the optimiser.
        start_weights, start_error_rate: the starting point and its error rate.
        n_evals: weight vectors evaluated (MERT: line searches plus point checks).
        seconds: wall time.
        trace: ``(n_evals, best error rate so far)`` steps.
        extra: method-specific details.
    """

    weights: dict[str, float]
    error_rate: float
    method: str
    start_weights: dict[str, float]
    start_error_rate: float
    n_evals: int
    seconds: float
    trace: tuple[tuple[int, float], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


class _Space:
    """The free weights: their indices, bounds and the fixed part of the vector."""

    def __init__(
        self,
        problem: TuningProblem,
        fixed: Mapping[str, float],
        bounds: Mapping[str, tuple[float, float]] | None,
        init: Mapping[str, float] | None,
    ) -> None:
        comps = problem.components
        unknown = [k for k in fixed if k not in comps]
        if unknown:
            raise WeightsError(
                f"fixed weights name components {unknown} the problem lacks (it has {list(comps)}); "
                "pass fixed= naming one of them, e.g. fixed={'" + comps[0] + "': 1.0}"
            )
        bounds = dict(bounds or {})
        bad = [k for k in bounds if k not in comps or k in fixed]
        if bad:
            raise WeightsError(f"bounds given for {bad}, which are unknown or fixed")
        self.free = [i for i, k in enumerate(comps) if k not in fixed]
        if not self.free:
            raise WeightsError("every component is fixed: nothing to tune")
        self.names = [comps[i] for i in self.free]
        self.lo = np.empty(len(self.free))
        self.hi = np.empty(len(self.free))
        for j, k in enumerate(self.names):
            lo, hi = bounds.get(k, default_bounds(k))
            lo, hi = float(lo), float(hi)
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise WeightsError(f"bounds of {k!r} must be finite with lo <= hi, got ({lo}, {hi})")
            self.lo[j], self.hi[j] = lo, hi
        self.base = np.zeros(len(comps))
        for k, v in fixed.items():
            if not math.isfinite(float(v)):
                raise WeightsError(f"fixed weight {k!r} is {v}")
            self.base[comps.index(k)] = float(v)
        init = dict(init or {})
        extra = [k for k in init if k not in comps]
        if extra:
            raise WeightsError(f"init names unknown components {extra}")
        for k, v in init.items():
            if k in fixed and float(v) != float(fixed[k]):
                raise WeightsError(f"init {k}={v} contradicts fixed {k}={fixed[k]}")
        x0 = np.array([float(init.get(k, 0.0)) for k in self.names])
        # a start outside the bounds is kept as the reference point; searches start from its clip
        self.init_raw = x0
        self.problem = problem

    def full(self, x: np.ndarray) -> np.ndarray:
        w = self.base.copy()
        w[self.free] = x
        return w

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.lo, self.hi)

    def random(self, rng: np.random.Generator) -> np.ndarray:
        return self.lo + (self.hi - self.lo) * rng.random(len(self.free))


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
            ``prune="auto"``, ``max_line_searches=200`` per start), ``"grid"`` (opts ``points=20`` per free
            weight, an int or a per-name mapping), ``"coordinate"`` (opts ``points=41``, ``max_passes=10``)
            or ``"optuna"`` (opts ``n_trials=200``).
        fixed: weights held constant (scale invariance: fix one, usually ``am=1``).
        init: the start point for the free weights (default 0 each); the result is never worse
            than it on ``problem``.
        bounds: ``name -> (lo, hi)`` per free weight (default :func:`default_bounds`).
        seed: seeds restarts, random directions and optuna's sampler.

    Returns:
        A :class:`TuningResult` with all weights (fixed included) and the dev error rate.
    """
    if method not in METHODS:
        raise LMFusionError(f"unknown tuning method {method!r}; choose one of {', '.join(METHODS)}")
    total = problem._check_rate_defined()
    space = _Space(problem, fixed, bounds, init)
    t0 = time.perf_counter()
    x_start = space.init_raw
    e_start = total_errors(problem, space.full(x_start))
    rng = np.random.default_rng(seed)
    fns: dict[str, Callable[..., _Out]] = {
        "mert": _tune_mert,
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


_Out = tuple[np.ndarray, int, list[tuple[int, int]], dict[str, Any]]


def _points(space: _Space, points: int | Mapping[str, int]) -> list[np.ndarray]:
    out = []
    for j, k in enumerate(space.names):
        n = int(points.get(k, 20)) if isinstance(points, Mapping) else int(points)
        if n < 1:
            raise LMFusionError(f"grid points for {k!r} must be >= 1")
        out.append(np.linspace(space.lo[j], space.hi[j], n) if n > 1 else np.array([0.5 * (space.lo[j] + space.hi[j])]))
    return out


def _tune_grid(
    space: _Space, rng: np.random.Generator, *, seed: int, points: int | Mapping[str, int] = 20, chunk: int = 4096
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
    space: _Space, rng: np.random.Generator, *, seed: int, points: int = 41, max_passes: int = 10
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
    space: _Space, rng: np.random.Generator, *, seed: int, n_trials: int = 200, show_progress: bool = False
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


def _feasible(space: _Space, x: np.ndarray, dx: np.ndarray) -> tuple[float, float]:
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
    space: _Space,
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
