"""The lexicon trie stepped by decoder tokens, as sparse (CSR) arrays for the compiled search.

A dense ``[trie nodes, V]`` table does not fit for BPE vocabularies of thousands of pieces (a 100k-node
lexicon times 4k pieces is 400M cells). Here each trie node keeps only the tokens that lead somewhere: the
children of node ``u`` are ``tok[ptr[u]:ptr[u + 1]]`` (sorted token ids) with their next nodes in
``nxt``; a token whose text is empty keeps the node (``empty[v]``); any other token leads to ``DEAD``.

:func:`build_csr` finds every ``(node, token)`` pair by walking the lexicon's character trie and a trie of
the token texts together (compiled), so the work is proportional to the pairs that exist, never to
``nodes x V``. :func:`decoders.ctc.csrkernel.csr_step` is the compiled look-up (a binary search among a node's
children).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decoders.ctc import kernels
from decoders.lexicon import DEAD, Lexicon


@dataclass(frozen=True)
class TrieCSR:
    """Token transitions of a lexicon trie (see the module docstring). All arrays int64 except ``empty``."""

    ptr: np.ndarray
    tok: np.ndarray
    nxt: np.ndarray
    empty: np.ndarray

    def step(self, nodes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The next node of each ``(node, token)`` (``DEAD`` stays dead), int32."""
        return kernels.load().csr_step_many(self.ptr, self.tok, self.nxt, self.empty, np.asarray(nodes, np.int64),
                          np.asarray(tokens, np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.ptr.nbytes + self.tok.nbytes + self.nxt.nbytes + self.empty.nbytes)


def _children_csr(children: Sequence[dict[str, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A character trie (one ``char -> child`` dict per node) as CSR arrays sorted by character code."""
    ptr = np.zeros(len(children) + 1, np.int64)
    chars: list[int] = []
    nxt: list[int] = []
    for i, ch in enumerate(children):
        for c, n in sorted(ch.items()):
            chars.append(ord(c))
            nxt.append(n)
        ptr[i + 1] = len(chars)
    return ptr, np.array(chars, np.int64), np.array(nxt, np.int64)


def build_csr(lexicon: Lexicon, token_text: Sequence[str]) -> TrieCSR:
    """The token transitions of ``lexicon`` for a vocabulary whose token ``v`` appends ``token_text[v]``."""
    l_ptr, l_chr, l_nxt = _children_csr(lexicon._children)
    # the trie of token texts; tokens sharing a text end at one node
    t_children: list[dict[str, int]] = [{}]
    ends: list[list[int]] = [[]]
    for v, text in enumerate(token_text):
        if not text:
            continue
        node = 0
        for ch in text:
            nx = t_children[node].get(ch)
            if nx is None:
                nx = len(t_children)
                t_children[node][ch] = nx
                t_children.append({})
                ends.append([])
            node = nx
        ends[node].append(v)
    t_ptr, t_chr, t_nxt = _children_csr(t_children)
    t_tok_ptr = np.zeros(len(ends) + 1, np.int64)
    t_tok_ptr[1:] = np.cumsum([len(e) for e in ends])
    t_toks = np.array([v for e in ends for v in e], np.int64)
    u, t, n = kernels.load().csr_pairs(l_ptr, l_chr, l_nxt, t_ptr, t_chr, t_nxt, t_tok_ptr, t_toks, lexicon.n_nodes)
    order = np.lexsort((t, u))
    ptr = np.zeros(lexicon.n_nodes + 1, np.int64)
    np.add.at(ptr, u + 1, 1)
    empty = np.array([not s for s in token_text], bool)
    return TrieCSR(np.cumsum(ptr), t[order], n[order], empty)


__all__ = ["DEAD", "TrieCSR", "build_csr"]
