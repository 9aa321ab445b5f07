"""The array n-gram (fusion.ngram_arrays) scores and merges states exactly as KenLM does."""

from __future__ import annotations

import math
from pathlib import Path

import kenlm
import numpy as np
import pytest

from fusion.errors import InputError, OutputError
from fusion.ngram import build_ngram
from fusion.ngram_arrays import NgramArrays, load_ngram_arrays, read_arpa, score_many

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"
LN10 = math.log(10.0)


def _sentences() -> list[str]:
    lines = (TEXT / "bible.test.txt").read_text(encoding="utf-8").splitlines()[:120]
    # out-of-vocabulary words at the start, in the middle and in a row
    return [*lines, "zzqx the lord", "and the qwertyuiop said unto", "foo bar baz the"]


@pytest.fixture(scope="module", params=[3, 4])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NgramArrays]:
    d = tmp_path_factory.mktemp(f"arr{request.param}")
    arpa = build_ngram([TEXT / "bible.train.txt"], d / "lm.arpa", order=request.param, progress=False)
    return arpa, read_arpa(arpa)


def _walk(m: kenlm.Model, arr: NgramArrays) -> tuple[list[np.ndarray], list[int], list[kenlm.State], list[np.ndarray]]:
    """Every (state, word) of the sentences, with KenLM's next state and ours."""
    states, words, k_next, a_next = [], [], [], []
    for line in _sentences():
        ks = kenlm.State()
        m.BeginSentenceWrite(ks)
        s = arr.begin_state()
        for w in [*line.split(), "</s>"]:
            ko = kenlm.State()
            m.BaseScore(ks, w, ko)
            wid = arr.word_id(w)
            _, s2 = arr.score(s, wid)
            states.append(s)
            words.append(wid)
            k_next.append(ko)
            a_next.append(s2)
            ks, s = ko, s2
    return states, words, k_next, a_next


def test_scores_equal_kenlm_full_scores(model: tuple[Path, NgramArrays]) -> None:
    arpa, arr = model
    m = kenlm.Model(str(arpa))
    n_oov = 0
    for line in _sentences():
        words = line.split()
        full = list(m.full_scores(line))
        want = np.array([f[0] for f in full]) * LN10
        n_oov += sum(f[2] for f in full)
        got = arr.score_sentence(words)
        assert len(got) == len(words) + 1  # </s> included
        # bit-identical: the same float32 numbers summed in KenLM's order, times ln 10
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(arr.score_sentence(words, eos=False), want[:-1])
    assert n_oov >= 5  # the OOV path really ran
    assert arr.word_id("qwertyuiop") == 0


def test_states_merge_exactly_when_kenlm_states_do(model: tuple[Path, NgramArrays]) -> None:
    arpa, arr = model
    _, _, k_next, a_next = _walk(kenlm.Model(str(arpa)), arr)
    by_kenlm: dict[kenlm.State, set[tuple[int, ...]]] = {}
    by_ours: dict[tuple[int, ...], set[kenlm.State]] = {}
    for k, a in zip(k_next, a_next, strict=True):
        by_kenlm.setdefault(k, set()).add(tuple(a.tolist()))
        by_ours.setdefault(tuple(a.tolist()), set()).add(k)
    assert max(len(v) for v in by_kenlm.values()) == 1
    assert max(len(v) for v in by_ours.values()) == 1
    # and minimisation really merges histories (fewer states than positions)
    assert len(by_kenlm) < len(k_next)


def test_batched_scorers_agree(model: tuple[Path, NgramArrays]) -> None:
    arpa, arr = model
    states, words, _, a_next = _walk(kenlm.Model(str(arpa)), arr)
    S, W = np.stack(states), np.array(words)
    want = np.array([arr.score(s, w)[0] for s, w in zip(states, words, strict=True)])
    lp1, n1 = score_many(arr, S, W)
    lp2, n2 = arr.score_batch(S, W)
    np.testing.assert_array_equal(lp1, want)
    np.testing.assert_array_equal(lp2, want)
    assert (n1 == np.stack(a_next)).all() and (n2 == n1).all()


