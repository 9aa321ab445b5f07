"""Any Hugging Face ``AutoModelForCausalLM`` + its tokenizer as an lmfusion LM (optional extra ``hf``).

The adapter reuses :class:`~fusion.incremental.CachedIncrementalLM`: states are token-id prefixes, and each
prefix's key/value cache is held per row (``[P, layers, 2, kv_heads, d_head]``) in the LM-side LRU cache.
A batched step pads the rows' caches into one ``DynamicCache`` with an attention mask that hides the
padding and explicit ``position_ids``, so rows of different lengths advance in one forward pass.
Works for decoder-only models with plain (global) attention caches: GPT-2, Llama, Qwen, Mistral without
sliding windows, ... ``transformers`` is imported lazily; nothing here touches the network unless asked
to load a hub name (pass a local directory, or set ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.abilities import LMSpec
from fusion.checkpoint import CONFIG_NAME, FORMAT_VERSION, HF_FORMAT, check_safetensors_file
from fusion.errors import InputError, LMFusionError
from fusion.incremental import CachedIncrementalLM
from fusion.lm import Units
from fusion.tokenizers import WORD_START

BYTE_LEVEL_SPACE = "Ġ"


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError:  # pragma: no cover - depends on the environment
        raise LMFusionError("the Hugging Face adapter needs transformers: pip install 'lmfusion[hf]'") from None
    return transformers


def tokenizer_identity(tokenizer: Any) -> str:
    """``"hf@<sha1-8 of the vocabulary>"``: equal for tokenizers with the same token->id table, wherever
    they were loaded from."""
    vocab = tokenizer.get_vocab()
    h = hashlib.sha1()
    for tok, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{i}\t{tok}\n".encode())
    return f"hf@{h.hexdigest()[:8]}"


class HFCausalLM(CachedIncrementalLM):
    """A Hugging Face causal LM over its own tokenizer's tokens (incremental, batched, KV-cached).

    Args:
        model: an ``AutoModelForCausalLM`` (put in eval mode, moved to ``device``/``dtype``).
        tokenizer: its tokenizer; must define an end-of-sequence token.
        name: short name for reports and weights.
        max_row, max_tokens: prefix-shared sentence scoring: most trie nodes per row, most tokens per forward.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "hf",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        cache_bytes: int = 1 << 30,
        max_batch: int = 1024,
        max_row: int = 512,
        max_tokens: int = 2048,
    ) -> None:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise LMFusionError(f"{name}: the tokenizer has no eos token; sentence probabilities need one")
        super().__init__(name, Units.token(tokenizer_identity(tokenizer)), cache_bytes=cache_bytes,
                         max_batch=max_batch)
        self.tokenizer = tokenizer
        self.max_row, self.max_tokens = int(max_row), int(max_tokens)
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.dtype = next(self.model.parameters()).dtype
        self.source: Path | None = None
        """The local model directory this LM was opened from (:meth:`from_pretrained`), else ``None``."""
        n_model = int(self.model.get_output_embeddings().weight.shape[0])
        n_tok = len(tokenizer)
        if n_tok > n_model:
            raise LMFusionError(f"{name}: tokenizer has {n_tok} tokens but the model only {n_model} outputs")
        self.n_out = n_model
        pieces = tokenizer.convert_ids_to_tokens(list(range(n_tok)))
        self.pieces = [p if p is not None else f"<id_{i}>" for i, p in enumerate(pieces)]
        self.pieces += [f"<extra_{i}>" for i in range(n_tok, n_model)]
        self.piece_to_id = {}
        for i, p in enumerate(self.pieces):
            self.piece_to_id.setdefault(p, i)
        self.eos_id = int(eos)
        self.bos_id = int(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else self.eos_id
        self.unk_id = int(tokenizer.unk_token_id) if tokenizer.unk_token_id is not None else None
        special = set(tokenizer.all_special_ids) | set(range(n_tok, n_model))
        self.special_ids = frozenset(int(i) for i in special)
        n_space = sum(p.startswith(BYTE_LEVEL_SPACE) for p in self.pieces)
        n_spm = sum(p.startswith(WORD_START) for p in self.pieces)
        self.space_marker = BYTE_LEVEL_SPACE if n_space > n_spm else WORD_START
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x

    @classmethod
    def from_pretrained(cls, path: str | Path, *, name: str | None = None, device: str = "cpu",
                        dtype: torch.dtype | None = None, local_files_only: bool = True, **kwargs: Any) -> HFCausalLM:
        """Load model and tokenizer from a directory (or a hub name with ``local_files_only=False``)."""
        tr = _require_transformers()
        if local_files_only and not Path(path).is_dir():
            raise InputError("not a local Hugging Face model directory (pass local_files_only=False for the hub)",
                             path=path)
        if Path(path).is_dir():
            for f in sorted(Path(path).glob("*.safetensors")):
                check_safetensors_file(f)
        try:
            tok = tr.AutoTokenizer.from_pretrained(str(path), local_files_only=local_files_only)
            model = tr.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=local_files_only,
                                                            use_safetensors=True)
        except Exception as e:  # transformers raises many types (OSError, ValueError, SafetensorError, ...)
            raise InputError(f"could not load the Hugging Face model ({type(e).__name__}: {e})", path=path) from None
        lm = cls(model, tok, name=name or Path(str(path)).name, device=device, dtype=dtype, **kwargs)
        lm.source = Path(path) if Path(path).is_dir() else None
        return lm

    def spec(self) -> LMSpec:
        """The model directory this LM was opened from (:class:`~fusion.abilities.Reloadable`).

        Raises:
            LMFusionError: the LM was built from in-memory objects (or a hub name), not a directory.
        """
        if self.source is None:
            raise LMFusionError(f"HF LM {self.name!r} was not opened from a local directory; save it with "
                                "save_pretrained() and mark_hf_dir() to reopen it in another process")
        return LMSpec(name=self.name, path=str(self.source), kind="hf", options={"device": str(self.device)})

    # -- units -----------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """The tokenizer's pieces of ``text``. Byte-level BPE: every word as after a space (``Ġword``), the
        first one too, so a sentence's pieces are the concatenation of :meth:`encode_word` of its words."""
        if self.space_marker == BYTE_LEVEL_SPACE and text and not text[0].isspace():
            text = " " + text
        return list(self.tokenizer.tokenize(text))

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (as :meth:`tokenize`, no special tokens added)."""
        return [self.unit_id(p) for p in self.tokenize(text)]

    def word_start_ids(self) -> list[int]:
        return [i for i, p in enumerate(self.pieces) if p.startswith(self.space_marker) and i not in self.special_ids]

    def encode_word(self, word: str) -> list[str]:
        """Pieces of a word as it appears after a space (byte-level BPE: ``" word"``; sentencepiece: ``"word"``)."""
        pieces = self.tokenize(" " + word if self.space_marker == BYTE_LEVEL_SPACE else word)
        if pieces and not pieces[0].startswith(self.space_marker):
            if pieces[0] == self.space_marker:  # a lone marker piece is still a word start
                return pieces
            raise LMFusionError(f"{self.name}: word {word!r} does not start with a word-boundary piece ({pieces})")
        return pieces

    # -- model hooks -----------------------------------------------------------------------------
    def _empty_past(self) -> Any:
        return None

    def _past_nbytes(self, past: Any) -> int:
        return 0 if past is None else int(past.numel() * past.element_size())

    @staticmethod
    def _layers_kv(pkv: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if hasattr(pkv, "layers"):
            return [(layer.keys, layer.values) for layer in pkv.layers]
        if hasattr(pkv, "key_cache"):  # transformers 4.x DynamicCache
            return list(zip(pkv.key_cache, pkv.value_cache, strict=True))
        return [(k, v) for k, v, *_ in pkv]

    @staticmethod
    def _make_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(ddp_cache_data=kv)
        except TypeError:  # pragma: no cover - transformers 4.x
            return DynamicCache.from_legacy_cache(tuple(kv))  # type: ignore[attr-defined]

    def _advance(self, pasts: Sequence[Any], ids: list[list[int]]) -> tuple[torch.Tensor, list[Any]]:
        b = len(ids)
        t = len(ids[0])
        dev = self.device
        lens = [0 if p is None else int(p.shape[0]) for p in pasts]
        pmax = max(lens)
        x = torch.as_tensor(ids, dtype=torch.long, device=dev)
        lens_t = torch.tensor(lens, device=dev)
        pos = lens_t[:, None] + torch.arange(t, device=dev)[None]
        past_ok = torch.arange(pmax, device=dev)[None, :] < lens_t[:, None]
        mask = torch.cat([past_ok, torch.ones(b, t, dtype=torch.bool, device=dev)], dim=1).long()
        cache = None
        if pmax:
            ref = next(p for p in pasts if p is not None)
            rows = [p if p is not None else ref.new_zeros((0, *ref.shape[1:])) for p in pasts]
            kv = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # [B, Pmax, L, 2, h, dh]
            cache = self._make_cache([(kv[:, :, i, 0].transpose(1, 2).contiguous(),
                                       kv[:, :, i, 1].transpose(1, 2).contiguous()) for i in range(kv.shape[2])])
        out = self.model(input_ids=x, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self._cache_kw: cache})
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        pkv = getattr(out, "cache", None)
        if pkv is None:
            pkv = out.past_key_values
        layers = self._layers_kv(pkv)
        # new keys/values of the T fed tokens: [B, T, L, 2, h, dh]
        new = torch.stack([torch.stack([k[:, :, -t:], v[:, :, -t:]], 0) for k, v in layers], 0)  # [L,2,B,h,T,dh]
        new = new.permute(2, 4, 0, 1, 3, 5)
        res = []
        for i in range(b):
            p = pasts[i]
            res.append(new[i].clone() if p is None else torch.cat([p, new[i]], dim=0))
        return logp, res

    def full_distributions(self, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        if not seqs:
            return []
        t = max(len(s) for s in seqs) + 1
        inp = torch.full((len(seqs), t), self.eos_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(seqs), t), dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            inp[i, 0] = self.bos_id
            if s:
                inp[i, 1 : len(s) + 1] = torch.as_tensor(list(s), dtype=torch.long, device=self.device)
            mask[i, : len(s) + 1] = 1
        pos = torch.arange(t, device=self.device)[None].expand(len(seqs), t)
        logits = self.model(input_ids=inp, attention_mask=mask, position_ids=pos, use_cache=False).logits
        lp = torch.log_softmax(logits.float(), dim=-1)
        return [lp[i, : len(s) + 1] for i, s in enumerate(seqs)]

    # -- whole sentences, prefix-shared (SentenceBatchScorer) ---------------------------------------
    def sentence_logprobs(self, texts: Sequence[str], bos: bool = True, eos: bool = True) -> np.ndarray:
        """``ln P`` of each text over this LM's tokens (after BOS; plus end-of-sentence when ``eos``).

        The texts' token sequences are merged into prefix tries and each trie runs as one row with tree
        attention (:mod:`fusion.prefix_score`), many rows per forward: shared prefixes (an n-best list's
        common start) are computed once. Equal to :meth:`sentence_logprobs_reference` up to float error.
        """
        from fusion.prefix_score import tree_sequence_logprobs

        self._check_bos(bos)
        seqs = [self.text_ids(t) for t in texts]
        return tree_sequence_logprobs(self.model, seqs, start=self.bos_id, end=self.eos_id if eos else None,
                                      pad=self.eos_id, max_row=self.max_row, max_tokens=self.max_tokens,
                                      device=self.device)

    def sentence_logprobs_reference(self, texts: Sequence[str], bos: bool = True, eos: bool = True) -> np.ndarray:
        """The plain reference of :meth:`sentence_logprobs`: one forward per text, nothing shared."""
        from fusion.prefix_score import reference_sequence_logprobs

        self._check_bos(bos)
        return reference_sequence_logprobs(self.model, [self.text_ids(t) for t in texts], start=self.bos_id,
                                           end=self.eos_id if eos else None, device=self.device)

    def _check_bos(self, bos: bool) -> None:
        if not bos:
            raise LMFusionError(f"{self.name}: a causal LLM scores a sentence after its start token; bos=False "
                                "(no context at all) is not defined for it")

    def logprobs_all(self, states: Sequence[Any]) -> np.ndarray:
        """``[B, len(tokenizer)]`` next-token log-probs in the tokenizer's id order (includes eos's column)."""
        return self.logprobs_tensor(states)[:, : len(self.tokenizer)].double().cpu().numpy()


def mark_hf_dir(directory: str | Path, *, name: str | None = None) -> Path:
    """Write ``lmfusion-lm.json`` into a Hugging Face model directory so ``lmfusion ppl/mix --lm`` open it."""
    from fusion.io import atomic_write_json

    d = Path(directory)
    if not (d / "config.json").is_file():
        raise InputError("not a Hugging Face model directory (no config.json)", path=d)
    out = d / CONFIG_NAME
    atomic_write_json(out, {"format": HF_FORMAT, "version": FORMAT_VERSION, "name": name or d.name})
    return out
