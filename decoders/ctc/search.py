"""The CTC prefix beam search, one frame at a time in numpy (the ``"numpy"`` back end).

Each frame is a few named steps (as ESPnet's ``BeamSearch`` splits its loop): :meth:`NumpySearch._extend_beam`
(stay with blank / repeat, extend by each candidate label), :meth:`~NumpySearch._threshold` (beam width and
pruning), :meth:`~NumpySearch._new_children` (exact fused scores of new prefixes, through the LM steps of
:mod:`decoders.ctc.lmstep`), and :meth:`~NumpySearch._adopt` (the next beam). Frames where no label passes
the pruning are advanced in closed form (:meth:`~NumpySearch._stay_run`). Extensions that cannot reach the
beam are dropped by an upper bound before any LM work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from decoders.ctc.inputs import Candidates
from decoders.ctc.output import Final, final_hypotheses, to_hypothesis, to_nbest
from decoders.ctc.tree import NEG_INF, PrefixTree
from decoders.ctc.vocabulary import partial_scores
from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.lexicon import DEAD
from fusion.errors import LMFusionError


def token_candidates(arr: np.ndarray, blank: int, min_logp: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame token pruning: ``(mask [T, V], has [T])``.

    A non-blank token is a candidate where its log-probability is at least ``min_logp``; a frame with
    none keeps its best token when that is not the blank. ``has`` marks frames with any candidate.
    """
    mask = np.asarray(arr >= min_logp)
    mask[:, blank] = False
    has: np.ndarray = np.asarray(mask.any(axis=1))
    if not has.all():
        am = arr.argmax(axis=1)
        fix = ~has & (am != blank)
        if fix.any():
            mask[np.flatnonzero(fix), am[fix]] = True
            has |= fix
    return mask, has