def test_base_scores_equal_kenlm_exactly_on_tiny_and_binary(tiny_arpa: Path, tmp_path: Path) -> None:
    """Every (state, word) step, ln P equal to the KenLM adapter's (``BaseScore`` x ln 10) bit for bit,
    on the bundled tiny ARPA and on a probing binary built with its ARPA kept."""
    binary = build_ngram([TEXT / "bible.train.txt"], tmp_path / "lm.bin", order=4, progress=False, keep_arpa=True)
    tiny = tmp_path / "tiny.arpa"  # a copy: the arrays' cache is written beside the ARPA, not into tests/data
    tiny.write_bytes(tiny_arpa.read_bytes())
    for path in (tiny, binary):
        m = kenlm.Model(str(path))
        arr = load_ngram_arrays(path)
        words = [*[w for w in arr.vocab if w != "<s>"][:200], "qqq"]
        steps = 0
        for line in _sentences()[:40]:
            ks = kenlm.State()
            m.BeginSentenceWrite(ks)
            s = arr.begin_state()
            for w in [*line.split(), *words[: 3 + steps % 7], "</s>"]:
                ko = kenlm.State()
                want = m.BaseScore(ks, w, ko) * LN10
                got, s2 = arr.score(s, arr.word_id(w))
                assert got == want, (path.name, w)
                ks, s = ko, s2
                steps += 1
        assert steps > 300


def test_binary_needs_its_arpa(tmp_path: Path) -> None:
    binary = build_ngram([TEXT / "bible.train.txt"], tmp_path / "lm.bin", order=2, progress=False, keep_arpa=False)
    with pytest.raises(InputError, match="keep_arpa"):
        load_ngram_arrays(binary)
    kept = build_ngram([TEXT / "bible.train.txt"], tmp_path / "lm2.bin", order=2, progress=False)  # kept by default
    arr = load_ngram_arrays(kept)
    assert arr.order == 2 and arr.word_id("lord") > 0


def test_kept_arpa_never_overwrites_the_training_text(tmp_path: Path) -> None:
    text = tmp_path / "lm.bin.arpa"  # the name the kept ARPA of lm.bin would take
    text.write_text((TEXT / "bible.train.txt").read_text())
    before = text.read_bytes()
    with pytest.raises(OutputError, match="ARPA kept beside the binary"):
        build_ngram([text], tmp_path / "lm.bin", order=2, progress=False)
    assert text.read_bytes() == before and not (tmp_path / "lm.bin").exists()


def test_bad_arpa_is_a_located_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\t-0.5\nnot_a_number the\n\n\\end\\\n")
    with pytest.raises(InputError, match="bad number") as e:
        read_arpa(bad)
    assert e.value.line == 6 and e.value.path == str(bad)


def test_arrays_are_cached_beside_the_arpa_until_it_changes(tmp_path: Path, tiny_arpa: Path) -> None:
    from fusion.ngram_arrays import arrays_cache_path

    arpa = tmp_path / "tiny.arpa"
    arpa.write_bytes(tiny_arpa.read_bytes())
    first = load_ngram_arrays(arpa)
    cache = arrays_cache_path(arpa)
    assert cache.is_file()
    again = load_ngram_arrays(arpa)  # from the cache
    assert again.vocab == first.vocab and again.order == first.order
    for k in ("offsets", "keys", "ids", "logp", "backoff", "extends"):
        np.testing.assert_array_equal(getattr(again, k), getattr(first, k))
    # an edited ARPA (one probability changed, size kept) is read again, not served stale
    text = arpa.read_text()
    i = text.index("\\2-grams:")
    j = text.index("-", i + 10)
    edited = text[:j] + ("-2" if text[j + 1] != "2" else "-3") + text[j + 2 :]
    arpa.write_text(edited)
    changed = load_ngram_arrays(arpa)
    assert not np.array_equal(changed.logp, first.logp)
