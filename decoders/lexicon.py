"""Prefix trie over a word list, and its view over a CTC decoder's tokens.

The CTC decoder keeps, for every hypothesis, the trie node of its *open* (not yet completed) word.
An open word whose node is dead (``-1``) cannot start any known word: the decoder penalises it
(open-vocabulary mode) or drops it (lexicon-constrained mode), the way pyctcdecode's character trie
and flashlight-text's lexicon trie do.

:class:`Lexicon` is a character trie (node ``0`` is the root, ``-1`` is dead).
:class:`TokenTrie` steps it by decoder *tokens* (characters, or sentencepiece pieces that hold
several characters), vectorised over arrays of nodes; a dense ``[nodes, V]`` table when it fits,
else a memoised dictionary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEAD = -1
"""Trie node of a prefix that starts no known word."""

DENSE_TABLE_MAX_CELLS = 20_000_000
"""Largest ``(nodes + 1) * V`` token-transition table built eagerly (int32 cells)."""


class Lexicon:
    """A character prefix trie of known words.

    Args:
        words: the known words (empty strings and duplicates are ignored).

    Attributes:
        words: the sorted unique words.
        terminal: ``bool [n_nodes]``, whether the node ends a known word.
        word_of: ``list[str | None]``, the word a terminal node spells.
    """

    def __init__(self, words: Iterable[str]) -> None:
        uniq = sorted({w for w in words if w})
        children: list[dict[str, int]] = [{}]
        parent: list[int] = [-1]
        term: list[bool] = [False]
        word_of: list[str | None] = [None]
        for w in uniq:
            node = 0
            for ch in w:
                nxt = children[node].get(ch)
                if nxt is None:
                    nxt = len(children)
                    children[node][ch] = nxt
                    children.append({})
                    parent.append(node)
                    term.append(False)
                    word_of.append(None)
                node = nxt
            term[node] = True
            word_of[node] = w
        self.words: tuple[str, ...] = tuple(uniq)
        self._word_set = frozenset(uniq)
        self._children = children
        self.terminal = np.array(term, dtype=bool)
        self.word_of = word_of
        self.parent = np.array(parent, dtype=np.int64)

    def smear_max(self, word_scores: dict[str, float]) -> np.ndarray:
        """Per node, the best score of a word below it (flashlight's ``SmearingMode.MAX`` look-ahead).

        Words missing from ``word_scores`` count as ``-inf``; the root gets 0.
        """
        out = np.full(self.n_nodes, -np.inf)
        for node, w in enumerate(self.word_of):
            if w is not None:
                out[node] = word_scores.get(w, -np.inf)
        # children always have larger ids than their parent: one reverse sweep propagates maxima up
        for node in range(self.n_nodes - 1, 0, -1):
            p = self.parent[node]
            if out[node] > out[p]:
                out[p] = out[node]
        out[0] = 0.0
        return out

    @property
    def n_nodes(self) -> int:
        return len(self._children)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._word_set

    def walk(self, node: int, text: str) -> int:
        """The node after reading ``text`` from ``node`` (``DEAD`` stays dead)."""
        for ch in text:
            if node < 0:
                return DEAD
            node = self._children[node].get(ch, DEAD)
        return node

    def is_prefix(self, text: str) -> bool:
        """Whether ``text`` starts at least one known word (the empty string does)."""
        return self.walk(0, text) != DEAD


class TokenTrie:
    """A :class:`Lexicon` stepped by token ids of a decoder vocabulary.

    Args:
        lexicon: the character trie.
        token_text: for each token id, the characters it appends to the open word (``""`` for
            blank and for a pure word delimiter).
    """

    def __init__(self, lexicon: Lexicon, token_text: Sequence[str]) -> None:
        self.lexicon = lexicon
        self.token_text = list(token_text)
        self.V = len(self.token_text)
        self._table: np.ndarray | None = None
        self._table_built = False
        self._memo: dict[int, int] = {}

    @property
    def fits_dense(self) -> bool:
        """Whether the dense ``[nodes + 1, V]`` table is small enough to build."""
        return (self.lexicon.n_nodes + 1) * self.V <= DENSE_TABLE_MAX_CELLS

    @property
    def _dense(self) -> np.ndarray | None:
        """The dense transition table (row 0: dead; row ``i + 1``: node ``i``), built on first use when it fits
        (the compiled search never needs it: it reads :mod:`decoders.ctc.triecsr` arrays)."""
        if not self._table_built:
            self._table_built = True
            if self.fits_dense:
                self._table = self._build_dense()
        return self._table

    def _build_dense(self) -> np.ndarray:
        lexicon = self.lexicon
        n = lexicon.n_nodes
        table = np.full((n + 1, self.V), DEAD, dtype=np.int32)
        single = [(v, t) for v, t in enumerate(self.token_text) if len(t) == 1]
        multi = [(v, t) for v, t in enumerate(self.token_text) if len(t) > 1]
        for v, t in enumerate(self.token_text):
            if t == "":
                table[1:, v] = np.arange(n, dtype=np.int32)
        char_to_ids: dict[str, list[int]] = {}
        for v, t in single:
            char_to_ids.setdefault(t, []).append(v)
        for node, ch_map in enumerate(lexicon._children):
            for ch, nxt in ch_map.items():
                for v in char_to_ids.get(ch, ()):
                    table[node + 1, v] = nxt
        if multi:
            for node in range(n):
                for v, t in multi:
                    table[node + 1, v] = lexicon.walk(node, t)
        return table

    def step(self, nodes: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Nodes after appending ``tokens[i]``'s text to ``nodes[i]`` (``DEAD`` stays dead)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        if self._dense is not None:
            return self._dense[nodes + 1, tokens].astype(np.int32, copy=False)
        out = np.empty(len(nodes), dtype=np.int32)
        memo = self._memo
        V = self.V
        walk = self.lexicon.walk
        text = self.token_text
        for i, (nd, tk) in enumerate(zip(nodes.tolist(), tokens.tolist(), strict=True)):
            if nd < 0:
                out[i] = DEAD
                continue
            key = nd * V + tk
            r = memo.get(key)
            if r is None:
                r = walk(nd, text[tk])
                memo[key] = r
            out[i] = r
        return out

    def step_one(self, node: int, token: int) -> int:
        """Scalar :meth:`step`."""
        if node < 0:
            return DEAD
        if self._table is not None:
            return int(self._table[node + 1, token])
        return self.lexicon.walk(node, self.token_text[token])
