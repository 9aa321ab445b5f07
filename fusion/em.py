"""EM estimation of linear-interpolation weights on held-out text (as SRILM's compute-best-mix).

**Out-of-vocabulary words** (the choice, and why). By default (``oov="include"``) every held-out prediction
counts, and each model scores a word outside its vocabulary with its own unknown-word probability (KenLM's
``<unk>``; a subword LM has no OOV). So the predictions, each model's perplexity and the EM weights never
depend on which *other* models are in the mix, and adding a model cannot change another model's figure.
Each model's own OOV count is reported beside it (:attr:`MixEstimate.n_oov`): a model with a small
vocabulary and a generous ``<unk>`` can look better than it is, and the count shows it. SRILM's
convention, ``oov="skip"`` (drop a prediction that *any* model has OOV, so all are compared on the same
in-vocabulary words), is kept as an option; its numbers depend on the set of models (6,853 of 18,754
tech-dev words dropped once a bible LM joins a tech LM).

The held-out log-likelihood ``Σ_t ln Σ_i λ_i P_i(w_t|h_t)`` is concave in λ, so EM converges to the
global optimum on the simplex. :func:`em_mixture_weights` is the pure, vectorised core over a
``[N, T]`` matrix of per-prediction log-probabilities; :func:`estimate_weights` scores held-out text
with real models and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fusion.errors import InputError, LMFusionError
from fusion.io import read_sentences
from fusion.lm import LanguageModel, check_same_units, perplexity
from fusion.progress import progress_bar


@dataclass(frozen=True)
class EMTrace:
    """Result of :func:`em_mixture_weights`."""

    weights: np.ndarray
    loglik: list[float]
    """Total held-out log-likelihood (natural log) before the first update and after each one."""
    iterations: int
    converged: bool


ZERO_BELOW = 1e-3
"""A weight under this whose gradient says it wants to shrink (``g_i < 1 - ZERO_BELOW``) is set to 0."""


class _Point:
    """Weights with what one pass over the data says about them: the mixture, the gradient, the likelihood."""

    __slots__ = ("g", "ll", "w")

    def __init__(self, w: np.ndarray, p: np.ndarray, *, need_ll: bool = True) -> None:
        mix = np.einsum("i,it->t", w, p)  # several times faster than w @ p for a few rows
        self.w = w
        self.g = (p @ (1.0 / mix)) / p.shape[1]
        self.ll = float(np.log(mix).sum()) if need_ll else math.nan


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


def _zero_or_restore(cur: _Point, p: np.ndarray, tol: float, restored: set[int]) -> _Point:
    """Restore (for good) a zeroed weight whose gradient wants it back; zero small weights that keep shrinking."""
    back = (cur.w == 0) & (cur.g > 1.0 + tol)
    if back.any():  # a zeroed weight is wanted after all: restore it, for good
        restored.update(np.flatnonzero(back).tolist())
        cur = _Point(_normalise(np.where(back, ZERO_BELOW, cur.w)), p)
    shrink = (cur.w > 0) & (cur.w < ZERO_BELOW) & (cur.g < 1.0 - ZERO_BELOW)
    shrink[list(restored)] = False
    if shrink.any() and shrink.sum() < (cur.w > 0).sum():
        cur = _Point(_normalise(np.where(shrink, 0.0, cur.w)), p)
    return cur


def _squarem(cur: _Point, p1: _Point, p: np.ndarray) -> _Point:
    """One SQUAREM extrapolation from ``cur`` (``p1`` its EM step), kept in the simplex; two EM steps if no better."""
    w, w1 = cur.w, p1.w
    w2 = _normalise(w1 * p1.g)
    r, v = w1 - w, w2 - 2 * w1 + w
    nv = float(np.linalg.norm(v))
    alpha = min(-1.0, -float(np.linalg.norm(r)) / nv) if nv > 0 else -1.0
    jump = w - 2 * alpha * r + alpha**2 * v
    while alpha < -1.0 and np.any(jump[w > 0] <= 0):  # back off towards alpha = -1 (which gives w2)
        alpha = max(-1.0, (alpha - 1.0) / 2.0)
        jump = w - 2 * alpha * r + alpha**2 * v
    nxt = _Point(w2, p)
    if alpha < -1.0:
        jp = _normalise(np.clip(jump, 0.0, None))
        cand = _Point(_normalise(jp * _Point(jp, p, need_ll=False).g), p)  # a stabilising EM step
        if cand.ll >= nxt.ll:
            nxt = cand
    return nxt


def em_mixture_weights(
    logprobs: np.ndarray,
    *,
    init: np.ndarray | None = None,
    tol: float = 1e-7,
    max_iter: int = 10_000,
    accelerate: bool = True,
) -> EMTrace:
    """EM for mixture weights over fixed component log-probabilities.

    The EM update is ``λ_i <- λ_i g_i`` with ``g_i = mean_t p_it / Σ_k λ_k p_kt``, the gradient of the mean
    log-likelihood ``f``. Because ``Σ_i λ_i g_i = 1`` and ``f`` is concave, ``f(λ*) - f(λ) <= max_i g_i - 1``:
    the stopping rule uses this certificate, not the size of the last step (which is tiny long before the
    optimum when a weight creeps up from near zero).

    Args:
        logprobs: ``[N, T]`` natural-log probabilities of T held-out predictions under N models.
        init: starting weights (default uniform); must be strictly positive.
        tol: stop when the mean log-likelihood is provably within ``tol`` nats per prediction of the optimum.
        max_iter: give up after this many iterations (``converged`` is then False).
        accelerate: SQUAREM extrapolation of the EM map (Varadhan & Roland, 2008), kept inside the simplex
            and falling back to two plain EM steps whenever it would not raise the likelihood more; the fixed
            point (and so the answer) is EM's, reached in far fewer passes over the data. With it, a weight
            that is small and still shrinking is set to exactly 0 (EM only approaches a zero optimum
            geometrically); the certificate covers zeroed weights too, and one whose gradient exceeds 1
            is restored and never zeroed again.

    Probabilities are taken relative to each column's maximum once, so an iteration does no exponentials:
    it is a few ``[N] x [N, T]`` products. The log-likelihood never decreases from one iteration to the next.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] < 1:
        raise LMFusionError(f"logprobs must be [n_models, n_predictions], got shape {lp.shape}")
    n, t = lp.shape
    if t == 0:
        raise LMFusionError("no held-out predictions to estimate weights on")
    if np.isnan(lp).any():
        bad = np.argwhere(np.isnan(lp))[0]
        raise LMFusionError(f"NaN log-probability from model {bad[0]} at prediction {bad[1]}")
    col_max = lp.max(axis=0)
    if not np.all(np.isfinite(col_max)):
        j = int(np.argmin(np.isfinite(col_max)))
        raise LMFusionError(f"every model gives probability 0 to prediction {j}: the mix is undefined there")
    p = np.exp(lp - col_max)  # in [0, 1], at least one 1 per column
    offset = float(col_max.sum())
    w = np.full(n, 1.0 / n) if init is None else np.asarray(init, dtype=np.float64).copy()
    if w.shape != (n,) or np.any(w <= 0) or abs(w.sum() - 1) > 1e-6:
        raise LMFusionError("init weights must be N positive numbers summing to 1")

    cur = _Point(w, p)
    history = [cur.ll + offset]
    restored: set[int] = set()
    converged = False
    it = 0
    while True:
        if float(cur.g.max()) - 1.0 < tol:
            converged = True
            break
        if it == max_iter:
            break
        it += 1
        if accelerate:
            cur = _zero_or_restore(cur, p, tol, restored)
        p1 = _Point(_normalise(cur.w * cur.g), p, need_ll=not accelerate)  # the EM step
        cur = p1 if not accelerate or n == 1 else _squarem(cur, p1, p)
        history.append(cur.ll + offset)
    w = cur.w
    return EMTrace(weights=w, loglik=history, iterations=it, converged=converged)


