"""Compiled (numba) forced alignment of a CTC hypothesis (:mod:`decoders.ctc.align`): the best path, and per-token
and per-word summaries of it."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def viterbi(lp: np.ndarray, toks: np.ndarray, blank: int) -> tuple[np.ndarray, float]:
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


@njit(cache=True)
def summaries(lp: np.ndarray, toks: np.ndarray, owner: np.ndarray, has_text: np.ndarray,
               completes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
