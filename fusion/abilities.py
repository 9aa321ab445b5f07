"""Optional abilities of a :class:`~fusion.lm.LanguageModel`, as typed Protocols.

A decoder or rescorer that can use a faster path checks for it with ``isinstance(lm, Ability)`` (the
Protocols are ``runtime_checkable``), never with ``hasattr`` or ``type(lm) is ...``:

* :class:`SentenceBatchScorer` — whole sentences at once (KenLM's own ``Model.score``, a neural LM's
  padded batch, an LLM with prefix sharing). The n-best rescorer uses it.
* :class:`FullDistribution` — the next-unit distribution over the whole vocabulary (a softmax), for
  full scorers.
* :class:`UnknownWordsAlike` — every out-of-vocabulary unit scores as one unknown unit (KenLM's
  ``<unk>``), so a search can cache them as one.
* :class:`ArpaBacked` — a back-off n-gram that names the ARPA file it scores exactly as, so a compiled
  search can read it into :class:`~fusion.ngram_arrays.NgramArrays` and score it without leaving compiled
  code (KenLM, when it was opened from an ARPA or its ARPA was kept beside the binary).
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
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fusion.errors import LMFusionError
from fusion.lm import LanguageModel, State

__all__ = [
    "ArpaBacked", "FullDistribution", "LMSpec", "Reloadable", "SentenceBatchScorer", "UnknownWordsAlike",
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
class ArpaBacked(Protocol):
    """A back-off n-gram with an ARPA file holding exactly its model (:func:`fusion.ngram_arrays.load_ngram_arrays`
    reads it into arrays that score as this LM does)."""

    def arpa_path(self) -> Path | None:
        """The ARPA file, or ``None`` when there is none (a KenLM binary built without ``keep_arpa``)."""
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
