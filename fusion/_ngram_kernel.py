"""Compiled (numba, ``cache=True``) look-ups over :class:`fusion.ngram_arrays.NgramArrays` arrays.

Plain functions of arrays and ints, so compiled searches can call them directly (no Python objects).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
LN10 = math.log(10.0)


@njit(cache=True, nogil=True)
def lookup(offsets, keys, ids, n, gram, start):
    """Row of the n-gram ``gram[start:start+n]`` (oldest first), -1 when absent."""
    for j in range(n):
        if gram[start + j] < 0:
            return -1
    if n == 1:
        return np.int64(offsets[0]) + np.int64(gram[start])
    h = FNV_OFFSET
    for j in range(n):
        h = (h ^ (np.uint64(gram[start + j]) + np.uint64(1))) * FNV_PRIME
    lo = np.int64(offsets[n - 1])
    hi = np.int64(offsets[n])
    a, b = lo, hi
    while a < b:  # first key >= h
        mid = (a + b) >> 1
        if keys[mid] < h:
            a = mid + 1
        else:
            b = mid
    while a < hi and keys[a] == h:
        same = True
        for j in range(n):
            if ids[a, j] != gram[start + j]:
                same = False
                break
        if same:
            return a
        a += 1
    return -1


@njit(cache=True, nogil=True)
def longest_match(offsets, keys, ids, buf, top):
    """``(n, row)`` of the longest n-gram (at most ``top`` words) ending at ``buf``'s last cell; ``(0, -1)``
    when even the word is absent."""
    end = buf.shape[0]
    for n in range(top, 0, -1):
        r = lookup(offsets, keys, ids, n, buf, end - n)
        if r >= 0:
            return n, r
    return 0, np.int64(-1)


@njit(cache=True, nogil=True)
def score_one(offsets, keys, ids, logp, backoff, extends, state, word, out_state):
    """log10 P(word | state) exactly as KenLM computes it (float32, in KenLM's order of additions); the
    minimised next state goes to ``out_state``. Callers convert to natural log.

    ``state``: ``order - 1`` ids, most recent first, -1 padded.
    """
    C = state.shape[0]
    N = offsets.shape[0] - 1
    L = 0
    while L < C and state[L] >= 0:
        L += 1
    # gram buffer, oldest first: state reversed, then the word
    buf = np.empty(C + 1, np.int64)
    for j in range(L):
        buf[C - 1 - j] = state[j]
    buf[C] = word
    match, row = longest_match(offsets, keys, ids, buf, min(N, L + 1))
    lp = np.float32(0.0)
    if row >= 0:
        lp = np.float32(logp[row])
    # KenLM: the back-offs of the context suffixes longer than the matched one, shortest first
    for j in range(max(match, 1), L + 1):
        c = lookup(offsets, keys, ids, j, buf, C - j)
        if c >= 0:
            lp = np.float32(lp + backoff[c])
    # next state: the longest suffix (word, context...) of at most N - 1 words that extends
    for j in range(C):
        out_state[j] = -1
    for m in range(min(C, N - 1, L + 1), 0, -1):
        r = lookup(offsets, keys, ids, m, buf, C + 1 - m)
        if r >= 0 and extends[r]:
            for j in range(m):
                out_state[j] = buf[C - j]
            break
    return lp


@njit(cache=True, nogil=True)
def score_many(offsets, keys, ids, logp, backoff, extends, states, words, out_lp, out_states):
    """:func:`score_one` over a batch (rows of ``states``, ``words``), in natural log."""
    for i in range(words.shape[0]):
        out_lp[i] = LN10 * score_one(offsets, keys, ids, logp, backoff, extends, states[i], words[i], out_states[i])
