"""lmfusion's LM layer: what an LM says and how scores combine.

Public names are imported lazily, so ``import fusion`` stays cheap (torch is only loaded when a neural
LM is used)::

    from fusion import KenLM, LinearInterpolation, estimate_weights
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LanguageModel": "fusion.lm",
    "Units": "fusion.lm",
    "SentenceScore": "fusion.lm",
    "perplexity": "fusion.lm",
    "KenLM": "fusion.ngram",
    "build_ngram": "fusion.ngram",
    "LinearInterpolation": "fusion.interpolate",
    "LogLinearInterpolation": "fusion.interpolate",
    "estimate_weights": "fusion.em",
    "em_mixture_weights": "fusion.em",
    "load_lm": "fusion.loading",
    "SentencePieceTokenizer": "fusion.tokenizers",
    "WordTokenizer": "fusion.tokenizers",
    "train_sentencepiece": "fusion.tokenizers",
    "NeuralLM": "fusion.neural",
    "WordLevelLM": "fusion.units",
    "FusionProfile": "fusion.profile",
    "estimate_snr": "fusion.snr",
    "LMFusionError": "fusion.errors",
    "InputError": "fusion.errors",
}

__all__ = [
    "FusionProfile",
    "InputError",
    "KenLM",
    "LMFusionError",
    "LanguageModel",
    "LinearInterpolation",
    "LogLinearInterpolation",
    "NeuralLM",
    "SentencePieceTokenizer",
    "SentenceScore",
    "Units",
    "WordLevelLM",
    "WordTokenizer",
    "build_ngram",
    "em_mixture_weights",
    "estimate_snr",
    "estimate_weights",
    "load_lm",
    "perplexity",
    "train_sentencepiece",
]

if TYPE_CHECKING:
    from fusion.em import em_mixture_weights, estimate_weights
    from fusion.errors import InputError, LMFusionError
    from fusion.interpolate import LinearInterpolation, LogLinearInterpolation
    from fusion.lm import LanguageModel, SentenceScore, Units, perplexity
    from fusion.loading import load_lm
    from fusion.ngram import KenLM, build_ngram
    from fusion.tokenizers import SentencePieceTokenizer, WordTokenizer, train_sentencepiece


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fusion' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
