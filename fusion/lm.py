"""The ``LanguageModel`` protocol every LM in lmfusion implements.

Contract (see README, "Architecture"):

* scores are **natural-log** probabilities; adapters convert at their boundary (KenLM speaks log10);
* an LM declares its :class:`Units` — whitespace words, or tokens of one named tokenizer — and
  models that are mixed or fused together must agree on them;
* states are immutable and hashable values (like KenLM's ``BaseScore(in_state, word, out_state)``),
  so decoders can cache on ``(state, unit)`` and share states between hypotheses;
* OOV handling is explicit: :meth:`LanguageModel.is_oov` says whether a unit is outside the
  vocabulary, and :attr:`LanguageModel.oov_seen` counts OOV units scored so far.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

State = Hashable
"""An LM state: an immutable, hashable value. Only the LM that made it can interpret it."""

UnitKind = Literal["word", "token"]


@dataclass(frozen=True)
class Units:
    """What an LM predicts.

    Attributes:
        kind: ``"word"`` (whitespace-separated words) or ``"token"`` (pieces of a tokenizer).
        tokenizer: for ``"token"`` units, the tokenizer's identity (e.g. ``"spm:bpe500@3f2a9c1b"``:
            name plus a hash of the model file), so two LMs over different tokenizers never mix.
    """

    kind: UnitKind
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("word", "token"):
            raise ValueError(f"Units.kind must be 'word' or 'token', got {self.kind!r}")
        if self.kind == "token" and not self.tokenizer:
            raise ValueError("token units need the tokenizer's identity")
        if self.kind == "word" and self.tokenizer is not None:
            raise ValueError("word units take no tokenizer")

    @classmethod
    def word(cls) -> Units:
        return cls("word")

    @classmethod
    def token(cls, tokenizer: str) -> Units:
        return cls("token", tokenizer)

    def __str__(self) -> str:
        return "word" if self.kind == "word" else f"token[{self.tokenizer}]"


@dataclass(frozen=True)
class SentenceScore:
    """Scores of one sentence under one LM.

    Attributes:
        units: the units scored (without sentence markers).
        logprobs: natural-log probability of each unit, then of end-of-sentence when ``eos`` was set.
        oov: whether each unit was out of vocabulary.
    """

    units: tuple[str, ...]
    logprobs: np.ndarray
    oov: tuple[bool, ...]

    @property
    def total(self) -> float:
        """Sum of the natural-log probabilities."""
        return float(self.logprobs.sum())

    @property
    def n_oov(self) -> int:
        return sum(self.oov)

    @property
    def n_predictions(self) -> int:
        """Number of predictions scored (units plus end-of-sentence, if scored)."""
        return len(self.logprobs)


class LanguageModel(ABC):
    """Abstract base of every LM: KenLM n-grams, neural LMs, mixtures and unit views.

    Subclasses implement :meth:`begin`, :meth:`score` and :meth:`end`; the batched methods default
    to loops over :meth:`score` and are overridden where a model can do better (a neural LM scores
    ``B x K`` candidates in one forward pass).
    """

    name: str
    units: Units
    oov_seen: int

    def __init__(self, name: str, units: Units) -> None:
        self.name = name
        self.units = units
        self.oov_seen = 0

    # -- the five core methods -------------------------------------------------------------
    @abstractmethod
    def begin(self) -> State:
        """State at the start of a sentence (after ``<s>``)."""

    @abstractmethod
    def score(self, state: State, unit: str) -> tuple[float, State]:
        """``(ln P(unit | state), next_state)``. Pure: ``state`` is not modified."""

    @abstractmethod
    def end(self, state: State) -> float:
        """``ln P(</s> | state)``."""

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        """Score the same ``K`` candidate units after each of ``B`` states.

        Returns:
            ``(logprobs, next_states)`` with ``logprobs`` of shape ``[B, K]`` and
            ``next_states[b][k]`` the state after ``candidates[k]`` from ``states[b]``.
        """
        out = np.empty((len(states), len(candidates)), dtype=np.float64)
        nxt: list[list[State]] = []
        for b, st in enumerate(states):
            row = []
            for k, u in enumerate(candidates):
                out[b, k], ns = self.score(st, u)
                row.append(ns)
            nxt.append(row)
        return out, nxt

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        """Score ``units[i]`` after ``states[i]`` for every ``i`` (one unit per state)."""
        if len(states) != len(units):
            raise ValueError(f"score_pairs: {len(states)} states but {len(units)} units")
        out = np.empty(len(states), dtype=np.float64)
        nxt: list[State] = []
        for i, (st, u) in enumerate(zip(states, units, strict=True)):
            out[i], ns = self.score(st, u)
            nxt.append(ns)
        return out, nxt

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        """``ln P(</s> | state)`` for each state."""
        return np.array([self.end(s) for s in states], dtype=np.float64)

    # -- vocabulary --------------------------------------------------------------------------
    @property
    def vocab(self) -> frozenset[str] | None:
        """The units this LM knows (without ``<s>``/``</s>``), or ``None`` when it cannot list them."""
        return None

    def is_oov(self, unit: str) -> bool:
        """Whether ``unit`` is outside the vocabulary (open-vocabulary models return ``False``)."""
        v = self.vocab
        return v is not None and unit not in v

    def tokenize(self, text: str) -> list[str]:
        """Split a text sentence into this LM's units (whitespace words by default)."""
        return text.split()

    # -- whole sentences ---------------------------------------------------------------------
    def score_sentence(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        """Score a sentence unit by unit from :meth:`begin`, plus ``</s>`` when ``eos``."""
        st = self.begin()
        lps = np.empty(len(units) + int(eos), dtype=np.float64)
        oov = []
        for i, u in enumerate(units):
            lps[i], st = self.score(st, u)
            oov.append(self.is_oov(u))
        if eos:
            lps[-1] = self.end(st)
        self.oov_seen += sum(oov)
        return SentenceScore(tuple(units), lps, tuple(oov))

    def score_sentences(self, sentences: Iterable[Sequence[str]], *, eos: bool = True) -> list[SentenceScore]:
        """Score many sentences; neural LMs override this to batch across sentences."""
        return [self.score_sentence(s, eos=eos) for s in sentences]

    def score_text(self, text: str, *, eos: bool = True) -> SentenceScore:
        """Tokenize ``text`` into this LM's units, then score it."""
        return self.score_sentence(self.tokenize(text), eos=eos)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, units={self.units})"


