"""Issue 16, Kaldi text n-best: a tab after the key, integer ids without words.txt, !SIL and <UNK>."""

from __future__ import annotations

from pathlib import Path

import pytest

from decoders.nbest import KALDI_NON_WORDS, read_kaldi_nbest, rescore
from fusion.errors import InputError


def _triplet(tmp_path: Path, text: str) -> tuple[Path, Path, Path]:
    t, a, lm = tmp_path / "text", tmp_path / "ac", tmp_path / "lm"
    keys = [line.split(None, 1)[0] for line in text.splitlines() if line.strip()]
    t.write_text(text)
    a.write_text("".join(f"{k} {i + 1}.5\n" for i, k in enumerate(keys)))
    lm.write_text("".join(f"{k}\t{i + 2}.0\n" for i, k in enumerate(keys)))  # a tab in a cost file too
    return t, a, lm


def test_a_tab_after_the_key_separates_it_like_a_space(tmp_path: Path) -> None:
    nbs = read_kaldi_nbest(*_triplet(tmp_path, "u1-1\tthe cat\nu1-2 the\tbat\n"))
    assert [h.text for h in nbs[0].hyps] == ["the cat", "the bat"]
    assert nbs[0].hyps[0].scores == {"am": -1.5, "lm": -2.0}


def test_integer_ids_without_a_symbol_table_are_refused(tmp_path: Path) -> None:
    files = _triplet(tmp_path, "u1-1 7 8 4\nu1-2 7 8\n")
    with pytest.raises(InputError, match="--words-txt"):
        read_kaldi_nbest(*files)
    assert read_kaldi_nbest(*files, integer_words=True)[0].hyps[0].text == "7 8 4"
    (tmp_path / "words.txt").write_text("<eps> 0\n!SIL 1\nthe 4\ncat 7\nsat 8\n")
    assert read_kaldi_nbest(*files, words_txt=tmp_path / "words.txt")[0].hyps[0].text == "cat sat the"


def test_silence_is_dropped_and_unk_is_the_lms_unknown_word(tmp_path: Path, bible_arpa: Path) -> None:
    from fusion.ngram import KenLM

    bible_lm = KenLM(bible_arpa)
    nbs = read_kaldi_nbest(*_triplet(tmp_path, "u1-1 !SIL in the <UNK> beginning <SPOKEN_NOISE> #0\n"))
    assert nbs[0].hyps[0].text == "in the <unk> beginning"
    assert "!SIL" in KALDI_NON_WORDS
    from decoders.nbest import rescore_with_stats

    _, st = rescore_with_stats(nbs, {"lm2": bible_lm})
    assert st.oov["lm2"] == 0  # <unk> is the LM's own unknown word, not an out-of-vocabulary word
    assert rescore(nbs, {"lm2": bible_lm})[0].hyps[0].scores["lm2"] < 0
