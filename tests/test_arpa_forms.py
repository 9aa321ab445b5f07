"""ARPA files as other toolkits write them: gzip-compressed, and with comment lines before \\data\\."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest

from fusion.errors import InputError
from fusion.ngram import KenLM


def test_arpa_gz_and_leading_comments_load_like_the_plain_file(bible_arpa: Path, tmp_path: Path) -> None:
    import kenlm

    text = bible_arpa.read_text(encoding="utf-8")
    gz = tmp_path / "bible.arpa.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(text)
    commented = tmp_path / "commented.arpa"
    commented.write_text("# written by a toolkit\n\n#   order 3\n" + text, encoding="utf-8")
    sentence = "in the beginning god created the heaven and the earth"
    plain = KenLM(bible_arpa).score_sentence(sentence.split()).total
    assert plain == pytest.approx(float(kenlm.Model(str(bible_arpa)).score(sentence)) * math.log(10.0))
    for path in (gz, commented):
        lm = KenLM(path)
        assert lm.format == "arpa"
        assert lm.score_sentence(sentence.split()).total == pytest.approx(plain, abs=1e-9)
        assert lm.vocab == KenLM(bible_arpa).vocab  # the vocabulary is read from the same file


def test_text_without_data_section_is_still_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arpa.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as f:
        f.write("# a comment\nsome header text\n\\data\\\n")
    with pytest.raises(InputError, match=r"bad\.arpa\.gz:2: not an ARPA file .*'some header text'"):
        KenLM(bad)  # KenLM itself refuses text before \data\ that is not a '#' comment
