"""The compiled frame loop of the CTC prefix beam search (numba).

:func:`run_frames` advances the search over frames ``t0..T`` in one call and returns to Python only
when it is done, when the node arrays are full, or when a word completion (or a token, with
token-level LMs) needs an LM score that is not in the cache yet. It mutates nothing persistent
in a frame before it knows it can finish that frame, so Python can compute the missing LM scores,
add them to the cache and call again from the same frame.

It implements exactly the semantics of :class:`decoders.ctc.search.NumpySearch` (the numpy version) and of
:func:`decoders.reference.reference_beam_search` (the plain one); the tests check all three agree.

``run_frames`` is one long function on purpose (a stated exception to the ~80-line rule): split into named
compiled steps (numba calls, IR-inlined where numba allows) it measured 7-16% slower on 100 utterances at beam
64; the numpy back end (:mod:`decoders.ctc.search`) is the readable, step-by-step version of the same frame.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from decoders.ctc.csrkernel import csr_step
from decoders.ctc.hashmap import get3, put3
from decoders.ctc.kernels import (
    LM_NCTX,
    LM_NENT,
    STATUS_DEAD,
    STATUS_DONE,
    STATUS_GROW,
    STATUS_GROW_INDEX,
    STATUS_GROW_LM,
    STATUS_NEED_LM,
)
from decoders.ctc.lmkernel import ngram_step

NEG = -np.inf


@njit(cache=True)
def token_chain(parent, tok, frame, node):
    """The tokens and creation frames from the root to ``node``."""
    n = 0
    nd = node
    while nd > 0:
        n += 1
        nd = parent[nd]
    toks = np.empty(n, np.int64)
    frames = np.empty(n, np.int64)
    nd = node
    for i in range(n - 1, -1, -1):
        toks[i] = tok[nd]
        frames[i] = frame[nd]
        nd = parent[nd]
    return toks, frames


@njit(cache=True, inline="always")
def _lae(a: float, b: float) -> float:
    if a == NEG:
        return b
    if b == NEG:
        return a
    if a > b:
        return a + np.log1p(np.exp(b - a))
    return b + np.log1p(np.exp(a - b))


@njit(cache=True, inline="always")
def _hot_step(h_ptr, h_lab, h_nxt, h_fail, h_parent, h_score, h_risk, s, c):
    """``(next state, bonus delta)`` of unit ``c`` in hotword state ``s``: as
    :meth:`fusion.biasing.ContextGraph.step`, over :meth:`~fusion.biasing.ContextGraph.arrays`."""
    u = s
    nx = 0
    while True:
        a = h_ptr[u]
        b = h_ptr[u + 1]
        hi = b
        while a < b:
            mid = (a + b) >> 1
            if h_lab[mid] < c:
                a = mid + 1
            else:
                b = mid
        if a < hi and h_lab[a] == c:
            nx = h_nxt[a]
            break
        if u == 0:
            break
        u = h_fail[u]
    if h_parent[nx] == s:
        return nx, h_score[nx] - h_score[s]
    return nx, h_score[nx] - h_risk[s]


@njit(cache=True)
def run_frames(
    arr, t0, t_off, cand_ptr, cand_tok,
    parent, tok, frame, fixed, rank, trie, wlen, ctx, nwords, noov, comp, pos, fchild, nsib, whash,
    ids, pb, pnb, blast, brank, state,
    trie_csr, terminal, completes, pure_delim, toklen, start_trie,
    lm_ix, ix_n, e_delta, e_ctx, e_oov, e_comp,
    blank, W, prune, lm_nonneg, w_words, w_oov, unk_score, unk_avg, constrained, has_trie, token_lm, look, oov_uniform,
    req_pid, req_tok, req_code, ins_keys, ins_vals, n_ins,
    ng_on, ng, ctx_tab, ctx_next, ctx_hash, lmst, w_lm, unk_offset,
    hot_on, hot, w_hot, hstate, hsc,
):
    """Advance frames from ``t0``. ``state = [n_nodes, n_beam, cap, t_reached, n_req]``. A node's children are a
    list: ``fchild[node]`` the newest, ``nsib[child]`` the next (``-1`` ends it).

    With ``ng_on`` the LMs are n-gram arrays (``ng``, :mod:`decoders.ctc.lmkernel`) and a missing LM step is
    computed here; otherwise it is requested from Python. With ``hot_on`` a new node also steps the hotword
    graph ``hot`` (:meth:`fusion.biasing.ContextGraph.arrays`; per-node ``hstate``, unweighted ``hsc``) and
    adds ``w_hot`` x the bonus delta to its fixed score, as the numpy search does. Returns a status: done,
    need LM (requests in ``req_*``), grow the node arrays, grow the LM context/entry arrays, grow the LM-step index
    ``lm_ix`` (:mod:`decoders.ctc.hashmap`, ``ix_n[0]`` keys), or every hypothesis dead.
    """
    offsets, orders, widths, keys, ids_ng, logp, backoff, extends, is_word, node_wid, tok_wid = ng
    tr_ptr, tr_tok, tr_nxt, tr_empty = trie_csr
    h_ptr, h_lab, h_nxt, h_fail, h_parent, h_score, h_risk = hot
    for i in range(n_ins):
        ix_n[0] += put3(lm_ix, ins_keys[i, 0], ins_keys[i, 1], ins_keys[i, 2], ins_vals[i])
    ix_lim = (lm_ix.shape[0] * 3) // 5  # hashmap.MAX_LOAD
    T = arr.shape[0]
    V = arr.shape[1]
    M = comp.shape[1]
    n = state[0]
    B = state[1]
    cap = state[2]
    # scratch arrays for every frame of this call, sized for the widest frame (no allocation per frame)
    cmax = 1
    for t in range(t0, T):
        cmax = max(cmax, cand_ptr[t + 1] - cand_ptr[t])
    Bc = max(B, W) + 1
    Kc = Bc * cmax
    s_pb = np.empty(Bc)
    s_pnb = np.empty(Bc)
    tot = np.empty(Bc)
    s_stay = np.empty(Bc)
    k_pid = np.empty(Kc, np.int64)
    k_tok = np.empty(Kc, np.int64)
    k_ext = np.empty(Kc)
    k_child = np.empty(Kc, np.int64)
    k_score = np.empty(Kc)
    k_fixed = np.empty(Kc)
    k_rank = np.empty(Kc)
    k_trie = np.empty(Kc, np.int64)
    k_wlen = np.empty(Kc, np.int64)
    k_entry = np.empty(Kc, np.int64)
    k_compl = np.empty(Kc, np.int64)
    k_hs = np.zeros(Kc, np.int64)
    k_hd = np.zeros(Kc)
    score = np.empty(Bc + Kc)
    srt = np.empty(Bc + Kc)
    sel = np.empty(Bc + Kc, np.int64)
    n_ids = np.empty(Bc, np.int64)
    n_pb = np.empty(Bc)
    n_pnb = np.empty(Bc)
    n_last = np.empty(Bc, np.int64)
    n_rank = np.empty(Bc)
    for t in range(t0, T):
        state[3] = t
        c0 = cand_ptr[t]
        c1 = cand_ptr[t + 1]
        C = c1 - c0
        if n + B * C + 1 > cap:
            state[0] = n
            state[1] = B
            return STATUS_GROW
        if ng_on and (lmst[LM_NENT] + B * C > e_delta.shape[0] or lmst[LM_NCTX] + B * C > ctx_tab.shape[0]):
            state[0] = n
            state[1] = B
            return STATUS_GROW_LM
        if ix_n[0] + B * C > ix_lim:
            state[0] = n
            state[1] = B
            return STATUS_GROW_INDEX
        lpb = arr[t, blank]
        for i in range(B):
            tt = _lae(pb[i], pnb[i])
            tot[i] = tt
            s_pb[i] = tt + lpb
            lt = blast[i]
            s_pnb[i] = pnb[i] + arr[t, lt] if lt < V else NEG
        # extensions
        nk = 0
        for i in range(B):
            p = ids[i]
            for j in range(c0, c1):
                c = cand_tok[j]
                e = (pb[i] if blast[i] == c else tot[i]) + arr[t, c]
                if e == NEG:
                    continue
                if pure_delim[c] and wlen[p] == 0:
                    s_pnb[i] = _lae(s_pnb[i], e)
                    continue
                ch = fchild[p]  # the children of p: a list through nsib (a few per node)
                while ch >= 0 and tok[ch] != c:
                    ch = nsib[ch]
                if ch >= 0 and pos[ch] >= 0:
                    q = pos[ch]
                    s_pnb[q] = _lae(s_pnb[q], e)
                    continue
                k_pid[nk] = p
                k_tok[nk] = c
                k_ext[nk] = e
                k_child[nk] = ch
                nk += 1
        best = NEG
        for i in range(B):
            s_stay[i] = _lae(s_pb[i], s_pnb[i]) + brank[i]
            if s_stay[i] > best:
                best = s_stay[i]
        thr = best + prune
        if B >= W and nk > 0:
            st = srt[:B]
            st[:] = s_stay[:B]
            st.sort()
            kth = st[B - W]
            if kth > thr:
                thr = kth
        # exact scores of candidates (or LM requests)
        nreq = 0
        for k in range(nk):
            e = k_ext[k]
            ch = k_child[k]
            k_score[k] = NEG
            if ch >= 0:
                sc = e + rank[ch]
                if sc >= thr:
                    k_score[k] = sc
                continue
            p = k_pid[k]
            c = k_tok[k]
            compl = completes[c] and wlen[p] > 0
            if has_trie:
                if completes[c]:
                    nt = start_trie[c]
                elif trie[p] < 0:
                    nt = -1
                else:
                    nt = csr_step(tr_ptr, tr_tok, tr_nxt, tr_empty, trie[p], c)
            else:
                nt = 0
            nwl = toklen[c] if completes[c] else wlen[p] + toklen[c]
            ptn = trie[p]
            known = has_trie and ptn >= 0 and terminal[ptn]
            if constrained:
                if nt < 0:
                    continue
                if compl and not known:
                    continue
            partial = 0.0
            if has_trie and nwl > 0:
                if nt < 0:
                    scale = nwl / unk_avg
                    if scale < 1.0:
                        scale = 1.0
                    partial = unk_score * scale
                else:
                    partial = look[nt]
            hs = 0
            hd = 0.0
            if hot_on:
                hs, hd = _hot_step(h_ptr, h_lab, h_nxt, h_fail, h_parent, h_score, h_risk, hstate[p], c)
            if lm_nonneg:
                # LM log-probs are <= 0: a completion adds at most the word bonus (and OOV weight)
                ub = e + fixed[p] + partial
                if hot_on:  # exact, with a margin for the rounding of the sum in another order
                    ub += w_hot * hd + 1e-9
                if compl:
                    ub += w_words
                    if has_trie and not known:
                        ub += w_oov
                    elif w_oov > 0:
                        ub += w_oov
                if ub < thr:
                    continue
            f = fixed[p]
            entry = -1
            if compl or token_lm:
                code = 0
                if compl:
                    # in-lexicon words by trie node; others by a 62-bit hash of their tokens
                    if known:
                        code = ptn + 1
                    elif oov_uniform:
                        code = -1  # every unknown word scores alike (KenLM maps them all to <unk>)
                    else:
                        code = -1 - (whash[p] & 0x3FFFFFFFFFFFFFFF)
                ct = c if token_lm else -1
                entry = get3(lm_ix, ctx[p], code, ct)
                if entry < 0 and ng_on:
                    entry = ngram_step(
                        ctx[p], ptn if known else -1, compl and has_trie and not known, compl, c,
                        offsets, orders, widths, keys, ids_ng, logp, backoff, extends, is_word, node_wid, tok_wid,
                        w_lm, w_words, w_oov, unk_offset,
                        ctx_tab, ctx_next, ctx_hash, lmst, e_delta, e_ctx, e_oov, e_comp,
                    )
                    ix_n[0] += put3(lm_ix, ctx[p], code, ct, entry)
                if entry < 0:
                    req_pid[nreq] = p
                    req_tok[nreq] = c
                    req_code[nreq] = code
                    nreq += 1
                    continue
                f += e_delta[entry]
            if hot_on:
                f = f + w_hot * hd
            r = f + partial
            sc = e + r
            if sc >= thr:
                k_score[k] = sc
                k_fixed[k] = f
                k_rank[k] = r
                k_trie[k] = nt
                k_wlen[k] = nwl
                k_entry[k] = entry
                k_compl[k] = 1 if compl else 0
                k_hs[k] = hs
                k_hd[k] = hd
        if nreq > 0:
            state[0] = n
            state[1] = B
            state[4] = nreq
            return STATUS_NEED_LM
        # pool: stays then candidates
        P = B + nk
        best = NEG
        for i in range(B):
            score[i] = s_stay[i]
        for k in range(nk):
            score[B + k] = k_score[k]
        for i in range(P):
            if score[i] > best:
                best = score[i]
        if best == NEG:
            state[0] = n
            state[1] = B
            return STATUS_DEAD
        cut = best + prune
        nsel = 0
        for i in range(P):
            if score[i] >= cut:
                nsel += 1
        if nsel > W:
            # the W best, ties to the earlier entry (a stable sort's first W), in pool order
            sp = srt[:P]
            sp[:] = score[:P]
            sp.sort()
            vw = sp[P - W]
            n_eq = W
            for i in range(P):
                if score[i] > vw:
                    n_eq -= 1
            q = 0
            for i in range(P):
                x = score[i]
                if x > vw or (x == vw and n_eq > 0):
                    if x == vw:
                        n_eq -= 1
                    sel[q] = i
                    q += 1
            nb = W
        else:
            q = 0
            for i in range(P):
                if score[i] >= cut:
                    sel[q] = i
                    q += 1
            nb = nsel
        for q in range(nb):
            i = sel[q]
            if i < B:
                n_ids[q] = ids[i]
                n_pb[q] = s_pb[i]
                n_pnb[q] = s_pnb[i]
                n_last[q] = blast[i]
                n_rank[q] = brank[i]
                continue
            k = i - B
            ch = k_child[k]
            n_pb[q] = NEG
            n_pnb[q] = k_ext[k]
            if ch >= 0:
                n_ids[q] = ch
                n_last[q] = tok[ch]
                n_rank[q] = rank[ch]
                continue
            p = k_pid[k]
            c = k_tok[k]
            parent[n] = p
            tok[n] = c
            frame[n] = t + t_off
            fixed[n] = k_fixed[k]
            rank[n] = k_rank[k]
            trie[n] = k_trie[k]
            wlen[n] = k_wlen[k]
            nwords[n] = nwords[p] + k_compl[k]
            if hot_on:
                hstate[n] = k_hs[k]
                hsc[n] = hsc[p] + k_hd[k]
            en = k_entry[k]
            if en >= 0:
                ctx[n] = e_ctx[en]
                noov[n] = noov[p] + e_oov[en]
                for m in range(M):
                    comp[n, m] = comp[p, m] + e_comp[en, m]
            else:
                ctx[n] = ctx[p]
                noov[n] = noov[p]
                for m in range(M):
                    comp[n, m] = comp[p, m]
            pos[n] = -1
            if completes[c]:
                whash[n] = c + 1 if toklen[c] > 0 else 0
            else:
                whash[n] = whash[p] * 1000003 + c + 1
            fchild[n] = -1
            nsib[n] = fchild[p]
            fchild[p] = n
            n_ids[q] = n
            n_last[q] = c
            n_rank[q] = k_rank[k]
            n += 1
        for i in range(B):
            pos[ids[i]] = -1
        for q in range(nb):
            ids[q] = n_ids[q]
            pb[q] = n_pb[q]
            pnb[q] = n_pnb[q]
            blast[q] = n_last[q]
            brank[q] = n_rank[q]
            pos[n_ids[q]] = q
        B = nb
    state[0] = n
    state[1] = B
    state[3] = T
    return STATUS_DONE
