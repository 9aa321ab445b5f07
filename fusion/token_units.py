"""A decoder's tokens as LM units, and the one definition of "a word" over them.

Scorers see a decoder's vocabulary through ``token_units``: one entry per decoder id, a unit string in
sentencepiece convention (``"▁"`` starts a word, the rest is the piece's text), or ``None`` for ids the LM
cannot see (padding, language and task tags, Whisper's timestamps). :func:`token_units_from_tokenizer`
builds this view from a Hugging Face tokenizer alone (Whisper and GPT-2 byte-level BPE, Llama/SmolLM2,
Marian and T5 sentencepiece); :func:`units_from_pieces` from a list of piece strings.

**A word** (shared by the word bonus, the word-boundary LM scorer and the ``"words"`` count of an n-best
list): a maximal run of units between word starts whose text is not empty. A lone ``"▁"`` (a space token
before a digit, or trailing spaces) is a word only together with the text that follows it, so
``["▁", "7"]`` is one word ``"7"`` and ``["▁the", "▁", "▁"]`` is one word.

**Byte-level BPE** (GPT-2, Whisper, SmolLM2) pieces are bytes, not text; a piece may even hold half of a
UTF-8 character. Each unit holds its bytes decoded with ``surrogateescape`` (a stray byte becomes a lone
surrogate), so the units of a word concatenate to the word's bytes and :func:`word_text` turns them into
proper UTF-8 (``"café"``, never ``"cafÃ©"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from fusion.errors import LMFusionError
from fusion.tokenizers import WORD_START

__all__ = [
    "WORD_START",
    "count_words",
    "split_unit",
    "token_units_from_tokenizer",
    "units_from_pieces",
    "word_text",
]


def split_unit(unit: str) -> tuple[bool, str]:
    """``(starts_word, text)`` of a sentencepiece-convention unit: ``"▁the"`` -> ``(True, "the")``."""
    if unit.startswith(WORD_START):
        return True, unit.lstrip(WORD_START)
    return False, unit


def word_text(text: str) -> str:
    """A word's text as UTF-8: joins byte pieces split inside a character (see module docstring)."""
    if any("\udc80" <= c <= "\udcff" for c in text):
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def count_words(units: Iterable[str | None]) -> int:
    """Words in a unit sequence (``None`` units are skipped): the module's one definition of a word."""
    n = 0
    open_word = False  # the current word already has text
    for u in units:
        if u is None:
            continue
        starts, text = split_unit(u)
        if starts:
            open_word = False
        if text and not open_word:
            n += 1
            open_word = True
    return n


def units_from_pieces(
    pieces: Sequence[str], *, specials: Iterable[int] = (), byte_bpe: bool = False
) -> list[str | None]:
    """Decoder ``token_units`` from a tokenizer's piece strings.

    Args:
        pieces: piece string of each id (sentencepiece ``"▁the"``, or GPT-2/Whisper byte-BPE ``"Ġthe"``).
        specials: ids the LM must not score (pad, eos, language/task/timestamp tokens) -> ``None``.
        byte_bpe: the pieces are byte-level BPE (GPT-2's byte-to-character map): decode them to text,
            a leading space becoming ``"▁"``.
    """
    skip = set(specials)
    out: list[str | None] = []
    for i, p in enumerate(pieces):
        if i in skip:
            out.append(None)
        elif byte_bpe:
            out.append(_byte_piece_unit(p))
        else:
            out.append(p)
    return out


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character -> byte map (the inverse of its ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _byte_piece_unit(piece: str) -> str | None:
    """A byte-level BPE piece as a unit: its bytes as text, leading whitespace as ``"▁"``."""
    dec = _byte_decoder()
    try:
        raw = bytes(dec[c] for c in piece)
    except KeyError:
        return None  # not a byte-level piece (an added special token)
    text = raw.decode("utf-8", "surrogateescape")
    stripped = text.lstrip()
    if len(stripped) < len(text):
        return WORD_START + stripped.replace(" ", WORD_START)
    return text.replace(" ", WORD_START)


def _is_byte_level(tokenizer: Any) -> bool:
    """Whether a HF tokenizer is byte-level BPE (its pre-tokenizer or decoder says ``ByteLevel``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return "ByteLevel" in repr(backend.pre_tokenizer) or "ByteLevel" in repr(backend.decoder)


def token_units_from_tokenizer(tokenizer: Any, *, vocab_size: int | None = None) -> list[str | None]:
    """The token-unit view of a Hugging Face tokenizer, from the tokenizer alone.

    Special and added tokens (``<pad>``, ``</s>``, ``<|en|>``, ``<|0.00|>``, ...) become ``None``;
    byte-level BPE (Whisper, GPT-2, SmolLM2) is decoded to UTF-8 with ``"Ġ"`` as ``"▁"``; sentencepiece
    vocabularies (Marian, T5, Llama 2) keep their pieces.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast or slow).
        vocab_size: the model's logits width when it exceeds the tokenizer's (padded embeddings): the
            extra ids are ``None``.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()
    size = max(vocab.values()) + 1 if vocab else 0
    n = max(size, vocab_size or 0)
    pieces = [""] * n
    for piece, i in vocab.items():
        pieces[i] = piece
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    specials |= {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    specials |= {i for i in range(n) if not pieces[i]}
    if not vocab:
        raise LMFusionError(f"tokenizer {type(tokenizer).__name__} has an empty vocabulary")
    return units_from_pieces(pieces, specials=sorted(specials), byte_bpe=_is_byte_level(tokenizer))
