"""The plain, obviously-correct references beside lmfusion's fast paths, in one place.

Each is slow on purpose: a loop over units or samples, built from protocol calls only. Tests hold the
fast path to its reference; a library path may fall back to one where nothing faster applies.

* :func:`score_unit_by_unit` — a sentence scored one unit at a time through ``score``/``end`` (the
  incremental path), beside batched ``score_sentences``;
* :class:`SlowWordLevelLM` — the word-level view of any token LM that lists its vocabulary, beside
  :class:`fusion.units.WordLevelLM` (:func:`fusion.units.word_view` uses it for non-neural token LMs);
* :func:`wada_snr_reference`, :func:`noise_floor_snr_reference` — per-sample loops beside
  :func:`fusion.snr.wada_snr` and :func:`fusion.snr.noise_floor_snr`;
* :class:`FullPrefixLMScorer` — re-reads every hypothesis's whole prefix from ``lm.begin()`` each step
  (what fairseq's ``--lm-weight`` and whisper-lm do), beside the cached
  :class:`~fusion.scorers.TokenLMScorer` / :class:`~fusion.scorers.WordLMScorer`; the anchor of the
  fusion-overhead benchmark;
* :class:`RereadWordLMScorer` — the open-word fused score with every candidate's whole text re-read from
  ``<s>`` (whisper-lm's way), beside :class:`~fusion.scorers.OpenWordLMScorer`; the anchor of
  ``benchmarks/bench_whisper_fusion.py`` (b).

References that live with their engineers' modules: ``fusion.tuning`` (``error_rate_reference``,
``line_search_reference``, ``dominated_reference``), ``fusion.metrics.edit_distance_reference`` and
``decoders.ctc.reference_beam_search``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.lm import LanguageModel, SentenceScore, State, Units, check_word_unit, require_token_lm
from fusion.neural import NeuralLM
from fusion.scorers.base import FullScorer, ScorerState, check_token_units
from fusion.scorers.lm import TokenLMScorer, UnscoredPrice, WordLMScorer
from fusion.snr import _EPS, SNR_MAX_DB, SNR_MIN_DB, _clamp, _invert
from fusion.token_units import word_text
from fusion.tokenizers import WORD_START

__all__ = [
    "FullPrefixLMScorer",
    "RereadWordLMScorer",
    "SlowWordLevelLM",
    "noise_floor_snr_reference",
    "score_unit_by_unit",
    "wada_snr_reference",
]


def score_unit_by_unit(lm: LanguageModel, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
    """Score a sentence from ``lm.begin()`` one unit at a time (``score``, then ``end``), ignoring any
    batched ``score_sentence`` override: the incremental path batched scorers are tested against."""
    return LanguageModel.score_sentence(lm, units, eos=eos)


class SlowWordLevelLM(LanguageModel):
    """The word-level view over any token LM, from protocol calls only (the reference implementation).

    ``B(s)`` is computed by scoring every word-start piece of the vocabulary plus ``end``: ``|V|``
    scores per boundary, so use it for checking and for small token n-grams.

    Args:
        lm: a token-level LM whose :attr:`~fusion.lm.LanguageModel.vocab` lists its pieces.
        encode_word: word -> pieces (default ``lm.tokenize``).
        word_start: prefix marking a word-initial piece (``"▁"``).
    """

    def __init__(self, lm: LanguageModel, *, name: str | None = None,
                 encode_word: Callable[[str], list[str]] | None = None, word_start: str = WORD_START) -> None:
        require_token_lm(lm)
        vocab = lm.vocab
        if vocab is None:
            raise LMFusionError(f"{lm.name!r} cannot list its vocabulary: the word-end mass is undefined")
        super().__init__(name or lm.name, Units.word())
        self.lm = lm
        self.encode_word = encode_word or lm.tokenize
        self.start_pieces = sorted(p for p in vocab if p.startswith(word_start))
        if not self.start_pieces:
            raise LMFusionError(f"{lm.name!r}: no piece starts with {word_start!r}")

    def boundary_logmass(self, state: State) -> float:
        lp, _ = self.lm.score_batch([state], self.start_pieces)
        return float(np.logaddexp.reduce(np.append(lp[0], self.lm.end(state))))

    def begin(self) -> State:
        return self.lm.begin()

    def score(self, state: State, unit: str) -> tuple[float, State]:
        check_word_unit(self, unit)
        pieces = self.encode_word(unit)
        total = -self.boundary_logmass(state)
        st = state
        for p in pieces:
            lp, st = self.lm.score(st, p)
            total += lp
        return total + self.boundary_logmass(st), st

    def end(self, state: State) -> float:
        return self.lm.end(state) - self.boundary_logmass(state)

    def is_oov(self, unit: str) -> bool:
        return any(self.lm.is_oov(p) for p in self.encode_word(unit))


def wada_snr_reference(x: list[float] | np.ndarray) -> float:
    """Plain-Python reference of :func:`wada_snr` (one loop over samples), for tests."""
    xs = [float(v) for v in np.asarray(x).reshape(-1)]
    peak = max(abs(v) for v in xs)
    if peak == 0.0:
        return SNR_MAX_DB
    total_abs = 0.0
    total_log = 0.0
    for v in xs:
        a = max(abs(v) / peak, _EPS)
        total_abs += a
        total_log += math.log(a)
    g = math.log(total_abs / len(xs)) - total_log / len(xs)
    return _invert(g)


def noise_floor_snr_reference(
    x: list[float] | np.ndarray, sample_rate: int = 16000, *, quantile: float = 0.1, frame_ms: float = 25.0
) -> float:
    """Plain-Python reference of :func:`noise_floor_snr`."""
    xs = [float(v) for v in np.asarray(x).reshape(-1)]
    f = max(1, round(frame_ms * sample_rate / 1000.0))
    energies = []
    for i in range(len(xs) // f):
        frame = xs[i * f : (i + 1) * f]
        energies.append(sum(v * v for v in frame) / f)
    energies.sort()
    k = max(1, int(quantile * len(energies)))
    pn = sum(energies[:k]) / k
    pt = sum(energies) / len(energies)
    if pn <= 0.0:
        return SNR_MAX_DB
    if pt - pn <= 0.0:
        return SNR_MIN_DB
    return _clamp(10.0 * math.log10((pt - pn) / pn))


class FullPrefixLMScorer(FullScorer):
    """Re-scores every hypothesis from ``lm.begin()`` over its whole prefix each step (no state kept).

    ``mode`` is ``"token"`` or ``"word"``. For a :class:`~fusion.neural.NeuralLM` ``reread_forward=True``
    runs one uncached forward pass over ``<s> + prefix`` per hypothesis batch instead of walking the
    LM's (cached) states.
    """

    def __init__(
        self,
        lm: LanguageModel,
        token_units: Sequence[str | None],
        eos_id: int,
        *,
        mode: str = "token",
        name: str | None = None,
        reread_forward: bool = False,
        unscored: UnscoredPrice = "uniform",
    ) -> None:
        check_token_units(token_units, eos_id)
        if mode not in ("token", "word"):
            raise ValueError(f"mode must be 'token' or 'word', got {mode!r}")
        self.inner: TokenLMScorer | WordLMScorer
        if mode == "token":
            self.inner = TokenLMScorer(lm, token_units, eos_id, partial=True, allow_oov=True, unscored=unscored)
        else:
            self.inner = WordLMScorer(lm, token_units, eos_id, unscored=unscored)
        self.lm = lm
        self.mode = mode
        self.name = name or lm.name
        self.token_units = list(token_units)
        self.vocab_size = len(self.token_units)
        self.eos_id = eos_id
        self.reread_forward = reread_forward
        if reread_forward and not (mode == "token" and isinstance(lm, NeuralLM)):
            raise LMFusionError("reread_forward needs a token-level NeuralLM")

    def init_state(self) -> ScorerState:
        return None

    def _state_of(self, hyp: Sequence[int]) -> ScorerState:
        st = self.inner.init_state()
        for t in hyp:
            _, ctx = self.inner.score([()], [st], np.array([[int(t)]]))
            st = self.inner.select_state(ctx, [0], [int(t)])[0]
        return st

    def _forward_full(self, hyps: Sequence[Sequence[int]]) -> np.ndarray:
        import torch

        lm = self.lm
        inner = self.inner
        assert isinstance(lm, NeuralLM) and isinstance(inner, TokenLMScorer)
        seqs = [[lm.bos_id] + [int(inner._lm_cols[t]) for t in h if inner.mapped[t]] for h in hyps]
        n = max(map(len, seqs))
        ids = torch.full((len(seqs), n), lm.bos_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        with torch.inference_mode():
            logits = lm.model(ids)
            last = logits[torch.arange(len(seqs)), torch.tensor([len(s) - 1 for s in seqs])]
            lp = torch.log_softmax(last.float(), dim=-1).double().numpy()
        out = np.full((len(hyps), self.vocab_size), inner.unscored, dtype=np.float64)
        out[:, inner.mapped] = lp[:, inner._lm_cols[inner.mapped]]
        out[:, self.eos_id] = lp[:, lm.eos_id]
        return out

    def score(
        self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState], candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        if self.reread_forward:
            full = self._forward_full(hyps)
        else:
            full = np.zeros((len(hyps), self.vocab_size), dtype=np.float64)
            all_ids = np.arange(self.vocab_size)[None, :]
            for b, h in enumerate(hyps):
                st = self._state_of(h)
                if self.mode == "token":
                    cand = all_ids if candidates is None else np.asarray(candidates)[b : b + 1]
                    row, _ = self.inner.score([h], [st], cand)
                    if candidates is None:
                        full[b] = row[0]
                    else:
                        full[b, cand[0]] = row[0]
                else:
                    row, _ = self.inner.score([h], [st], None)
                    full[b] = row[0]
        out = full if candidates is None else np.take_along_axis(full, np.asarray(candidates), axis=1)
        return out, None

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        return [None] * len(rows)


class RereadWordLMScorer(WordLMScorer):
    """The open-word fused score computed the way whisper-lm computes its LM score: the whole text re-read.

    Beside :class:`~fusion.scorers.OpenWordLMScorer` (which keeps each prefix's LM state and runs only the
    new pieces), this scorer keeps only each hypothesis's words and the log-probability of its text. For
    every hypothesis and every candidate token it builds the text after the candidate and scores it from
    ``<s>`` with **one** ``lm.score_sentence`` call (one forward pass over the whole text for a neural
    word view), then returns the difference to the hypothesis's text score (already known from the step
    that chose it, so the prefix alone is never re-read). A candidate that leaves the text unchanged
    (punctuation) is re-read too, as whisper-lm re-reads every candidate; ``</s>`` re-reads the text with
    end-of-sentence. The scores telescope to the same totals as :class:`~fusion.scorers.OpenWordLMScorer`'s
    (tests hold the two together). The state is ``(words, ln P(text))``, the last word open (maybe ``""``).
    """

    def __init__(self, lm: LanguageModel, token_units: Sequence[str | None], eos_id: int, *,
                 name: str | None = None, unscored: UnscoredPrice = "uniform") -> None:  # fmt: skip
        super().__init__(lm, token_units, eos_id, name=name, partial=True, unscored=unscored)
        self.reads = 0
        """Number of whole-text reads (one ``score_sentence`` call each)."""

    def init_state(self) -> ScorerState:
        return (("",), 0.0)

    def text_logprob(self, words: Sequence[str], eos: bool) -> float:
        """``ln P(words [+ </s>])`` read from ``<s>`` in one ``score_sentence`` call (0 for no text)."""
        ws = [word_text(w) if self._bytes else w for w in words if w]
        if not ws and not eos:
            return 0.0
        self.reads += 1
        return float(self.lm.score_sentence(ws, eos=eos).logprobs.sum())

    def _after(self, words: tuple[str, ...], t: int) -> tuple[str, ...]:
        text = self.texts[t]
        if t == self.eos_id or text is None:
            return words
        if self.starts[t]:
            return (*words[:-1], *((words[-1],) if words[-1] else ()), text)
        return (*words[:-1], words[-1] + text)

    def score(self, hyps: Sequence[Sequence[int]], states: Sequence[ScorerState],
              candidates: np.ndarray | None = None) -> tuple[np.ndarray, Any]:  # fmt: skip
        if candidates is None:
            raise LMFusionError(f"partial scorer {self.name!r} needs candidates")
        cand = np.asarray(candidates)
        out = np.where(self.unseen[cand], self.unscored, 0.0)
        nxt: dict[tuple[int, int], ScorerState] = {}
        for b, k in np.ndindex(*cand.shape):
            t = int(cand[b, k])
            if self.unseen[t]:
                continue
            st: Any = states[b]
            words, lp = st
            new = self._after(words, t)
            lp_new = self.text_logprob(new, eos=t == self.eos_id)
            out[b, k] = lp_new - lp
            nxt[(b, t)] = (new, lp_new)
        return out, {"states": list(states), "next": nxt}

    def select_state(self, ctx: Any, rows: Sequence[int], tokens: Sequence[int]) -> list[ScorerState]:
        out: list[ScorerState] = []
        for r, t in zip(rows, (int(x) for x in tokens), strict=True):
            words, lp = ctx["states"][r]
            if t == self.eos_id or self.unseen[t]:
                out.append((words, lp))
            elif (r, t) in ctx["next"]:
                out.append(ctx["next"][(r, t)])
            else:  # not a scored candidate: read it now
                new = self._after(words, t)
                out.append((new, self.text_logprob(new, eos=False)))
        return out

    def final_score(self, state: ScorerState) -> float:
        st: Any = state
        words, lp = st
        return self.text_logprob(words, eos=True) - lp
