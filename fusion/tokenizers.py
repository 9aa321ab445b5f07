"""Tokenizers that define an LM's units: whitespace words, or sentencepiece pieces.

A tokenizer's :attr:`Tokenizer.identity` names it and hashes its model file, so two LMs claiming
the same units really share them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion.errors import InputError
from fusion.lm import Units

WORD_START = "\u2581"
"""sentencepiece's word-start marker ``▁`` (U+2581): the one definition in lmfusion; import it from here."""


class Tokenizer(ABC):
    """Maps text to units and back."""

    @property
    @abstractmethod
    def units(self) -> Units:
        """The units this tokenizer produces."""

    @abstractmethod
    def encode(self, text: str) -> list[str]:
        """Text to units."""

    @abstractmethod
    def decode(self, units: Sequence[str]) -> str:
        """Units to text."""


class WordTokenizer(Tokenizer):
    """Whitespace words: ``"a  b"`` -> ``["a", "b"]``."""

    @property
    def units(self) -> Units:
        return Units.word()

    def encode(self, text: str) -> list[str]:
        return text.split()

    def decode(self, units: Sequence[str]) -> str:
        return " ".join(units)


def file_digest(path: str | Path, n: int = 8) -> str:
    """First ``n`` hex digits of the SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model; units are its pieces (``▁`` marks a word start)."""

    def __init__(self, model_path: str | Path) -> None:
        import sentencepiece as spm

        self.path = Path(model_path)
        if not self.path.is_file():
            raise InputError("sentencepiece model not found", path=self.path)
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise InputError(f"not a sentencepiece model ({e})", path=self.path) from None
        self.sp = sp
        self.identity = f"spm:{self.path.stem}@{file_digest(self.path)}"
        self.pieces: list[str] = [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
        self.piece_to_id = {p: i for i, p in enumerate(self.pieces)}

    @property
    def units(self) -> Units:
        return Units.token(self.identity)

    def encode(self, text: str) -> list[str]:
        return list(self.sp.EncodeAsPieces(text))

    def encode_ids(self, text: str) -> list[int]:
        return list(self.sp.EncodeAsIds(text))

    def decode(self, units: Sequence[str]) -> str:
        return str(self.sp.DecodePieces(list(units)))

    def __len__(self) -> int:
        return len(self.pieces)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({str(self.path)!r}, identity={self.identity!r})"


def train_sentencepiece(
    text_files: Sequence[str | Path],
    model_prefix: str | Path,
    *,
    vocab_size: int = 1000,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    extra_options: dict[str, object] | None = None,
) -> SentencePieceTokenizer:
    """Train a sentencepiece model on plain text; returns the loaded tokenizer.

    ``hard_vocab_limit`` is off so tiny corpora still train; the model is written to
    ``<model_prefix>.model``.
    """
    import sentencepiece as spm

    for f in text_files:
        if not Path(f).is_file():
            raise InputError("training text not found", path=f)
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = {
        "input": ",".join(str(f) for f in text_files),
        "model_prefix": str(prefix),
        "vocab_size": vocab_size,
        "model_type": model_type,
        "character_coverage": character_coverage,
        "hard_vocab_limit": False,
        "bos_id": -1,
        "eos_id": -1,
        "unk_id": 0,
        "minloglevel": 2,
    }
    opts.update(extra_options or {})
    spm.SentencePieceTrainer.Train(**opts)
    return SentencePieceTokenizer(f"{prefix}.model")
