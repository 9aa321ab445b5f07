"""KenLM adapter and build_ngram against the real kenlm module and lmplz.

The adapter's semantics are tested on the committed ``tests/data/tiny.arpa`` (no lmplz); what builds
models with lmplz is marked ``slow`` (it still runs in CI).
"""

from __future__ import annotations

import math
from pathlib import Path

import kenlm
import numpy as np
import pytest

from fusion.errors import InputError, LMFusionError
from fusion.lm import Units
from fusion.ngram import LN10, KenLM, build_ngram, read_arpa_vocab, vocab_sidecar
from fusion.tokenizers import train_sentencepiece


def test_adapter_equals_full_scores_times_ln10(tiny_arpa: Path, text_dir: Path) -> None:
    lm = KenLM(tiny_arpa)
    raw = kenlm.Model(str(tiny_arpa))
    sents = (text_dir / "bible.dev.txt").read_text().splitlines()[:50]
    for s in sents:
        expected = np.array([lp for lp, _, _ in raw.full_scores(s)]) * math.log(10)
        ours = lm.score_sentence(s.split())
        np.testing.assert_allclose(ours.logprobs, expected, rtol=0, atol=1e-9)
        # the incremental state-passing path gives the same numbers
        st = lm.begin()
        inc = []
        for w in s.split():
            lp, st = lm.score(st, w)
            inc.append(lp)
        inc.append(lm.end(st))
        np.testing.assert_allclose(inc, expected, atol=1e-9)
        assert lm.sentence_logprob(s) == pytest.approx(raw.score(s) * LN10, abs=1e-9)


def test_states_are_immutable_and_hashable(tiny_arpa: Path) -> None:
    lm = KenLM(tiny_arpa)
    s0 = lm.begin()
    h0 = hash(s0)
    lp1, s1 = lm.score(s0, "and")
    lp2, s2 = lm.score(s0, "and")
    assert hash(s0) == h0, "scoring must not modify the input state"
    assert lp1 == lp2 and s1 == s2 and hash(s1) == hash(s2)
    assert {s0: 1, s1: 2}[s1] == 2


def test_batch_and_pairs_match_single(tiny_arpa: Path) -> None:
    lm = KenLM(tiny_arpa)
    _, a = lm.score(lm.begin(), "and")
    _, b = lm.score(a, "the")
    cands = ["lord", "said", "zzzunseen", "the"]
    mat, nxt = lm.score_batch([lm.begin(), a, b], cands)
    assert mat.shape == (3, 4)
    for i, st in enumerate([lm.begin(), a, b]):
        for k, c in enumerate(cands):
            lp, ns = lm.score(st, c)
            assert mat[i, k] == lp and nxt[i][k] == ns
    lps, _ = lm.score_pairs([a, b], ["said", "lord"])
    assert lps[0] == lm.score(a, "said")[0] and lps[1] == lm.score(b, "lord")[0]
    np.testing.assert_allclose(lm.end_batch([a, b]), [lm.end(a), lm.end(b)])


def test_oov_is_counted_and_scored_as_unk(tiny_arpa: Path) -> None:
    lm = KenLM(tiny_arpa)
    assert lm.is_oov("qwertyuiop") and not lm.is_oov("lord")
    assert "lord" in lm.vocab and "<s>" not in lm.vocab  # type: ignore[operator]
    before = lm.oov_seen
    sc = lm.score_sentence(["the", "qwertyuiop", "lord"])
    assert sc.oov == (False, True, False) and sc.n_oov == 1
    assert lm.oov_seen == before + 1
    unk = lm.score(lm.begin(), "<unk>")[0]
    assert lm.score(lm.begin(), "qwertyuiop")[0] == pytest.approx(unk)


def test_word_distribution_sums_to_one(tiny_arpa: Path) -> None:
    lm = KenLM(tiny_arpa)
    vocab = sorted(lm.vocab)  # type: ignore[arg-type]
    for prefix in ([], ["and"], ["and", "the"], ["unto", "the", "lord"]):
        st = lm.begin()
        for w in prefix:
            _, st = lm.score(st, w)
        mat, _ = lm.score_batch([st], vocab)
        total = np.logaddexp.reduce(np.append(mat[0], lm.end(st)))
        assert total == pytest.approx(0.0, abs=1e-4), prefix


