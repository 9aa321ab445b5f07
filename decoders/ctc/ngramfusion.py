"""The CTC decoder's n-gram LMs as arrays the compiled search queries itself (:mod:`decoders.ctc.lmkernel`).

:func:`ngram_plan` decides, once per decoder, whether every LM is a back-off n-gram that can be read into
:class:`~fusion.ngram_arrays.NgramArrays` (:class:`~fusion.abilities.ArpaBacked`) and whether the
compiled search can name every word it completes for them (a known word by its lexicon-trie node; any word
outside the lexicon is ``<unk>`` to every word LM). If so, the decoder asks the LMs through
:class:`~fusion.array_lm.ArrayNgramLM` twins (bit-identical scores, tuple states) and its searches share an
:class:`NgramFusionCache`, whose contexts live in arrays the compiled loop reads and extends. Otherwise
(neural LMs, a KenLM binary without its ARPA, a lexicon missing some LM words) the plan says why and the
search asks the LMs from Python at frame boundaries, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decoders.ctc.kernels import map_room, new_map
from decoders.ctc.lmstep import LN10, FusionCache, Step, StepArrays
from decoders.lexicon import Lexicon
from fusion.abilities import ArpaBacked
from fusion.array_lm import ArrayNgramLM
from fusion.lm import LanguageModel, State
from fusion.ngram_arrays import read_arpa_cached

SPECIAL = ("<s>", "</s>", "<unk>")


@dataclass
class NgramPlan:
    """The decoder's LMs as packed arrays for the compiled search.

    Attributes:
        twins: one :class:`~fusion.array_lm.ArrayNgramLM` per LM (same name and units).
        tables: the packed model arrays and the word / label id tables the kernel reads.
    """

    twins: tuple[ArrayNgramLM, ...]
    tables: dict[str, np.ndarray]


def ngram_plan(
    lms: Sequence[LanguageModel], word_lms: Sequence[int], lexicon: Lexicon | None, lexicon_given: bool,
    labels: Sequence[str],
) -> tuple[NgramPlan | None, str]:
    """The plan, or ``None`` and the reason the LMs stay in Python."""
    if not lms:
        return None, "no LM"
    models = []
    for m in lms:
        if not isinstance(m, ArpaBacked):
            return None, f"LM {m.name!r} ({type(m).__name__}) is not an n-gram that can be read into arrays"
        path = m.arpa_path()
        if path is None:
            return None, f"LM {m.name!r}: no readable ARPA (a KenLM binary without the ARPA kept beside it)"
        models.append(read_arpa_cached(path))
    if word_lms and lexicon is None:
        return None, "word LMs without a lexicon"
    if lexicon_given and lexicon is not None:
        for k in word_lms:
            missing = next((w for w in models[k].vocab if w not in SPECIAL and w not in lexicon), None)
            if missing is not None:
                return None, f"LM {lms[k].name!r} knows words outside the given lexicon (e.g. {missing!r})"
    M = len(lms)
    n_nodes = lexicon.n_nodes if lexicon is not None else 1
    node_wid = np.zeros((M, n_nodes), np.int64)
    tok_wid = np.zeros((M, len(labels)), np.int64)
    is_word = np.zeros(M, bool)
    for k, arr in enumerate(models):
        if k in word_lms:
            is_word[k] = True
            assert lexicon is not None
            term = np.flatnonzero(lexicon.terminal)
            node_wid[k, term] = [arr.word_id(lexicon.word_of[i] or "") for i in term.tolist()]
        else:
            tok_wid[k] = [arr.word_id(lab) for lab in labels]
    tables = pack_models(models)
    tables.update(is_word=is_word, node_wid=node_wid, tok_wid=tok_wid)
    twins = tuple(ArrayNgramLM(a, m.name, m.units) for a, m in zip(models, lms, strict=True))
    return NgramPlan(twins, tables), ""


def empty_tables() -> dict[str, Any]:
    """Placeholder tables (the kernel's argument types) for searches whose LMs stay in Python."""
    return {
        "offsets": np.zeros((1, 2), np.int64), "orders": np.zeros(0, np.int64), "widths": np.zeros(0, np.int64),
        "keys": np.zeros(0, np.uint64), "ids": np.zeros((0, 1), np.int32), "logp": np.zeros(0, np.float32),
        "backoff": np.zeros(0, np.float32), "extends": np.zeros(0, bool), "is_word": np.zeros(0, bool),
        "node_wid": np.zeros((0, 1), np.int64), "tok_wid": np.zeros((0, 1), np.int64),
    }


class _ContextRows:
    """``ctx_states`` of an :class:`NgramFusionCache`: context ``c`` as a tuple of per-LM tuple states, read from
    the context table on demand."""

    def __init__(self, cache: NgramFusionCache) -> None:
        self.c = cache

    def __len__(self) -> int:
        return int(self.c.lmst[0])

    def __getitem__(self, cid: int) -> tuple[State, ...]:
        c = self.c
        row = c.ctx_tab[cid].tolist()
        return tuple(tuple(row[m * c.width : m * c.width + int(w)]) for m, w in enumerate(c.widths))


class NgramFusionCache(FusionCache):
    """A :class:`~decoders.ctc.lmstep.FusionCache` whose contexts are rows of arrays (``ctx_tab``) that the
    compiled search interns into itself; Python-made steps (the end of an utterance) share them.

    ``lmst`` holds ``[contexts, entries, steps computed by the kernel]``.
    """

    def __init__(self, plan: NgramPlan, K: Any, capacity: int = 4096) -> None:
        begin = tuple(t.begin() for t in plan.twins)
        super().__init__(begin)
        self.tables = plan.tables
        self.twins = plan.twins
        self.widths = plan.tables["widths"].tolist()
        self.width = max(self.widths)
        self.lmst = np.zeros(3, np.int64)
        self.ctx_tab = np.full((capacity, self.width * self.M), -1, np.int32)
        self.ctx_next = np.full(capacity, -1, np.int64)
        self.ctx_hash = new_map(2, capacity)  # room for a key per row of ctx_tab, always
        self.ctx_states = _ContextRows(self)  # type: ignore[assignment]
        self.ctx_index = {}
        self.K = K
        self.lm_ix = new_map(4, capacity)
        self.eos_wid = np.array([t.arrays.word_id("</s>") for t in plan.twins], np.int64)
        self._no_terminal = np.zeros(1, bool)
        self.alloc_entries(capacity)
        self.intern(begin)

    @property
    def n_entries(self) -> int:
        return int(self.lmst[1])

    @n_entries.setter
    def n_entries(self, n: int) -> None:
        if hasattr(self, "lmst"):
            self.lmst[1] = n

    def size(self) -> int:
        return len(self.steps) + int(self.lmst[0]) + int(self.lmst[1])

    def nbytes(self) -> int:
        """Bytes held: the context table, entry arrays and the two maps (allocated size)."""
        arrays = self.e_delta.nbytes + self.e_ctx.nbytes + self.e_oov.nbytes + self.e_comp.nbytes
        arrays += self.ctx_tab.nbytes + self.ctx_next.nbytes + self.ctx_hash.nbytes
        return int(arrays + (self.lm_ix.nbytes if self.lm_ix is not None else 0))

    def numba_index(self) -> np.ndarray:
        assert self.lm_ix is not None
        return self.lm_ix

    def _row(self, states: tuple[State, ...]) -> np.ndarray:
        row = np.full(self.width * self.M, -1, np.int32)
        for m, s in enumerate(states):
            st: tuple[int, ...] = s  # type: ignore[assignment]
            row[m * self.width : m * self.width + len(st)] = st
        return row

    def intern(self, states: tuple[State, ...]) -> int:
        self.room(1, 0)
        rows = self._row(states)[None]
        return int(self.K.intern_rows(self.ctx_tab, self.ctx_next, self.ctx_hash, self.lmst, rows)[0])

    def extend(self, dec: Any, ctxs: list[int], words: list[str], toks: list[int]) -> list[Step]:
        """As :meth:`FusionCache.extend`, computed by the compiled step (:func:`~decoders.ctc.lmkernel.fused_steps`)
        on the shared contexts, without a Python cache."""
        if not ctxs:
            return []
        deltas, comps, new_ctx, oov = self.step_arrays(dec, np.array(ctxs, np.int64), words, toks)
        return [(d, comps[i], c, o_) for i, (d, c, o_) in
                enumerate(zip(deltas.tolist(), new_ctx.tolist(), oov.tolist(), strict=True))]

    def close_words(self, dec: Any, ctxs: np.ndarray, words: Sequence[str]) -> StepArrays:
        """As :meth:`FusionCache.close_words`, in one compiled call."""
        return self.step_arrays(dec, np.asarray(ctxs, np.int64), words, None)

    def close_and_end(self, dec: Any, s: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`FusionCache.close_and_end`, in one compiled call (:func:`~decoders.ctc.lmkernel.close_beam`),
        without building the words: a word is named by its lexicon-trie node (as the compiled search names the words
        it completes), any other word is ``<unk>``."""
        n = len(ids)
        self.room(n, 0)
        t = self.tables
        deltas = np.empty(n)
        comps = np.empty((n, self.M))
        ends = np.empty((n, self.M))
        oov = np.empty(n, bool)
        o = dec.options
        lex = dec.lexicon
        self.K.close_beam(np.ascontiguousarray(ids, np.int64), s.ctx, s.wlen, s.trie,
                          lex.terminal if lex is not None else self._no_terminal, lex is not None, t["node_wid"],
                          bool(o.eos), self.eos_wid, t["offsets"], t["orders"], t["widths"], t["keys"], t["ids"],
                          t["logp"], t["backoff"], t["extends"], t["is_word"], dec.w_lm, float(dec.weights["words"]),
                          float(dec.weights["oov"]), float(o.unk_score_offset) * LN10, self.ctx_tab, self.ctx_next,
                          self.ctx_hash, self.lmst, deltas, comps, ends, oov)
        return deltas, comps, ends, oov

    def step_arrays(self, dec: Any, ctxs: np.ndarray, words: Sequence[str], toks: Sequence[int] | None) -> StepArrays:
        """The steps of :meth:`extend` as arrays (``toks=None``: no token emitted)."""
        n = len(ctxs)
        self.room(n, 0)
        t = self.tables
        M = self.M
        compl = np.array([bool(w) for w in words], bool)
        is_oov = dec._is_oov
        oov = np.array([bool(w) and is_oov(w) for w in words], bool)
        if toks is None:
            tok_on = np.zeros(n, bool)
            tk = np.zeros(n, np.int64)
        else:
            tok_on = np.array([c >= 0 for c in toks], bool)
            tk = np.maximum(np.array(toks, np.int64), 0)
        wids = np.zeros((n, M), np.int64)
        for m, twin in enumerate(self.twins):
            if t["is_word"][m]:
                wid = twin.arrays.vocab.get
                wids[:, m] = [wid(w, 0) if w else 0 for w in words]
            else:
                wids[:, m] = t["tok_wid"][m, tk]
        deltas = np.empty(n)
        comps = np.empty((n, M))
        new_ctx = np.empty(n, np.int64)
        o = dec.options
        self.K.fused_steps(ctxs, wids, oov, compl, tok_on, t["offsets"], t["orders"], t["widths"],
                           t["keys"], t["ids"], t["logp"], t["backoff"], t["extends"], t["is_word"], dec.w_lm,
                           float(dec.weights["words"]), float(dec.weights["oov"]), float(o.unk_score_offset) * LN10,
                           self.ctx_tab, self.ctx_next, self.ctx_hash, self.lmst, deltas, comps, new_ctx)
        return deltas, comps, new_ctx, oov

    def end_scores(self, dec: Any, ctxs: np.ndarray) -> np.ndarray:
        """As :meth:`FusionCache.end_scores`, read from the context table in one compiled call per LM (the
        same :func:`~fusion.ngram_arrays.score_many` the LM twins' ``end_batch`` runs), without a Python cache."""
        from fusion.ngram_arrays import score_many

        ctxs = np.asarray(ctxs, np.int64)
        out = np.zeros((len(ctxs), self.M))
        if not len(ctxs):
            return out
        rows = self.ctx_tab[ctxs]
        for m, (twin, w) in enumerate(zip(self.twins, self.widths, strict=True)):
            st = rows[:, m * self.width : m * self.width + int(w)]
            eos = np.full(len(ctxs), twin.arrays.word_id("</s>"), np.int64)
            out[:, m] = score_many(twin.arrays, st, eos)[0]
        return out

    def room(self, contexts: int, entries: int) -> None:
        """Grow the context table and entry arrays to hold ``contexts`` / ``entries`` more."""
        nc = int(self.lmst[0]) + contexts
        if nc > len(self.ctx_tab):
            size = max(nc, 2 * len(self.ctx_tab))
            tab = np.full((size, self.ctx_tab.shape[1]), -1, np.int32)
            tab[: len(self.ctx_tab)] = self.ctx_tab
            nxt = np.full(size, -1, np.int64)
            nxt[: len(self.ctx_next)] = self.ctx_next
            self.ctx_tab, self.ctx_next = tab, nxt
            self.ctx_hash = map_room(self.K, self.ctx_hash, int(self.lmst[0]), size - int(self.lmst[0]))
        ne = int(self.lmst[1]) + entries
        if ne > len(self.e_delta):
            self.alloc_entries(max(ne, 2 * len(self.e_delta)))


def pack_models(models: list[Any]) -> dict[str, np.ndarray]:
    """Concatenate several :class:`~fusion.ngram_arrays.NgramArrays` into one set of arrays (see the module
    docstring): ``offsets [M, Nmax + 1]``, ``orders [M]``, ``widths [M]``, ``keys``, ``ids [rows, Nmax]``,
    ``logp``, ``backoff``, ``extends``."""
    nmax = max(a.order for a in models)
    M = len(models)
    offsets = np.zeros((M, nmax + 1), np.int64)
    base = 0
    ids_l = []
    for m, a in enumerate(models):
        offsets[m, : a.order + 1] = a.offsets + base
        offsets[m, a.order + 1 :] = a.offsets[-1] + base
        ids = np.full((len(a.ids), nmax), -1, np.int32)
        ids[:, : a.order] = a.ids
        ids_l.append(ids)
        base += int(a.offsets[-1])
    return {
        "offsets": offsets,
        "orders": np.array([a.order for a in models], np.int64),
        "widths": np.array([max(1, a.order - 1) for a in models], np.int64),
        "keys": np.concatenate([a.keys for a in models]),
        "ids": np.concatenate(ids_l),
        "logp": np.concatenate([a.logp for a in models]),
        "backoff": np.concatenate([a.backoff for a in models]),
        "extends": np.concatenate([a.extends for a in models]),
    }
