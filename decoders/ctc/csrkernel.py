"""Compiled (numba) steps of the lexicon trie's token transitions (:class:`decoders.ctc.triecsr.TrieCSR`)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def csr_step(ptr, tok, nxt, empty, node, c):
    """The node after token ``c`` from ``node`` (``-1``: dead)."""
    if node < 0:
        return -1
    if empty[c]:
        return node
    a = ptr[node]
    b = ptr[node + 1]
    while a < b:
        mid = (a + b) >> 1
        if tok[mid] < c:
            a = mid + 1
        else:
            b = mid
    if a < ptr[node + 1] and tok[a] == c:
        return nxt[a]
    return -1


@njit(cache=True)
def csr_step_many(ptr, tok, nxt, empty, nodes, tokens):
    out = np.empty(nodes.shape[0], np.int32)
    for i in range(nodes.shape[0]):
        out[i] = csr_step(ptr, tok, nxt, empty, nodes[i], tokens[i])
    return out


@njit(cache=True)
def csr_pairs(l_ptr, l_chr, l_nxt, t_ptr, t_chr, t_nxt, t_tok_ptr, t_toks, n_nodes):
    """Every (lexicon node, token, next node): a joint walk of the lexicon trie and the token-text trie."""
    cap = 1024
    out_u = np.empty(cap, np.int64)
    out_t = np.empty(cap, np.int64)
    out_n = np.empty(cap, np.int64)
    k = 0
    stack_l = np.empty(64, np.int64)
    stack_t = np.empty(64, np.int64)
    for u in range(n_nodes):
        sp = 0
        stack_l[0] = u
        stack_t[0] = 0
        sp = 1
        while sp > 0:
            sp -= 1
            ln = stack_l[sp]
            tn = stack_t[sp]
            if tn > 0:
                for j in range(t_tok_ptr[tn], t_tok_ptr[tn + 1]):
                    if k == cap:
                        cap *= 2
                        a = np.empty(cap, np.int64)
                        a[:k] = out_u[:k]
                        out_u = a
                        a = np.empty(cap, np.int64)
                        a[:k] = out_t[:k]
                        out_t = a
                        a = np.empty(cap, np.int64)
                        a[:k] = out_n[:k]
                        out_n = a
                    out_u[k] = u
                    out_t[k] = t_toks[j]
                    out_n[k] = ln
                    k += 1
            # children with the same character in both tries (both sorted by character)
            i, e = l_ptr[ln], l_ptr[ln + 1]
            j, f = t_ptr[tn], t_ptr[tn + 1]
            while i < e and j < f:
                if l_chr[i] < t_chr[j]:
                    i += 1
                elif l_chr[i] > t_chr[j]:
                    j += 1
                else:
                    if sp == stack_l.shape[0]:
                        s2 = np.empty(2 * sp, np.int64)
                        s2[:sp] = stack_l
                        stack_l = s2
                        s2 = np.empty(2 * sp, np.int64)
                        s2[:sp] = stack_t
                        stack_t = s2
                    stack_l[sp] = l_nxt[i]
                    stack_t[sp] = t_nxt[j]
                    sp += 1
                    i += 1
                    j += 1
    return out_u[:k], out_t[:k], out_n[:k]
