"""Compiled passes over an utterance's emissions ``[T, V]``: the per-frame token candidates and the row masses.

The compiled search (:mod:`decoders.ctc.compiled`) needs, per frame, the labels that pass ``token_min_logp``
(:func:`decoders.ctc.search.token_candidates`, the numpy version, builds a ``[T, V]`` mask and ``np.nonzero`` of
it: about a millisecond per utterance at 4,000 labels); :func:`candidates` writes the same lists straight into
CSR arrays in one pass. :func:`row_mass` is the normalization check's ``sum(exp(row))``
(:func:`decoders.ctc.inputs.as_logprobs`) with an exponential that the compiler can vectorize (range reduction,
a polynomial and the power of two built from its bits: relative error below 1e-8 in float64, about 1e-7 for
float32 rows in :func:`row_mass32`, far inside the check's tolerance of 1e-3). :func:`checked_candidates` does the
check of float32 rows and the candidates in one read of each row. :func:`text_hashes` keys the final beam by text
without building strings.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from decoders.ctc.kernels import TEXT_P

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@intrinsic
def _bits_to_float(typingctx, x):
    """The float64 whose bits are the int64 ``x`` (the power of two of the exponential)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _bits_to_float32(typingctx, x):
    """The float32 whose bits are the int32 ``x``."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_CHUNK = 32
_NO_NAN = {"nnan", "nsz", "arcp", "contract", "afn", "reassoc"}  # validated rows: no NaN (infinities may be there)


@njit(cache=True, fastmath=_NO_NAN)
def _chunk_max(arr, out):
    """``out[t, b]``: the maximum of row ``t``'s cells ``32 b .. 32 b + 31`` (whole chunks only; vectorized)."""
    T, V = arr.shape
    nb = V // _CHUNK
    for t in range(T):
        row = arr[t]
        for b in range(nb):
            m = row[b * _CHUNK]
            for j in range(1, _CHUNK):
                x = row[b * _CHUNK + j]
                m = x if x > m else m
            out[t, b] = m


@njit(cache=True, fastmath=_NO_NAN)
def _row_candidates(row, cm, blank, min_logp, tok, n):
    """One frame's candidates (see :func:`candidates`) written to ``tok[n:]``, given the row's chunk maxima ``cm``
    (:func:`_chunk_max`); returns the new ``n``. ``tok`` has room for ``V`` more labels."""
    V = row.shape[0]
    nb = V // _CHUNK
    start = n
    bv = row[0]
    best = 0
    for b in range(nb + 1):  # the last, partial chunk is always scanned
        if b < nb:
            m = cm[b]
            if not (m > bv or m >= min_logp):
                continue
        for v in range(b * _CHUNK, min(b * _CHUNK + _CHUNK, V)):
            x = row[v]
            if x > bv:
                bv = x
                best = v
            if x >= min_logp and v != blank:
                tok[n] = v
                n += 1
    if n == start and best != blank:
        tok[n] = best
        n += 1
    return n


@njit(cache=True)
def _room(tok, n, V):
    """``tok`` or a bigger copy (its first ``n`` labels kept) with room for ``V`` more."""
    if n + V <= tok.shape[0]:  # the worst case of a frame fits (most frames keep a few labels)
        return tok
    new = np.empty(max(2 * tok.shape[0], n + V), np.int64)
    new[:n] = tok[:n]
    return new


@njit(cache=True, fastmath=_NO_NAN)
def candidates(arr, blank, min_logp):
    """Per frame, the non-blank labels with log-probability ``>= min_logp``, ascending; a frame with none keeps its
    best label (the first of the maxima) unless that is the blank. Returns ``(ptr [T + 1], tok)``: frame ``t``'s
    labels are ``tok[ptr[t]:ptr[t + 1]]``. The same lists as :func:`decoders.ctc.search.token_candidates`.

    Each row is read in chunks of 32 cells: a chunk is scanned cell by cell only when its maximum (from one
    vectorized pass, :func:`_chunk_max`) passes ``min_logp`` or beats the row's best so far (the argmax of a frame
    without candidates comes from the same pass)."""
    T, V = arr.shape
    nb = V // _CHUNK
    cmax = np.empty((T, nb + 1), arr.dtype)
    _chunk_max(arr, cmax)
    ptr = np.empty(T + 1, np.int64)
    tok = np.empty(4 * T + 16, np.int64)
    n = 0
    ptr[0] = 0
    for t in range(T):
        tok = _room(tok, n, V)
        n = _row_candidates(arr[t], cmax[t], blank, min_logp, tok, n)
        ptr[t + 1] = n
    return ptr, tok[:n].copy()


