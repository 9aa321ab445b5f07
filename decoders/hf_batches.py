"""Hugging Face seq2seq batch decoding on an executor: each worker rebuilds the model and the fusion
scorers once from a picklable :class:`HFDecoderSpec` and runs :func:`decoders.hf.hf_beam_search` on
whole input batches, one task per batch, results in input order (the same n-best lists as a loop of
``hf_beam_search`` here, on any back-end).

Nothing with torch or C state travels: the model by its ``save_pretrained`` folder (read with
``local_files_only``), the LMs by :class:`~fusion.abilities.LMSpec`, the scorers by a module-level
factory (pickled by reference).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from decoders.hypothesis import NBestList
from fusion.abilities import LMSpec
from fusion.executor import Executor, map_sharded, open_executor
from fusion.lm import LanguageModel
from fusion.scorers import Scorer

__all__ = ["HFBatch", "HFDecoderSpec", "hf_beam_search_batches"]

ScorerFactory = Callable[[Mapping[str, LanguageModel], Any], Sequence[Scorer]]
"""``(LMs by name, the model) -> scorers``: a module-level function (or a ``functools.partial`` of one)."""


@dataclass(frozen=True)
class HFDecoderSpec:
    """How a worker rebuilds an HF encoder-decoder and its fusion scorers.

    Attributes:
        model_dir: a folder written by ``model.save_pretrained`` (opened with ``local_files_only``).
        lms: the LMs the scorers use, opened once per worker with :func:`fusion.loading.open_spec`.
        scorers: builds the scorers from the opened LMs and the model (None: no fusion).
    """

    model_dir: str
    lms: tuple[LMSpec, ...] = ()
    scorers: ScorerFactory | None = None

    def build(self) -> tuple[Any, list[Scorer]]:
        """``(model in eval mode, scorers)``."""
        from transformers import AutoModelForSeq2SeqLM

        from fusion.loading import open_spec

        model = AutoModelForSeq2SeqLM.from_pretrained(self.model_dir, local_files_only=True).eval()
        lms = {s.name: open_spec(s) for s in self.lms}
        return model, list(self.scorers(lms, model)) if self.scorers is not None else []


@dataclass(frozen=True)
class HFBatch:
    """One batch of a decoding job: the model inputs (``input_ids``, ``attention_mask``) and per-row
    metadata copied to the n-best lists."""

    inputs: Mapping[str, Any]
    utt_ids: tuple[str, ...]
    refs: tuple[str | None, ...] | None = None
    tags: tuple[Mapping[str, Any], ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`decoders.hf.hf_beam_search` (weights, config, token_units, ...)."""


def _decode_batch(state: tuple[Any, list[Scorer]], batch: HFBatch) -> list[NBestList]:
    import torch

    from decoders.hf import hf_beam_search

    model, scorers = state
    with torch.no_grad():
        return hf_beam_search(model, batch.inputs, scorers=scorers, utt_ids=list(batch.utt_ids),
                              refs=None if batch.refs is None else list(batch.refs),
                              tags=None if batch.tags is None else list(batch.tags), **batch.options)  # fmt: skip


def hf_beam_search_batches(
    spec: HFDecoderSpec,
    batches: Sequence[HFBatch],
    executor: Executor | str | None = None,
    *,
    progress: bool = False,
    **options: Any,
) -> list[NBestList]:
    """:func:`decoders.hf.hf_beam_search` over ``batches`` on ``executor`` (None: here), each worker
    building ``spec`` once; the n-best lists of every batch, in input order. ``options`` (weights,
    config, token_units, detokenize, ...) apply to every batch and must be picklable."""
    ex = open_executor(executor)
    items = [HFBatch(b.inputs, b.utt_ids, b.refs, b.tags, {**options, **b.options}) for b in batches]
    try:
        parts = map_sharded(ex, _decode_batch, spec, items, shard_size=1,
                            desc="seq2seq decode", progress=progress)  # fmt: skip
    finally:
        if ex is not executor:
            ex.close()
    return [nb for part in parts for nb in part]
