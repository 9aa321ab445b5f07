"""EM estimation of linear-interpolation weights on held-out text (as SRILM's compute-best-mix).

The held-out log-likelihood ``Σ_t ln Σ_i λ_i P_i(w_t|h_t)`` is concave in λ, so EM converges to the
global optimum on the simplex. :func:`em_mixture_weights` is the pure, vectorised core over a
``[N, T]`` matrix of per-prediction log-probabilities; :func:`estimate_weights` scores held-out text
with real models and calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from fusion.errors import InputError, LMFusionError
from fusion.io import read_sentences
from fusion.lm import LanguageModel, check_same_units, perplexity


@dataclass(frozen=True)
class EMTrace:
    """Result of :func:`em_mixture_weights`."""

    weights: np.ndarray
    loglik: list[float]
    """Total held-out log-likelihood (natural log) before the first update and after each one."""
    iterations: int
    converged: bool


def em_mixture_weights(
    logprobs: np.ndarray,
    *,
    init: np.ndarray | None = None,
    tol: float = 1e-7,
    max_iter: int = 10_000,
) -> EMTrace:
    """EM for mixture weights over fixed component log-probabilities.

    Args:
        logprobs: ``[N, T]`` natural-log probabilities of T held-out predictions under N models.
        init: starting weights (default uniform); must be strictly positive.
        tol: stop when the largest weight change of an iteration is below ``tol``.
        max_iter: give up after this many iterations (``converged`` is then False).

    Each iteration costs one ``[N] x [N, T]`` product: probabilities are taken relative to each
    column's maximum once, so the loop does no exponentials.
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
    p = np.exp(lp - col_max)  # in (0, 1], at least one 1 per column
    offset = float(col_max.sum())
    w = np.full(n, 1.0 / n) if init is None else np.asarray(init, dtype=np.float64).copy()
    if w.shape != (n,) or np.any(w <= 0) or abs(w.sum() - 1) > 1e-6:
        raise LMFusionError("init weights must be N positive numbers summing to 1")
    mix = w @ p
    history = [float(np.log(mix).sum()) + offset]
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        new_w = w * ((p @ (1.0 / mix)) / t)
        new_w /= new_w.sum()
        delta = float(np.max(np.abs(new_w - w)))
        w = new_w
        mix = w @ p
        history.append(float(np.log(mix).sum()) + offset)
        if delta < tol:
            converged = True
            break
    return EMTrace(weights=w, loglik=history, iterations=it, converged=converged)


@dataclass(frozen=True)
class MixEstimate:
    """What :func:`estimate_weights` found.

    Attributes:
        weights: ``name -> λ``.
        ppl: held-out perplexity of each model (by name) and of the mix (key ``"mix"``).
        loglik: the EM trace of total held-out log-likelihood.
        n_sentences, n_predictions: held-out size (predictions include ``</s>``).
        n_oov_skipped: predictions skipped because a model had the unit out of vocabulary.
    """

    weights: dict[str, float]
    ppl: dict[str, float]
    loglik: list[float]
    iterations: int
    converged: bool
    n_sentences: int
    n_predictions: int
    n_oov_skipped: int

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
        }


def heldout_logprob_matrix(
    models: Sequence[LanguageModel],
    sentences: Sequence[str],
    *,
    oov: Literal["skip", "include"] = "skip",
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Score held-out sentences with every model: ``([N, T] log-probs, n_skipped)``.

    With ``oov="skip"`` (SRILM's convention) a prediction whose unit is out of vocabulary for any
    model is left out, so all models are compared on the same predictions.
    """
    check_same_units(models)
    tokenized = [models[0].tokenize(s) for s in sentences]
    cols: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    per_model = []
    for m in models:
        scores = m.score_sentences(
            tqdm(tokenized, desc=f"scoring {m.name}", unit="sent", disable=not progress, leave=False)
        )
        per_model.append(scores)
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
    oov: Literal["skip", "include"] = "skip",
    progress: bool = False,
) -> MixEstimate:
    """EM-estimate linear interpolation weights of ``models`` on held-out text.

    Args:
        models: two or more LMs over the same units.
        heldout: a text file (one sentence per line) or an iterable of sentences.
        oov: ``"skip"`` predictions any model has out of vocabulary (SRILM) or ``"include"`` them.

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
    mat, skipped = heldout_logprob_matrix(models, sentences, oov=oov, progress=progress)
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
    )
