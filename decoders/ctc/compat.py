"""A pyctcdecode-shaped front door to :class:`~decoders.ctc.decoder.CTCDecoder` (switch by changing the import).

``build_ctcdecoder(labels, kenlm_model_path, unigrams, alpha, beta)`` returns a :class:`BeamSearchDecoderCTC`
with pyctcdecode's ``decode``, ``decode_beams`` and ``decode_batch`` (same argument names, same output
shapes). Mapping: ``alpha`` -> weight ``"lm"``, ``beta`` -> weight ``"words"``, ``unigrams`` -> the lexicon,
the blank is the ``""`` label (appended last when there is none, as pyctcdecode assumes), rows that are not
log-probabilities get log-softmax (pyctcdecode takes raw logits too). Hotwords: pyctcdecode's
``hotword_weight`` is a score per completed hotword, spread over its characters; here each phrase's boost per
label is ``hotword_weight / its number of labels`` under weight 1 on ``"hotwords"``, and an unfinished phrase's
bonus is taken back (pyctcdecode keeps a partial-match bonus). :class:`CTCHypothesis` is a torchaudio-style view.

Word frames are those of the best alignment (:mod:`decoders.ctc.align`): ``(first frame of the word, last
frame + 1)``. ``decode_batch`` / ``decode_beams_batch`` map over the given pool as pyctcdecode does: workers
forked after the decoder was built use it as it is (nothing is pickled but the key of a registry and the
logits); a worker that lacks it (a ``spawn`` pool, or a pool made before the decoder) rebuilds it once from the
decoder's picklable spec. Without a pool, or when a spawned worker could not rebuild the decoder (an LM built
in memory), decoding runs here, one utterance after another, with a warning for the latter.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from decoders.ctc.decoder import CTCDecoder, CTCDecoderSpec
from decoders.ctc.options import CTCOptions
from decoders.ctc.output import CTCHypothesis, ctc_hypothesis
from decoders.hypothesis import ScoredHypothesis
from fusion.errors import LMFusionError

BLANK_NAME = "<blank>"
WordFrames = tuple[str, tuple[int, int]]
Beam = tuple[str, None, list[WordFrames], float, float]
"""pyctcdecode's output beam: ``(text, last LM state (None here), [(word, (start, end))], logit score, lm score)``."""
BeamMPSafe = tuple[str, list[WordFrames], float, float]
"""pyctcdecode's beam from a batch: ``(text, [(word, (start, end))], logit score, lm score)``."""

__all__ = ["BeamSearchDecoderCTC", "CTCHypothesis", "build_ctcdecoder"]

_LIVE: weakref.WeakValueDictionary[bytes, BeamSearchDecoderCTC] = weakref.WeakValueDictionary()
"""This process's decoders by key (a forked pool worker inherits them)."""
_REBUILT: dict[bytes, BeamSearchDecoderCTC] = {}
"""Decoders a pool worker rebuilt from their specs (kept for the worker's life)."""


def _is_logprob(x: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.all(np.abs(np.exp(x).sum(axis=1) - 1.0) <= 1e-3))


class BeamSearchDecoderCTC:
    """pyctcdecode's decoder API over lmfusion's CTC search (see the module docstring)."""

    def __init__(self, decoder: CTCDecoder, labels: Sequence[str]) -> None:
        self.decoder = decoder
        self._given_labels = list(labels)
        self._key = os.urandom(16)
        _LIVE[self._key] = self

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

    def _spec(self) -> CTCDecoderSpec | None:
        try:
            return self.decoder.spec()
        except LMFusionError:
            return None

    def _map(self, pool: Any, method: str, logits_list: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        """``method(logits, **kwargs)`` of each utterance, over ``pool`` when it can run there."""
        own = getattr(self, method)
        if pool is None:
            return [own(x, **kwargs) for x in logits_list]
        spec = self._spec()
        if spec is None and isinstance(getattr(pool, "_ctx", None), mp.context.SpawnContext):
            warnings.warn("a spawned pool cannot rebuild this decoder (an LM built in memory has no spec): "
                          "decoding here, one utterance after another", UserWarning, stacklevel=3)
            return [own(x, **kwargs) for x in logits_list]
        job = functools.partial(_pool_call, self._key, spec, tuple(self._given_labels), method, kwargs)
        return list(pool.map(job, list(logits_list)))

    def decode_batch(self, pool: Any, logits_list: Sequence[Any], beam_width: int = 100,
                     beam_prune_logp: float = -10.0, token_min_logp: float = -5.0,
                     hotwords: Sequence[str] | None = None, hotword_weight: float = 10.0) -> list[str]:
        """Transcripts of many utterances, mapped over ``pool`` (a ``multiprocessing`` pool, or ``None``);
        the same as :meth:`decode` of each."""
        kw = {"beam_width": beam_width, "beam_prune_logp": beam_prune_logp, "token_min_logp": token_min_logp,
              "hotwords": hotwords, "hotword_weight": hotword_weight}
        return self._map(pool, "decode", logits_list, kw)

    def decode_beams_batch(self, pool: Any, logits_list: Sequence[Any], beam_width: int = 100,
                           beam_prune_logp: float = -10.0, token_min_logp: float = -5.0,
                           prune_history: bool = False, hotwords: Sequence[str] | None = None,
                           hotword_weight: float = 10.0) -> list[list[BeamMPSafe]]:
        """pyctcdecode's batch beams, mapped over ``pool``: per utterance ``[(text, word frames, logit score,
        lm score)]`` (no LM state)."""
        kw = {"beam_width": beam_width, "beam_prune_logp": beam_prune_logp, "token_min_logp": token_min_logp,
              "prune_history": prune_history, "hotwords": hotwords, "hotword_weight": hotword_weight}
        beams = self._map(pool, "decode_beams", logits_list, kw)
        return [[(t, f, a, b) for t, _, f, a, b in bs] for bs in beams]

    def hypotheses(self, logits: Any, beam_width: int = 100) -> list[CTCHypothesis]:
        """torchaudio-style hypotheses: label ids, words, score, one timestep per token (and word confidences)."""
        nb = self._run(logits, beam_width, -10.0, -5.0, None, 0.0)
        return [self.as_ctc_hypothesis(h) for h in nb.hyps]

    def as_ctc_hypothesis(self, h: ScoredHypothesis) -> CTCHypothesis:
        """The torchaudio-style view of one of this decoder's hypotheses."""
        return ctc_hypothesis(h, self.decoder.labels, self.decoder.vocab.blank, self.decoder.weights)


def _pool_call(key: bytes, spec: CTCDecoderSpec | None, labels: tuple[str, ...], method: str,
               kwargs: dict[str, Any], logits: Any) -> Any:
    """One utterance in a pool worker: the decoder inherited by fork, or rebuilt once from its spec."""
    dec = _LIVE.get(key) or _REBUILT.get(key)
    if dec is None:
        if spec is None:
            raise LMFusionError("this pool worker does not have the decoder and cannot rebuild it (an LM built in "
                                "memory): make the pool with a 'fork' context after building the decoder")
        dec = _REBUILT[key] = BeamSearchDecoderCTC(spec.build(), labels)
    return getattr(dec, method)(logits, **kwargs)


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
