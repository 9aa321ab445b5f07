"""Shallow fusion inside Hugging Face ``model.generate()``: :class:`FusionLogitsProcessor`.

The processor adds ``Σ_k w[k] * score_k`` of lmfusion scorers to the log-probs ``generate()`` sees (beam
search, greedy or sampling). A LogitsProcessor is never told how beams were reordered, so the processor
keeps each scorer's state in a cache keyed by the token prefix: a row's prefix is its parent's prefix
(scored in the previous call) plus one token, so its state is the parent's state extended by that token
(``Scorer.select_state``) — the prefix is never re-scored (unlike whisper-lm, which re-decodes and
re-scores the whole text every step). Works for encoder-decoder models (Marian, T5, BART), Whisper and
decoder-only LMs; the prompt (decoder start token, Whisper's task tokens, a decoder-only prompt) is the
part of ``input_ids`` present at the first call of a ``generate()`` run and is not shown to the scorers.

**Runs.** A call continues the current run only when every row is a row of the previous call plus one
token; anything else (another prompt, even one exactly one token longer than the last input) starts a new
run. :func:`fusion_generate` also resets explicitly before each ``generate()``.

**Partial scorers and sampling.** Partial scorers (KenLM, word LMs) score only the ``pre_beam`` best
tokens of each row, plus end-of-sentence (so an LM can always end a hypothesis: a word LM's cost of the
open word and ``ln P(</s>)`` is what stops it from paying for more words); the others get ``-inf`` — a
hidden top-k. For sampling set ``pre_beam=None`` (every
token is scored) or call :meth:`FusionLogitsProcessor.configure` with the generation settings (done by
:func:`fusion_generate`): ``top_k=0`` scores the whole vocabulary, ``top_k=k`` at least ``k`` tokens.

**Length limit.** ``generate()`` ends hypotheses at ``max_new_tokens`` without ``</s>``; given
``max_new_tokens`` the processor adds each scorer's ``final_score`` (the open last word, ``ln P(</s>)``) to
the candidates of the last step, as :func:`decoders.seq2seq.beam_search` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.scorers import Scorer, apply_interpolation
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

__all__ = ["FusionLogitsProcessor", "TimedProcessor", "as_logits_processor_list", "fusion_generate"]


class FusionLogitsProcessor:
    """A ``transformers`` LogitsProcessor that fuses LM scorers into ``generate()``.

    Args:
        scorers: lmfusion scorers over the model's vocabulary (``vocab_size`` = logits width).
        weights: weights with :mod:`fusion.weights`' one meaning (the model's log-probs are scaled by
            ``am``), a :class:`~fusion.profile.FusionProfile` or its path, or a
            :class:`~fusion.weights.WeightPolicy`: with ``tags``, each utterance of the batch gets its own
            weights and linear-mixture λ (rows ``u * num_beams ... (u + 1) * num_beams - 1`` are utterance ``u``).
        tags: one tag mapping per utterance of the ``generate()`` batch (for a profile or policy).
        pre_beam: candidates per row for partial scorers (top-k of the model + full scorers, and the
            partial scorers' end-of-sentence id); other tokens get ``-inf`` (use at least
            ``2 * num_beams``). ``None``: score every token (for sampling).
        prompt_len: number of leading ``input_ids`` that are the prompt; ``None``: the length at the first
            call of each run.
        max_new_tokens: the ``generate()`` length limit: at its last step the candidates get the scorers'
            final scores (``None``: no final scores).
        record: keep every call's added fused scores in :attr:`history` (for tests/diagnostics).
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        weights: PolicyLike,
        *,
        tags: Sequence[Mapping[str, Any] | None] | None = None,
        pre_beam: int | None = 16,
        prompt_len: int | None = None,
        max_new_tokens: int | None = None,
        record: bool = False,
    ) -> None:
        names = [AM, *[s.name for s in scorers]]
        if len(set(names)) != len(names):
            raise LMFusionError(f"score component names must be unique, got {names}")
        ctxs = [UtteranceContext(tags=dict(t or {})) for t in (tags if tags is not None else [None])]
        self.n_utts = len(ctxs)
        policy = as_policy(weights)
        self.utt_weights = weight_arrays(resolve_per_utterance(policy, names[1:], ctxs), names[1:])
        """``{component: [n_utts]}``: the weights of each utterance of the batch."""
        self.weights = {n: float(v[0]) for n, v in self.utt_weights.items()}
        scorers = apply_interpolation(scorers, [policy.interpolation_for(c) for c in ctxs])
        self.scorers = [s for s in scorers if np.any(self.utt_weights[s.name] != 0.0)]
        self.pre_beam = None if pre_beam is None else int(pre_beam)
        self._eos_ids = sorted({int(s.eos_id) for s in self.scorers if s.is_partial and s.eos_id is not None})
        self.max_new_tokens = max_new_tokens
        self.fixed_prompt_len = prompt_len
        self.record = record
        self.history: list[tuple[list[tuple[int, ...]], np.ndarray]] = []
        self.rebuilds = 0
        """How many prefixes had no cached parent and were rebuilt from the empty state (should stay 0)."""
        self.runs = 0
        """How many ``generate()`` runs this processor has seen."""
        self.reset()

    def reset(self) -> None:
        """Forget all cached states: the next call starts a new ``generate()`` run."""
        self.prompt_len: int | None = self.fixed_prompt_len
        self._last_rows: set[tuple[int, ...]] = set()
        self._states: dict[str, dict[tuple[int, ...], Any]] = {s.name: {} for s in self.scorers}
        self._pending: dict[str, tuple[Any, dict[tuple[int, ...], int]]] = {}

    def configure(self, generation_config: Any = None, **kwargs: Any) -> FusionLogitsProcessor:
        """Match ``pre_beam`` and ``max_new_tokens`` to the ``generate()`` settings (config and/or keywords).

        Sampling (``do_sample``) with ``top_k`` 0 or unset scores every token (``pre_beam=None``); with
        ``top_k=k`` at least ``k`` tokens. ``max_new_tokens`` is taken when given.
        """
        def get(key: str) -> Any:
            if key in kwargs:
                return kwargs[key]
            return getattr(generation_config, key, None) if generation_config is not None else None

        if get("do_sample"):
            top_k = get("top_k")
            self.pre_beam = None if not top_k or self.pre_beam is None else max(self.pre_beam, int(top_k))
        if get("max_new_tokens") is not None:
            self.max_new_tokens = int(get("max_new_tokens"))
        return self

    def _continues(self, ids: list[list[int]]) -> bool:
        """Whether a call continues the current run: each row is a previous row plus one token."""
        return bool(self._last_rows) and all(tuple(r[:-1]) in self._last_rows for r in ids)

    def _rebuild(self, s: Scorer, prefix: tuple[int, ...]) -> Any:
        self.rebuilds += 1
        st = s.init_state()
        for t in prefix:
            _, ctx = s.score([()], [st], np.array([[t]]))
            st = s.select_state(ctx, [0], [t])[0]
        return st

    def _states_for(self, s: Scorer, prefixes: list[tuple[int, ...]]) -> list[Any]:
        cache = self._states[s.name]
        pending = self._pending.get(s.name)
        out: list[Any] = [None] * len(prefixes)
        rows, toks, where = [], [], []
        for i, p in enumerate(prefixes):
            if p in cache:
                out[i] = cache[p]
            elif not p:
                out[i] = cache[p] = s.init_state()
            elif pending is not None and p[:-1] in pending[1]:
                rows.append(pending[1][p[:-1]])
                toks.append(p[-1])
                where.append(i)
            else:
                out[i] = cache[p] = self._rebuild(s, p)
        if rows:
            assert pending is not None
            new = s.select_state(pending[0], rows, toks)
            for i, st in zip(where, new, strict=True):
                out[i] = cache[prefixes[i]] = st
        return out

    def _start_call(self, input_ids: Any, scores: Any) -> tuple[list[tuple[int, ...]], dict[str, np.ndarray]]:
        """Checks, run bookkeeping, and each row's hypothesis prefix and weights ``[n, 1]``."""
        import torch

        n, length = input_ids.shape
        ids = input_ids.detach().cpu().tolist()
        if not self._continues(ids):
            self.reset()
            self.runs += 1
        self._last_rows = {tuple(r) for r in ids}
        if self.prompt_len is None:
            self.prompt_len = length
        if torch.isnan(scores).any():
            raise LMFusionError("the model's scores contain NaN")
        if n % self.n_utts:
            raise LMFusionError(f"{n} rows is not a whole number of beams for {self.n_utts} utterances (tags)")
        V = scores.shape[1]
        for s in self.scorers:
            if s.vocab_size != V:
                raise LMFusionError(f"scorer {s.name!r} covers {s.vocab_size} token ids but the model scores {V}")
        w = {k: np.repeat(v, n // self.n_utts)[:, None] for k, v in self.utt_weights.items()}  # [n, 1]
        return [tuple(row[self.prompt_len:]) for row in ids], w

    def _finals(self, prefixes: list[tuple[int, ...]], cand: np.ndarray, ctxs: dict[str, Any],
                w: dict[str, np.ndarray]) -> np.ndarray:
        """Weighted final scores of each row's candidates (the hypothesis ends there at the length limit)."""
        out = np.zeros(cand.shape, dtype=np.float64)
        rows = np.repeat(np.arange(cand.shape[0]), cand.shape[1]).tolist()
        toks = cand.reshape(-1).tolist()
        for s in self.scorers:
            after = s.select_state(ctxs[s.name], rows, toks)
            f = np.array([s.final_score(st) for st in after], dtype=np.float64).reshape(cand.shape)
            if s.eos_id is not None:
                f[cand == s.eos_id] = 0.0  # </s> was scored already
            out += weighted(w[s.name], f)
        return out

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        prefixes, w = self._start_call(input_ids, scores)
        n, V = scores.shape
        base = scores.detach().double().cpu().numpy()
        added = np.zeros((n, V), dtype=np.float64)
        ctxs: dict[str, Any] = {}
        for s in (x for x in self.scorers if not x.is_partial):
            sc, ctxs[s.name] = s.score(prefixes, self._states_for(s, prefixes), None)
            check_finite_scores(s.name, sc)
            added += weighted(w[s.name], sc)
        partial = [x for x in self.scorers if x.is_partial]
        last = self.max_new_tokens is not None and len(prefixes[0]) == self.max_new_tokens - 1
        if partial or (last and self.scorers):
            m = V if self.pre_beam is None else min(self.pre_beam, V)
            fused = weighted(w[AM], base) + added
            cand = np.argpartition(-fused, m - 1, axis=1)[:, :m] if m < V else np.tile(np.arange(V), (n, 1))
            if m < V and self._eos_ids:
                cand = np.concatenate([cand, np.tile(np.array(self._eos_ids), (n, 1))], axis=1)
            extra = np.zeros(cand.shape, dtype=np.float64)
            for s in partial:
                sc, ctxs[s.name] = s.score(prefixes, self._states_for(s, prefixes), cand)
                check_finite_scores(s.name, sc)
                extra += weighted(w[s.name], sc)
            if last:
                extra += self._finals(prefixes, cand, ctxs, w)
            mask = np.full((n, V), -np.inf)
            np.put_along_axis(mask, cand, 0.0, axis=1)
            np.put_along_axis(added, cand, np.take_along_axis(added, cand, axis=1) + extra, axis=1)
            added = added + mask
        self._remember(prefixes, ctxs)
        if self.record:
            self.history.append((prefixes, added.copy()))
        am_w = torch.as_tensor(w[AM], dtype=scores.dtype, device=scores.device)
        return am_w * scores + torch.as_tensor(added, dtype=scores.dtype, device=scores.device)

    def _remember(self, prefixes: list[tuple[int, ...]], ctxs: dict[str, Any]) -> None:
        """Keep this call's contexts (children come next call) and only the current prefixes' states."""
        index = {p: i for i, p in enumerate(prefixes)}
        keep = set(prefixes)
        for s in self.scorers:
            self._pending[s.name] = (ctxs[s.name], index)
            self._states[s.name] = {p: st for p, st in self._states[s.name].items() if p in keep}


def as_logits_processor_list(proc: FusionLogitsProcessor) -> Any:
    """Wrap in ``transformers.LogitsProcessorList`` (for ``generate(logits_processor=...)``)."""
    from transformers import LogitsProcessorList

    return LogitsProcessorList([proc])


def fusion_generate(model: Any, proc: FusionLogitsProcessor, **generate_kwargs: Any) -> Any:
    """``model.generate(**generate_kwargs)`` with ``proc`` fused in: reset, configured to the settings.

    The processor is reset (a new run), its ``pre_beam`` widened for sampling and its ``max_new_tokens``
    taken from the keywords or ``model.generation_config`` (see :meth:`FusionLogitsProcessor.configure`).
    """
    from transformers import LogitsProcessorList

    proc.reset()
    proc.configure(getattr(model, "generation_config", None), **generate_kwargs)
    extra = list(generate_kwargs.pop("logits_processor", None) or [])
    return model.generate(**generate_kwargs, logits_processor=LogitsProcessorList([proc, *extra]))


class TimedProcessor:
    """A logits processor wrapper that adds up the wall seconds spent in it (the LM part of a fused
    ``generate()``): ``generate(logits_processor=[TimedProcessor(proc)])``, then read ``.seconds``."""

    def __init__(self, proc: Any) -> None:
        self.proc, self.seconds = proc, 0.0

    def __call__(self, ids: Any, scores: Any) -> Any:
        import time

        t = time.perf_counter()
        out = self.proc(ids, scores)
        self.seconds += time.perf_counter() - t
        return out
