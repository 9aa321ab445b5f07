"""The CTC search with the frame loop compiled (ahead of time or by numba's JIT: :mod:`decoders.ctc.kernels`).

:class:`NumbaSearch` keeps the node storage and results of :class:`~decoders.ctc.search.NumpySearch` and hands
whole runs of frames to :func:`decoders.ctc.kernel.run_frames`, which returns to Python only when it is done,
when the node arrays are full, or when it needs LM steps that are not cached yet (:meth:`NumbaSearch._answer`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from decoders.ctc import kernels as KS
from decoders.ctc.inputs import Candidates
from decoders.ctc.kernels import map_room, new_map
from decoders.ctc.lmstep import LN10, CTCDecoder, FusionCache
from decoders.ctc.ngramfusion import NgramFusionCache, empty_tables
from decoders.ctc.search import NumpySearch
from decoders.ctc.tree import NEG_INF
from fusion.errors import LMFusionError

_PLACEHOLDER: list[Any] = []
_NO_TRIE = (np.zeros(2, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, bool))
_NO_HOT = (np.zeros(2, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64),
           np.full(1, -1, np.int64), np.zeros(1), np.zeros(1))
for _a in _NO_HOT:  # read-only like a graph's arrays: one compiled specialization of the kernel for both
    _a.setflags(write=False)


def _placeholder() -> Any:
    """Context tables of the kernel's argument types, for searches whose LMs answer from Python."""
    if not _PLACEHOLDER:
        _PLACEHOLDER.append(SimpleNamespace(
            tables=empty_tables(), ctx_tab=np.zeros((0, 1), np.int32), ctx_next=np.zeros(0, np.int64),
            ctx_hash=new_map(2, 1), lmst=np.zeros(3, np.int64)))
    return _PLACEHOLDER[0]


