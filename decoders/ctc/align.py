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

import functools
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
    back = np.zeros((T, S), np.int8)
    owner = np.full(T, -1, np.int64)
    if T == 0:
        return owner, 0.0 if L == 0 else neg
    # per state: the label it emits, and whether it may be entered from two states back (a token after a
    # blank, unless it repeats the token before)
    col = np.empty(S, np.int64)
    skip = np.zeros(S, np.bool_)
    for s in range(S):
        col[s] = blank if s % 2 == 0 else toks[(s - 1) // 2]
        if s >= 3 and s % 2 == 1 and toks[(s - 1) // 2] != toks[(s - 3) // 2]:
            skip[s] = True
    score[0] = lp[0, blank]
    if S > 1:
        score[1] = lp[0, toks[0]]
    for t in range(1, T):
        # updated in place: prev1 / prev2 hold frame t-1's scores of states s-1 / s-2
        prev1 = neg
        prev2 = neg
        for s in range(S):
            cur = score[s]
            best = cur
            b = 0
            if s >= 1 and prev1 > best:
                best = prev1
                b = 1
            if skip[s] and prev2 > best:
                best = prev2
                b = 2
            back[t, s] = b
            score[s] = best + lp[t, col[s]]
            prev2 = prev1
            prev1 = cur
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


def token_confidences(logprobs: np.ndarray, owner: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """Each token's ``exp(mean ln p_t(token))`` over its frames on the path ``owner`` (see the module docstring)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    V = logprobs.shape[1]
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    _, conf, _ = _summaries(lp, ids, np.asarray(owner, np.int64), np.ones(V, bool), np.zeros(V, bool))
    return conf


@functools.lru_cache(maxsize=16)
def vocab_tables(vocab: CTCVocab) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Label -> id over the non-blank labels, and per label: appends text / completes the open word."""
    index = {lab: i for i, lab in enumerate(vocab.labels) if i != vocab.blank}
    return index, np.array([bool(t) for t in vocab.text]), np.array(vocab.completes, dtype=bool)


@njit(cache=True)
def _summaries(lp: np.ndarray, toks: np.ndarray, owner: np.ndarray, has_text: np.ndarray,
               completes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Per token: first frame and confidence; per word (text tokens between completing ones): first frame of
    its first token, last frame + 1 of its last token, lowest token confidence."""
    T = owner.shape[0]
    L = toks.shape[0]
    start = np.full(L, T, np.int64)
    end = np.zeros(L, np.int64)
    sums = np.zeros(L)
    counts = np.zeros(L)
    for t in range(T):
        k = owner[t]
        if k >= 0:
            if t < start[k]:
                start[k] = t
            end[k] = t + 1
            sums[k] += lp[t, toks[k]]
            counts[k] += 1.0
    conf = np.exp(sums / np.maximum(counts, 1.0))
    words = np.zeros((L, 3))  # start, end, confidence
    n = 0
    open_word = False
    for i in range(L):
        if completes[toks[i]]:
            open_word = False
        if has_text[toks[i]]:
            if not open_word:
                words[n, 0] = start[i]
                words[n, 2] = conf[i]
                n += 1
                open_word = True
            words[n - 1, 1] = end[i]
            words[n - 1, 2] = min(words[n - 1, 2], conf[i])
    return start, conf, words[:n]


def align_tokens(text: str, token_ids: Sequence[int], words: Sequence[str], logprobs: np.ndarray,
                 vocab: CTCVocab) -> tuple[tuple[tuple[str, int, int], ...], tuple[int, ...], tuple[float, ...]]:
    """The best path of a hypothesis' tokens: its ``words`` with their frames, per-token timesteps and per-word
    confidences. ``logprobs`` are float64 and C-contiguous; ``text`` names the hypothesis in errors.

    Raises:
        LMFusionError: no alignment has a non-zero probability, or the tokens hold another number of words.
    """
    if not len(token_ids):
        return (), (), ()
    ids = np.array(token_ids, dtype=np.int64)
    owner, total = _viterbi(logprobs, ids, int(vocab.blank))
    if not np.isfinite(total):
        raise LMFusionError(f"no CTC alignment of {text!r} over {len(logprobs)} frames has probability > 0")
    _, has_text, completes = vocab_tables(vocab)
    start, _, w = _summaries(logprobs, ids, owner, has_text, completes)
    if len(w) != len(words):
        raise LMFusionError(f"alignment of {text!r}: {len(w)} words in its tokens, {len(words)} given")
    rows = w.tolist()
    framed = tuple((name, int(a), int(b)) for name, (a, b, _) in zip(words, rows, strict=True))
    return framed, tuple(start.tolist()), tuple(r[2] for r in rows)


def align_hypothesis(hyp: ScoredHypothesis, logprobs: np.ndarray, vocab: CTCVocab) -> ScoredHypothesis:
    """``hyp`` with per-token ``timesteps``, word frames from the best path and per-word ``confidence``."""
    if not hyp.tokens:
        return replace(hyp, timesteps=(), confidence=())
    index, _, _ = vocab_tables(vocab)
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    words, timesteps, confidence = align_tokens(hyp.text, [index[t] for t in hyp.tokens],
                                                [name for name, _, _ in hyp.words], lp, vocab)
    return replace(hyp, words=words, timesteps=timesteps, confidence=confidence)


def align_nbest(nb: NBestList, logprobs: np.ndarray, vocab: CTCVocab, enabled: bool = True) -> NBestList:
    """Every hypothesis of ``nb`` aligned (:func:`align_hypothesis`) over the utterance's ``logprobs``
    (``enabled=False``: ``nb`` as it is, see ``CTCOptions.align``). A search aligns its own output when its
    ``finish`` is given the log-probabilities (one pass, no copies of the hypotheses)."""
    if not enabled:
        return nb
    lp = np.ascontiguousarray(logprobs, dtype=np.float64)
    return replace(nb, hyps=tuple(align_hypothesis(h, lp, vocab) for h in nb.hyps))
