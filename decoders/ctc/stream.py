"""Streaming CTC decoding: feed chunks of frames, read the current best any time, finish with an n-best list."""

from __future__ import annotations

from typing import Any

import numpy as np

from decoders.ctc.inputs import as_logprobs
from decoders.hypothesis import NBestList, ScoredHypothesis
from fusion.errors import InputError, LMFusionError


class CTCStream:
    """Streaming CTC decoding: :meth:`feed` chunks of frames, :meth:`best` any time, :meth:`finish`.

    The search state after feeding chunks ``a`` then ``b`` is the same as after feeding ``a ++ b``.
    """

    def __init__(self, decoder: Any) -> None:
        """``decoder``: the :class:`~decoders.ctc.decoder.CTCDecoder` of this utterance."""
        self.decoder = decoder
        self._search = decoder._search(private=True)
        self._done = False
        self._chunks: list[np.ndarray] = []  # kept for the final alignment (token timesteps, confidences)

    @property
    def frames(self) -> int:
        """Frames fed so far."""
        return self._search.t

    def feed(self, logprobs: Any) -> None:
        """Advance over a chunk ``[t, V]`` of log-probabilities (``t`` may be 0)."""
        if self._done:
            raise LMFusionError("CTCStream.feed after finish()")
        if hasattr(logprobs, "shape") and len(logprobs.shape) == 2 and logprobs.shape[0] == 0:
            if logprobs.shape[1] != len(self.decoder.vocab):
                as_logprobs(logprobs, len(self.decoder.vocab))  # raises the size error
            return
        arr = as_logprobs(logprobs, len(self.decoder.vocab), check_normalized=self.decoder.options.check_normalized,
                          what=f"chunk at frame {self.frames}")
        self._search.feed_array(arr)
        if self.decoder.options.align:
            self._chunks.append(arr)

    def best(self) -> ScoredHypothesis:
        """The current best hypothesis, as if the utterance ended now (the search goes on); its word frames are
        the search's (token creation frames), without alignment: :meth:`finish` aligns."""
        if self._search.t == 0:
            return ScoredHypothesis("", {c: 0.0 for c in self.decoder.components})
        fin = self._search.finals(1)
        _, node, scores = fin[0]
        return self._search.hypothesis(node, scores)

    def finish(self, *, utt_id: str = "utt", ref: str | None = None) -> NBestList:
        """The final n-best list; the stream cannot be fed afterwards."""
        if self._search.t == 0:
            raise InputError("CTCStream.finish: no frames were fed", field="emissions")
        self._done = True
        arr = np.concatenate(self._chunks) if self._chunks else np.zeros((0, len(self.decoder.vocab)))
        self._chunks = []
        return self._search.finish(utt_id=utt_id, ref=ref, logprobs=arr if self.decoder.options.align else None)