class NumpySearch(PrefixTree):
    """One utterance's search with the frame loop in numpy."""

    # -- one frame --------------------------------------------------------------------------
    def _advance(self, lp: np.ndarray, cand: np.ndarray) -> None:
        """One frame with at least one candidate token ``cand`` (blank excluded)."""
        pb2, pnb2, pid, ctok, ext = self._extend_beam(lp, cand)
        child = self._lookup_children(pid, ctok)
        cpos = self.pos[child]  # pos[-1] is the padding cell, always -1
        inbeam = cpos >= 0
        if inbeam.any():  # extensions into prefixes already in the beam merge there
            bpos = cpos[inbeam]
            pnb2[bpos] = np.logaddexp(pnb2[bpos], ext[inbeam])
        s_stay = np.logaddexp(pb2, pnb2) + self.brank
        thr = self._threshold(s_stay)
        # children outside the beam: existing nodes have exact scores; new ones an upper bound first
        exists = child >= 0
        ex_idx = np.flatnonzero(exists & ~inbeam)
        ex_score = ext[ex_idx] + self.rank[child[ex_idx]]
        ok = ex_score >= thr
        ex_idx, ex_score = ex_idx[ok], ex_score[ok]
        gain = self.d._gain_bound
        if math.isinf(gain):
            nw_idx = np.flatnonzero(~exists & (ext > NEG_INF))
        else:
            nw_idx = np.flatnonzero(~exists & (ext + self.fixed[pid] + gain >= thr))
        new = self._new_children(pid[nw_idx], ctok[nw_idx], ext[nw_idx], thr) if nw_idx.size else None
        if new is None and ex_idx.size == 0:
            self._select_stays(pb2, pnb2, s_stay)
            return
        self._adopt(pb2, pnb2, s_stay, child[ex_idx], ext[ex_idx], ex_score, new)

    def _extend_beam(
        self, lp: np.ndarray, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Stay scores ``(pb2, pnb2)`` of the beam, and every extension ``(parent node, label, CTC score)``.

        A delimiter after no open word keeps the prefix's text: its mass joins the prefix itself.
        """
        d = self.d
        ids, pb, pnb, last = self.ids, self.pb, self.pnb, self.last
        B = len(ids)
        self.lp_ext[: self.V] = lp
        tot = np.logaddexp(pb, pnb)
        pb2 = tot + lp[d.vocab.blank]
        pnb2 = pnb + self.lp_ext[last]
        if len(cand) == 1:
            c = int(cand[0])
            par = self.arange[:B]
            ctok = np.full(B, c, np.int64)
            ext = np.where(last == c, pb, tot) + lp[c]
        else:
            par = np.repeat(self.arange[:B], len(cand))
            ctok = np.tile(cand, B)
            ext = np.where(last[par] == ctok, pb[par], tot[par]) + lp[ctok]
        pid = ids[par]
        if d._has_pure_delim and d._pure_delim[cand].any():
            redirect = d._pure_delim[ctok] & (self.wlen[pid] == 0)
            if redirect.any():
                rp = par[redirect]
                pnb2[rp] = np.logaddexp(pnb2[rp], ext[redirect])
                keep = ~redirect
                ctok, pid, ext = ctok[keep], pid[keep], ext[keep]
        return pb2, pnb2, pid, ctok, ext

    def _threshold(self, s_stay: np.ndarray) -> float:
        """The lowest score that can enter the next beam: the frame's best plus ``beam_prune_logp``, and
        at least the W-th best stay score."""
        o = self.d.options
        B, W = len(s_stay), o.beam_width
        thr = float(s_stay.max()) + o.beam_prune_logp
        if B >= W:
            thr = max(thr, float(np.partition(s_stay, B - W)[B - W]))
        return thr

    def _adopt(
        self, pb2: np.ndarray, pnb2: np.ndarray, s_stay: np.ndarray, ex_node: np.ndarray, ex_ext: np.ndarray,
        ex_score: np.ndarray, new: dict[str, Any] | None,
    ) -> None:
        """The next beam: the best of the stays, the existing children and the new ones (created here)."""
        o = self.d.options
        B, n_ex = len(self.ids), len(ex_node)
        parts = (s_stay, ex_score, new["score"]) if new is not None else (s_stay, ex_score)
        score = np.concatenate(parts)
        best = float(score.max())
        if not math.isfinite(best):
            raise LMFusionError(f"CTC search: every hypothesis has zero probability at frame {self.t}")
        sel = np.flatnonzero(score >= best + o.beam_prune_logp)
        if sel.size > o.beam_width:
            sel = np.sort(sel[np.argpartition(-score[sel], o.beam_width - 1)[: o.beam_width]])
        cut1 = int(np.searchsorted(sel, B))
        cut2 = int(np.searchsorted(sel, B + n_ex))
        st = sel[:cut1]
        ei = sel[cut1:cut2] - B
        ec = ex_node[ei]
        ids_l = [self.ids[st], ec]
        pb_l = [pb2[st], np.full(ei.size, NEG_INF)]
        pnb_l = [pnb2[st], ex_ext[ei]]
        rank_l = [self.brank[st], self.rank[ec]]
        last_l = [self.last[st], self.tok[ec]]
        if new is not None and cut2 < sel.size:
            ni = sel[cut2:] - B - n_ex
            ids_l.append(self._create(new, ni))
            pb_l.append(np.full(ni.size, NEG_INF))
            pnb_l.append(new["ext"][ni])
            rank_l.append(new["rank"][ni])
            last_l.append(new["tok"][ni])
        self.pos[self.ids] = -1
        self.ids = np.concatenate(ids_l)
        self.pb = np.concatenate(pb_l)
        self.pnb = np.concatenate(pnb_l)
        self.brank = np.concatenate(rank_l)
        self.last = np.concatenate(last_l)
        self.pos[self.ids] = self.arange[: len(self.ids)]

    def _select_stays(self, pb2: np.ndarray, pnb2: np.ndarray, s: np.ndarray) -> None:
        best = float(s.max())
        if not math.isfinite(best):
            raise LMFusionError(f"CTC search: every hypothesis has zero probability at frame {self.t}")
        self._keep(s >= best + self.d.options.beam_prune_logp, pb2, pnb2)

    def _keep(self, keep: np.ndarray, pb: np.ndarray, pnb: np.ndarray) -> None:
        """Adopt the beams' new blank / non-blank scores, dropping the beams where ``keep`` is False."""
        if keep.all():
            self.pb, self.pnb = pb, pnb
            return
        self.pos[self.ids[~keep]] = -1
        self.ids = self.ids[keep]
        self.pb, self.pnb = pb[keep], pnb[keep]
        self.brank = self.brank[keep]
        self.last = self.last[keep]
        self.pos[self.ids] = self.arange[: len(self.ids)]

    def _stay_run(self, run: np.ndarray) -> None:
        """Frames where no token passes the pruning: every prefix only stays (blank or repeat).

        Closed form over the run (``run`` is ``[L, V]``); falls back to frame by frame when the
        per-frame beam pruning would depend on the order of removals or blanks have probability 0.
        """
        d = self.d
        L = len(run)
        blank = d.vocab.blank
        b = run[:, blank]
        if L == 1 or not np.isfinite(b).all():
            for row in run:
                self._stay_frame(row)
                self.t += 1
            return
        r = np.concatenate((run, np.full((L, 1), NEG_INF)), axis=1)[:, self.last]  # [L, B]
        cb = np.cumsum(b)
        cr = np.cumsum(r, axis=0)
        tot0 = np.logaddexp(self.pb, self.pnb)
        with np.errstate(invalid="ignore"):
            acc = np.logaddexp.accumulate(cr - cb[:, None], axis=0)
        tot = cb[:, None] + np.logaddexp(tot0[None, :], self.pnb[None, :] + acc)  # [L, B]
        s = tot + self.brank[None, :]
        best = s.max(axis=1)
        ok = s >= (best + d.options.beam_prune_logp)[:, None]
        alive = ok.all(axis=0)
        if not alive[s.argmax(axis=1)].all() or not np.isfinite(best).all():
            for row in run:
                self._stay_frame(row)
                self.t += 1
            return
        pnb = self.pnb + cr[-1]
        prev_tot = tot[-2]
        pb = prev_tot + b[-1]
        self.t += L
        self._keep(alive, pb, pnb)

    def _stay_frame(self, lp: np.ndarray) -> None:
        self.lp_ext[: self.V] = lp
        tot = np.logaddexp(self.pb, self.pnb)
        pb2 = tot + lp[self.d.vocab.blank]
        pnb2 = self.pnb + self.lp_ext[self.last]
        self._select_stays(pb2, pnb2, np.logaddexp(pb2, pnb2) + self.brank)

    def _child_words(
        self, pid: np.ndarray, ctok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Word state of new nodes ``(pid, ctok)``: ``(trie node, open-word length, completes a word,
        allowed)``; ``allowed`` is ``None`` unless the search is lexicon-constrained."""
        d = self.d
        comp_tok = d._completes[ctok]
        pwlen = self.wlen[pid]
        toklen = d._toklen[ctok]
        if d.trie is not None:
            step = d.trie.step(self.trie[pid], ctok)
            start = d._start_trie[ctok] if d._has_completing_text else 0
            trie = np.where(comp_tok, start, step)
        else:
            trie = np.zeros(len(pid), np.int32)
        wlen = np.where(comp_tok, toklen, pwlen + toklen)
        completing = comp_tok & (pwlen > 0)
        alive = None
        if d.options.lexicon_constrained:
            alive = trie != DEAD
            if completing.any():
                pt = self.trie[pid[completing]]
                okc = (pt >= 0) & d.lexicon.terminal[np.maximum(pt, 0)]
                alive[np.flatnonzero(completing)[~okc]] = False
        return trie, wlen, completing, alive

    def _new_children(self, pid: np.ndarray, ctok: np.ndarray, ext: np.ndarray, thr: float) -> dict[str, Any] | None:
        """Exact fused scores of candidate new nodes ``(pid, ctok)``; drops the hopeless ones.

        Returns the survivors' fields, with ``delta`` rows (index into ``res``, the LM steps) for those
        that went through the LMs (``-1``: same LM part as the parent).
        """
        d = self.d
        o = d.options
        n = len(pid)
        trie, wlen, completing, alive = self._child_words(pid, ctok)
        need = np.ones(n, bool) if d.token_lms else completing.copy()
        if alive is not None:
            need &= alive
        fixed = self.fixed[pid]
        delta = None
        if need.any():
            idx = np.flatnonzero(need)
            words = [
                self._open_word(p) if c else ""
                for p, c in zip(pid[idx].tolist(), completing[idx].tolist(), strict=True)
            ]
            toks = ctok[idx].tolist() if d.token_lms else [-1] * idx.size
            res = self.sh.extend(d, self.ctx[pid[idx]].tolist(), words, toks)
            fixed = fixed.copy()
            fixed[idx] += np.fromiter((r[0] for r in res), np.float64, idx.size)
            delta = np.full(n, -1, np.int64)
            delta[idx] = np.arange(idx.size)
        hot = d.hot
        if hot is not None:
            hstate, hd = hot.step_many(self.hstate[pid], ctok)
            fixed = fixed + d.w_hot * hd
        rank = fixed
        if d.trie is not None:
            rank = fixed + partial_scores(d.look, trie, wlen, o.unk_prefix_score, o.unk_prefix_avg_len)
        score = ext + rank
        keep = score >= thr
        if alive is not None:
            keep &= alive
        if not keep.any():
            return None
        out = {"pid": pid, "tok": ctok, "ext": ext, "score": score, "fixed": fixed, "rank": rank,
               "trie": trie, "wlen": wlen, "completing": completing}
        if delta is not None:
            out["delta"] = delta
        if hot is not None:
            out["hstate"] = hstate
            out["hsc"] = self.hsc[pid] + hd
        if not keep.all():
            out = {key: v[keep] for key, v in out.items()}
        if delta is not None:
            out["res"] = res
        return out

    def _create(self, new: dict[str, Any], ni: np.ndarray) -> np.ndarray:
        k = ni.size
        self._grow(self.n + k)
        a, b = self.n, self.n + k
        ids = np.arange(a, b)
        pid = new["pid"][ni]
        tok = new["tok"][ni]
        self.parent[a:b] = pid
        self.tok[a:b] = tok
        self.frame[a:b] = self.t
        for name in ("fixed", "rank", "trie", "wlen", "hstate", "hsc"):
            if name in new:
                getattr(self, name)[a:b] = new[name][ni]
        ctx = self.ctx[pid]
        nwords = self.nwords[pid] + new["completing"][ni]
        noov = self.noov[pid]
        comp = self.comp[pid] if self.M else None
        if "delta" in new:
            dl = new["delta"][ni]
            res = new["res"]
            for j in np.flatnonzero(dl >= 0).tolist():
                _, dcomp, cid, oov = res[dl[j]]
                ctx[j] = cid
                noov[j] += oov
                if comp is not None:
                    comp[j] += dcomp
        self.ctx[a:b] = ctx
        self.nwords[a:b] = nwords
        self.noov[a:b] = noov
        if comp is not None:
            self.comp[a:b] = comp
        if self.child is not None:
            self.child[pid, tok] = ids
        else:
            V = self.V
            for p, tk, i in zip(pid.tolist(), tok.tolist(), ids.tolist(), strict=True):
                self.child_map[p * V + tk] = i
        self.n = b
        return ids

    # -- feeding and finishing -----------------------------------------------------------------
    def feed_array(self, arr: np.ndarray, cands: Candidates | None = None) -> None:
        """Advance over validated log-probabilities ``[T, V]`` (float32 or float64; summed in float64); ``cands``
        (precomputed token candidates) are for the compiled search and not used here."""
        arr = np.asarray(arr, dtype=np.float64)  # this utterance only: the numpy frame steps sum in float64
        if self.w_am != 1.0:
            arr = arr * self.w_am
        d = self.d
        blank = d.vocab.blank
        T = len(arr)
        mask, has = token_candidates(arr, blank, d.options.token_min_logp)
        tt, vv = np.nonzero(mask)
        bounds: list[int] = np.searchsorted(tt, np.arange(T + 1)).tolist()
        has_l: list[bool] = list(has.tolist())
        t = 0
        while t < T:
            if has_l[t]:
                self._advance(arr[t], vv[bounds[t] : bounds[t + 1]])
                self.t += 1
                t += 1
            else:
                e = t + 1
                while e < T and not has_l[e]:
                    e += 1
                self._stay_run(arr[t:e])
                t = e

    # -- results ---------------------------------------------------------------------------------
    def finals(self, limit: int | None = None) -> list[Final]:
        """The beam as final hypotheses ``(total, node, components)``, best first, one per text."""
        return final_hypotheses(self, limit)

    def hypothesis(self, node: int, scores: Mapping[str, float]) -> ScoredHypothesis:
        return to_hypothesis(self, node, scores)

    def finish(
        self, *, utt_id: str = "utt", ref: str | None = None, tags: Mapping[str, Any] | None = None,
        logprobs: np.ndarray | None = None,
    ) -> NBestList:
        """The n-best list; with the utterance's ``logprobs`` its hypotheses are force-aligned
        (:mod:`decoders.ctc.align`)."""
        return to_nbest(self, utt_id=utt_id, ref=ref, tags=tags, logprobs=logprobs)