def _ng_tuple(t: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return (t["offsets"], t["orders"], t["widths"], t["keys"], t["ids"], t["logp"], t["backoff"], t["extends"],
            t["is_word"], t["node_wid"], t["tok_wid"])


class NumbaSearch(NumpySearch):
    """The same search with the frame loop compiled (:func:`decoders.ctc.kernel.run_frames`, from the decoder's
    kernel set ``dec.K``: :mod:`decoders.ctc.kernels`)."""

    def __init__(self, dec: CTCDecoder, capacity: int = 2048, shared: FusionCache | None = None) -> None:
        super().__init__(dec, capacity, shared, dense_children=False)
        self.K = dec.K
        self.sh.numba_index()
        self.whash = np.zeros(self.cap, np.int64)
        self.fchild = np.full(self.cap, -1, np.int32)  # first child of each node (-1: none)
        self.nsib = np.full(self.cap, -1, np.int32)  # next sibling
        W = dec.options.beam_width
        self.b_ids = np.zeros(W + 1, np.int64)
        self.b_pb = np.zeros(W + 1)
        self.b_pnb = np.full(W + 1, NEG_INF)
        self.b_last = np.full(W + 1, self.V, np.int64)
        self.b_rank = np.zeros(W + 1)
        self.state = np.array([1, 1, capacity, 0, 0], np.int64)
        kt = dec.tables.kernel_tables()
        self.trie_csr = kt.trie_csr if kt.trie_csr is not None else _NO_TRIE
        self.terminal = kt.terminal
        self.toklen64 = kt.toklen64
        self.start64 = kt.start64
        self.req = [np.empty(0, np.int64)] * 3
        self.ins_keys = np.empty((256, 3), np.int64)  # new LM-cache entries for the kernel to index
        self.ins_vals = np.empty(256, np.int64)
        self.n_ins = 0
        self.hot = dec.hot.arrays() if dec.hot is not None else _NO_HOT
        self._sync()

    def reset(self, shared: FusionCache) -> None:
        """Start a new utterance in this search's arrays (same decoder; ``shared``: its fused-step cache now)."""
        self.sh = shared
        shared.numba_index()
        B = int(self.state[1])
        self.pos[self.b_ids[:B]] = -1  # only the beam's nodes have a position
        self.pos[0] = 0
        self.fchild[0] = -1
        self.whash[0] = 0
        self.hstate[0] = 0
        self.hsc[0] = 0.0
        self.word_memo.clear()
        self.b_ids[0] = 0
        self.b_pb[0] = 0.0
        self.b_pnb[0] = NEG_INF
        self.b_last[0] = self.V
        self.b_rank[0] = 0.0
        self.state[:] = (1, 1, self.cap, 0, 0)
        self.t = 0
        self._sync()

    def _tokens(self, node: int) -> tuple[list[int], list[int]]:
        toks, frames = self.K.token_chain(self.parent, self.tok, self.frame, node)
        return toks.tolist(), frames.tolist()

    def _sync(self) -> None:
        """Expose the kernel's beam as the arrays :func:`~decoders.ctc.output.final_hypotheses` reads."""
        self.n = int(self.state[0])
        B = int(self.state[1])
        self.ids = self.b_ids[:B].copy()
        self.pb = self.b_pb[:B].copy()
        self.pnb = self.b_pnb[:B].copy()

    def _answer(self, nreq: int) -> None:
        """Score the kernel's LM requests and add them to its cache."""
        pid_arr = self.req[0][:nreq]
        pids = pid_arr.tolist()
        pctx = self.ctx[pid_arr].tolist()
        toks = self.req[1][:nreq].tolist() if self.d.token_lms else [-1] * nreq
        codes = self.req[2][:nreq].tolist()
        word_of = self.d.lexicon.word_of if self.d.lexicon is not None else []
        keys, words = [], []
        seen: set[tuple[int, int, int]] = set()
        for p, cx, c, code in zip(pids, pctx, toks, codes, strict=True):
            key = (cx, code, c)
            if key in seen:
                continue
            seen.add(key)
            keys.append(key)
            words.append("" if code == 0 else (word_of[code - 1] if code > 0 else self._open_word(p)))
        self.sh.python_batches += 1
        res = self.sh.extend(self.d, [k[0] for k in keys], words, [k[2] for k in keys])
        a, b = self.sh.add_entries(res)
        k = len(keys)
        if self.n_ins + k > len(self.ins_vals):
            size = max(2 * len(self.ins_vals), self.n_ins + k)
            keys_new = np.empty((size, 3), np.int64)
            vals_new = np.empty(size, np.int64)
            keys_new[: self.n_ins] = self.ins_keys[: self.n_ins]
            vals_new[: self.n_ins] = self.ins_vals[: self.n_ins]
            self.ins_keys, self.ins_vals = keys_new, vals_new
        self.ins_keys[self.n_ins : self.n_ins + k] = keys
        self.ins_vals[self.n_ins : self.n_ins + k] = np.arange(a, b)
        self.n_ins += k

    def feed_array(self, arr: np.ndarray, cands: Candidates | None = None) -> None:
        """Advance over validated log-probabilities ``[T, V]``; ``cands``: their token candidates when they were
        made with the check (:func:`~decoders.ctc.inputs.logprobs_and_candidates`; used when they fit this
        search)."""
        if self.w_am != 1.0:  # scaled in float64, as the numpy search does
            arr = np.asarray(arr, dtype=np.float64) * self.w_am
        d = self.d
        o = d.options
        blank = d.vocab.blank
        T = len(arr)
        if arr.dtype != np.float32:
            arr = np.asarray(arr, dtype=np.float64)
        arr = np.ascontiguousarray(arr)  # float32 emissions go in as they are (each cell summed in float64)
        # the threshold in the emissions' dtype, as numpy compares an array with a Python float
        K = self.K
        lo = arr.dtype.type(o.token_min_logp)
        if cands is not None and cands.blank == blank and cands.min_logp == lo and arr.dtype == np.float32 \
                and len(cands.ptr) == T + 1:
            cand_ptr, cand_tok = cands.ptr, cands.tok
        else:
            cand_ptr, cand_tok = K.candidates(arr, blank, lo)
        t = 0
        W = o.beam_width
        cmax = max(1, int(np.diff(cand_ptr).max(initial=1)))
        if len(self.req[0]) < W * cmax:
            self.req = [np.empty(W * cmax, np.int64) for _ in range(3)]
        sh = self.sh
        self.n_ins = 0
        ng_on = isinstance(sh, NgramFusionCache)
        ng_sh: Any = sh if ng_on else _placeholder()
        ng = _ng_tuple(ng_sh.tables)
        unk_offset = float(o.unk_score_offset) * LN10
        calls0 = int(ng_sh.lmst[2])
        while True:
            n_ins = self.n_ins
            self.n_ins = 0
            sh.lm_ix = map_room(K, sh.numba_index(), int(sh.ix_n[0]), n_ins)
            status = K.run_frames(
                arr, t, self.t, cand_ptr, cand_tok,
                self.parent, self.tok, self.frame, self.fixed, self.rank, self.trie, self.wlen, self.ctx,
                self.nwords, self.noov, self.comp, self.pos, self.fchild, self.nsib, self.whash,
                self.b_ids, self.b_pb, self.b_pnb, self.b_last, self.b_rank, self.state,
                self.trie_csr, self.terminal, d._completes, d._pure_delim, self.toklen64, self.start64,
                sh.lm_ix, sh.ix_n, sh.e_delta, sh.e_ctx, sh.e_oov, sh.e_comp,
                blank, W, float(o.beam_prune_logp), not bool((d.w_lm < 0).any()), d.weights["words"],
                d.weights["oov"], float(o.unk_prefix_score),
                float(o.unk_prefix_avg_len), bool(o.lexicon_constrained), d.trie is not None, bool(d.token_lms),
                d.look, d._oov_uniform,
                self.req[0], self.req[1], self.req[2], self.ins_keys, self.ins_vals, n_ins,
                ng_on, ng, ng_sh.ctx_tab, ng_sh.ctx_next, ng_sh.ctx_hash, ng_sh.lmst, d.w_lm, unk_offset,
                d.hot is not None, self.hot, float(d.w_hot), self.hstate, self.hsc,
            )
            t = int(self.state[3])
            if status == KS.STATUS_DONE:
                break
            if status == KS.STATUS_GROW:
                self.n = int(self.state[0])
                self._grow(self.n + W * (1 + cmax) + 1)
                for name in ("whash", "fchild", "nsib"):
                    old = getattr(self, name)
                    new = np.full(self.cap, -1 if name != "whash" else 0, old.dtype)
                    new[: self.n] = old[: self.n]
                    setattr(self, name, new)
                self.state[2] = self.cap
            elif status == KS.STATUS_NEED_LM:
                self._answer(int(self.state[4]))
            elif status == KS.STATUS_GROW_LM:
                B = int(self.state[1])
                cmax_t = int(cand_ptr[t + 1] - cand_ptr[t])
                ng_sh.room(B * cmax_t, B * cmax_t)
            elif status == KS.STATUS_GROW_INDEX:
                B = int(self.state[1])
                cmax_t = int(cand_ptr[t + 1] - cand_ptr[t])
                sh.lm_ix = map_room(K, sh.lm_ix, int(sh.ix_n[0]), B * cmax_t)
            else:
                self._sync()
                raise LMFusionError(f"CTC search: every hypothesis has zero probability at frame {self.t + t}")
        self.t += T
        self._sync()
        if ng_on:  # the kernel's LM steps count as calls of every LM (one per new step)
            made = int(ng_sh.lmst[2]) - calls0
            for c in d._lm_caches:
                c.calls += made

