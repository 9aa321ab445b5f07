"""The prefix tree of one utterance's CTC search: node storage and the current beam.

Prefixes are nodes of a tree created once per utterance (node arrays: parent, token, creation frame, LM
context, scores), so merging an extension into an existing prefix is a table look-up. The beam is the
list of node ids alive at the current frame with their blank / non-blank CTC scores (``pb``, ``pnb``),
their last label and their ranking LM score.
"""

from __future__ import annotations

import numpy as np

from decoders.ctc.lmstep import CTCDecoder, FusionCache

NEG_INF = float("-inf")


class PrefixTree:
    """The state of one utterance's search: a tree of prefix nodes plus the current beam."""

    def __init__(
        self, dec: CTCDecoder, capacity: int = 4096, shared: FusionCache | None = None, dense_children: bool = True
    ) -> None:
        self.d = dec
        self.sh = shared if shared is not None else dec._new_fusion_cache()
        V = len(dec.vocab)
        self.V = V
        M = len(dec.lms)
        self.M = M
        self.cap = capacity
        self.parent = np.empty(capacity, np.int32)
        self.tok = np.empty(capacity, np.int32)
        self.frame = np.empty(capacity, np.int32)
        self.fixed = np.empty(capacity, np.float64)  # weighted committed LM part (+ bonuses)
        self.rank = np.empty(capacity, np.float64)  # fixed + partial-word score
        self.trie = np.empty(capacity, np.int32)
        self.wlen = np.empty(capacity, np.int32)
        self.ctx = np.empty(capacity, np.int32)
        self.nwords = np.empty(capacity, np.int32)
        self.noov = np.empty(capacity, np.int32)
        self.comp = np.empty((capacity, M), np.float64)
        self.hstate = np.zeros(capacity, np.int64)  # hotword context-graph state (0 without hotwords)
        self.hsc = np.zeros(capacity, np.float64)  # unweighted hotword bonus so far
        self.pos = np.full(capacity + 1, -1, np.int32)  # position in the beam, or -1; pos[-1] pads child -1
        self.child = np.full((capacity, V), -1, np.int32) if dense_children and V <= 128 else None
        self.child_map: dict[int, int] = {}
        # contexts: interned tuples of per-LM states
        self.word_memo: dict[int, str] = {}
        # root
        self.parent[0] = -1
        self.tok[0] = V  # sentinel: lp_ext[V] = -inf
        self.frame[0] = -1
        self.fixed[0] = self.rank[0] = 0.0
        self.trie[0] = 0
        self.wlen[0] = 0
        self.ctx[0] = 0
        self.nwords[0] = self.noov[0] = 0
        self.comp[0] = 0.0
        self.n = 1
        self.ids = np.zeros(1, np.int64)
        self.pb = np.zeros(1, np.float64)
        self.pnb = np.full(1, NEG_INF)
        self.pos[0] = 0
        self.last = np.full(1, V, np.int64)
        self.brank = np.zeros(1, np.float64)
        self.arange = np.arange(dec.options.beam_width + 1)
        self.t = 0
        self.lp_ext = np.full(V + 1, NEG_INF)
        self.w_am = dec.weights["am"]

    # -- node storage -----------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self.cap:
            return
        new = max(need, self.cap * 2)
        names = ("parent", "tok", "frame", "fixed", "rank", "trie", "wlen", "ctx", "nwords", "noov", "hstate", "hsc")
        for name in names:
            a = getattr(self, name)
            b = np.zeros(new, a.dtype)
            b[: self.n] = a[: self.n]
            setattr(self, name, b)
        c = np.empty((new, self.M), np.float64)
        c[: self.n] = self.comp[: self.n]
        self.comp = c
        p = np.full(new + 1, -1, np.int32)
        p[: self.cap] = self.pos[: self.cap]
        self.pos = p
        if self.child is not None:
            ch = np.full((new, self.V), -1, np.int32)
            ch[: self.n] = self.child[: self.n]
            self.child = ch
        self.cap = new

    def _lookup_children(self, pid: np.ndarray, toks: np.ndarray) -> np.ndarray:
        if self.child is not None:
            return self.child[pid, toks]
        V = self.V
        get = self.child_map.get
        return np.fromiter(
            (get(p * V + t, -1) for p, t in zip(pid.tolist(), toks.tolist(), strict=True)), np.int64, len(pid)
        )

    def _open_word(self, node: int) -> str:
        """The open (not yet completed) word of a node."""
        tn = int(self.trie[node])
        lex = self.d.lexicon
        if tn >= 0 and lex is not None and lex.terminal[tn]:
            return lex.word_of[tn]
        memo = self.word_memo
        w = memo.get(node)
        if w is not None:
            return w
        # walk up to a memoised node or the word's first token, then memoise on the way down
        text = self.d.vocab.text
        completes = self.d.vocab.completes
        chain: list[tuple[int, int]] = []
        nd = node
        base = ""
        while nd > 0:
            hit = memo.get(nd)
            if hit is not None:
                base = hit
                break
            t = int(self.tok[nd])
            chain.append((nd, t))
            if completes[t]:
                break
            nd = int(self.parent[nd])
        for nd, t in reversed(chain):
            base = text[t] if completes[t] else base + text[t]
            memo[nd] = base
        return base


    def _tokens(self, node: int) -> tuple[list[int], list[int]]:
        if getattr(self, "_lists_n", -1) != self.n:
            self._pl = self.parent[: self.n].tolist()
            self._tl = self.tok[: self.n].tolist()
            self._fl = self.frame[: self.n].tolist()
            self._lists_n = self.n
        pl, tl, fl = self._pl, self._tl, self._fl
        toks, frames = [], []
        nd = node
        while nd > 0:
            toks.append(tl[nd])
            frames.append(fl[nd])
            nd = pl[nd]
        return toks[::-1], frames[::-1]

    def _text(self, node: int) -> str:
        toks, _ = self._tokens(node)
        return " ".join(w for w, _ in self.d.vocab.words_of(toks))
