"""LM steps of the CTC search: from an LM context, complete a word and/or emit a token, fused and cached.

An LM *context* is an interned tuple of per-LM states (id 0: every LM's ``begin()``). A *step* applies the
word LMs to a completed word and the token LMs to an emitted label; its result (weighted score delta,
unweighted per-LM deltas, new context, OOV flag) is cached by ``(context, word, token)`` in a
:class:`FusionCache`, which the searches of one decoder share (its entries depend on the weights).
The compiled search also indexes entries by ``(context, word code, token)`` (:attr:`FusionCache.lm_ix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fusion.lm import State

CTCDecoder = Any
"""A :class:`decoders.ctc.decoder.CTCDecoder` (not imported here: modules import down the package only)."""

LN10 = math.log(10.0)
PY_ENTRY_BYTES = 400
"""Estimated bytes of one Python step or context entry (tuples, floats, dict slot)."""

Step = tuple[float, np.ndarray, int, bool]
"""``(weighted delta incl. word bonus and OOV weight, unweighted per-LM deltas [M], new context, is_oov)``."""
StepArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Many steps as arrays: ``(weighted deltas [n], unweighted per-LM deltas [n, M], new contexts [n], is_oov [n])``."""


class FusionCache:
    """LM contexts and fused step results, shareable by the searches of one decoder.

    ``lm_ix`` (compiled searches; a :mod:`decoders.ctc.hashmap` map holding ``ix_n[0]`` keys) maps
    ``(context, word code, token)`` to an entry of the ``e_*`` arrays, for in-lexicon words (code = trie node
    + 1), other words (code = -1 - a 62-bit hash of their tokens, or -1 when every unknown word scores alike) and
    no word (code 0).
    """

    def __init__(self, begin: tuple[State, ...]) -> None:
        self.ctx_states: list[tuple[State, ...]] = [begin]
        self.ctx_index: dict[tuple[State, ...], int] = {begin: 0}
        self.steps: dict[tuple[int, str, int], Step] = {}
        self.M = len(begin)
        self.lm_ix: np.ndarray | None = None
        self.ix_n = np.zeros(1, np.int64)
        self.n_entries = 0
        self.e_delta = np.zeros(0)
        self.e_ctx = np.zeros(0, np.int64)
        self.e_oov = np.zeros(0, np.int64)
        self.e_comp = np.zeros((0, self.M))
        self.python_batches = 0
        """Times a compiled search left compiled code to have LM steps computed here."""

    def size(self) -> int:
        return len(self.steps) + len(self.ctx_states) + self.n_entries

    def nbytes(self) -> int:
        """Estimated bytes held (Python entries at a fixed estimate each, arrays exactly)."""
        arrays = self.e_delta.nbytes + self.e_ctx.nbytes + self.e_oov.nbytes + self.e_comp.nbytes
        index = self.lm_ix.nbytes if self.lm_ix is not None else 0
        py = (len(self.steps) + len(self.ctx_states)) * (PY_ENTRY_BYTES + 8 * self.M)
        return int(arrays + index + py)

    def intern(self, states: tuple[State, ...]) -> int:
        """The id of a context (new ids for new contexts)."""
        cid = self.ctx_index.get(states)
        if cid is None:
            cid = len(self.ctx_states)
            self.ctx_states.append(states)
            self.ctx_index[states] = cid
        return cid

    def numba_index(self) -> np.ndarray:
        """The compiled search's index (made on first use)."""
        if self.lm_ix is None:
            from decoders.ctc.kernels import new_map

            self.lm_ix = new_map(4, 1024)
            self.alloc_entries(1024)
        return self.lm_ix

    def alloc_entries(self, n: int) -> None:
        old = self.n_entries
        e_delta, e_ctx, e_oov, e_comp = np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, self.M))
        if old:
            e_delta[:old] = self.e_delta[:old]
            e_ctx[:old] = self.e_ctx[:old]
            e_oov[:old] = self.e_oov[:old]
            e_comp[:old] = self.e_comp[:old]
        self.e_delta, self.e_ctx, self.e_oov, self.e_comp = e_delta, e_ctx, e_oov, e_comp

    def add_entries(self, steps: Sequence[Step]) -> tuple[int, int]:
        """Append steps to the ``e_*`` arrays; returns their entry range ``[a, b)``."""
        a = self.n_entries
        b = a + len(steps)
        if b > len(self.e_delta):
            self.alloc_entries(max(b, 2 * len(self.e_delta)))
        self.e_delta[a:b] = [r[0] for r in steps]
        self.e_ctx[a:b] = [r[2] for r in steps]
        self.e_oov[a:b] = [r[3] for r in steps]
        if self.M:
            self.e_comp[a:b] = np.stack([r[1] for r in steps])
        self.n_entries = b
        return a, b

    def extend(self, dec: CTCDecoder, ctxs: list[int], words: list[str], toks: list[int]) -> list[Step]:
        """Per item, apply the word LMs to ``words[i]`` (if non-empty) and the token LMs to label ``toks[i]``
        (if >= 0) from context ``ctxs[i]``; every miss of the cache goes to the LMs in one batch per LM."""
        keys = list(zip(ctxs, words, toks, strict=True))
        out: list[Step | None] = [self.steps.get(k) for k in keys]
        miss = list(dict.fromkeys(k for k, r in zip(keys, out, strict=True) if r is None))
        if miss:
            self._score_misses(dec, miss)
            return [self.steps[k] for k in keys]
        return out  # type: ignore[return-value]

    def close_words(self, dec: CTCDecoder, ctxs: np.ndarray, words: Sequence[str]) -> StepArrays:
        """The steps completing ``words[i]`` (``""``: none) from context ``ctxs[i]``, no token emitted, as arrays
        (the end of an utterance)."""
        n = len(words)
        res = self.extend(dec, [int(c) for c in np.asarray(ctxs).tolist()], list(words), [-1] * n)
        comps = np.stack([r[1] for r in res]) if n and self.M else np.zeros((n, self.M))
        return (np.array([r[0] for r in res], np.float64), comps, np.array([r[2] for r in res], np.int64),
                np.array([r[3] for r in res], bool))

    def close_and_end(self, dec: CTCDecoder, s: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                np.ndarray]:
        """The end of search ``s``'s nodes ``ids``: their open words closed (:meth:`close_words`) and, with
        ``options.eos``, each LM's end-of-sentence score from the new contexts (:meth:`end_scores`). Returns
        ``(weighted deltas [n], unweighted per-LM deltas [n, M], end scores [n, M], is_oov [n])``."""
        words = [s._open_word(i) if n > 0 else "" for i, n in zip(ids.tolist(), s.wlen[ids].tolist(), strict=True)]
        deltas, dcomp, new_ctx, oov = self.close_words(dec, s.ctx[ids], words)
        ends = self.end_scores(dec, new_ctx) if dec.options.eos and self.M else np.zeros((len(ids), self.M))
        return deltas, dcomp, ends, oov

    def end_scores(self, dec: CTCDecoder, ctxs: np.ndarray) -> np.ndarray:
        """``ln P(</s> | context)`` per context and LM, ``[n, M]`` (through the decoder's per-LM caches)."""
        out = np.zeros((len(ctxs), self.M))
        states = [self.ctx_states[c] for c in np.asarray(ctxs).tolist()]
        for k in range(self.M):
            out[:, k] = dec._lm_caches[k].end_scores([st[k] for st in states])
        return out

    def _score_misses(self, dec: CTCDecoder, miss: list[tuple[int, str, int]]) -> None:
        new_states = [list(self.ctx_states[c]) for c, _, _ in miss]
        deltas = np.zeros((len(miss), self.M))
        oov = [bool(w) and dec._is_oov(w) for _, w, _ in miss]
        offset = dec.options.unk_score_offset * LN10
        labels = dec.vocab.labels
        for k in range(self.M):
            is_word = k in dec.word_lms
            sel = [j for j, (_, w, t) in enumerate(miss) if (w if is_word else t >= 0)]
            if not sel:
                continue
            units = [miss[j][1] if is_word else labels[miss[j][2]] for j in sel]
            res = dec._lm_caches[k].score_pairs([new_states[j][k] for j in sel], units)
            for j, (lp, ns) in zip(sel, res, strict=True):
                deltas[j, k] = lp + offset if is_word and oov[j] else lp
                new_states[j][k] = ns
        wb, wo = dec.weights["words"], dec.weights["oov"]
        w_lm = dec.w_lm.tolist()
        for j, key in enumerate(miss):
            cid = self.intern(tuple(new_states[j]))
            w = sum(a * b for a, b in zip(w_lm, deltas[j].tolist(), strict=True) if a != 0.0)
            if key[1]:
                w += wb + (wo if oov[j] else 0.0)
            self.steps[key] = (w, deltas[j], cid, oov[j])
