"""Dropping hypotheses that cannot be a 1-best anywhere in a box of weights (exact, so MERT sees the same envelopes)."""

from __future__ import annotations

import numpy as np

from fusion.tuning.problem import TuningProblem, _Padded, combine_cm


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