@dataclass(frozen=True)
class MixEstimate:
    """What :func:`estimate_weights` found.

    Attributes:
        weights: ``name -> λ``.
        ppl: held-out perplexity of each model (by name) and of the mix (key ``"mix"``).
        loglik: the EM trace of total held-out log-likelihood.
        n_sentences, n_predictions: held-out size (predictions include ``</s>``).
        n_oov_skipped: predictions skipped because a model had the unit out of vocabulary (``oov="skip"``).
        n_oov: per model, the held-out units outside its vocabulary (scored with its ``<unk>`` when included).
    """

    weights: dict[str, float]
    ppl: dict[str, float]
    loglik: list[float]
    iterations: int
    converged: bool
    n_sentences: int
    n_predictions: int
    n_oov_skipped: int
    n_oov: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "weights": self.weights,
            "ppl": self.ppl,
            "loglik": self.loglik,
            "iterations": self.iterations,
            "converged": self.converged,
            "n_sentences": self.n_sentences,
            "n_predictions": self.n_predictions,
            "n_oov_skipped": self.n_oov_skipped,
            "n_oov": self.n_oov,
        }


def heldout_logprob_matrix(
    models: Sequence[LanguageModel],
    sentences: Sequence[str],
    *,
    oov: Literal["skip", "include"] = "include",
    progress: bool = False,
    oov_counts: dict[str, int] | None = None,
) -> tuple[np.ndarray, int]:
    """Score held-out sentences with every model: ``([N, T] log-probs, n_skipped)``.

    With ``oov="include"`` (the default) every prediction is kept, each model scoring its own OOV units
    with its unknown-word probability: nothing depends on the other models. With ``oov="skip"`` (SRILM's
    convention) a prediction whose unit is out of vocabulary for any model is left out, so all models are
    compared on the same predictions. ``oov_counts``, when given, receives each model's OOV count.
    """
    check_same_units(models)
    tokenized = [models[0].tokenize(s) for s in sentences]
    cols: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    per_model = []
    for m in models:
        scores = m.score_sentences(
            progress_bar(tokenized, desc=f"scoring {m.name}", unit="sent", progress=progress, leave=False)
        )
        per_model.append(scores)
        if oov_counts is not None:
            oov_counts[m.name] = int(sum(sum(bool(x) for x in sc.oov) for sc in scores))
    for j in range(len(tokenized)):
        rows = np.stack([per_model[i][j].logprobs for i in range(len(models))])
        keep = np.ones(rows.shape[1], dtype=bool)
        if oov == "skip":
            for i in range(len(models)):
                keep[: len(tokenized[j])] &= ~np.array(per_model[i][j].oov, dtype=bool)
        cols.append(rows)
        masks.append(keep)
    mat = np.concatenate(cols, axis=1)
    mask = np.concatenate(masks)
    return mat[:, mask], int((~mask).sum())


