"""Open an LM from a path, whatever its kind: the one ``load_lm`` of lmfusion (CLI, recipes, workers).

* a file: a KenLM model (ARPA or binary), over words or, with ``tokenizer``, over pieces;
* a directory holding ``lmfusion-lm.json``: a neural LM checkpoint (:func:`fusion.neural.load_checkpoint`),
  or a Hugging Face model directory marked by :func:`fusion.hf_lm.mark_hf_dir`.
* a GGUF file (by its magic bytes): a causal LLM such as SmolLM2 (:mod:`fusion.gguf_lm`).

Loaders for other kinds register with :func:`register_loader`. :func:`open_spec` opens the
:class:`~fusion.abilities.LMSpec` an LM gave (``Reloadable.spec()``), e.g. in a worker process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusion.abilities import LMSpec
from fusion.checkpoint import CONFIG_NAME, HF_FORMAT
from fusion.errors import InputError, LMFusionError
from fusion.io import read_json
from fusion.lm import LanguageModel
from fusion.tokenizers import SentencePieceTokenizer, Tokenizer

Loader = Callable[[Path, str | None, Tokenizer | None], LanguageModel]
_LOADERS: list[tuple[Callable[[Path], bool], Loader]] = []

def register_loader(probe: Callable[[Path], bool], loader: Loader) -> None:
    """Add a loader, tried before the built-in ones when ``probe(path)`` is true."""
    _LOADERS.insert(0, (probe, loader))


def _load_kenlm(path: Path, name: str | None, tokenizer: Tokenizer | None) -> LanguageModel:
    from fusion.ngram import KenLM

    return KenLM(path, name=name, tokenizer=tokenizer)


def _load_checkpoint_dir(path: Path, name: str | None, options: dict[str, Any]) -> LanguageModel:
    raw = read_json(path / CONFIG_NAME)
    if isinstance(raw, dict) and raw.get("format") == HF_FORMAT:
        from fusion.hf_lm import HFCausalLM

        return HFCausalLM.from_pretrained(path, name=name or raw.get("name") or path.name, **options)
    from fusion.neural import load_checkpoint

    return load_checkpoint(path, name=name, **options)


def _is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _load_gguf(path: Path, name: str | None, tokenizer: Tokenizer | None, options: dict[str, Any]) -> LanguageModel:
    from fusion.gguf_lm import load_gguf_lm

    if tokenizer is not None:
        raise InputError("a GGUF LLM brings its own tokenizer; do not pass one", path=path)
    return load_gguf_lm(path, name=name, **options)


def parse_lm_spec(spec: str) -> tuple[str | None, Path]:
    """``"NAME=PATH"`` or ``"PATH"`` -> ``(name or None, path)``."""
    try:
        exists = Path(spec).exists()
    except (OSError, ValueError):
        exists = False
    if "=" in spec and not exists:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise InputError(f"bad LM spec {spec!r}: expected NAME=PATH or PATH")
        return name, Path(path)
    return None, Path(spec)


def load_lm(
    spec: str | Path,
    *,
    name: str | None = None,
    tokenizer: Tokenizer | str | Path | None = None,
    **options: Any,
) -> LanguageModel:
    """Open the LM at ``spec`` (``PATH`` or ``NAME=PATH``).

    Args:
        name: the LM's name (default: ``NAME`` of the spec, the checkpoint's name, or the file name).
        tokenizer: for an n-gram over sentencepiece pieces, the tokenizer or its model file.
        options: for a neural or Hugging Face checkpoint, loader options (``device``, ``dtype``, ...).
    """
    spec_name, path = parse_lm_spec(str(spec))
    name = name or spec_name
    tok = SentencePieceTokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    if not path.exists():
        raise InputError("language model not found", path=path)
    for probe, loader in _LOADERS:
        if probe(path):
            return loader(path, name, tok)
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            return _load_checkpoint_dir(path, name, options)
        raise InputError(f"a directory, but no {CONFIG_NAME} in it: not an lmfusion neural LM", path=path)
    if _is_gguf(path):
        return _load_gguf(path, name, tok, options)
    if options:
        raise LMFusionError(f"options {sorted(options)} apply to neural checkpoints, not to the KenLM file {path}")
    return _load_kenlm(path, name, tok)


def open_spec(spec: LMSpec) -> LanguageModel:
    """Open the LM an :class:`~fusion.abilities.LMSpec` describes (in this process)."""
    from fusion.interpolate import LinearInterpolation, LogLinearInterpolation

    if spec.mix:
        models = [open_spec(s) for s, _ in spec.mix]
        ws = [w for _, w in spec.mix]
        cls = LinearInterpolation if spec.mix_kind == "linear" else LogLinearInterpolation
        return cls(models, ws, name=spec.name)
    if spec.path is None:
        raise LMFusionError(f"LMSpec {spec.name!r} has neither a path nor components")
    return load_lm(spec.path, name=spec.name, tokenizer=spec.tokenizer, **dict(spec.options))
