"""EM mixture weights: equal to a direct numerical optimum, monotone, and honest about bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from fusion.em import em_mixture_weights, estimate_weights, heldout_logprob_matrix
from fusion.errors import InputError, LMFusionError, UnitMismatchError
from fusion.interpolate import LinearInterpolation
from fusion.lm import perplexity
from fusion.ngram import KenLM
from fusion.tokenizers import train_sentencepiece


def direct_optimum(lp: np.ndarray) -> np.ndarray:
    """Maximise Σ_t ln Σ_i λ_i p_it over the simplex with a softmax parametrisation (scipy)."""
    n = lp.shape[0]

    def negll(z: np.ndarray) -> float:
        logw = z - np.logaddexp.reduce(z)
        return -float(np.logaddexp.reduce(lp + logw[:, None], axis=0).sum())

    best = None
    for start in np.eye(n) * 2.0 - 1.0:
        res = minimize(negll, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20000})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    z = best.x
    return np.exp(z - np.logaddexp.reduce(z))


@pytest.fixture(scope="module")
def three_models(bible_arpa: Path, tech_arpa: Path, general_arpa: Path) -> list[KenLM]:
    return [KenLM(bible_arpa, name="bible"), KenLM(tech_arpa, name="tech"), KenLM(general_arpa, name="general")]


@pytest.mark.parametrize("k", [2, 3])
def test_em_matches_direct_optimum_on_real_heldout(three_models: list[KenLM], text_dir: Path, k: int) -> None:
    models = three_models[:k]
    heldout = (text_dir / "bible.dev.txt").read_text().splitlines()[:120] + (
        text_dir / "tech.dev.txt"
    ).read_text().splitlines()[:60]
    est = estimate_weights(models, heldout)
    mat, _ = heldout_logprob_matrix(models, heldout)
    ref = direct_optimum(mat)
    got = np.array([est.weights[m.name] for m in models])
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert est.converged and abs(sum(got) - 1) < 1e-9
    for m in models:
        assert est.ppl["mix"] <= est.ppl[m.name] + 1e-9
    # EM never decreases the held-out likelihood
    assert np.all(np.diff(est.loglik) >= -1e-6)
    # the reported mix perplexity is what the mixture model really gives on those predictions
    mix = LinearInterpolation(models, est.weights)
    with_mix, _ = heldout_logprob_matrix([*models, mix], heldout)  # same OOV mask as the models alone
    assert with_mix.shape[1] == mat.shape[1]
    assert est.ppl["mix"] == pytest.approx(perplexity(float(with_mix[-1].sum()), with_mix.shape[1]), rel=1e-6)


def test_in_domain_model_gets_the_larger_weight(three_models: list[KenLM], text_dir: Path) -> None:
    bible, tech = three_models[:2]
    on_bible = estimate_weights([bible, tech], text_dir / "bible.dev.txt")
    on_tech = estimate_weights([bible, tech], text_dir / "tech.dev.txt")
    assert on_bible.weights["bible"] > 0.7 and on_tech.weights["tech"] > 0.7
    assert on_bible.n_sentences == 250 and on_bible.n_oov["tech"] > 0 and on_bible.n_oov_skipped == 0
    srilm = estimate_weights([bible, tech], text_dir / "bible.dev.txt", oov="skip")
    assert srilm.n_oov_skipped > 0 and srilm.n_predictions < on_bible.n_predictions


def test_a_models_perplexity_does_not_depend_on_the_other_models(three_models: list[KenLM], text_dir: Path) -> None:
    bible, tech, general = three_models
    pair = estimate_weights([bible, general], text_dir / "tech.dev.txt")
    triple = estimate_weights([bible, tech, general], text_dir / "tech.dev.txt")
    assert pair.ppl["general"] == pytest.approx(triple.ppl["general"], rel=1e-12)
    assert pair.ppl["bible"] == pytest.approx(triple.ppl["bible"], rel=1e-12)
    assert pair.n_predictions == triple.n_predictions
    skip_pair = estimate_weights([bible, general], text_dir / "tech.dev.txt", oov="skip")
    skip_triple = estimate_weights([bible, tech, general], text_dir / "tech.dev.txt", oov="skip")
    assert skip_pair.ppl["general"] != pytest.approx(skip_triple.ppl["general"], rel=1e-6)  # SRILM's way: it does


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 4))
def test_em_equals_direct_optimum_on_random_problems(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    t = 200
    lp = np.log(rng.dirichlet(np.ones(n) * 0.5, size=t).T + 1e-6) + rng.normal(0, 1, size=(1, t))
    trace = em_mixture_weights(lp, tol=1e-10)
    np.testing.assert_allclose(trace.weights, direct_optimum(lp), atol=1e-3)


def test_em_on_a_useless_component_drives_its_weight_to_zero() -> None:
    rng = np.random.default_rng(0)
    good = np.log(rng.uniform(0.2, 0.9, size=500))
    lp = np.stack([good, good - 5.0])  # the second model is uniformly much worse
    trace = em_mixture_weights(lp, tol=1e-9)
    assert trace.weights[0] > 0.999


def test_bad_heldout_and_models(three_models: list[KenLM], tmp_path: Path, text_dir: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(InputError, match=r"empty\.txt: held-out set is empty"):
        estimate_weights(three_models[:2], empty)
    with pytest.raises(InputError, match="empty"):
        estimate_weights(three_models[:2], [])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: not valid UTF-8"):
        estimate_weights(three_models[:2], bad)
    with pytest.raises(LMFusionError, match="at least two"):
        estimate_weights(three_models[:1], ["a b"])
    tok = train_sentencepiece([text_dir / "tech.train.txt"], tmp_path / "s", vocab_size=120)
    with pytest.raises(UnitMismatchError):
        estimate_weights([three_models[0], KenLM(three_models[1].path, tokenizer=tok, name="tok")], ["a b"])
    with pytest.raises(LMFusionError, match="NaN"):
        em_mixture_weights(np.array([[0.0, np.nan], [-1.0, -1.0]]))
    with pytest.raises(LMFusionError, match="probability 0"):
        em_mixture_weights(np.array([[-np.inf, -1.0], [-np.inf, -1.0]]))


@pytest.mark.parametrize("helpful", [0, 1, 3, 8])
def test_weights_at_or_near_zero_are_found_exactly(helpful: int) -> None:
    """A model useful on only a few predictions has an optimal weight of 0 or just above it.

    The accelerated EM zeroes weights that keep shrinking; the optimality certificate must bring back one
    that is wanted after all, so both cases end at the direct optimum and at plain EM's likelihood.
    """
    rng = np.random.default_rng(helpful)
    t = 4000
    a = np.log(rng.uniform(0.05, 0.5, size=t))
    b = a - 6.0
    b[:helpful] = a[:helpful] + 12.0  # hugely better on `helpful` predictions
    lp = np.stack([a, b])
    fast = em_mixture_weights(lp, tol=1e-10)
    plain = em_mixture_weights(lp, tol=1e-10, accelerate=False)
    ref = direct_optimum(lp)
    np.testing.assert_allclose(fast.weights, ref, atol=2e-4)
    assert fast.converged and fast.loglik[-1] >= plain.loglik[-1] - 1e-6
    assert np.all(np.diff(fast.loglik) >= -1e-6)
    assert (fast.weights[1] == 0.0) == (helpful == 0)