@njit(cache=True)
def checked_candidates(arr, blank, min_logp, mass):
    """:func:`candidates` and the input check of float32 emissions from one read of each row (the row stays in
    the L1 cache between its passes; at 4,000 labels the whole matrix does not fit in L2, so every separate pass
    read it from memory again): with ``mass`` the row's :func:`row_mass32` (NaN if the row holds a NaN), without
    it whether the row is all finite; then its chunk maxima and candidates. Returns ``(ptr, tok, the largest
    |mass - 1| of a row (0 without mass), the first frame whose mass is NaN, or that is not all finite without
    mass; -1 if none)``. The pass stops at such a frame (the lists are then partial); +inf cells give a huge mass,
    -inf ones count 0."""
    T, V = arr.shape
    nb = V // _CHUNK
    cm = np.empty((1, nb + 1), arr.dtype)
    ptr = np.zeros(T + 1, np.int64)
    tok = np.empty(4 * T + 16, np.int64)
    dev = 0.0
    n = 0
    for t in range(T):
        row = arr[t]
        if mass:
            m = _mass32(row)
            bad = _is_nan(m)
            d = abs(m - 1.0)
            dev = d if d > dev else dev
        else:
            bad = not _all_finite(row)
        if bad:
            return ptr, tok[:0].copy(), dev, t
        _chunk_max(arr[t : t + 1], cm)
        tok = _room(tok, n, V)
        n = _row_candidates(row, cm[0], blank, min_logp, tok, n)
        ptr[t + 1] = n
    return ptr, tok[:n].copy(), dev, -1


@njit(cache=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})  # infinities kept
def row_mass(arr):
    """``sum(exp(row))`` per row, in float64 (cells clamped to [-700, 700]: -inf counts as 0, overflow as huge)."""
    T, V = arr.shape
    out = np.empty(T)
    for t in range(T):
        row = arr[t]
        s = 0.0
        for v in range(V):
            x = min(max(float(row[v]), -700.0), 700.0)
            k = np.floor(x * _LOG2E + 0.5)
            r = x - k * _LN2
            p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720
                                                                                             + r * (1.0 / 5040)))))))
            s += p * _bits_to_float((np.int64(k) + 1023) << 52)  # type: ignore[call-arg]
        out[t] = s
    return out


_TEXT_P = np.uint64(TEXT_P)


@njit(cache=True)
def text_hashes(ids, parent, tok, tok_h, tok_pow, toklen, completes):
    """A 64-bit hash of each node's text (its words joined by one space: :meth:`~decoders.ctc.tree.PrefixTree._text`),
    walking up the tree: ``tok_h[c]`` is label ``c``'s text as a polynomial in ``P`` and ``tok_pow[c] = P ** len``
    (:func:`decoders.ctc.vocabulary.text_hash_tables`). Equal texts give equal hashes; the caller checks equal hashes
    on the strings."""
    out = np.empty(ids.shape[0], np.uint64)
    nt = tok_h.shape[0]
    for i in range(ids.shape[0]):
        h = np.uint64(0)
        mult = np.uint64(1)
        open_chars = False  # the word being read (right to left) has characters
        sep = False  # a word boundary lies between what was read and the next characters
        nd = ids[i]
        while nd > 0:
            c = tok[nd]
            if c < nt and toklen[c] > 0:  # the label adds characters
                if sep:
                    h += np.uint64(1) * mult  # the space (characters are coded from 2)
                    mult *= _TEXT_P
                    sep = False
                h += tok_h[c] * mult
                mult *= tok_pow[c]
                open_chars = True
            if c < nt and completes[c] and open_chars:
                sep = True
                open_chars = False
            nd = parent[nd]
        out[i] = h
    return out


_L2E32 = np.float32(_LOG2E)
_LN2_32 = np.float32(_LN2)


_FMAX32 = np.float32(3.4028234663852886e38)
_KEEP_NAN = {"nsz", "arcp", "contract", "afn", "reassoc"}  # NaN and infinities kept


@njit(cache=True, fastmath=_KEEP_NAN)
def _mass32(row):
    """One float32 row's :func:`row_mass32`; NaN when the row holds a NaN (the clamp lets it through)."""
    V = row.shape[0]
    one = np.float32(1.0)
    c2, c3, c4, c5, c6 = np.float32(0.5), np.float32(1.0 / 6), np.float32(1.0 / 24), np.float32(1.0 / 120), \
        np.float32(1.0 / 720)
    lo, hi = np.float32(-87.0), np.float32(88.0)
    tot = 0.0
    for b0 in range(0, V, 256):
        s = np.float32(0.0)
        for v in range(b0, min(b0 + 256, V)):
            x = row[v]
            x = lo if x < lo else x
            x = hi if x > hi else x
            k = np.floor(x * _L2E32 + np.float32(0.5))
            r = x - k * _LN2_32
            p = one + r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * c6)))))
            s += p * _bits_to_float32((np.int32(k) + np.int32(127)) << np.int32(23))  # type: ignore[call-arg]
        tot += float(s)
    return tot


@njit(cache=True, fastmath=_KEEP_NAN)
def _is_nan(x):
    """Whether ``x`` is NaN (compared where NaN is not assumed away)."""
    return x != x


_EXP32 = np.int32(0x7F800000)


@njit(cache=True)
def _all_finite(row):
    """Whether a float32 row holds neither NaN nor +/-inf (read as integers: an exponent of all ones is neither)."""
    bits = row.view(np.int32)
    m = np.int32(0)
    for v in range(bits.shape[0]):
        e = bits[v] & _EXP32
        m = e if e > m else m
    return m != _EXP32


@njit(cache=True, fastmath=_KEEP_NAN)
def row_mass32(arr):
    """:func:`row_mass` of float32 rows in float32 arithmetic (eight lanes at once; degree-6 polynomial, relative
    error about 1e-7), summed in float32 over blocks of 256 cells and in float64 across blocks. Cells are clamped to
    [-87, 88]: -inf counts as about 1e-38, overflow gives inf (rejected)."""
    T = arr.shape[0]
    out = np.empty(T)
    for t in range(T):
        out[t] = _mass32(arr[t])
    return out
