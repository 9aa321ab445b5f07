"""Optional abilities of a :class:`~fusion.lm.LanguageModel`, as typed Protocols.

A decoder or rescorer that can use a faster path checks for it with ``isinstance(lm, Ability)`` (the
Protocols are ``runtime_checkable``), never with ``hasattr`` or ``type(lm) is ...``:

* :class:`SentenceBatchScorer` — whole sentences at once (KenLM's own ``Model.score``, a neural LM's
  padded batch, an LLM with prefix sharing). The n-best rescorer uses it.
* :class:`FullDistribution` — the next-unit distribution over the whole vocabulary (a softmax), for
  full scorers.
* :class:`UnknownWordsAlike` — every out-of-vocabulary unit scores as one unknown unit (KenLM's
  ``<unk>``), so a search can cache them as one.
* :class:`NgramArraysSource` — a back-off n-gram that can hand over its model as
  :class:`~fusion.ngram_arrays.NgramArrays`, so a compiled search can score it without leaving compiled
  code (KenLM, when its ARPA is readable).
* :class:`Reloadable` — the LM describes itself as an :class:`LMSpec` (files and options, no model
  objects), so a worker process or a Dask worker can open its own copy; nothing with C or torch state is
  pickled.

:class:`LMSpec` is that description: a path (KenLM file or neural checkpoint directory), an optional
tokenizer, a loader kind, or the components of an interpolation; :func:`fusion.loading.open_spec` opens it.
This module is a leaf: it imports only :mod:`fusion.lm` and :mod:`fusion.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fusion.errors import LMFusionError
from fusion.lm import LanguageModel, State

__all__ = [
    "FullDistribution", "LMSpec", "NgramArraysSource", "Reloadable", "SentenceBatchScorer", "UnknownWordsAlike",
    "spec_of",
]


@runtime_checkable
class SentenceBatchScorer(Protocol):
    """Scores whole sentences in one call."""

    def sentence_logprobs(self, texts: Sequence[str], bos: bool = True, eos: bool = True) -> np.ndarray:
        """Natural-log probability of each whitespace-tokenised sentence, float64 ``[N]``."""
        ...


@runtime_checkable
class FullDistribution(Protocol):
    """Gives the next-unit distribution over the whole vocabulary."""

    def logprobs_all(self, states: Sequence[State]) -> np.ndarray:
        """Natural-log next-unit probabilities ``[B, V]`` for each state (V = the LM's vocabulary)."""
        ...


@runtime_checkable
class Reloadable(Protocol):
    """Describes itself so another process can open the same LM."""

    def spec(self) -> LMSpec:
        """The files and options this LM was opened from."""
        ...


@runtime_checkable
class NgramArraysSource(Protocol):
    """A back-off n-gram whose model can be read into flat arrays (:mod:`fusion.ngram_arrays`)."""

    def ngram_arrays(self) -> Any:
        """The model as :class:`~fusion.ngram_arrays.NgramArrays` scoring exactly as this LM does, or
        ``None`` when it cannot be read (a KenLM binary without its ARPA)."""
        ...


@runtime_checkable
class UnknownWordsAlike(Protocol):
    """Scores every unit outside its vocabulary as one unknown unit (KenLM: ``<unk>``): same score, same
    next state. A search may then give all unknown words after one context a single cache entry."""

    def unknown_unit(self) -> str:
        """The unit every out-of-vocabulary unit is scored as."""
        ...


@dataclass(frozen=True)
class LMSpec:
    """How to open an LM in another process (picklable: strings and numbers only).

    Attributes:
        name: the LM's name (the key of its weight and score column).
        path: a KenLM file or a checkpoint directory (see :func:`fusion.loading.load_lm`).
        tokenizer: the sentencepiece model of an n-gram over pieces.
        kind: a loader name for kinds that the path alone does not tell (``None``: guess from the path).
        options: loader keyword options (strings, numbers, booleans).
        mix: for an interpolation, its components and their weights.
        mix_kind: ``"linear"`` or ``"loglinear"``.
    """

    name: str
    path: str | None = None
    tokenizer: str | None = None
    kind: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    mix: tuple[tuple[LMSpec, float], ...] = ()
    mix_kind: str = "linear"


def spec_of(lm: LanguageModel) -> LMSpec:
    """The :class:`LMSpec` of an LM that can describe itself.

    Raises:
        LMFusionError: the LM was built in memory and cannot be reopened elsewhere.
    """
    if isinstance(lm, Reloadable):
        return lm.spec()
    raise LMFusionError(
        f"LM {lm.name!r} ({type(lm).__name__}) cannot be reopened in another process: it has no spec(); "
        "open it from files (fusion.loading.load_lm) or pass an LMSpec"
    )
