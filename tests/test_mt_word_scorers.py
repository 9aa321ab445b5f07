"""The MT recipe's word-scorer choice (``--word-scorer``) and its reuse of an earlier unfused decode."""

from __future__ import annotations

from pathlib import Path

import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, write_nbest_jsonl
from fusion.errors import InputError
from fusion.interpolate import LinearInterpolation
from fusion.scorers import OpenWordLMScorer, VocabOpenWordScorer, WordBonus, WordLMScorer, units_from_pieces
from recipes.mt.evaluate import earlier_baseline, make_scorers


def test_word_scorer_choice(bible_arpa, tiny_spm) -> None:
    """boundary: WordLMScorer (partial); open: OpenWordLMScorer (partial); vocab: the full VocabOpenWordScorer for
    a KenLM file, the partial open scorer for a mixture (not an n-gram); anything else is refused."""
    from fusion.ngram import KenLM

    units = [*units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()]), None]
    eos = len(units) - 1
    ngram, source = KenLM(bible_arpa, name="ngram"), KenLM(bible_arpa, name="source_lm")
    lms = {"ngram": ngram, "source_lm": source,
           "mix": LinearInterpolation([ngram, KenLM(bible_arpa, name="other")], [0.5, 0.5], name="mix")}
    names = ["ngram", "source_lm", "mix", "words"]
    kinds = {k: [type(s) for s in make_scorers(names, lms, units, eos, k)] for k in ("boundary", "open", "vocab")}
    assert kinds["boundary"] == [WordLMScorer, WordLMScorer, WordLMScorer, WordBonus]
    assert kinds["open"] == [OpenWordLMScorer, OpenWordLMScorer, OpenWordLMScorer, WordBonus]
    assert kinds["vocab"] == [VocabOpenWordScorer, VocabOpenWordScorer, OpenWordLMScorer, WordBonus]
    vocab = make_scorers(names, lms, units, eos, "vocab")
    assert [s.is_partial for s in vocab] == [False, False, True, False]
    assert [s.name for s in vocab] == names
    with pytest.raises(InputError, match="word scorer"):
        make_scorers(names, lms, units, eos, "full")


def test_earlier_baseline(tmp_path: Path) -> None:
    """An earlier unfused decode is reused only when it covers the same number of test verses."""
    assert earlier_baseline(tmp_path, 2) is None
    lists = [NBestList(f"test{i}", (ScoredHypothesis(t, {"am": -1.0}), ScoredHypothesis("x", {"am": -2.0})))
             for i, t in enumerate(["in the beginning", "and god said"])]
    write_nbest_jsonl(tmp_path / "test.none.jsonl", lists)
    assert earlier_baseline(tmp_path, 2) == ["in the beginning", "and god said"]
    assert earlier_baseline(tmp_path, 3) is None
