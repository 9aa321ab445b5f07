"""WER/CER against jiwer and a plain DP, oracle error, and the paired bootstrap."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.errors import LMFusionError
from fusion.metrics import (
    bleu,
    bootstrap_from_counts,
    cer,
    chrf,
    edit_distance,
    edit_distance_reference,
    error_counts,
    oracle_error_rate,
    paired_bootstrap,
    score_from_stats,
    sentence_stats,
    wer,
)

WORDS = st.sampled_from(["a", "b", "c", "the", "cat", "é", "日本"])
SENT = st.lists(WORDS, min_size=0, max_size=9)


@given(SENT, SENT)
@settings(max_examples=300, deadline=None)
def test_edit_distance_matches_reference_dp(a: list[str], b: list[str]) -> None:
    d = edit_distance(a, b)
    assert d == edit_distance_reference(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))


def test_edit_distance_reference_known_cases() -> None:
    assert edit_distance_reference("kitten", "sitting") == 3
    assert edit_distance_reference([], ["x", "y"]) == 2
    assert edit_distance_reference(["a", "b", "c"], ["a", "c"]) == 1


@given(st.lists(st.tuples(st.lists(WORDS, min_size=1, max_size=8), SENT), min_size=1, max_size=12))
@settings(max_examples=100, deadline=None)
def test_wer_and_cer_match_jiwer(pairs: list[tuple[list[str], list[str]]]) -> None:
    refs = [" ".join(r) for r, _ in pairs]
    hyps = [" ".join(h) for _, h in pairs]
    assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)


def test_wer_is_corpus_level_not_mean_of_utterances() -> None:
    refs = ["a b c d", "e"]
    hyps = ["a b c d", "x"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # the mean of rates would be 0.5


def test_all_empty_references_give_jiwers_value_and_mismatched_lengths_raise() -> None:
    assert wer(["", " "], ["a", ""]) == jiwer.wer(["", " "], ["a", ""]) == 1  # jiwer: the insertions
    assert cer(["", ""], ["a b", "c"]) == jiwer.cer(["", ""], ["a b", "c"]) == 4
    with pytest.raises(LMFusionError, match="undefined"):
        oracle_error_rate([np.array([1])], np.array([0]))
    with pytest.raises(LMFusionError):
        wer(["a"], ["a", "b"])


def test_oracle_error_rate_is_a_lower_bound() -> None:
    rng = np.random.default_rng(1)
    errors = [rng.integers(0, 6, size=rng.integers(0, 5)) for _ in range(40)]
    lens = rng.integers(1, 8, size=40)
    oracle = oracle_error_rate(errors, lens)
    for _ in range(20):
        picked = [e[rng.integers(len(e))] if len(e) else n for e, n in zip(errors, lens, strict=True)]
        assert oracle <= sum(picked) / lens.sum()
    # empty lists count all deletions
    assert oracle_error_rate([np.array([], np.int64)], np.array([3])) == 1.0


def _systems(u: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Refs and two systems: B corrects about a third of A's substitutions."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(30)]
    refs, a, b = [], [], []
    for _ in range(u):
        r = list(rng.choice(vocab, size=rng.integers(3, 12)))
        ha, hb = list(r), list(r)
        for j in range(len(r)):
            if rng.random() < 0.2:
                ha[j] = "x"
                if rng.random() < 0.66:
                    hb[j] = "x"
        refs.append(" ".join(r))
        a.append(" ".join(ha))
        b.append(" ".join(hb))
    return refs, a, b


def test_bootstrap_ci_contains_observed_difference_and_shrinks_with_more_utterances() -> None:
    widths = []
    for u in (50, 800):
        refs, a, b = _systems(u, seed=u)
        res = paired_bootstrap(refs, a, b, n=1000, seed=0)
        assert res.delta == pytest.approx(wer(refs, b) - wer(refs, a))
        assert res.lo <= res.delta <= res.hi
        assert res.delta < 0  # B is better by construction
        widths.append(res.hi - res.lo)
    assert widths[1] < 0.6 * widths[0]  # ~1/sqrt(16) = 0.25 in theory
    # with 800 utterances the improvement is significant
    refs, a, b = _systems(800, seed=800)
    assert paired_bootstrap(refs, a, b, n=500, seed=3).p_b_not_better < 0.05


def test_bootstrap_of_identical_systems_is_zero_and_swapping_negates() -> None:
    refs, a, b = _systems(100, seed=5)
    same = paired_bootstrap(refs, a, a, n=200)
    assert same.delta == 0.0 and same.lo == 0.0 and same.hi == 0.0
    ab = paired_bootstrap(refs, a, b, n=300, seed=7)
    ba = paired_bootstrap(refs, b, a, n=300, seed=7)
    assert ab.delta == pytest.approx(-ba.delta)
    assert ab.lo == pytest.approx(-ba.hi) and ab.hi == pytest.approx(-ba.lo)


def test_bootstrap_is_seeded_and_validates() -> None:
    refs, a, b = _systems(60, seed=9)
    ea, lens = error_counts(refs, a)
    eb, _ = error_counts(refs, b)
    r1 = bootstrap_from_counts(ea, eb, lens, n=100, seed=4)
    r2 = bootstrap_from_counts(ea, eb, lens, n=100, seed=4)
    assert (r1.lo, r1.hi) == (r2.lo, r2.hi)
    with pytest.raises(LMFusionError):
        bootstrap_from_counts(ea, eb[:-1], lens)
    with pytest.raises(LMFusionError):
        bootstrap_from_counts(ea, eb, lens, alpha=1.5)


JIWER_CASES = [
    (["a b"], ["a  b"]),  # repeated space: no word error, one character insertion
    (["a\tb c"], ["a b c"]),  # a lone tab does not split a word in jiwer
    (["a\t\tb"], ["a b"]),  # two whitespace characters do
    ([" a b "], ["a b"]),  # stripped
    (["a\u00a0b"], ["a b"]),  # a no-break space is not a word delimiter
    (["é日本 x", "naïve café"], ["e日本 x", "naive  cafe"]),  # unicode
    (["", "a b"], ["x", "a b"]),  # an empty reference among others: insertions
    (["a b c"], [""]),  # an empty hypothesis
    (["  the  cat   sat  "], ["the cat  sat"]),
]


@pytest.mark.parametrize(("refs", "hyps"), JIWER_CASES)
def test_wer_cer_tokenise_as_jiwer(refs: list[str], hyps: list[str]) -> None:
    assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps))
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps))


SPACEY = st.text(alphabet=st.sampled_from(["a", "b", "é", " ", "\t", "\n", "\u00a0"]), min_size=1, max_size=12)


@given(st.lists(st.tuples(SPACEY, SPACEY), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_wer_cer_equal_jiwer_on_whitespace_soup(pairs: list[tuple[str, str]]) -> None:
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps))
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps))


def test_bleu_chrf_are_sacrebleus_and_stats_sum_to_the_corpus_score() -> None:
    import sacrebleu

    refs = ["the cat sat on the mat", "a quick brown fox", "", "naïve café au lait"]
    hyps = ["the cat sat on a mat", "a quick brown dog", "nothing", "naive café au lait"]
    assert bleu(refs, hyps) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert chrf(refs, hyps) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert chrf(refs, hyps, word_order=2) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    for metric, fn in (("bleu", bleu), ("chrf", chrf)):
        stats = sentence_stats(metric, refs, hyps)  # type: ignore[arg-type]
        assert stats.shape[0] == len(refs)
        assert score_from_stats(metric, stats) == pytest.approx(fn(refs, hyps))  # type: ignore[arg-type]
        sub = [0, 3]  # any subset: the sum of its rows is that corpus's statistics
        assert score_from_stats(metric, stats[sub]) == pytest.approx(  # type: ignore[arg-type]
            fn([refs[i] for i in sub], [hyps[i] for i in sub]))
    assert bleu(refs, refs) == pytest.approx(100.0)
    with pytest.raises(LMFusionError):
        bleu(refs, hyps[:2])
