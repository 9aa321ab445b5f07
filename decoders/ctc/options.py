"""Search options of the CTC decoder (:class:`CTCOptions`), validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fusion.errors import LMFusionError

BACKENDS = ("auto", "numba", "aot", "jit", "numpy")


@dataclass(frozen=True)
class CTCOptions:
    """Search options (validated on construction).

    Attributes:
        beam_width: most prefixes kept per frame.
        token_min_logp: per-frame token pruning: only tokens with a log-prob at least this
            (plus the frame's best token) extend prefixes.
        beam_prune_logp: prefixes scoring below the frame's best plus this (negative) are dropped.
        nbest: hypotheses returned per utterance.
        lexicon_constrained: only words of the lexicon may come out.
        unk_score_offset: the default out-of-vocabulary handling, pyctcdecode's: added, in log10 units
            (KenLM's and pyctcdecode's), to every word LM's score of a word outside the lexicon, *before*
            the LM's weight applies. With weights ``{"lm": alpha, "words": beta}`` an unknown word so
            costs ``alpha * unk_score_offset * ln 10`` more, exactly as in pyctcdecode with the same alpha,
            beta and ``unk_score_offset``. The word LM's score component includes the offset. ``0`` turns
            it off; the ``oov`` component (the count of such words, weight 0 unless given) is an extra,
            separately tunable penalty.
        unk_prefix_score: added to the ranking score while the open word cannot start any known
            word (open-vocabulary mode with a lexicon; pyctcdecode's partial-word penalty).
        unk_prefix_avg_len: past this many characters, ``unk_prefix_score`` grows with the open
            word's length (``unk_prefix_score * len / unk_prefix_avg_len``).
        lookahead: while a word is open and can still become known words, rank it by the best
            weighted word-LM score (from the sentence start) among those words, as flashlight-text's
            smeared lexicon trie does; the true score replaces it when the word completes.
        eos: add each LM's end-of-sentence score to the final hypotheses.
        align: force-align each output hypothesis to the emissions (:mod:`decoders.ctc.align`): per-token
            ``timesteps``, word frames of the best path and word ``confidence``. ``False``: no timesteps or
            confidences, and word frames are the search's (the frame each token was first emitted in).
        check_normalized: reject emission rows that are not log-probabilities (logsumexp != 0).
        backend: ``"numba"`` (the compiled frame loop: ahead of time when built, else numba's JIT; see
            :mod:`decoders.ctc.kernels`), ``"aot"`` / ``"jit"`` (that one or an error), ``"numpy"`` (vectorised per
            frame), or ``"auto"`` (compiled when possible, numpy with a warning otherwise).
    """

    beam_width: int = 64
    token_min_logp: float = -5.0
    beam_prune_logp: float = -10.0
    nbest: int = 10
    lexicon_constrained: bool = False
    unk_score_offset: float = -10.0
    unk_prefix_score: float = -10.0
    unk_prefix_avg_len: int = 6
    lookahead: bool = False
    eos: bool = True
    align: bool = True
    check_normalized: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("beam_width", "nbest", "unk_prefix_avg_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LMFusionError(f"CTCOptions.{name} must be an int >= 1, got {v!r}")
        for name in ("token_min_logp", "beam_prune_logp", "unk_prefix_score", "unk_score_offset"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v > 0:
                raise LMFusionError(f"CTCOptions.{name} must be a number <= 0, got {v!r}")
        if not math.isfinite(self.unk_score_offset):
            raise LMFusionError(f"CTCOptions.unk_score_offset must be finite, got {self.unk_score_offset!r}")
        if self.backend not in BACKENDS:
            raise LMFusionError(f"CTCOptions.backend must be one of {BACKENDS}, got {self.backend!r}")
