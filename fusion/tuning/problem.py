"""The tuning problem: cached component scores and error counts, and the pure functions that score them.

A :class:`TuningProblem` holds, per utterance ``u``, the component scores of its ``n_u`` hypotheses
(``feats[u]``, shape ``[n_u, C]``, natural log) and each hypothesis' edit distance to the reference
(``errors[u]``). Under weights ``w`` an utterance's 1-best is ``argmax_h feats[u][h] @ w`` (the first
hypothesis on exact ties) and the corpus error rate is ``Σ_u errors[u][best_u] / Σ_u ref_lengths[u]``.
An utterance with no hypotheses counts all its reference units as deletions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, overload

import numpy as np

from fusion.errors import LMFusionError, WeightsError


# ----------------------------------------------------------------------------------------------
# Ragged rows: one flat array and offsets (what a streamed n-best reader builds)
# ----------------------------------------------------------------------------------------------
class Ragged(Sequence[np.ndarray]):
    """Per-utterance rows of one flat array: row ``u`` is ``values[offsets[u]:offsets[u + 1]]`` (a view).

    A :class:`TuningProblem` built from two of these (scores ``[H, C]`` and errors ``[H]``) holds one
    array per kind for the whole corpus instead of two small arrays per utterance; its rows are views
    made when asked for.
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values = values
        self.offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        if len(self.offsets) == 0 or self.offsets[0] != 0 or self.offsets[-1] != len(values):
            raise LMFusionError(f"Ragged: offsets must run from 0 to {len(values)}")
        if np.any(np.diff(self.offsets) < 0):
            raise LMFusionError("Ragged: offsets must not decrease")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(i)
        return self.values[self.offsets[j] : self.offsets[j + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        v, o = self.values, self.offsets.tolist()
        for a, b in itertools.pairwise(o):
            yield v[a:b]

    def lengths(self) -> np.ndarray:
        """``[U]`` rows per utterance."""
        return np.diff(self.offsets)


def _ragged_pair(feats: object, errors: object) -> tuple[Ragged, Ragged] | None:
    """``(feats, errors)`` when both are :class:`Ragged` over the same offsets (the compact form)."""
    if isinstance(feats, Ragged) and isinstance(errors, Ragged) and np.array_equal(feats.offsets, errors.offsets):
        return feats, errors
    return None


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
        feats: per utterance a ``[n_u, C]`` float array of natural-log component scores (a list, or a
            :class:`Ragged` over one ``[H, C]`` array: the compact form a streamed reader builds).
        errors: per utterance a ``[n_u]`` array of edit distances to the reference (a list, or a
            :class:`Ragged` over one ``[H]`` array with the same offsets as ``feats``).
        ref_lengths: ``[U]`` reference lengths (words or characters).
        utt_ids: optional utterance ids (for reports).
    """

    components: tuple[str, ...]
    feats: Sequence[np.ndarray]
    errors: Sequence[np.ndarray]
    ref_lengths: np.ndarray
    utt_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        comps = tuple(self.components)
        if not comps:
            raise LMFusionError("TuningProblem: no components")
        if len(set(comps)) != len(comps):
            raise LMFusionError(f"TuningProblem: duplicate component names {comps}")
        pair = _ragged_pair(self.feats, self.errors)
        if pair is not None:
            self._check_ragged(*pair, comps)
            return
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

    def _check_ragged(self, feats: Ragged, errors: Ragged, comps: tuple[str, ...]) -> None:
        """The checks of ``__post_init__`` over the compact form, vectorised (no per-utterance arrays)."""
        c = len(comps)
        f = np.asarray(feats.values, dtype=np.float64)
        e = np.asarray(errors.values, dtype=np.int64).reshape(-1)
        lens = np.asarray(self.ref_lengths, dtype=np.int64).reshape(-1)
        if f.ndim != 2 or f.shape[1] != c:
            raise LMFusionError(f"TuningProblem: scores shape {f.shape}, expected [n, {c}]")
        if len(feats) != len(lens):
            raise LMFusionError(f"TuningProblem: {len(feats)} utterances of scores, {len(lens)} ref lengths")

        def name(row: int) -> str:
            u = int(np.searchsorted(feats.offsets, row, side="right")) - 1
            return self.utt_ids[u] if u < len(self.utt_ids) else str(u)

        bad = np.flatnonzero(~np.isfinite(f).all(axis=1))
        if len(bad):
            raise LMFusionError(f"TuningProblem: utterance {name(int(bad[0]))}: non-finite component score")
        neg = np.flatnonzero(e < 0)
        if len(neg):
            raise LMFusionError(f"TuningProblem: utterance {name(int(neg[0]))}: negative error count")
        if np.any(lens < 0):
            raise LMFusionError("TuningProblem: negative reference length")
        if self.utt_ids and len(self.utt_ids) != len(lens):
            raise LMFusionError(f"TuningProblem: {len(self.utt_ids)} utt_ids for {len(lens)} utterances")
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "feats", Ragged(f, feats.offsets))
        object.__setattr__(self, "errors", Ragged(e, feats.offsets))
        object.__setattr__(self, "ref_lengths", lens)
        object.__setattr__(self, "utt_ids", tuple(self.utt_ids))

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_utts(self) -> int:
        return len(self.feats)

    @property
    def n_hyps(self) -> int:
        if isinstance(self.feats, Ragged):
            return int(self.feats.offsets[-1])
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
        pair = _ragged_pair(self.feats, self.errors)
        lengths = pair[0].lengths() if pair is not None else np.array([len(f) for f in self.feats], np.int64)
        n = max(int(lengths.max()) if u else 0, 1)
        c = len(self.components)
        feats = np.zeros((u, n, c), dtype=np.float64)
        errors = np.repeat(self.ref_lengths[:, None], n, axis=1).astype(np.int64)
        valid = np.arange(n)[None, :] < lengths[:, None]
        if pair is not None:  # one scatter of the flat arrays into the padded rows
            feats[valid] = pair[0].values
            errors[valid] = pair[1].values
        else:
            for i, (f, e) in enumerate(zip(self.feats, self.errors, strict=True)):
                feats[i, : len(f)] = f
                errors[i, : len(f)] = e
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
