"""Batched beam search over any autoregressive step function, with fusion scorers plugged in.

The decoder is a step function ``step(prefixes, model_state) -> (logprobs, model_state)``:
``prefixes`` is a LongTensor ``[N, t]`` (the start prompt plus the tokens so far, one row per live
hypothesis) and ``logprobs`` a float tensor ``[N, V]`` of next-token log-probabilities. An optional
``reorder(model_state, index)`` gathers the model state (a KV cache, say) after the beams were
reordered. Several utterances are searched at once: row ``u * beam + k`` is beam ``k`` of
utterance ``u``; ``init_state`` must already hold ``n_utts * beam`` rows.

Each step the combined score of a candidate token is
``w["am"] * logprob + Σ_scorer w[name] * score``; full scorers score the whole vocabulary, partial
scorers (KenLM, word-level LMs) only the pre-beam top ``pre_beam`` candidates of each hypothesis.
The search itself follows Hugging Face's ``generate(num_beams=...)`` (transformers 5): per utterance
the top ``2 * beam`` continuations are taken; end-of-sentence candidates among the top ``beam``
finish (score divided by ``generated_length ** length_penalty``, the length counting the
end-of-sentence token); the best ``beam`` others live on; with ``early_stopping=True`` an utterance
stops once it holds ``beam`` finished hypotheses, otherwise when no live beam can still beat the
worst finished one. At ``max_len`` generated tokens every candidate finishes and scorers add their
:meth:`~fusion.scorers.Scorer.final_score`. With all LM weights 0 it produces what
``model.generate(num_beams=beam, length_penalty=..., early_stopping=...)`` produces.

The output is one :class:`~decoders.hypothesis.NBestList` per utterance whose hypotheses carry the
unweighted components: ``"am"``, one per scorer name, ``"tokens"`` (tokens without ``</s>``) and,
when ``token_units`` is given, ``"words"`` (tokens that start a word).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decoders.hypothesis import NBestList, ScoredHypothesis
from fusion.errors import LMFusionError
from fusion.scorers import Scorer, apply_interpolation
from fusion.token_units import WORD_START, count_words
from fusion.weights import (
    AM,
    PolicyLike,
    UtteranceContext,
    as_policy,
    check_finite_scores,
    resolve_per_utterance,
    weight_arrays,
    weighted,
)

StepFn = Callable[[Any, Any], tuple[Any, Any]]
ReorderFn = Callable[[Any, Any], Any]

NEG = -1.0e9


@dataclass(frozen=True)
class BeamConfig:
    """Beam search settings.

    Attributes:
        beam: beams per utterance.
        max_len: most generated tokens (end-of-sentence included), like HF's ``max_new_tokens``.
        length_penalty: finished score ``/ generated_length ** length_penalty`` (HF semantics; 0 = off).
        early_stopping: stop an utterance once it has ``beam`` finished hypotheses (HF ``early_stopping=True``).
        pre_beam: candidates per hypothesis for partial scorers: an int, or a float times ``beam``.
        nbest: hypotheses returned per utterance (default: ``beam``).
        final_scores: add scorers' ``final_score`` to hypotheses closed at ``max_len`` without ``</s>``
            (``False`` reproduces ``generate()`` with a :class:`decoders.hf.FusionLogitsProcessor` built
            without ``max_new_tokens``).
    """

    beam: int = 5
    max_len: int = 100
    length_penalty: float = 1.0
    early_stopping: bool = True
    pre_beam: float | int = 1.5
    nbest: int | None = None
    final_scores: bool = True

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        if self.nbest is not None and not 1 <= self.nbest <= self.beam:
            raise ValueError(f"nbest must be in 1..beam, got {self.nbest}")

    @property
    def n_pre_beam(self) -> int:
        n = self.pre_beam if isinstance(self.pre_beam, int) else round(self.pre_beam * self.beam)
        return max(1, n)


@dataclass
class _Finished:
    score: float
    tokens: list[int]
    comps: np.ndarray


@dataclass
class _StepScores:
    """One step's scores: the model's, each scorer's, and the candidates they were taken over."""

    am: np.ndarray  # [N, V]
    full: dict[str, np.ndarray]  # full scorers, [N, V]
    partial: dict[str, np.ndarray]  # partial scorers, [N, M] over cand
    ctxs: dict[str, Any]
    cand: np.ndarray  # [N, M] candidate ids
    cand_total: np.ndarray  # [N, M] weighted totals


def _to_numpy(logprobs: Any) -> np.ndarray:
    if hasattr(logprobs, "detach"):
        return logprobs.detach().to("cpu").double().numpy()
    return np.asarray(logprobs, dtype=np.float64)


