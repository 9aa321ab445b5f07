"""Decode tiny utterances in every CTC search mode: compiles and caches the numba kernels (JIT), or checks the
ahead-of-time ones.

``make setup`` runs ``LMFUSION_CTC_KERNELS=jit python -m decoders.warmup`` (the JIT path: the kernels are
``@njit(cache=True)``, numba writes the machine code beside the sources or to ``$NUMBA_CACHE_DIR``, and later
processes load it instead of compiling for about 13 s), then ``python -m decoders.ctc.build_aot`` (the kernels
compiled ahead of time, :mod:`decoders.ctc.kernels`), then this again with those.
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
    from decoders.ctc.kernels import default_kind

    print(f"CTC kernels ({default_kind()}) compiled, loaded or checked in {secs:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
