"""Linear and log-linear interpolation: the math (property tests) and real KenLM mixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fusion.errors import UnitMismatchError, WeightsError
from fusion.interpolate import (
    LinearInterpolation,
    LogLinearInterpolation,
    linear_mix_logprobs,
    loglinear_mix_logprobs,
)
from fusion.ngram import KenLM
from fusion.tokenizers import train_sentencepiece

logprob = st.floats(min_value=-50.0, max_value=0.0, allow_nan=False)


@st.composite
def simplex(draw: st.DrawFn, n: int) -> np.ndarray:
    raw = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    if raw.sum() == 0:
        raw[0] = 1.0
    return raw / raw.sum()


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(2, 5), t=st.integers(1, 6))
def test_linear_mix_equals_naive_sum(data: st.DataObject, n: int, t: int) -> None:
    lp = data.draw(arrays(np.float64, (n, t), elements=logprob))
    w = data.draw(simplex(n))
    naive = np.log(np.sum(w[:, None] * np.exp(lp), axis=0))
    np.testing.assert_allclose(linear_mix_logprobs(lp, w), naive, rtol=1e-9, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(2, 4))
def test_linear_mix_is_bounded_by_components(data: st.DataObject, n: int) -> None:
    lp = data.draw(arrays(np.float64, (n, 3), elements=logprob))
    w = data.draw(simplex(n))
    mix = linear_mix_logprobs(lp, w)
    used = w > 0
    assert np.all(mix <= lp[used].max(axis=0) + 1e-9)
    assert np.all(mix >= lp[used].min(axis=0) - 1e-9)


def test_linear_mix_is_stable_far_below_underflow() -> None:
    lp = np.array([[-2000.0, -1.0], [-2001.0, -np.inf]])
    out = linear_mix_logprobs(lp, np.array([0.5, 0.5]))
    assert np.all(np.isfinite(out))
    assert out[0] == pytest.approx(-2000.0 + np.log(0.5 * (1 + np.exp(-1))))
    assert out[1] == pytest.approx(-1.0 + np.log(0.5))
    both_zero = linear_mix_logprobs(np.array([[-np.inf], [-np.inf]]), np.array([0.3, 0.7]))
    assert both_zero[0] == -np.inf


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(2, 4))
def test_loglinear_mix_is_weighted_sum(data: st.DataObject, n: int) -> None:
    lp = data.draw(arrays(np.float64, (n, 4), elements=logprob))
    w = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)))
    np.testing.assert_allclose(loglinear_mix_logprobs(lp, w), (w[:, None] * lp).sum(0), atol=1e-9)


def _same_vocab_models(text_dir: Path, lm_dir: Path, tokenizer=None) -> list[KenLM]:  # type: ignore[no-untyped-def]
    """Three different n-grams over one text, hence one closed vocabulary."""
    from fusion.ngram import build_ngram

    both = [text_dir / "bible.train.txt", text_dir / "tech.train.txt"]
    kind = "tok" if tokenizer else "word"
    specs = [("o3", 3, None, both), ("o2", 2, None, both), ("o4p", 4, [0, 1, 1, 2], both[::-1])]
    return [
        KenLM(
            build_ngram(files, lm_dir / f"{kind}-{name}.arpa", order=order, prune=prune, tokenizer=tokenizer,
                        progress=False),
            tokenizer=tokenizer,
            name=name,
        )
        for name, order, prune, files in specs
    ]


@pytest.mark.slow
def test_interpolated_distribution_sums_to_one(text_dir: Path, lm_dir: Path) -> None:
    models = _same_vocab_models(text_dir, lm_dir)
    assert models[0].vocab == models[1].vocab == models[2].vocab
    mix = LinearInterpolation(models, [0.5, 0.3, 0.2])
    vocab = sorted(models[0].vocab)  # type: ignore[arg-type]
    for prefix in ([], ["the"], ["the", "function", "returns"], ["and", "the", "lord"]):
        st_ = mix.begin()
        for w in prefix:
            _, st_ = mix.score(st_, w)
        mat, _ = mix.score_batch([st_], vocab)
        assert np.logaddexp.reduce(np.append(mat[0], mix.end(st_))) == pytest.approx(0.0, abs=1e-4), prefix


@pytest.mark.slow
def test_token_level_mixture_sums_to_one(text_dir: Path, lm_dir: Path) -> None:
    """The same holds for n-grams over sentencepiece pieces."""
    tok = train_sentencepiece([text_dir / "bible.train.txt", text_dir / "tech.train.txt"], lm_dir / "mixspm",
                              vocab_size=200)
    a, b, _ = _same_vocab_models(text_dir, lm_dir, tokenizer=tok)
    mix = LinearInterpolation([a, b], {"o3": 0.35, "o2": 0.65})
    vocab = sorted(a.vocab)  # type: ignore[arg-type]
    for text in ("", "the lord", "import the module"):
        s = mix.begin()
        for p in tok.encode(text):
            _, s = mix.score(s, p)
        mat, _ = mix.score_batch([s], vocab)
        assert np.logaddexp.reduce(np.append(mat[0], mix.end(s))) == pytest.approx(0.0, abs=1e-4)


def test_mixture_sentence_score_matches_incremental(bible_arpa: Path, tech_arpa: Path) -> None:
    a, b = KenLM(bible_arpa), KenLM(tech_arpa)
    mix = LinearInterpolation([a, b], [0.7, 0.3])
    words = "the lord returns the value".split()
    st_ = mix.begin()
    inc = []
    for w in words:
        lp, st_ = mix.score(st_, w)
        inc.append(lp)
    inc.append(mix.end(st_))
    sc = mix.score_sentence(words)
    np.testing.assert_allclose(sc.logprobs, inc, atol=1e-9)
    expect = np.log(0.7 * np.exp(a.score_sentence(words).logprobs) + 0.3 * np.exp(b.score_sentence(words).logprobs))
    np.testing.assert_allclose(sc.logprobs, expect, atol=1e-9)
    batch = mix.score_sentences([words, words[:2]])
    np.testing.assert_allclose(batch[0].logprobs, sc.logprobs)
    ll = LogLinearInterpolation([a, b], [1.0, -0.5])
    np.testing.assert_allclose(
        ll.score_sentence(words).logprobs,
        a.score_sentence(words).logprobs - 0.5 * b.score_sentence(words).logprobs,
        atol=1e-9,
    )


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([0.5, 0.6], "sum to 1"),
        ([1.2, -0.2], "negative"),
        ([0.5], "2 models but 1 weights"),
        ([float("nan"), 1.0], "nan"),
        ({"bible": 0.5, "oops": 0.5}, "missing"),
    ],
)
def test_bad_weights_are_refused(tiny_arpa: Path, weights: object, match: str) -> None:
    models = [KenLM(tiny_arpa, name="bible"), KenLM(tiny_arpa, name="tech")]
    with pytest.raises(WeightsError, match=match):
        LinearInterpolation(models, weights)  # type: ignore[arg-type]


def test_units_must_match(tiny_arpa: Path, text_dir: Path, tmp_path: Path) -> None:
    tok = train_sentencepiece([text_dir / "bible.train.txt"], tmp_path / "u", vocab_size=150)
    word = KenLM(tiny_arpa, name="word")
    token = KenLM(tiny_arpa, tokenizer=tok, name="token")
    with pytest.raises(UnitMismatchError, match="'word' predicts word, 'token' predicts token"):
        LinearInterpolation([word, token], [0.5, 0.5])
