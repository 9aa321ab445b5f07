"""Fused n-gram LM steps inside the compiled CTC search (numba): no return to Python on a cache miss.

When every LM of a decoder is a back-off n-gram read into :class:`~fusion.ngram_arrays.NgramArrays`
(:class:`~fusion.abilities.ArpaBacked`, e.g. KenLM), :func:`decoders.ctc.kernel.run_frames` computes a
missing LM step here: it scores the completed word (word LMs) and/or the emitted label (token LMs) with
:func:`fusion._ngram_kernel.score_one` (KenLM's float32 arithmetic, so bit-identical scores), weights the
deltas exactly as :meth:`decoders.ctc.lmstep.FusionCache._score_misses` does, interns the new context in the
context table and appends the step to the cache's entry arrays.

The LMs' arrays are concatenated (:func:`decoders.ctc.ngramfusion.pack_models`): rows of LM ``m`` and order ``n`` are
``offsets[m, n-1]:offsets[m, n]``. A *context* is one row of ``ctx_tab``: LM ``m``'s state (word ids, most
recent first, ``-1`` padded) in columns ``m * width : m * width + widths[m]``. Contexts are found by an FNV
hash of the row (``ctx_hash``: hash -> first context, a :mod:`decoders.ctc.hashmap` map with room for a key per row of
``ctx_tab``; ``ctx_next``: the next with the same hash).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from decoders.ctc.hashmap import get1, put1
from decoders.ctc.kernels import LM_CALLS, LM_NCTX, LM_NENT
from fusion._ngram_kernel import score_one

LN10 = math.log(10.0)
FNV_OFFSET = np.int64(-3750763034362895579)  # 0xCBF29CE484222325 as int64
FNV_PRIME = np.int64(0x100000001B3)



@njit(cache=True, inline="always")
def _row_hash(row):
    h = FNV_OFFSET
    for j in range(row.shape[0]):
        h = (h ^ np.int64(row[j] + 1)) * FNV_PRIME
    return h


@njit(cache=True)
def ctx_intern(ctx_tab, ctx_next, ctx_hash, lmst, row):
    """The id of context ``row``; a new id (row appended) when it is new. The table must have room."""
    h = _row_hash(row)
    W = row.shape[0]
    c = get1(ctx_hash, h)
    last = -1
    while c >= 0:
        same = True
        for j in range(W):
            if ctx_tab[c, j] != row[j]:
                same = False
                break
        if same:
            return c
        last = c
        c = ctx_next[c]
    c = lmst[LM_NCTX]
    for j in range(W):
        ctx_tab[c, j] = row[j]
    ctx_next[c] = -1
    if last >= 0:
        ctx_next[last] = c
    else:
        put1(ctx_hash, h, c)
    lmst[LM_NCTX] = c + 1
    return c


@njit(cache=True)
def fused_step(
    cx, wids, oov, compl, tok_on, offsets, orders, widths, keys, ids, logp, backoff, extends, is_word, w_lm,
    w_words, w_oov, unk_offset, ctx_tab, ctx_next, ctx_hash, lmst, comp_out,
):
    """The fused LM step from context ``cx``: word LMs score unit ``wids[m]`` when a word completes
    (``compl``), token LMs always; unweighted deltas go to ``comp_out``. Returns ``(weighted delta incl. word
    bonus and OOV weight, new context)``, computed exactly as
    :meth:`decoders.ctc.lmstep.FusionCache._score_misses` does. The context table must have room for one more.
    """
    M = orders.shape[0]
    W = ctx_tab.shape[1]
    row = np.empty(W, np.int32)
    for j in range(W):
        row[j] = ctx_tab[cx, j]
    acc = 0.0
    for m in range(M):
        if (is_word[m] and not compl) or (not is_word[m] and not tok_on):
            comp_out[m] = 0.0
            continue
        a = m * (W // M)
        wm = widths[m]
        st = ctx_tab[cx, a : a + wm]
        out = row[a : a + wm]
        lp10 = score_one(offsets[m, : orders[m] + 1], keys, ids, logp, backoff, extends, st, wids[m], out)
        d = np.float64(lp10) * LN10
        if is_word[m] and oov:
            d = d + unk_offset
        comp_out[m] = d
        if w_lm[m] != 0.0:
            acc += w_lm[m] * d
    lmst[LM_CALLS] += 1
    if compl:
        acc += (w_words + w_oov) if oov else (w_words + 0.0)
    return acc, ctx_intern(ctx_tab, ctx_next, ctx_hash, lmst, row)


@njit(cache=True)
def ngram_step(
    cx, word_node, oov, compl, tok,
    offsets, orders, widths, keys, ids, logp, backoff, extends, is_word, node_wid, tok_wid, w_lm,
    w_words, w_oov, unk_offset,
    ctx_tab, ctx_next, ctx_hash, lmst, e_delta, e_ctx, e_oov, e_comp,
):
    """Append the fused step from context ``cx`` (word completed at trie node ``word_node`` when ``compl``,
    ``-1`` for a word outside the lexicon; label ``tok`` for token LMs) as a new entry; returns its index.

    The entry and context arrays must have room for one more of each.
    """
    M = orders.shape[0]
    wids = np.empty(M, np.int64)
    for m in range(M):
        if is_word[m]:
            wids[m] = node_wid[m, word_node] if word_node >= 0 else 0
        else:
            wids[m] = tok_wid[m, tok]
    en = lmst[LM_NENT]
    acc, nc = fused_step(cx, wids, oov, compl, True, offsets, orders, widths, keys, ids, logp, backoff, extends,
                         is_word, w_lm, w_words, w_oov, unk_offset, ctx_tab, ctx_next, ctx_hash, lmst, e_comp[en])
    e_delta[en] = acc
    e_ctx[en] = nc
    e_oov[en] = 1 if oov else 0
    lmst[LM_NENT] = en + 1
    return en


@njit(cache=True)
def fused_steps(
    cxs, wids, oov, compl, tok_on, offsets, orders, widths, keys, ids, logp, backoff, extends, is_word, w_lm,
    w_words, w_oov, unk_offset, ctx_tab, ctx_next, ctx_hash, lmst, deltas, comps, new_ctx,
):
    """:func:`fused_step` over a batch (``wids [n, M]``; ``tok_on``: apply the token LMs); results in ``deltas``,
    ``comps``, ``new_ctx``."""
    for i in range(cxs.shape[0]):
        acc, nc = fused_step(cxs[i], wids[i], oov[i], compl[i], tok_on[i], offsets, orders, widths, keys, ids, logp,
                             backoff, extends, is_word, w_lm, w_words, w_oov, unk_offset, ctx_tab, ctx_next, ctx_hash,
                             lmst, comps[i])
        deltas[i] = acc
        new_ctx[i] = nc


@njit(cache=True)
def intern_rows(ctx_tab, ctx_next, ctx_hash, lmst, rows):
    """Intern each row of ``rows``; their context ids."""
    out = np.empty(rows.shape[0], np.int64)
    for i in range(rows.shape[0]):
        out[i] = ctx_intern(ctx_tab, ctx_next, ctx_hash, lmst, rows[i])
    return out


@njit(cache=True)
def close_beam(
    nodes, ctx, wlen, trie, terminal, has_lex, node_wid, eos_on, eos_wid,
    offsets, orders, widths, keys, ids, logp, backoff, extends, is_word, w_lm, w_words, w_oov, unk_offset,
    ctx_tab, ctx_next, ctx_hash, lmst, deltas, comps, ends, oov_out,
):
    """The end of an utterance for the beam's ``nodes``: each open word completed (named by its lexicon-trie node
    as the search names the words it completes; ``<unk>`` outside the lexicon) by :func:`fused_step`, then each
    LM's ``ln P(</s> | context)`` when ``eos_on``. Results in ``deltas``, ``comps`` (unweighted per-LM deltas),
    ``ends [n, M]`` and ``oov_out``. The context table must have room for ``len(nodes)`` more."""
    M = orders.shape[0]
    W = ctx_tab.shape[1]
    wids = np.zeros(M, np.int64)
    scratch = np.empty(W, np.int32)
    for i in range(nodes.shape[0]):
        p = nodes[i]
        compl = wlen[p] > 0
        tn = trie[p]
        known = has_lex and compl and tn >= 0 and terminal[tn]
        oov = has_lex and compl and not known
        for m in range(M):
            wids[m] = node_wid[m, tn] if known and is_word[m] else 0
        acc, nc = fused_step(ctx[p], wids, oov, compl, False, offsets, orders, widths, keys, ids, logp, backoff,
                             extends, is_word, w_lm, w_words, w_oov, unk_offset, ctx_tab, ctx_next, ctx_hash, lmst,
                             comps[i])
        deltas[i] = acc
        oov_out[i] = oov
        for m in range(M):
            if eos_on:
                a = m * (W // M)
                wm = widths[m]
                st = ctx_tab[nc, a : a + wm]
                lp10 = score_one(offsets[m, : orders[m] + 1], keys, ids, logp, backoff, extends, st, eos_wid[m],
                                 scratch[:wm])
                ends[i, m] = np.float64(lp10) * LN10
            else:
                ends[i, m] = 0.0
