"""The phoneme-to-text translation model of the MT recipe: a small Marian transformer built from a config.

Vocabularies: the encoder reads the pieces of a sentencepiece model over phoneme strings; the
decoder writes the pieces of a sentencepiece model over text (decoder id ``i < len(spm)`` is spm
piece ``i``, so a neural LM over the same sentencepiece model scores decoder ids directly),
followed by ``</s>`` and the pad/start symbol.
"""

from __future__ import annotations

import json
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
    def eos_id(self) -> int:
        return self.n_pieces

    @property
    def pad_id(self) -> int:
        return self.n_pieces + 1

    @property
    def tgt_size(self) -> int:
        return self.n_pieces + 2

    @property
    def src_size(self) -> int:
        return max(len(self.src_spm), self.tgt_size)

    def encode_src(self, phonemes: str) -> list[int]:
        """Phoneme string to source piece ids, then eos (the source side reuses the target's eos/pad ids)."""
        return [*self.src_spm.encode_ids(phonemes), self.eos_id]

    def encode_tgt(self, text: str) -> list[int]:
        return [*self.spm.encode_ids(text), self.eos_id]

    def decode_tgt(self, ids: list[int]) -> str:
        pieces = [self.spm.pieces[i] for i in ids if i < self.n_pieces]
        return self.spm.decode(pieces)


def marian_config(vocabs: Vocabs, *, d_model: int = 128, layers: int = 2, heads: int = 4, ffn: int = 512) -> Any:
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=vocabs.src_size,
        decoder_vocab_size=vocabs.tgt_size,
        share_encoder_decoder_embeddings=False,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_position_embeddings=512,
        dropout=0.1,
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
    return model, vocabs


def dump_meta(outdir: Path, **info: Any) -> None:
    (outdir / "train-info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
