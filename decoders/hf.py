"""Shallow fusion inside Hugging Face ``model.generate(num_beams=...)``, and HF models as step functions.

:class:`FusionLogitsProcessor` adds ``Σ_k w[k] * score_k`` of lmfusion scorers to the log-probs HF
beam search sees. A LogitsProcessor is never told how beams were reordered, so the processor keeps
each scorer's state in a cache keyed by the token prefix: a row's prefix is its parent's prefix
(scored in the previous call) plus one token, so its state is the parent's state extended by that
token (``Scorer.select_state``) — the prefix is never re-scored (unlike whisper-lm, which re-decodes
and re-scores the whole text every step). Works for encoder-decoder models (Marian, T5, BART) and
Whisper; the prompt (decoder start token, Whisper's task tokens) is the part of ``input_ids`` present
at the first call and is not shown to the scorers.

:func:`hf_step` wraps an HF encoder-decoder model as a step function for
:func:`decoders.seq2seq.beam_search` (encoder run once, KV cache reordered with the beams), which
returns n-best lists with per-component scores.

``transformers`` is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.profile import FusionProfile
from fusion.scorers import Scorer, check_finite_scores, per_utterance_weights, weighted


class FusionLogitsProcessor:
    """A ``transformers`` LogitsProcessor that fuses LM scorers into ``generate()``.

    Args:
        scorers: lmfusion scorers over the model's vocabulary (``vocab_size`` = logits width).
        weights: ``{"am": 1.0, name: weight}``; the model's log-probs are scaled by ``weights["am"]``. Or a
            :class:`~fusion.profile.FusionProfile` with ``tags``: each utterance of the batch gets the weights
            its tags select (rows ``u * num_beams ... (u + 1) * num_beams - 1`` are utterance ``u``).
        tags: one tag mapping per utterance of the ``generate()`` batch (for a profile).
        pre_beam: candidates per row for partial scorers (top-k of the model + full scorers);
            other tokens get ``-inf`` (use at least ``2 * num_beams``, what generate() looks at).
        prompt_len: number of leading ``input_ids`` that are the prompt; ``None``: the length at
            the first call of each ``generate()`` run.
        record: keep every call's added fused scores in :attr:`history` (for tests/diagnostics).

    The processor can be reused across ``generate()`` calls: a call whose ``input_ids`` are not exactly
    one token longer than the previous call's starts a new run (the cache is cleared, the prompt length
    re-read).
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        weights: Mapping[str, float] | FusionProfile,
        *,
        tags: Sequence[Mapping[str, Any] | None] | None = None,
        pre_beam: int = 16,
        prompt_len: int | None = None,
        record: bool = False,
    ) -> None:
        names = ["am", *[s.name for s in scorers]]
        if len(set(names)) != len(names):
            raise LMFusionError(f"score component names must be unique, got {names}")
        self.n_utts = 1 if tags is None else len(tags)
        self.utt_weights = per_utterance_weights(weights, names, self.n_utts, tags)
        """``{component: [n_utts]}``: the weights of each utterance of the batch."""
        self.weights = {n: float(v[0]) for n, v in self.utt_weights.items()}
        self.scorers = [s for s in scorers if np.any(self.utt_weights[s.name] != 0.0)]
        self.pre_beam = int(pre_beam)
        self.fixed_prompt_len = prompt_len
        self.record = record
        self.history: list[tuple[list[tuple[int, ...]], np.ndarray]] = []
        self.rebuilds = 0
        """How many prefixes had no cached parent and were rebuilt from the empty state (should stay 0)."""
        self.reset()

    def reset(self) -> None:
        """Forget all cached states (a new ``generate()`` run)."""
        self.prompt_len: int | None = self.fixed_prompt_len
        self._last_len = -1
        self._states: dict[str, dict[tuple[int, ...], Any]] = {s.name: {} for s in self.scorers}
        self._pending: dict[str, tuple[Any, dict[tuple[int, ...], int]]] = {}

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

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        n, length = input_ids.shape
        if length != self._last_len + 1:  # within one generate() run each call is one token longer
            self.reset()
        self._last_len = length
        if self.prompt_len is None:
            self.prompt_len = length
        if torch.isnan(scores).any():
            raise LMFusionError("the model's scores contain NaN")
        if n % self.n_utts:
            raise LMFusionError(f"{n} rows is not a whole number of beams for {self.n_utts} utterances (tags)")
        w = {k: np.repeat(v, n // self.n_utts)[:, None] for k, v in self.utt_weights.items()}  # [n, 1]
        ids = input_ids.detach().cpu().numpy()
        prefixes = [tuple(row) for row in ids[:, self.prompt_len :].tolist()]
        hyps = prefixes
        V = scores.shape[1]
        base = scores.detach().double().cpu().numpy()
        added = np.zeros((n, V), dtype=np.float64)
        ctxs: dict[str, Any] = {}
        for s in self.scorers:
            if s.vocab_size != V:
                raise LMFusionError(f"scorer {s.name!r} covers {s.vocab_size} token ids but the model scores {V}")
        for s in (x for x in self.scorers if not x.is_partial):
            sc, ctxs[s.name] = s.score(hyps, self._states_for(s, prefixes), None)
            check_finite_scores(s.name, sc)
            added += weighted(w[s.name], sc)
        partial = [x for x in self.scorers if x.is_partial]
        if partial:
            fused = weighted(w["am"], base) + added
            m = min(self.pre_beam, V)
            cand = np.argpartition(-fused, m - 1, axis=1)[:, :m]
            extra = np.zeros(cand.shape, dtype=np.float64)
            for s in partial:
                sc, ctxs[s.name] = s.score(hyps, self._states_for(s, prefixes), cand)
                check_finite_scores(s.name, sc)
                extra += weighted(w[s.name], sc)
            mask = np.full((n, V), -np.inf)
            np.put_along_axis(mask, cand, 0.0, axis=1)
            np.put_along_axis(added, cand, np.take_along_axis(added, cand, axis=1) + extra, axis=1)
            added = added + mask
        index = {p: i for i, p in enumerate(prefixes)}
        for s in self.scorers:
            self._pending[s.name] = (ctxs[s.name], index)
            # keep only the states of the current prefixes (their children come next call)
            keep = set(prefixes)
            self._states[s.name] = {p: st for p, st in self._states[s.name].items() if p in keep}
        if self.record:
            self.history.append((prefixes, added.copy()))
        am_w = torch.as_tensor(w["am"], dtype=scores.dtype, device=scores.device)
        out = am_w * scores + torch.as_tensor(added, dtype=scores.dtype, device=scores.device)
        return out


def as_logits_processor_list(proc: FusionLogitsProcessor) -> Any:
    """Wrap in ``transformers.LogitsProcessorList`` (for ``generate(logits_processor=...)``)."""
    from transformers import LogitsProcessorList

    return LogitsProcessorList([proc])


# ----------------------------------------------------------------------------------------------
# HF encoder-decoder model as a step function
# ----------------------------------------------------------------------------------------------
class HFStep:
    """An HF encoder-decoder model as ``step(prefixes, state)`` for :func:`decoders.seq2seq.beam_search`.

    The encoder runs once; its output and attention mask are repeated ``beam`` times per utterance
    (row ``u * beam + k``). The state is the decoder KV cache, fed only the last token after the first
    step and reordered with :meth:`reorder`.

    Args:
        model: e.g. ``MarianMTModel``, ``T5ForConditionalGeneration``, ``WhisperForConditionalGeneration``.
        inputs: the encoder inputs of ``n_utts`` utterances (``input_ids`` + ``attention_mask``, or
            ``input_features``).
        beam: beams per utterance.
    """

    def __init__(self, model: Any, inputs: Mapping[str, Any], beam: int) -> None:
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        self.model = model.eval()
        enc_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "input_features")}
        with torch.inference_mode():
            enc = model.get_encoder()(**enc_inputs, return_dict=True)
        h = enc.last_hidden_state.repeat_interleave(beam, dim=0)
        self.encoder_outputs = BaseModelOutput(last_hidden_state=h)
        am = inputs.get("attention_mask")
        self.attention_mask = None if am is None else am.repeat_interleave(beam, dim=0)
        first = next(iter(enc_inputs.values()))
        self.n_utts = int(first.shape[0])
        self.beam = beam
        import inspect

        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def init_state(self) -> Any:
        return None

    def __call__(self, prefixes: Any, past: Any) -> tuple[Any, Any]:
        import torch

        with torch.inference_mode():
            out = self.model(
                encoder_outputs=self.encoder_outputs,
                attention_mask=self.attention_mask,
                decoder_input_ids=prefixes if past is None else prefixes[:, -1:],
                use_cache=True,
                **{self._cache_kw: past},
                return_dict=True,
            )
        logits = out.logits[:, -1, :].float()
        return torch.log_softmax(logits, dim=-1), out.past_key_values

    @staticmethod
    def reorder(past: Any, index: Any) -> Any:
        if past is None:
            return None
        if hasattr(past, "reorder_cache"):
            past.reorder_cache(index)
            return past
        return tuple(tuple(t.index_select(0, index) for t in layer) for layer in past)


