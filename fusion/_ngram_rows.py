"""A compiled (numba JIT, ``cache=True``) whole-row lookup over :class:`fusion.ngram_arrays.NgramArrays` arrays:
many words after one state (a whole vocabulary's open-word row, :class:`fusion.scorers.VocabOpenWordScorer`).

Kept out of :mod:`fusion._ngram_kernel`, whose sources fingerprint its ahead-of-time extension; it reuses that
module's :func:`~fusion._ngram_kernel.lookup` and ``longest_match`` (as ``score_one`` does).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fusion._ngram_kernel import LN10, longest_match, lookup


@njit(cache=True, nogil=True)
def score_after(offsets, keys, ids, logp, backoff, state, words, out_lp):
    """ln P of many ``words`` after one ``state``, no next states: :func:`score_one`'s numbers (the same float32
    additions in the same order), with the context's back-offs looked up once instead of once per word."""
    C = state.shape[0]
    N = offsets.shape[0] - 1
    L = 0
    while L < C and state[L] >= 0:
        L += 1
    buf = np.empty(C + 1, np.int64)
    for j in range(L):
        buf[C - 1 - j] = state[j]
    bo = np.zeros(C + 1, np.float32)
    has = np.zeros(C + 1, np.bool_)
    for j in range(1, L + 1):
        c = lookup(offsets, keys, ids, j, buf, C - j)
        if c >= 0:
            has[j] = True
            bo[j] = backoff[c]
    top = min(N, L + 1)
    for i in range(words.shape[0]):
        buf[C] = words[i]
        match, row = longest_match(offsets, keys, ids, buf, top)
        lp = np.float32(0.0)
        if row >= 0:
            lp = np.float32(logp[row])
        for j in range(max(match, 1), L + 1):
            if has[j]:
                lp = np.float32(lp + bo[j])
        out_lp[i] = LN10 * lp
