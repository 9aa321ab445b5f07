"""The translation model of the MT recipes: a small Marian transformer built from a config.

Vocabularies: the encoder reads the pieces of a source sentencepiece model (phoneme strings, or
Spanish); the decoder writes the pieces of a target sentencepiece model (decoder id ``i < len(spm)`` is
spm piece ``i``, so a neural LM over the same sentencepiece model scores decoder ids directly). Both
sides share two special ids placed after the larger of the two piece inventories: ``</s>`` and the
pad/start symbol, so no source piece shares an id with them. With one shared sentencepiece model
(``src_spm`` is ``spm``) the encoder and decoder share one embedding matrix (Marian's default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion.errors import InputError
from fusion.io import atomic_write_json, read_json
from fusion.tokenizers import SentencePieceTokenizer


@dataclass(frozen=True)
class Vocabs:
    """Source characters and target pieces, with the special ids the model uses."""

    src_spm: SentencePieceTokenizer
    spm: SentencePieceTokenizer

    @property
    def n_pieces(self) -> int:
        return len(self.spm)

    @property
    def shared(self) -> bool:
        """One sentencepiece model for both sides (the encoder and decoder then share embeddings)."""
        return self.src_spm.path.resolve() == self.spm.path.resolve()

    @property
    def eos_id(self) -> int:
        """After every source and target piece: a source piece never shares an id with ``</s>`` or pad."""
        return max(self.n_pieces, len(self.src_spm))

    @property
    def pad_id(self) -> int:
        return self.eos_id + 1

    @property
    def tgt_size(self) -> int:
        return self.pad_id + 1

    @property
    def src_size(self) -> int:
        return self.pad_id + 1

    def encode_src(self, phonemes: str) -> list[int]:
        """Phoneme string to source piece ids, then eos (the source side reuses the target's eos/pad ids)."""
        return [*self.src_spm.encode_ids(phonemes), self.eos_id]

    def source_batch(self, src: Sequence[str]) -> dict[str, Any]:
        """``input_ids`` (right-padded with ``pad_id``) and ``attention_mask`` of source sentences, for the
        model's ``generate()`` or lmfusion's beam search."""
        import torch

        ids = [self.encode_src(s) for s in src]
        x = torch.full((len(ids), max(map(len, ids))), self.pad_id, dtype=torch.long)
        for i, s in enumerate(ids):
            x[i, : len(s)] = torch.tensor(s)
        return {"input_ids": x, "attention_mask": (x != self.pad_id).long()}

    def encode_tgt(self, text: str) -> list[int]:
        return [*self.spm.encode_ids(text), self.eos_id]

    def decode_tgt(self, ids: list[int]) -> str:
        pieces = [self.spm.pieces[i] for i in ids if i < self.n_pieces]
        return self.spm.decode(pieces)


def marian_config(vocabs: Vocabs, *, d_model: int = 128, layers: int = 2, heads: int = 4, ffn: int = 512,
                  dropout: float = 0.1) -> Any:
    """A Marian config over ``vocabs`` (shared embeddings when the vocabularies are one model)."""
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=vocabs.src_size,
        decoder_vocab_size=vocabs.tgt_size,
        share_encoder_decoder_embeddings=vocabs.shared,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=512,
        dropout=dropout,
        pad_token_id=vocabs.pad_id,
        eos_token_id=vocabs.eos_id,
        decoder_start_token_id=vocabs.pad_id,
        forced_eos_token_id=None,
        scale_embedding=True,
    )


def save_vocabs(vocabs: Vocabs, outdir: Path) -> None:
    atomic_write_json(outdir / "vocabs.json", {"src_spm": vocabs.src_spm.path.name, "spm": vocabs.spm.path.name})


def load_model(model_dir: str | Path) -> tuple[Any, Vocabs]:
    """Load a trained model directory (safetensors weights, config, vocabs.json, the spm model)."""
    from transformers import MarianMTModel

    d = Path(model_dir)
    meta = read_json(d / "vocabs.json")
    if not isinstance(meta, dict) or "src_spm" not in meta or "spm" not in meta:
        raise InputError("missing 'src_spm' or 'spm'", path=d / "vocabs.json")
    vocabs = Vocabs(SentencePieceTokenizer(d / meta["src_spm"]), SentencePieceTokenizer(d / meta["spm"]))
    model = MarianMTModel.from_pretrained(str(d), use_safetensors=True)
    model.eval()
    check_model_vocabs(model, vocabs, where=d)
    return model, vocabs


def check_model_vocabs(model: Any, vocabs: Vocabs, *, where: str | Path = "model") -> None:
    """The model's output layer and special ids must be those of ``vocabs``.

    Raises:
        InputError: a model trained with other vocabularies (or an older id layout).
    """
    width = int(model.get_output_embeddings().weight.shape[0])
    cfg = model.config
    got = (width, cfg.eos_token_id, cfg.pad_token_id, cfg.decoder_start_token_id)
    want = (vocabs.tgt_size, vocabs.eos_id, vocabs.pad_id, vocabs.pad_id)
    if got != want:
        raise InputError(f"model (output width, eos, pad, start) = {got}, but its vocabularies give {want}: "
                         "trained with other sentencepiece models?", path=where)


def dump_meta(outdir: Path, **info: Any) -> None:
    (outdir / "train-info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
