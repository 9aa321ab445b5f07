"""Token timesteps and word confidences of CTC hypotheses, by forced alignment after the search.

The search keeps, for each prefix, only the frame its last token was first emitted in (any alignment); the
frames of the *best* alignment are found afterwards, for each output hypothesis, by Viterbi over the CTC
topology of its own token sequence (blank, y1, blank, y2, ..., blank; a repeated token needs a blank between
its two copies). This is exact for the best path and costs ``O(T x (2L + 1))`` per hypothesis (compiled).

From the best path:

* **token timestep**: the first frame of each token (torchaudio's ``CTCHypothesis.timesteps``: one per token);
* **word frames**: ``(first frame of its first token, last frame of its last token + 1)``;
* **token confidence**: ``exp(mean ln p_t(token))`` over the frames the path gives the token (the geometric
  mean of its frame posteriors, in ``(0, 1]``);
* **word confidence**: the lowest token confidence among the word's tokens (a word is as sure as its least
  sure unit; word delimiters are not part of a word).

The posteriors are the emissions' own (before the acoustic weight), so the confidence does not depend on
the fusion weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numba import njit

from decoders.ctc.vocabulary import CTCVocab
from decoders.hypothesis import NBestList, ScoredHypothesis
from fusion.errors import LMFusionError


@njit(cache=True)
def _viterbi(lp: np.ndarray, toks: np.ndarray, blank: int) -> tuple[np.ndarray, float]:  # pragma: no cover
    """Best CTC path of ``toks`` over ``lp [T, V]``: per frame the index of the token it emits (``-1``:
    blank), and the path's log-probability (``-inf`` when no path exists)."""
    T = lp.shape[0]
    L = toks.shape[0]
    S = 2 * L + 1
    neg = -np.inf
    score = np.full(S, neg)
    new = np.empty(S)
    back = np.zeros((T, S), np.int8)
    owner = np.full(T, -1, np.int64)
    if T == 0:
        return owner, 0.0 if L == 0 else neg
    score[0] = lp[0, blank]
    if S > 1:
        score[1] = lp[0, toks[0]]
    for t in range(1, T):
        for s in range(S):
            best = score[s]
            b = 0
            if s >= 1 and score[s - 1] > best:
                best = score[s - 1]
                b = 1
            if s >= 3 and s % 2 == 1 and toks[(s - 1) // 2] != toks[(s - 3) // 2] and score[s - 2] > best:
                best = score[s - 2]
                b = 2
            e = lp[t, blank] if s % 2 == 0 else lp[t, toks[(s - 1) // 2]]
            new[s] = best + e
            back[t, s] = b
        score[:] = new
    s = S - 1
    if S > 1 and score[S - 2] > score[S - 1]:
        s = S - 2
    total = score[s]
    if total == neg:
        return owner, neg
    for t in range(T - 1, -1, -1):
        owner[t] = -1 if s % 2 == 0 else (s - 1) // 2
        s -= back[t, s]
    return owner, total


def best_path(logprobs: np.ndarray, token_ids: Sequence[int], blank: int) -> tuple[np.ndarray, float]:
    """The best CTC alignment of ``token_ids`` over ``logprobs [T, V]``: per frame, the position of the token
    it emits in ``token_ids`` (``-1``: blank), and the path's log-probability.

    Raises:
        LMFusionError: no alignment has a non-zero probability (too few frames, or a token at ``-inf``).
    """
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    owner, total = _viterbi(lp, np.asarray(token_ids, dtype=np.int64), int(blank))
    if not np.isfinite(total):
        raise LMFusionError(f"no CTC alignment of {len(token_ids)} tokens over {len(lp)} frames has probability > 0")
    return owner, float(total)


def token_spans(owner: np.ndarray, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first frame, last frame + 1)`` of each token on a path from :func:`best_path`."""
    T = len(owner)
    idx = np.flatnonzero(owner >= 0)
    who = owner[idx]
    start = np.full(n_tokens, T, np.int64)
    end = np.zeros(n_tokens, np.int64)
    np.minimum.at(start, who, idx)
    np.maximum.at(end, who, idx + 1)
    return start, end


def token_confidences(logprobs: np.ndarray, owner: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """Each token's ``exp(mean ln p_t(token))`` over its frames on the path (see the module docstring)."""
    n = len(token_ids)
    idx = np.flatnonzero(owner >= 0)
    who = owner[idx]
    ids = np.asarray(token_ids, dtype=np.int64)
    lp = logprobs[idx, ids[who]]
    sums = np.bincount(who, weights=lp, minlength=n)
    counts = np.bincount(who, minlength=n)
    return np.exp(sums / np.maximum(counts, 1))


def label_index(vocab: CTCVocab) -> dict[str, int]:
    """Label -> id over the non-blank labels."""
    return {lab: i for i, lab in enumerate(vocab.labels) if i != vocab.blank}


def align_hypothesis(hyp: ScoredHypothesis, logprobs: np.ndarray, vocab: CTCVocab,
                     index: dict[str, int] | None = None) -> ScoredHypothesis:
    """``hyp`` with per-token ``timesteps``, word frames from the best path and per-word ``confidence``
    (``index``: :func:`label_index` of ``vocab``, computed when not given)."""
    index = index if index is not None else label_index(vocab)
    if not hyp.tokens:
        return replace(hyp, timesteps=(), confidence=())
    ids = [index[t] for t in hyp.tokens]
    owner, _ = best_path(logprobs, ids, vocab.blank)
    start, end = token_spans(owner, len(ids))
    conf = token_confidences(logprobs, owner, ids)
    pieces = vocab.words_of(ids)
    words, confs = [], []
    for wi, (w, first) in enumerate(pieces):
        stop = pieces[wi + 1][1] if wi + 1 < len(pieces) else len(ids)
        own = [i for i in range(first, stop) if vocab.text[ids[i]]]
        words.append((w, int(start[own[0]]), int(end[own[-1]])))
        confs.append(float(min(conf[i] for i in own)))
    return replace(hyp, words=tuple(words), timesteps=tuple(int(x) for x in start), confidence=tuple(confs))


def align_nbest(nb: NBestList, logprobs: np.ndarray, vocab: CTCVocab) -> NBestList:
    """Every hypothesis of ``nb`` aligned (:func:`align_hypothesis`) over the utterance's ``logprobs``."""
    index = label_index(vocab)
    return replace(nb, hyps=tuple(align_hypothesis(h, logprobs, vocab, index) for h in nb.hyps))
