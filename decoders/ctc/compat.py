"""A pyctcdecode-shaped front door to :class:`~decoders.ctc.decoder.CTCDecoder` (switch by changing the import).

``build_ctcdecoder(labels, kenlm_model_path, unigrams, alpha, beta)`` returns a :class:`BeamSearchDecoderCTC`
with pyctcdecode's ``decode``, ``decode_beams`` and ``decode_batch`` (same argument names, same output
shapes). Mapping: ``alpha`` -> weight ``"lm"``, ``beta`` -> weight ``"words"``, ``unigrams`` -> the lexicon,
the blank is the ``""`` label (appended last when there is none, as pyctcdecode assumes), rows that are not
log-probabilities get log-softmax (pyctcdecode takes raw logits too). Hotwords: pyctcdecode's
``hotword_weight`` is a score per completed hotword, spread over its characters; here each phrase's boost per
label is ``hotword_weight / its number of labels`` under weight 1 on ``"hotwords"``, and an unfinished phrase's
bonus is taken back (pyctcdecode keeps a partial-match bonus). :class:`CTCHypothesis` is a torchaudio-style view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from decoders.ctc.decoder import CTCDecoder
from decoders.ctc.options import CTCOptions
from decoders.hypothesis import ScoredHypothesis
from fusion.errors import LMFusionError

BLANK_NAME = "<blank>"
WordFrames = tuple[str, tuple[int, int]]
Beam = tuple[str, None, list[WordFrames], float, float]
"""pyctcdecode's output beam: ``(text, last LM state (None here), [(word, (start, end))], logit score, lm score)``."""


@dataclass(frozen=True)
class CTCHypothesis:
    """A torchaudio-style view of a hypothesis: ``tokens`` (label ids), ``words``, ``score``, ``timesteps``
    (the frame of each word's start, torchaudio reports one per token)."""

    tokens: tuple[int, ...]
    words: tuple[str, ...]
    score: float
    timesteps: tuple[int, ...]


def _is_logprob(x: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.all(np.abs(np.exp(x).sum(axis=1) - 1.0) <= 1e-3))


class BeamSearchDecoderCTC:
    """pyctcdecode's decoder API over lmfusion's CTC search (see the module docstring)."""

    def __init__(self, decoder: CTCDecoder, labels: Sequence[str]) -> None:
        self.decoder = decoder
        self._index = {lab: i for i, lab in enumerate(decoder.labels)}
        self._given_labels = list(labels)

    def _hot(self, hotwords: Sequence[str] | None, hotword_weight: float) -> dict[str, float] | None:
        if not hotwords:
            return None
        tok = self.decoder._hot_graphs.tokenize
        return {h: hotword_weight / max(1, len(tok(" ".join(h.split())))) for h in hotwords if h.strip()}

    def _run(self, logits: Any, beam_width: int, beam_prune_logp: float, token_min_logp: float,
             hotwords: Sequence[str] | None, hotword_weight: float) -> Any:
        arr = np.asarray(logits.detach().cpu().float().numpy() if hasattr(logits, "detach") else logits,
                         dtype=np.float64)
        hot = self._hot(hotwords, hotword_weight)
        return self.decoder.decode(arr, logits=not _is_logprob(arr), beam_width=beam_width,
                                   beam_prune_logp=beam_prune_logp, token_min_logp=token_min_logp,
                                   hotwords=hot, hotword_weight=1.0 if hot else None)

    def decode(self, logits: Any, beam_width: int = 100, beam_prune_logp: float = -10.0,
               token_min_logp: float = -5.0, hotwords: Sequence[str] | None = None,
               hotword_weight: float = 10.0, lm_start_state: Any = None) -> str:
        """The best transcript (pyctcdecode's ``decode``)."""
        if lm_start_state is not None:
            raise LMFusionError("lm_start_state is not supported; use CTCDecoder.stream() for streaming")
        nb = self._run(logits, beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
        return str(nb.hyps[0].text) if nb.hyps else ""

    def decode_beams(self, logits: Any, beam_width: int = 100, beam_prune_logp: float = -10.0,
                     token_min_logp: float = -5.0, prune_history: bool = False,
                     hotwords: Sequence[str] | None = None, hotword_weight: float = 10.0,
                     lm_start_state: Any = None) -> list[Beam]:
        """pyctcdecode's beams: ``(text, None, [(word, (start_frame, end_frame))], logit_score, lm_score)``."""
        nb = self._run(logits, beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
        w = self.decoder.weights
        out: list[Beam] = []
        for h in nb.hyps:
            frames = [(word, (int(s), int(e))) for word, s, e in h.words]
            out.append((h.text, None, frames, float(h.scores["am"]), float(h.total(w))))
        return out

    def decode_batch(self, pool: Any, logits_list: Sequence[Any], beam_width: int = 100,
                     beam_prune_logp: float = -10.0, token_min_logp: float = -5.0,
                     hotwords: Sequence[str] | None = None, hotword_weight: float = 10.0) -> list[str]:
        """Transcripts of many utterances (``pool`` is accepted and not used: decoding runs here)."""
        return [self.decode(x, beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
                for x in logits_list]

    def hypotheses(self, logits: Any, beam_width: int = 100) -> list[CTCHypothesis]:
        """torchaudio-style hypotheses."""
        nb = self._run(logits, beam_width, -10.0, -5.0, None, 0.0)
        return [self.as_ctc_hypothesis(h) for h in nb.hyps]

    def as_ctc_hypothesis(self, h: ScoredHypothesis) -> CTCHypothesis:
        return CTCHypothesis(
            tokens=tuple(self._index[t] for t in h.tokens),
            words=tuple(w for w, _, _ in h.words),
            score=float(h.total(self.decoder.weights)),
            timesteps=tuple(int(s) for _, s, _ in h.words),
        )


def build_ctcdecoder(labels: Sequence[str], kenlm_model_path: str | None = None,
                     unigrams: Sequence[str] | None = None, alpha: float = 0.5, beta: float = 1.5,
                     unk_score_offset: float = -10.0, lm_score_boundary: bool = True) -> BeamSearchDecoderCTC:
    """pyctcdecode's ``build_ctcdecoder`` over lmfusion (see the module docstring)."""
    labs = list(labels)
    if "" not in labs:
        labs.append("")
    blank = labs.index("")
    labs[blank] = BLANK_NAME
    lms = []
    if kenlm_model_path is not None:
        from fusion.ngram import KenLM

        lms.append(KenLM(kenlm_model_path, name="lm"))
    opts = CTCOptions(unk_score_offset=unk_score_offset, eos=lm_score_boundary)
    dec = CTCDecoder(labs, lms, {"lm": alpha, "words": beta} if lms else {"words": beta}, blank=blank,
                     options=opts, lexicon=list(unigrams) if unigrams is not None else None)
    return BeamSearchDecoderCTC(dec, labels)
