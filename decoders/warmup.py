"""Compile and cache every numba kernel once, so a fresh process decodes its first utterance fast.

``make setup`` runs ``python -m decoders.warmup``. The kernels are ``@njit(cache=True)``: numba
writes the machine code beside the sources (``__pycache__``) or, where that is not writable, to its
user-wide cache (``$NUMBA_CACHE_DIR`` or ``~/.cache/numba``), and later processes load it instead
of compiling (about 13 s of compiling otherwise on the first decode).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ARPA = """\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.7\t</s>\t0
-0.5\tab\t-0.2
-0.6\tba\t-0.2

\\2-grams:
-0.2\t<s> ab
-0.3\tab ba

\\end\\
"""


def warm_up(verbose: bool = False) -> float:
    """Decode a tiny utterance in every CTC search mode and score with the array n-gram; returns seconds."""
    from decoders.ctc import CTCDecoder, CTCOptions
    from decoders.emissions import make_emission_set
    from fusion.ngram import KenLM
    from fusion.ngram_arrays import read_arpa, score_many

    t = time.perf_counter()
    labels = ("<blank>", " ", "a", "b")
    with tempfile.TemporaryDirectory(prefix="lmfusion-warmup-") as tmp:
        arpa = Path(tmp) / "tiny.arpa"
        arpa.write_text(_ARPA, encoding="utf-8")
        lm = KenLM(arpa, name="lm")
        em = make_emission_set(["ab ba ab"], labels=labels, seed=0)[0]
        for lexicon in (False, True):
            opts = CTCOptions(beam_width=4, nbest=2, lexicon_constrained=lexicon, lookahead=lexicon,
                              token_min_logp=-math.inf if lexicon else -5.0)
            dec = CTCDecoder(labels, [lm], {"lm": 0.5, "words": 1.0}, options=opts)
            dec.decode(em)  # float32 emissions, the n-gram inside the compiled loop
            dec.decode(em.astype(np.float64))
            if verbose:
                print(f"ctc ({'lexicon' if lexicon else 'open vocabulary'}, {dec.backend}+{dec.lm_backend}) ready",
                      file=sys.stderr)
        # a piece vocabulary: its final beam is keyed by a compiled text hash (decoders.ctc.scan.text_hashes)
        pieces = ("<blank>", "\u2581ab", "\u2581ba", "\u2581a", "b", "a")
        em_p = make_emission_set(["ab ba ab"], labels=labels, seed=1)[0][:, [0, 2, 3, 2, 3, 2]]
        em_p = em_p - np.logaddexp.reduce(em_p, axis=1, keepdims=True)
        for lexicon in (False, True):
            opts = CTCOptions(beam_width=4, nbest=2, lexicon_constrained=lexicon, lookahead=lexicon)
            CTCDecoder(pieces, [lm], {"lm": 0.5, "words": 1.0}, options=opts).decode(em_p)
        plain = CTCDecoder(labels, options=CTCOptions(beam_width=4, nbest=2))  # no LM: the kernel's other path
        plain.decode(em)
        plain.decode(em.astype(np.float64))
        arr = read_arpa(arpa)
        score_many(arr, np.stack([arr.begin_state()] * 2), np.array([arr.word_id("ab"), 0]))
    return time.perf_counter() - t


def main() -> int:
    secs = warm_up(verbose=True)
    print(f"numba kernels compiled or loaded from cache in {secs:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
