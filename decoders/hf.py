"""Hugging Face models in lmfusion: HF encoder-decoders as step functions, and the ``generate()`` hook.

:class:`~decoders.hf_logits.FusionLogitsProcessor` (in :mod:`decoders.hf_logits`, re-exported here)
fuses lmfusion scorers into ``model.generate()``.

:class:`HFStep` wraps an HF encoder-decoder model as a step function for
:func:`decoders.seq2seq.beam_search` (encoder run once, KV cache reordered with the beams), which
returns n-best lists with per-component scores.

``transformers`` is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from decoders.hf_logits import FusionLogitsProcessor, as_logits_processor_list, fusion_generate
from fusion.scorers import Scorer
from fusion.weights import PolicyLike

__all__ = ["FusionLogitsProcessor", "HFStep", "as_logits_processor_list", "fusion_generate", "hf_beam_search"]


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
    weights: PolicyLike = None,
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