def estimate_weights(
    models: Sequence[LanguageModel],
    heldout: str | Path | Iterable[str],
    *,
    tol: float = 1e-7,
    max_iter: int = 10_000,
    oov: Literal["skip", "include"] = "include",
    progress: bool = False,
) -> MixEstimate:
    """EM-estimate linear interpolation weights of ``models`` on held-out text.

    Args:
        models: two or more LMs over the same units.
        heldout: a text file (one sentence per line) or an iterable of sentences.
        oov: ``"include"`` every prediction, each model scoring its own OOVs with its ``<unk>`` (default;
            independent of the other models), or ``"skip"`` predictions any model has OOV (SRILM).

    Raises:
        InputError: the held-out set is empty or unreadable (names the file).
        UnitMismatchError: the models predict different units.
    """
    if len(models) < 2:
        raise LMFusionError("estimate_weights needs at least two models")
    if isinstance(heldout, (str, Path)):
        sentences = read_sentences(heldout)
        if not sentences:
            raise InputError("held-out set is empty (no non-blank lines)", path=heldout)
    else:
        sentences = [" ".join(s.split()) for s in heldout]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise InputError("held-out set is empty")
    n_oov: dict[str, int] = {}
    mat, skipped = heldout_logprob_matrix(models, sentences, oov=oov, progress=progress, oov_counts=n_oov)
    if mat.shape[1] == 0:
        raise LMFusionError("every held-out prediction was out of vocabulary for some model")
    trace = em_mixture_weights(mat, tol=tol, max_iter=max_iter)
    t = mat.shape[1]
    ppl = {m.name: perplexity(float(mat[i].sum()), t) for i, m in enumerate(models)}
    ppl["mix"] = perplexity(trace.loglik[-1], t)
    return MixEstimate(
        weights={m.name: float(w) for m, w in zip(models, trace.weights, strict=True)},
        ppl=ppl,
        loglik=trace.loglik,
        iterations=trace.iterations,
        converged=trace.converged,
        n_sentences=len(sentences),
        n_predictions=t,
        n_oov_skipped=skipped,
        n_oov=n_oov,
    )