def _contexts(n_utts: int, utt_ids: Sequence[str] | None, tags: Sequence[Mapping[str, Any]] | None
              ) -> list[UtteranceContext]:
    if utt_ids is not None and len(utt_ids) != n_utts:
        raise ValueError(f"{len(utt_ids)} utt_ids for {n_utts} utterances")
    if tags is not None and len(tags) != n_utts:
        raise LMFusionError(f"{len(tags)} tag sets for {n_utts} utterances")
    return [
        UtteranceContext(utt_id=None if utt_ids is None else utt_ids[u], tags=dict(tags[u] or {}) if tags else {})
        for u in range(n_utts)
    ]


class _BeamSearch:
    """One batched beam search (see :func:`beam_search`): set-up, then score / select / finish / advance."""

    def __init__(self, n_utts: int, eos_id: int, scorers: Sequence[Scorer], weights: PolicyLike,
                 config: BeamConfig, contexts: Sequence[UtteranceContext]) -> None:
        self.names = [AM, *[s.name for s in scorers]]
        if len(set(self.names)) != len(self.names):
            raise LMFusionError(f"score component names must be unique, got {self.names}")
        policy = as_policy(weights)
        self.w = weight_arrays(resolve_per_utterance(policy, self.names[1:], contexts), self.names[1:])
        scorers = apply_interpolation(scorers, [policy.interpolation_for(c) for c in contexts])
        self.scorers = list(scorers)
        self.active = [s for s in scorers if np.any(self.w[s.name] != 0.0)]
        self.full = [s for s in self.active if not s.is_partial]
        self.partial = [s for s in self.active if s.is_partial]
        self.n_utts, self.eos_id, self.cfg, self.K = n_utts, eos_id, config, config.beam
        self.N = n_utts * config.beam
        self.col = {n: i for i, n in enumerate(self.names)}
        self.w_row = {n: np.repeat(v, self.K)[:, None] for n, v in self.w.items()}  # [N, 1]
        self.hyps: list[list[int]] = [[] for _ in range(self.N)]
        self.beam_scores = np.full((n_utts, self.K), NEG, dtype=np.float64)
        self.beam_scores[:, 0] = 0.0
        self.comps = np.zeros((self.N, len(self.names)), dtype=np.float64)
        self.states: dict[str, list[Any]] = {s.name: [s.init_state()] * self.N for s in self.active}
        self.finished: list[list[_Finished]] = [[] for _ in range(n_utts)]
        self.accepting = np.ones(n_utts, dtype=bool)
        self.V: int | None = None

    def check_model_scores(self, am: np.ndarray, t: int) -> None:
        """Shape and NaN checks of the step function's output (vocabulary sizes at the first step)."""
        if am.shape[0] != self.N:
            raise LMFusionError(f"step function returned {am.shape[0]} rows for {self.N} hypotheses")
        if np.isnan(am).any():
            raise LMFusionError(f"step function returned NaN log-probabilities at step {t}")
        if self.V is None:
            self.V = V = am.shape[1]
            for s in self.scorers:
                if s.vocab_size != V:
                    raise LMFusionError(f"scorer {s.name!r} covers {s.vocab_size} token ids but the decoder has {V}")
            if not 0 <= self.eos_id < V:
                raise LMFusionError(f"eos_id {self.eos_id} outside the decoder vocabulary of size {V}")

    def score(self, am: np.ndarray) -> _StepScores:
        """Full scorers over the vocabulary, pre-beam candidates, then partial scorers over them."""
        V = am.shape[1]
        total = weighted(self.w_row[AM], am)
        full: dict[str, np.ndarray] = {}
        ctxs: dict[str, Any] = {}
        for s in self.full:
            sc, ctxs[s.name] = s.score(self.hyps, self.states[s.name], None)
            check_finite_scores(s.name, sc)
            full[s.name] = sc
            total = total + weighted(self.w_row[s.name], sc)
        M = min(V, self.cfg.n_pre_beam if self.partial else 2 * self.K)
        cand = np.argpartition(-total, M - 1, axis=1)[:, :M] if M < V else np.tile(np.arange(V), (self.N, 1))
        cand_total = np.take_along_axis(total, cand, axis=1)
        part: dict[str, np.ndarray] = {}
        for s in self.partial:
            sc, ctxs[s.name] = s.score(self.hyps, self.states[s.name], cand)
            check_finite_scores(s.name, sc)
            part[s.name] = sc
            cand_total = cand_total + weighted(self.w_row[s.name], sc)
        return _StepScores(am, full, part, ctxs, cand, cand_total)

    def cand_comps(self, sc: _StepScores, row: int, k: int, tok: int) -> np.ndarray:
        """The unweighted components of hypothesis ``row`` extended by candidate ``k`` (token ``tok``)."""
        c = self.comps[row].copy()
        c[0] += sc.am[row, tok]
        for n, s in sc.full.items():
            c[self.col[n]] += s[row, tok]
        for n, s in sc.partial.items():
            c[self.col[n]] += s[row, k]
        return c

    def finish(self, sc: _StepScores, u: int, row: int, k: int, tok: int, score: float, gen_len: int) -> None:
        """Close a hypothesis (``</s>``, or any token at the length limit, adding final scores)."""
        c = self.cand_comps(sc, row, k, tok)
        fin = score
        if tok != self.eos_id and self.cfg.final_scores:
            for s in self.active:
                after = s.select_state(sc.ctxs[s.name], [row], [tok])[0]
                f = s.final_score(after)
                c[self.col[s.name]] += f
                fin += self.w[s.name][u] * f
        fins = self.finished[u]
        fins.append(_Finished(fin / (gen_len**self.cfg.length_penalty), [*self.hyps[row], tok], c))
        fins.sort(key=lambda f: -f.score)
        del fins[self.K:]

    def select(self, sc: _StepScores, u: int, gen_len: int, last: bool) -> list[tuple[float, int, int, int]]:
        """Utterance ``u``'s top ``2 * beam`` continuations: finish the ended ones, return ``beam`` live ones."""
        K = self.K
        rows = slice(u * K, (u + 1) * K)
        acc = (self.beam_scores[u][:, None] + sc.cand_total[rows]).reshape(-1)
        top = np.argsort(-acc, kind="stable")[: min(2 * K, acc.size)]
        live: list[tuple[float, int, int, int]] = []
        ended: list[tuple[float, int, int, int]] = []
        for rank, flat in enumerate(top.tolist()):
            b, k = divmod(flat, sc.cand_total.shape[1])
            row = u * K + b
            tok = int(sc.cand[row, k])
            score = float(acc[flat])
            if tok == self.eos_id or last:
                ended.append((score, row, k, tok))
                if rank < K and self.accepting[u] and score > NEG / 2:
                    self.finish(sc, u, row, k, tok, score, gen_len)
            elif len(live) < K:
                live.append((score, row, k, tok))
        for e in ended:  # not enough continuations: pad with dead ones (HF does the same)
            if len(live) >= K:
                break
            live.append((NEG + e[0], e[1], e[2], e[3]))
        while len(live) < K:
            live.append((2 * NEG, *live[-1][1:]))
        return live

    def stop_rule(self, u: int, best_running: float, gen_len: int) -> None:
        """HF generate's stopping rules: stop accepting once ``beam`` finished ones cannot be beaten."""
        fins = self.finished[u]
        if len(fins) == self.K:
            if self.cfg.early_stopping or best_running / (gen_len**self.cfg.length_penalty) <= fins[-1].score:
                self.accepting[u] = False

    def advance(self, sc: _StepScores, sel: np.ndarray, new_scores: np.ndarray) -> None:
        """Reorder hypotheses, components and scorer states to the selected ``(row, k, token)`` rows."""
        rows, toks = sel[:, 0], sel[:, 2]
        self.comps = np.stack([self.cand_comps(sc, int(r), int(k), int(t)) for r, k, t in sel])
        for s in self.active:
            self.states[s.name] = s.select_state(sc.ctxs[s.name], rows.tolist(), toks.tolist())
        self.hyps = [self.hyps[int(r)] + [int(t)] for r, t in zip(rows, toks, strict=True)]
        self.beam_scores = new_scores

    def step(self, sc: _StepScores, t: int) -> np.ndarray | None:
        """Select every utterance's beams after step ``t``; ``None`` when the search is over."""
        gen_len = t + 1
        last = gen_len == self.cfg.max_len
        sel = np.zeros((self.N, 3), dtype=np.int64)
        new_scores = np.full((self.n_utts, self.K), NEG, dtype=np.float64)
        for u in range(self.n_utts):
            live = self.select(sc, u, gen_len, last)
            for b, (score, row, k, tok) in enumerate(live):
                sel[u * self.K + b] = (row, k, tok)
                new_scores[u, b] = score
            self.stop_rule(u, new_scores[u, 0], gen_len)
        if last or not self.accepting.any():
            return None
        self.advance(sc, sel, new_scores)
        return sel

    def nbest(self, u: int, token_units: Sequence[str | None] | None,
              detokenize: Callable[[list[int]], str] | None) -> list[ScoredHypothesis]:
        """Utterance ``u``'s finished hypotheses as scored hypotheses (``tokens``/``words`` counts added)."""
        out = []
        for fin_h in self.finished[u][: self.cfg.nbest or self.K]:
            ids = [x for x in fin_h.tokens if x != self.eos_id]
            scores = {n: float(fin_h.comps[self.col[n]]) for n in self.names}
            scores.setdefault("tokens", float(len(ids)))
            units: tuple[str, ...] = ()
            if token_units is not None:
                us = [token_units[x] for x in ids]
                units = tuple(x if x is not None else f"<{i}>" for x, i in zip(us, ids, strict=True))
                scores.setdefault("words", float(count_words(us)))
            if detokenize is not None:
                text = detokenize(ids)
            elif token_units is not None:
                text = "".join(x for x in units if not x.startswith("<")).replace(WORD_START, " ").strip()
            else:
                text = " ".join(str(x) for x in ids)
            out.append(ScoredHypothesis(" ".join(text.split()), scores, units or tuple(str(x) for x in ids)))
        return out


