"""Bounded memory of the CTC decoder: LM caches capped in bytes with least-recently-used eviction, the fused-step
cache started afresh past its budget, float32 emissions decoded without a float64 copy; none changes a result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions
from decoders.ctc.inputs import as_logprobs
from decoders.ctc.lmcache import CachedLM
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.ngram import KenLM

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def _emissions(n: int) -> list[np.ndarray]:
    refs = [s for s in (TEXT / "bible.test.txt").read_text().splitlines() if s.strip() and len(s) < 70][:n]
    return make_emission_set(refs, config="noisy", seed=11)


def test_lm_cache_keeps_the_recently_used_within_its_budget(bible_arpa: Path) -> None:
    lm = KenLM(bible_arpa, name="lm")
    words = sorted(lm.vocab or ())[:400]
    cache = CachedLM(lm, "lm", max_bytes=20_000)
    s0 = lm.begin()
    cache.score_pairs([s0], [words[0]])
    per = cache._pair_bytes
    assert per > 0
    cap = int(20_000 * 0.9) // per
    for w in words[1:]:
        cache.score_pairs([s0, s0], [words[0], w])  # words[0] is used again every time
        assert cache.nbytes() <= 20_000
    assert (s0, words[0]) in cache._pairs  # the recently used one survived
    assert (s0, words[1]) not in cache._pairs  # the old ones went
    assert 0 < len(cache._pairs) <= cap
    calls = cache.calls
    cache.score_pairs([s0], [words[0]])
    assert cache.calls == calls  # still a hit


def test_small_budgets_change_no_result(bible_arpa: Path) -> None:
    ems = _emissions(4)
    opts = CTCOptions(beam_width=16, nbest=3)
    big = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.0}, options=opts)
    small = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.0}, options=opts)
    small.cache_bytes = 20_000
    for c in small._lm_caches:
        c.max_bytes = 20_000
    want = [big.decode(e).to_json() for e in ems]
    seen = set()
    for e, w in zip(ems, want, strict=True):
        assert small.decode(e).to_json() == w
        assert small._shared is not None
        seen.add(id(small._shared))
    assert len(seen) > 1  # the fused-step cache really was started afresh past its budget
    assert all(c.nbytes() <= 20_000 for c in small._lm_caches)


def test_float32_emissions_are_not_copied_and_decode_alike(bible_arpa: Path) -> None:
    ems = _emissions(2)
    assert ems[0].dtype == np.float32
    assert as_logprobs(ems[0], len(CHAR_LABELS)) is ems[0]
    dec = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.0},
                     options=CTCOptions(beam_width=8, nbest=3))
    a = [nb.to_json() for nb in dec.decode_batch(ems)]
    b = [nb.to_json() for nb in dec.decode_batch([e.astype(np.float64) for e in ems])]
    assert a == b
    # the numpy back end (float64 per utterance) agrees up to summation order
    other = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.0},
                       options=CTCOptions(beam_width=8, nbest=3, backend="numpy"))
    for x, y in zip(other.decode_batch(ems), dec.decode_batch(ems), strict=True):
        assert [h.text for h in x.hyps] == [h.text for h in y.hyps]
        for hx, hy in zip(x.hyps, y.hyps, strict=True):
            assert hx.scores == pytest.approx(hy.scores, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.int64])
def test_other_dtypes_become_float(dtype: type) -> None:
    x = np.log(np.full((3, 4), 0.25)).astype(dtype) if dtype is np.float16 else np.zeros((3, 1), dtype)
    out = as_logprobs(x, x.shape[1], check_normalized=False)
    assert out.dtype == (np.float32 if dtype is np.float16 else np.float64)
