"""The CTC benchmark's honesty helpers: a cleared lmfusion decoder carries nothing to the next run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.ngram import KenLM

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "ctc_vs_anchors.py"


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ctc_vs_anchors", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ctc_vs_anchors"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cleared_decoder_has_empty_caches(bible_arpa: Path) -> None:
    b = _bench()
    ems = make_emission_set(["and the lord said unto moses", "in the beginning god created"], seed=3)
    for lexicon in (False, True):
        dec = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.5, "oov": -11.5},
                         options=CTCOptions(beam_width=8, nbest=1, lexicon_constrained=lexicon, lookahead=lexicon))
        first = [dec.decode_text(e) for e in ems]
        sizes = b.lmfusion_cache_sizes(dec)
        assert sizes["fusion"] > 0  # decoding really filled caches
        # the KenLM object's own cache fills only when the search asks it from Python (not from n-gram arrays)
        assert (sizes["kenlm"] > 0) == (dec.lm_backend == "python")
        b.clear_lmfusion_caches(dec)
        assert not any(b.lmfusion_cache_sizes(dec).values())
        assert [dec.decode_text(e) for e in ems] == first  # clearing changes no result


def test_matched_topk_covers_lmfusion_pruning() -> None:
    b = _bench()
    ems = make_emission_set(["the lord is my shepherd"] * 3, seed=1)
    k = b.matched_topk(ems, 0)
    assert 2 <= k <= len(CHAR_LABELS)
    assert k == math.ceil(k)
