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
from fusion.profile import FusionProfile
from fusion.scorers import WORD_START, Scorer, check_finite_scores, per_utterance_weights, weighted

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
            (``False`` reproduces ``generate()`` with a :class:`decoders.hf.FusionLogitsProcessor`).
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


def _to_numpy(logprobs: Any) -> np.ndarray:
    if hasattr(logprobs, "detach"):
        return logprobs.detach().to("cpu").double().numpy()
    return np.asarray(logprobs, dtype=np.float64)


def beam_search(
    step: StepFn,
    init_state: Any,
    n_utts: int,
    *,
    eos_id: int,
    start_ids: Sequence[int],
    scorers: Sequence[Scorer] = (),
    weights: Mapping[str, float] | FusionProfile | None = None,
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
        weights: ``{"am": 1.0, name: weight, ...}``; a missing scorer weight is 0 (not run). Or a
            :class:`~fusion.profile.FusionProfile`: each utterance gets the weights its ``tags`` select.
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

    names = ["am", *[s.name for s in scorers]]
    if len(set(names)) != len(names):
        raise LMFusionError(f"score component names must be unique, got {names}")
    w = per_utterance_weights(weights, names, n_utts, tags)  # [n_utts] per component
    active = [s for s in scorers if np.any(w[s.name] != 0.0)]
    full = [s for s in active if not s.is_partial]
    partial = [s for s in active if s.is_partial]
    K = config.beam
    w_row = {n: np.repeat(v, K)[:, None] for n, v in w.items()}  # [n_utts * beam, 1]
    N = n_utts * K
    C = len(names)
    col = {n: i for i, n in enumerate(names)}
    if utt_ids is not None and len(utt_ids) != n_utts:
        raise ValueError(f"{len(utt_ids)} utt_ids for {n_utts} utterances")

    prefixes = torch.tensor([list(start_ids)] * N, dtype=torch.long)
    hyps: list[list[int]] = [[] for _ in range(N)]
    beam_scores = np.full((n_utts, K), NEG, dtype=np.float64)
    beam_scores[:, 0] = 0.0
    comps = np.zeros((N, C), dtype=np.float64)
    states: dict[str, list[Any]] = {s.name: [s.init_state()] * N for s in active}
    finished: list[list[_Finished]] = [[] for _ in range(n_utts)]
    accepting = np.ones(n_utts, dtype=bool)
    model_state = init_state
    lp_pow = config.length_penalty
    V: int | None = None

    for t in range(config.max_len):
        logprobs, model_state = step(prefixes, model_state)
        am = _to_numpy(logprobs)
        if am.shape[0] != N:
            raise LMFusionError(f"step function returned {am.shape[0]} rows for {N} hypotheses")
        if np.isnan(am).any():
            raise LMFusionError(f"step function returned NaN log-probabilities at step {t}")
        if V is None:
            V = am.shape[1]
            for s in scorers:
                if s.vocab_size != V:
                    raise LMFusionError(
                        f"scorer {s.name!r} covers {s.vocab_size} token ids but the decoder has {V}"
                    )
            if not 0 <= eos_id < V:
                raise LMFusionError(f"eos_id {eos_id} outside the decoder vocabulary of size {V}")
        total = weighted(w_row["am"], am)
        full_scores: dict[str, np.ndarray] = {}
        ctxs: dict[str, Any] = {}
        for s in full:
            sc, ctxs[s.name] = s.score(hyps, states[s.name], None)
            check_finite_scores(s.name, sc)
            full_scores[s.name] = sc
            total = total + weighted(w_row[s.name], sc)
        M = min(V, config.n_pre_beam if partial else 2 * K)
        cand = np.argpartition(-total, M - 1, axis=1)[:, :M] if M < V else np.tile(np.arange(V), (N, 1))
        cand_total = np.take_along_axis(total, cand, axis=1)
        part_scores: dict[str, np.ndarray] = {}
        for s in partial:
            sc, ctxs[s.name] = s.score(hyps, states[s.name], cand)
            check_finite_scores(s.name, sc)
            part_scores[s.name] = sc
            cand_total = cand_total + weighted(w_row[s.name], sc)
        gen_len = t + 1
        last = gen_len == config.max_len

        sel_rows = np.zeros(N, dtype=np.int64)
        sel_toks = np.zeros(N, dtype=np.int64)
        sel_k = np.zeros(N, dtype=np.int64)
        new_scores = np.full((n_utts, K), NEG, dtype=np.float64)

        def cand_comps(row: int, k: int, tok: int, comps: np.ndarray = comps, am: np.ndarray = am,
                       full_scores: dict[str, np.ndarray] = full_scores,
                       part_scores: dict[str, np.ndarray] = part_scores) -> np.ndarray:
            c = comps[row].copy()
            c[0] += am[row, tok]
            for n, sc in full_scores.items():
                c[col[n]] += sc[row, tok]
            for n, sc in part_scores.items():
                c[col[n]] += sc[row, k]
            return c

        for u in range(n_utts):
            rows = slice(u * K, (u + 1) * K)
            acc = (beam_scores[u][:, None] + cand_total[rows]).reshape(-1)
            n_top = min(2 * K, acc.size)
            top = np.argsort(-acc, kind="stable")[:n_top]
            live: list[tuple[float, int, int, int]] = []
            ended: list[tuple[float, int, int, int]] = []
            for rank, flat in enumerate(top.tolist()):
                b, k = divmod(flat, cand_total.shape[1])
                row = u * K + b
                tok = int(cand[row, k])
                score = float(acc[flat])
                if tok == eos_id or last:
                    ended.append((score, row, k, tok))
                    if rank < K and accepting[u] and score > NEG / 2:
                        c = cand_comps(row, k, tok)
                        fin = score
                        if tok != eos_id and config.final_scores:
                            for s in active:
                                after = s.select_state(ctxs[s.name], [row], [tok])[0]
                                f = s.final_score(after)
                                c[col[s.name]] += f
                                fin += w[s.name][u] * f
                        toks = [*hyps[row], tok]
                        finished[u].append(_Finished(fin / (gen_len**lp_pow), toks, c))
                        finished[u].sort(key=lambda f: -f.score)
                        del finished[u][K:]
                elif len(live) < K:
                    live.append((score, row, k, tok))
            for e in ended:  # not enough continuations: pad with dead ones (HF does the same)
                if len(live) >= K:
                    break
                live.append((NEG + e[0], e[1], e[2], e[3]))
            while len(live) < K:
                live.append((2 * NEG, *live[-1][1:]))
            for b, (score, row, k, tok) in enumerate(live):
                sel_rows[u * K + b] = row
                sel_toks[u * K + b] = tok
                sel_k[u * K + b] = k
                new_scores[u, b] = score
            # stopping rules, as in HF generate
            full_now = len(finished[u]) == K
            if full_now:
                best_running = new_scores[u, 0] / (gen_len**lp_pow)
                if config.early_stopping or best_running <= finished[u][-1].score:
                    accepting[u] = False
        if last or not accepting.any():
            break
        # reorder and extend
        new_comps = np.empty_like(comps)
        for i in range(N):
            new_comps[i] = cand_comps(int(sel_rows[i]), int(sel_k[i]), int(sel_toks[i]))
        for s in active:
            states[s.name] = s.select_state(ctxs[s.name], sel_rows.tolist(), sel_toks.tolist())
        idx = torch.as_tensor(sel_rows, dtype=torch.long)
        prefixes = torch.cat([prefixes[idx], torch.as_tensor(sel_toks, dtype=torch.long)[:, None]], dim=1)
        hyps = [hyps[int(r)] + [int(tk)] for r, tk in zip(sel_rows, sel_toks, strict=True)]
        comps = new_comps
        beam_scores = new_scores
        if reorder is not None:
            model_state = reorder(model_state, idx)

    nb = config.nbest or K
    out: list[NBestList] = []
    for u in range(n_utts):
        hyps_out = []
        for fin_h in finished[u][:nb]:
            ids = [x for x in fin_h.tokens if x != eos_id]
            scores = {n: float(fin_h.comps[col[n]]) for n in names}
            scores.setdefault("tokens", float(len(ids)))
            units: tuple[str, ...] = ()
            if token_units is not None:
                us = [token_units[x] for x in ids]
                units = tuple(x if x is not None else f"<{i}>" for x, i in zip(us, ids, strict=True))
                scores.setdefault("words", float(sum(1 for x in us if x is not None and x.startswith(WORD_START))))
            if detokenize is not None:
                text = detokenize(ids)
            elif token_units is not None:
                text = "".join(x for x in units if not x.startswith("<")).replace(WORD_START, " ").strip()
            else:
                text = " ".join(str(x) for x in ids)
            hyps_out.append(ScoredHypothesis(" ".join(text.split()), scores, units or tuple(str(x) for x in ids)))
        out.append(
            NBestList(
                utt_id=utt_ids[u] if utt_ids is not None else f"utt{u}",
                hyps=tuple(hyps_out),
                ref=None if refs is None else refs[u],
                tags=dict(tags[u]) if tags is not None else {},
            )
        )
    return out


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