def hf_beam_search(
    model: Any,
    inputs: Mapping[str, Any],
    *,
    token_units: Sequence[str | None] | None = None,
    scorers: Sequence[Scorer] = (),
    weights: Mapping[str, float] | FusionProfile | None = None,
    config: Any = None,
    start_ids: Sequence[int] | None = None,
    eos_id: int | None = None,
    **kwargs: Any,
) -> list[Any]:
    """lmfusion's beam search over an HF encoder-decoder model: n-best lists with per-component scores.

    ``start_ids`` defaults to ``[model.config.decoder_start_token_id]`` and ``eos_id`` to
    ``model.config.eos_token_id``; other keyword arguments go to :func:`decoders.seq2seq.beam_search`.
    """
    from decoders.seq2seq import BeamConfig, beam_search

    cfg = config or BeamConfig()
    step = HFStep(model, inputs, cfg.beam)
    if start_ids is None:
        start_ids = [int(model.config.decoder_start_token_id)]
    if eos_id is None:
        eos = model.config.eos_token_id
        eos_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
    return beam_search(
        step, step.init_state(), step.n_utts, eos_id=eos_id, start_ids=start_ids, scorers=scorers,
        weights=weights, config=cfg, reorder=HFStep.reorder, token_units=token_units, **kwargs,
    )
