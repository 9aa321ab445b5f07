"""The built-in neural LM (:class:`NeuralLM`): a torch LSTM or Transformer over a sentencepiece vocabulary.

The units are the pieces of a sentencepiece model (``Units.token(tokenizer.identity)``). The output
distribution also covers an end-of-sentence symbol: the sentencepiece ``eos`` piece when the model has
one, else an extra output row after the last piece, so :meth:`NeuralLM.end` is a real probability and
sentence probabilities are proper. The same id is fed as the beginning-of-sentence input.

The jobs around it live beside it: the architectures in :mod:`fusion.nn_models`, incremental cached
scoring in :mod:`fusion.incremental`, checkpoint files in :mod:`fusion.checkpoint`.
:func:`load_checkpoint` opens a checkpoint directory written by :meth:`NeuralLM.save`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion.abilities import LMSpec
from fusion.checkpoint import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    check_checkpoint_tensors,
    load_safetensors,
    load_tokenizer,
    read_checkpoint_config,
    save_checkpoint,
)
from fusion.errors import InputError, LMFusionError
from fusion.incremental import CachedIncrementalLM
from fusion.nn_models import build_model, normalize_config, sequence_distributions, sequence_logprobs
from fusion.tokenizers import SentencePieceTokenizer


class NeuralLM(CachedIncrementalLM):
    """A built-in torch LM (:class:`LSTMLM` or :class:`TransformerLM`) over a sentencepiece vocabulary.

    Args:
        model: the module (see :func:`build_model`); put in eval mode and moved to ``device``/``dtype``.
        tokenizer: its sentencepiece tokenizer; units are ``Units.token(tokenizer.identity)``.
        config: the model config (``{"arch": ..., hyper-parameters}``).
        name: short name for reports and weights (default ``"nnlm"``).
        device, dtype: where and in what precision to run (``"cpu"``, ``"cuda"``; ``torch.float32`` ...).
        cache_bytes: LRU bound on the cached hidden states / KV caches.
        max_batch: most states advanced in one forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: SentencePieceTokenizer,
        config: Mapping[str, Any],
        *,
        name: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        cache_bytes: int = 1 << 30,
        max_batch: int = 4096,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name or "nnlm", tokenizer.units, cache_bytes=cache_bytes, max_batch=max_batch)
        self.tokenizer = tokenizer
        self.config = normalize_config(config)
        self.meta = dict(meta or {})
        self.pieces = list(tokenizer.pieces)
        self.piece_to_id = dict(tokenizer.piece_to_id)
        sp = tokenizer.sp
        v = len(self.pieces)
        self.eos_id = sp.eos_id() if sp.eos_id() >= 0 else v
        self.n_out = v if sp.eos_id() >= 0 else v + 1
        self.bos_id = self.eos_id
        self.unk_id = sp.unk_id() if sp.unk_id() >= 0 else None
        self.special_ids = frozenset(i for i in range(v) if sp.IsControl(i) or sp.IsUnknown(i))
        if getattr(model, "n_vocab", None) != self.n_out:
            raise LMFusionError(f"model has {getattr(model, 'n_vocab', '?')} output symbols but tokenizer "
                                f"{tokenizer.identity} needs {self.n_out} ({v} pieces + end-of-sentence)")
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.dtype = next(self.model.parameters()).dtype
        self.source: Path | None = None
        """The checkpoint directory this LM was opened from (:func:`load_checkpoint`), else ``None``."""

    def spec(self) -> LMSpec:
        """The checkpoint this LM was opened from (:class:`~fusion.abilities.Reloadable`).

        Raises:
            LMFusionError: the LM was built in memory; save it and open it with :func:`load_checkpoint`.
        """
        if self.source is None:
            raise LMFusionError(f"neural LM {self.name!r} was built in memory: save() it and open it with "
                                "fusion.loading.load_lm to reopen it in another process")
        return LMSpec(name=self.name, path=str(self.source), kind="neural", options={"device": str(self.device)})

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], tokenizer: SentencePieceTokenizer, seed: int = 0, **kwargs: Any
    ) -> NeuralLM:
        """A model with random weights (seeded; the global RNG is left untouched)."""
        cfg = normalize_config(config)
        v = len(tokenizer)
        n_out = v if tokenizer.sp.eos_id() >= 0 else v + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(cfg, n_out)
        return cls(model, tokenizer, cfg, **kwargs)

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text)

    # -- hooks -------------------------------------------------------------------------------------
    def _empty_past(self) -> Any:
        return self.model.empty_past()  # type: ignore[operator]

    def _advance(self, pasts: Sequence[Any], ids: list[list[int]]) -> tuple[torch.Tensor, list[Any]]:
        x = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        logits, new = self.model.advance(pasts, x)  # type: ignore[operator]
        return torch.log_softmax(logits[:, -1].float(), dim=-1), new

    def _full_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        lps = sequence_logprobs(self.model, seqs, self.bos_id, self.eos_id)
        return [lp.double().cpu().numpy() for lp in lps]

    def full_distributions(self, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return sequence_distributions(self.model, seqs, self.bos_id)

    # -- checkpoints -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The checkpoint config (what ``lmfusion-lm.json`` holds)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "model": self.config,
            "tokenizer": {
                "type": "sentencepiece",
                "file": self.tokenizer.path.name,
                "identity": self.tokenizer.identity,
                "pieces": len(self.pieces),
            },
            "n_out": self.n_out,
            "eos_id": self.eos_id,
            "weights": WEIGHTS_NAME,
            "meta": self.meta,
        }

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.model.state_dict().items()}

    def save(self, directory: str | Path, *, meta: Mapping[str, Any] | None = None) -> Path:
        """Write a checkpoint directory atomically (built beside it, then swapped in)."""
        if meta is not None:
            self.meta = dict(meta)
        return save_checkpoint(directory, self.to_json(), self.state_dict_cpu(), self.tokenizer.path)