def beam_search(
    step: StepFn,
    init_state: Any,
    n_utts: int,
    *,
    eos_id: int,
    start_ids: Sequence[int],
    scorers: Sequence[Scorer] = (),
    weights: PolicyLike = None,
    config: BeamConfig = BeamConfig(),
    reorder: ReorderFn | None = None,
    token_units: Sequence[str | None] | None = None,
    detokenize: Callable[[list[int]], str] | None = None,
    utt_ids: Sequence[str] | None = None,
    refs: Sequence[str | None] | None = None,
    tags: Sequence[Mapping[str, Any]] | None = None,
) -> list[NBestList]:
    """Beam search ``n_utts`` utterances at once; see the module docstring.

    Args:
        step: the decoder step function.
        init_state: model state for ``n_utts * beam`` rows (e.g. encoder output repeated per beam).
        n_utts: number of utterances.
        eos_id: end-of-sentence id.
        start_ids: the prompt every hypothesis starts from (e.g. ``[decoder_start_token_id]``).
        scorers: fusion scorers (their names are the weights' keys).
        weights: weights with :mod:`fusion.weights`' one meaning (``am`` 1 unless given, a scorer without
            a weight 0 and not run), a :class:`~fusion.profile.FusionProfile` or its path, or any
            :class:`~fusion.weights.WeightPolicy`: each utterance gets the weights (and the linear
            mixture λ) its ``tags`` select.
        config: beam settings.
        reorder: ``reorder(model_state, index LongTensor[N]) -> model_state`` after beam selection.
        token_units: decoder id -> unit string, for ``tokens`` output and the ``"words"`` count.
        detokenize: ids (without ``</s>``) -> text (default: units joined sentencepiece-style, or ids).
        utt_ids, refs, tags: per-utterance metadata copied into the n-best lists.

    Raises:
        LMFusionError: NaN log-probabilities, a scorer whose vocabulary size differs from the
            decoder's, duplicate scorer names, or bad weights.
    """
    import torch

    search = _BeamSearch(n_utts, eos_id, scorers, weights, config, _contexts(n_utts, utt_ids, tags))
    prefixes = torch.tensor([list(start_ids)] * search.N, dtype=torch.long)
    model_state = init_state
    for t in range(config.max_len):
        logprobs, model_state = step(prefixes, model_state)
        am = _to_numpy(logprobs)
        search.check_model_scores(am, t)
        sel = search.step(search.score(am), t)
        if sel is None:
            break
        idx = torch.as_tensor(sel[:, 0], dtype=torch.long)
        prefixes = torch.cat([prefixes[idx], torch.as_tensor(sel[:, 2], dtype=torch.long)[:, None]], dim=1)
        if reorder is not None:
            model_state = reorder(model_state, idx)
    return [
        NBestList(
            utt_id=utt_ids[u] if utt_ids is not None else f"utt{u}",
            hyps=tuple(search.nbest(u, token_units, detokenize)),
            ref=None if refs is None else refs[u],
            tags=dict(tags[u]) if tags is not None else {},
        )
        for u in range(n_utts)
    ]


def greedy_search(
    step: StepFn, init_state: Any, n_utts: int, *, eos_id: int, start_ids: Sequence[int], max_len: int,
    reorder: ReorderFn | None = None,
) -> list[list[int]]:
    """Plain greedy decoding (argmax each step; the reference that ``beam=1`` must equal)."""
    import torch

    prefixes = torch.tensor([list(start_ids)] * n_utts, dtype=torch.long)
    out: list[list[int]] = [[] for _ in range(n_utts)]
    done = [False] * n_utts
    state = init_state
    for _ in range(max_len):
        lp, state = step(prefixes, state)
        nxt = _to_numpy(lp).argmax(axis=1)
        for u in range(n_utts):
            if not done[u]:
                out[u].append(int(nxt[u]))
                done[u] = int(nxt[u]) == eos_id
        if all(done):
            break
        prefixes = torch.cat([prefixes, torch.as_tensor(nxt, dtype=torch.long)[:, None]], dim=1)
    return out