class BatchFirstLM(LanguageModel):
    """An LM whose batched calls are its primary path: :meth:`score` and :meth:`end` are one-row batches
    of :meth:`~LanguageModel.score_batch` and :meth:`~LanguageModel.end_batch`, which subclasses implement."""

    def score(self, state: State, unit: str) -> tuple[float, State]:
        lp, nxt = self.score_batch([state], [unit])
        return float(lp[0, 0]), nxt[0][0]

    def end(self, state: State) -> float:
        return float(self.end_batch([state])[0])

    @abstractmethod
    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]: ...

    @abstractmethod
    def end_batch(self, states: Sequence[State]) -> np.ndarray: ...


@dataclass
class PerplexityReport:
    """Corpus perplexity: ``exp(-logprob / n_predictions)`` over scored units and ``</s>``."""

    name: str
    logprob: float
    n_sentences: int
    n_predictions: int
    n_oov: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ppl(self) -> float:
        return perplexity(self.logprob, self.n_predictions)


def perplexity_report(lm: LanguageModel, sentences: Sequence[str], *, progress: bool = False) -> PerplexityReport:
    """Score text sentences (tokenized by ``lm``, with ``</s>``) and sum them into a :class:`PerplexityReport`."""
    from fusion.progress import progress_bar

    tokenized = [lm.tokenize(s) for s in sentences]
    bar = progress_bar(tokenized, desc=lm.name, unit="sent", progress=progress, leave=False)
    scores = lm.score_sentences(bar)
    return PerplexityReport(
        name=lm.name,
        logprob=sum(s.total for s in scores),
        n_sentences=len(scores),
        n_predictions=sum(s.n_predictions for s in scores),
        n_oov=sum(s.n_oov for s in scores),
    )


def perplexity(total_logprob: float, n_predictions: int) -> float:
    """``exp(-total_logprob / n_predictions)``; natural-log input."""
    if n_predictions <= 0:
        raise ValueError("perplexity of zero predictions is undefined")
    return math.exp(-total_logprob / n_predictions)


def require_token_lm(lm: LanguageModel) -> None:
    """Raise :class:`UnitMismatchError` unless ``lm`` predicts tokens (what a word-level view needs)."""
    from fusion.errors import UnitMismatchError

    if lm.units.kind != "token":
        raise UnitMismatchError(f"{lm.name!r} predicts {lm.units}; a word-level view needs a subword (token) LM")


def check_word_unit(lm: LanguageModel, word: str) -> None:
    """Raise :class:`LMFusionError` when ``word`` is empty or holds whitespace."""
    from fusion.errors import LMFusionError

    if not word or word.split() != [word]:
        raise LMFusionError(f"{lm.name}: word {word!r} is empty or contains whitespace")


def check_same_units(models: Sequence[LanguageModel]) -> Units:
    """Return the models' common units, or raise :class:`UnitMismatchError` naming the odd one."""
    from fusion.errors import UnitMismatchError

    if not models:
        raise ValueError("no models given")
    first = models[0].units
    for m in models[1:]:
        if m.units != first:
            raise UnitMismatchError(
                f"models must share units: {models[0].name!r} predicts {first}, {m.name!r} predicts {m.units}"
            )
    return first