def test_binary_model_scores_like_arpa(bible_arpa: Path, text_dir: Path, tmp_path: Path) -> None:
    binary = build_ngram([text_dir / "bible.train.txt"], tmp_path / "bible.bin", order=3, progress=False)
    assert binary.read_bytes()[:8] == b"mmap lm "
    a, b = KenLM(bible_arpa), KenLM(binary)
    assert b.vocab == a.vocab and vocab_sidecar(binary).is_file()
    s = "and the lord spake unto moses saying".split()
    np.testing.assert_allclose(a.score_sentence(s).logprobs, b.score_sentence(s).logprobs, atol=1e-5)


@pytest.mark.slow
def test_build_options_order_and_pruning(text_dir: Path, tmp_path: Path) -> None:
    full = build_ngram(text_dir / "tech.train.txt", tmp_path / "t4.arpa", order=4, progress=False)
    pruned = build_ngram(text_dir / "tech.train.txt", tmp_path / "t4p.arpa", order=4, prune=[0, 1, 1, 1],
                         progress=False)
    assert KenLM(full).order == 4

    def ngram_count(p: Path) -> int:
        head = p.read_text().split("\n\n")[0]
        return sum(int(line.split("=")[1]) for line in head.splitlines() if line.startswith("ngram "))

    assert ngram_count(pruned) < ngram_count(full)


@pytest.mark.slow
def test_token_level_ngram_over_sentencepiece(text_dir: Path, tmp_path: Path) -> None:
    tok = train_sentencepiece([text_dir / "bible.train.txt"], tmp_path / "spm", vocab_size=300)
    path = build_ngram([text_dir / "bible.train.txt"], tmp_path / "tok.arpa", order=4, tokenizer=tok,
                       progress=False)
    lm = KenLM(path, tokenizer=tok)
    assert lm.units == Units.token(tok.identity)
    pieces = lm.tokenize("and the lord said")
    assert pieces == tok.encode("and the lord said") and pieces[0].startswith("▁")
    sc = lm.score_text("and the lord said")
    assert sc.n_oov == 0 and len(sc.logprobs) == len(pieces) + 1
    assert all(p in lm.vocab for p in pieces)  # type: ignore[operator]


def test_missing_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as e:
        KenLM(tmp_path / "nope.arpa")
    assert "nope.arpa" in str(e.value)
    bad = tmp_path / "bad.arpa"
    bad.write_text("this is not an arpa file\n")
    with pytest.raises(InputError, match=r"bad\.arpa:1: not an ARPA file"):
        KenLM(bad)
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t<s>\n\\end\\\n")
    with pytest.raises(InputError, match=r"broken\.arpa"):
        KenLM(broken)
    empty = tmp_path / "empty.arpa"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        KenLM(empty)


def test_malformed_unigram_line_is_located(tmp_path: Path) -> None:
    p = tmp_path / "m.arpa"
    p.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\nnot-a-tab-separated-line\n\n\\end\\\n")
    with pytest.raises(InputError, match=r"m\.arpa:6"):
        read_arpa_vocab(p)


def test_build_rejects_bad_text(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.txt:1: not valid UTF-8"):
        build_ngram(latin1, tmp_path / "x.arpa", progress=False)
    marker = tmp_path / "marker.txt"
    marker.write_text("fine line\nthis has </s> inside\n")
    with pytest.raises(InputError, match=r"marker\.txt:2.*'</s>'"):
        build_ngram(marker, tmp_path / "y.arpa", progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(LMFusionError, match="no sentences"):
        build_ngram(empty, tmp_path / "z.arpa", progress=False)
    with pytest.raises(InputError, match="not found"):
        build_ngram(tmp_path / "missing.txt", tmp_path / "w.arpa", progress=False)
    assert not (tmp_path / "x.arpa").exists() and not (tmp_path / "y.arpa").exists()


def test_sentence_totals_fast_paths(tiny_arpa: Path, text_dir: Path) -> None:
    lm = KenLM(tiny_arpa)
    sents = (text_dir / "bible.dev.txt").read_text().splitlines()[:40]
    totals = lm.sentence_logprobs(sents)
    assert totals.shape == (40,)
    for s, tot in zip(sents, totals, strict=True):
        # kenlm's score() accumulates in float32: agree with the per-word sum to float32 precision
        assert tot == pytest.approx(lm.score_sentence(s.split()).total, rel=1e-6)
        assert lm.sentence_logprob(s.split()) == pytest.approx(tot, abs=1e-9)
    no_eos = lm.sentence_logprobs(sents[:3], eos=False)
    assert no_eos[0] == pytest.approx(lm.score_sentence(sents[0].split(), eos=False).total, rel=1e-6)