def load_checkpoint(
    path: str | Path,
    name: str | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> NeuralLM:
    """Open a :class:`NeuralLM` checkpoint directory (``lmfusion-lm.json`` + safetensors + sentencepiece model).

    :func:`fusion.loading.load_lm` opens any LM from a path (KenLM, this, a marked Hugging Face directory).

    Raises:
        InputError: missing files, an unknown tokenizer, a config that does not match the weights,
            a truncated file, or a pickle where safetensors were expected (each names the file).
    """
    d = Path(path)
    cfg = read_checkpoint_config(d)
    cfg_path = d / CONFIG_NAME
    try:
        mcfg = normalize_config(cfg["model"])
    except LMFusionError as e:
        raise InputError(str(e), path=cfg_path, field="model") from None
    tok = load_tokenizer(d, cfg["tokenizer"], cfg_path)
    n_out = len(tok) if tok.sp.eos_id() >= 0 else len(tok) + 1
    if cfg.get("n_out", n_out) != n_out:
        raise InputError(f"config says {cfg.get('n_out')} output symbols, tokenizer gives {n_out}",
                         path=cfg_path, field="n_out")
    wname = cfg.get("weights", WEIGHTS_NAME)
    if not isinstance(wname, str) or Path(wname).name != wname:
        raise InputError(f"weights must be a plain file name, got {wname!r}", path=cfg_path, field="weights")
    tensors = load_safetensors(d / wname)
    with torch.device("meta"):
        skeleton = build_model(mcfg, n_out)
    desc = ", ".join(f"{k}={v}" for k, v in mcfg.items())
    check_checkpoint_tensors(skeleton.state_dict(), tensors, d / wname, desc)
    model = build_model(mcfg, n_out)
    model.load_state_dict(tensors, strict=True)
    lm = NeuralLM(model, tok, mcfg, name=name or cfg.get("name") or d.name, device=device, dtype=dtype,
                  meta=cfg.get("meta") or {}, **kwargs)
    lm.source = d
    return lm


def clone_lm(lm: NeuralLM, **kwargs: Any) -> NeuralLM:
    """A copy of ``lm`` with its own cache (e.g. on another device: ``clone_lm(lm, device="cuda")``)."""
    model = copy.deepcopy(lm.model)
    kw: dict[str, Any] = {"name": lm.name, "device": lm.device, "meta": lm.meta}
    kw.update(kwargs)
    out = NeuralLM(model, lm.tokenizer, lm.config, **kw)
    out.source = lm.source
    return out
