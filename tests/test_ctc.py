"""CTC prefix beam search with shallow fusion: exactness, fusion hooks, caching, pools, streaming, bad input."""

from __future__ import annotations

import importlib.util
import itertools
import math
import multiprocessing as mp
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders.ctc import CTCDecoder, CTCOptions, CTCVocab
from decoders.emissions import CHAR_LABELS, EmissionConfig, greedy_decode, log_softmax, make_emission_set
from decoders.hypothesis import read_nbest_jsonl, write_nbest_jsonl
from decoders.lexicon import Lexicon, TokenTrie
from decoders.reference import reference_beam_search
from fusion.abilities import LMSpec
from fusion.errors import InputError, LMFusionError, WeightsError
from fusion.interpolate import LinearInterpolation
from fusion.lm import LanguageModel, State, Units
from fusion.metrics import wer
from fusion.ngram import KenLM

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"
BACKENDS = ["numba", "numpy"] if importlib.util.find_spec("numba") else ["numpy"]


def _sents(name: str, n: int) -> list[str]:
    return [s.strip() for s in (TEXT / name).read_text().splitlines() if s.strip()][:n]


@pytest.fixture(scope="module")
def bible_lm(bible_arpa: Path) -> KenLM:
    return KenLM(bible_arpa, name="lm")


@pytest.fixture(scope="module")
def tech_lm(tech_arpa: Path) -> KenLM:
    return KenLM(tech_arpa, name="tech")


class CharBigram(LanguageModel):
    """A token-level LM over the CTC labels (add-one character bigram); counts the pairs it scores."""

    def __init__(self, corpus: Sequence[str], labels: Sequence[str], name: str = "chars") -> None:
        super().__init__(name, Units.token("test-chars"))
        self.labels = [lab for lab in labels if lab != "<blank>"]
        self.counts: Counter[tuple[str, str]] = Counter()
        self.ctx: Counter[str] = Counter()
        for s in corpus:
            seq = ["<s>", *s, "</s>"]
            for a, b in itertools.pairwise(seq):
                self.counts[(a, b)] += 1
                self.ctx[a] += 1
        self.pairs: list[tuple[State, str]] = []
        self.batches: list[int] = []

    def begin(self) -> State:
        return "<s>"

    def _lp(self, a: str, b: str) -> float:
        return math.log((self.counts[(a, b)] + 1) / (self.ctx[a] + len(self.labels) + 1))

    def score(self, state: State, unit: str) -> tuple[float, State]:
        self.pairs.append((state, unit))
        return self._lp(str(state), unit), unit

    def score_pairs(self, states, units):  # type: ignore[no-untyped-def]
        self.batches.append(len(units))
        return super().score_pairs(states, units)

    def end(self, state: State) -> float:
        return self._lp(str(state), "</s>")


class CountingLM(LanguageModel):
    """Wraps an LM and records every (state, unit) pair it is asked to score."""

    def __init__(self, inner: LanguageModel) -> None:
        super().__init__(inner.name, inner.units)
        self.inner = inner
        self.pairs: list[tuple[State, str]] = []
        self.batches: list[int] = []

    def begin(self) -> State:
        return self.inner.begin()

    def score(self, state: State, unit: str) -> tuple[float, State]:
        self.pairs.append((state, unit))
        return self.inner.score(state, unit)

    def score_pairs(self, states, units):  # type: ignore[no-untyped-def]
        self.batches.append(len(units))
        return super().score_pairs(states, units)

    def end(self, state: State) -> float:
        return self.inner.end(state)

    @property
    def vocab(self):  # type: ignore[no-untyped-def]
        return self.inner.vocab


def peaky(seq: Sequence[int], V: int, *, p: float = 0.95, seed: int = 0) -> np.ndarray:
    """Frames whose argmax is ``seq[t]`` with probability ``p``; the rest spread at random."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(seq), V))
    for t, s in enumerate(seq):
        rest = rng.dirichlet(np.ones(V - 1)) * (1 - p)
        row = np.insert(rest, s, p)
        out[t] = np.log(row)
    return out


def _same_nbest(a, b, tol: float = 1e-6) -> None:  # type: ignore[no-untyped-def]
    """Fast n-best (NBestList) equals the reference's ``[(text, total, scores)]``."""
    assert [h.text for h in a.hyps] == [t for t, _, _ in b]
    for h, (_, _, sc) in zip(a.hyps, b, strict=True):
        for k, v in sc.items():
            assert h.scores[k] == pytest.approx(v, abs=tol, rel=1e-9), (h.text, k)


# ----------------------------------------------------------------------------------------------
# Exactness without LMs
# ----------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seq=st.lists(st.integers(0, 5), min_size=1, max_size=30), seed=st.integers(0, 1000),
       backend=st.sampled_from(BACKENDS))
def test_beam1_without_lm_is_greedy(seq: list[int], seed: int, backend: str) -> None:
    labels = ["<blank>", " ", "a", "b", "c", "d"]
    em = peaky(seq, len(labels), p=0.95, seed=seed)
    dec = CTCDecoder(labels, options=CTCOptions(beam_width=1, backend=backend))
    assert dec.decode_text(em) == greedy_decode(em, labels)


def _exact_text_distribution(em: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """log P(text) by enumerating every alignment (V^T paths): the brute-force truth."""
    T, V = em.shape
    out: dict[str, float] = {}
    for path in itertools.product(range(V), repeat=T):
        lp = float(sum(em[t, v] for t, v in enumerate(path)))
        collapsed = [v for i, v in enumerate(path) if v != 0 and (i == 0 or path[i - 1] != v)]
        text = " ".join("".join(labels[v] for v in collapsed).split())
        out[text] = float(np.logaddexp(out.get(text, -np.inf), lp))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_finds_the_known_best_labelling(seed: int, backend: str) -> None:
    labels = ["<blank>", "a", "b", " "]
    rng = np.random.default_rng(seed)
    em = log_softmax(rng.normal(0, 1.5, size=(6, len(labels))))
    truth = _exact_text_distribution(em, labels)
    best_text = max(truth, key=truth.get)  # type: ignore[arg-type]
    opts = CTCOptions(beam_width=4096, token_min_logp=-1e9, beam_prune_logp=-1e9, nbest=5, backend=backend)
    nb = CTCDecoder(labels, options=opts).decode(em)
    assert nb.hyps[0].text == best_text
    # an unpruned prefix search is exact: the am score is log P(text) summed over all alignments
    for h in nb.hyps:
        assert h.scores["am"] == pytest.approx(truth[h.text], abs=1e-9)


def test_greedy_path_is_not_the_best_labelling_here() -> None:
    """The classic case: blank wins every frame, yet 'a' is the most probable output."""
    labels = ["<blank>", "a"]
    em = np.log(np.array([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(em, labels) == ""
    opts = CTCOptions(beam_width=16, token_min_logp=-100.0, beam_prune_logp=-100.0)
    nb = CTCDecoder(labels, options=opts).decode(em)
    assert nb.hyps[0].text == "a"
    assert nb.hyps[0].scores["am"] == pytest.approx(math.log(1 - 0.6**3 - 0.4**2 * 0.6), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Fast paths equal the plain reference (LMs, lexicon, token LM, density ratio)
# ----------------------------------------------------------------------------------------------
def _noisy(n: int, seed: int = 3, domain: str = "bible") -> tuple[list[str], list[np.ndarray]]:
    refs = [s for s in _sents(f"{domain}.test.txt", 60) if len(s) < 60][:n]
    return refs, make_emission_set(refs, config="very_noisy", seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("constrained", "lookahead"), [(False, False), (True, False), (False, True), (True, True)])
def test_word_lm_fusion_equals_reference(bible_lm: KenLM, backend: str, constrained: bool, lookahead: bool) -> None:
    _, ems = _noisy(3)
    opts = CTCOptions(beam_width=6, nbest=4, lexicon_constrained=constrained, lookahead=lookahead, backend=backend,
                      beam_prune_logp=-25.0 if constrained else -10.0)
    dec = CTCDecoder(CHAR_LABELS, [bible_lm], {"lm": 0.6, "words": 1.2, "oov": -4.0}, options=opts)
    for em in ems:
        _same_nbest(dec.decode(em), reference_beam_search(dec, em))


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_lm_and_negative_weight_equal_reference(bible_lm: KenLM, tech_lm: KenLM, backend: str) -> None:
    _, ems = _noisy(2, seed=5)
    chars = CharBigram(_sents("bible.train.txt", 300), CHAR_LABELS)
    opts = CTCOptions(beam_width=5, nbest=3, backend=backend)
    weights = {"lm": 0.5, "tech": -0.2, "chars": 0.3, "words": 1.0}
    dec = CTCDecoder(CHAR_LABELS, [bible_lm, tech_lm, chars], weights, options=opts)
    for em in ems:
        _same_nbest(dec.decode(em), reference_beam_search(dec, em))


def test_lexicon_constrained_outputs_only_known_words(bible_lm: KenLM) -> None:
    _, ems = _noisy(4, seed=7)
    dec = CTCDecoder(CHAR_LABELS, [bible_lm], {"lm": 0.5, "words": 1.0},
                     options=CTCOptions(beam_width=16, lexicon_constrained=True))
    vocab = bible_lm.vocab
    assert vocab is not None
    last_known = 0
    for em in ems:
        for h in dec.decode(em).hyps:
            words = h.text.split()
            # completed words are always known; the last one too unless no hypothesis ends on a word
            # (then, like flashlight-text, the best unfinished ones are returned, flagged as OOV)
            assert all(w in vocab for w in words[:-1]), h.text
            last_known += words[-1] in vocab
            assert h.scores["oov"] == (words[-1] not in vocab)
    assert last_known >= len(ems)
    with pytest.raises(LMFusionError, match="lexicon"):
        CTCDecoder(CHAR_LABELS, options=CTCOptions(lexicon_constrained=True))


def test_components_rebuild_the_fused_score_and_roundtrip(bible_lm: KenLM, tmp_path: Path) -> None:
    refs, ems = _noisy(2)
    w = {"lm": 0.7, "words": 0.8, "oov": -3.0}
    dec = CTCDecoder(CHAR_LABELS, [bible_lm], w, options=CTCOptions(beam_width=8, nbest=5))
    nbs = [dec.decode(em, utt_id=f"u{i}", ref=r) for i, (em, r) in enumerate(zip(ems, refs, strict=True))]
    for nb, em in zip(nbs, ems, strict=True):
        ref_totals = {t: tot for t, tot, _ in reference_beam_search(dec, em)}
        for h in nb.hyps:
            assert set(h.scores) == {"am", "lm", "words", "oov", "hotwords"}
            assert h.total(dec.weights) == pytest.approx(ref_totals[h.text], abs=1e-6)
            # the LM component is the unweighted ln P of the words (+ </s>), as KenLM says, plus the
            # unknown-word offset (log10, pyctcdecode's default -10) for each word outside the lexicon
            n_oov = sum(x not in bible_lm.vocab for x in h.text.split())  # type: ignore[operator]
            assert h.scores["oov"] == n_oov
            kenlm_says = bible_lm.sentence_logprob(h.text) if h.text else bible_lm.end(bible_lm.begin())
            assert h.scores["lm"] == pytest.approx(kenlm_says + n_oov * -10.0 * math.log(10.0), abs=1e-4)
            assert h.scores["words"] == len(h.text.split())
        totals = [h.total(dec.weights) for h in nb.hyps]
        assert totals == sorted(totals, reverse=True)
    path = tmp_path / "nbest.jsonl"
    write_nbest_jsonl(path, nbs)
    back = read_nbest_jsonl(path)
    assert [h.text for h in back[0].hyps] == [h.text for h in nbs[0].hyps]
    assert back[1].hyps[0].scores == pytest.approx(dict(nbs[1].hyps[0].scores))
    assert back[0].hyps[0].words == nbs[0].hyps[0].words


def test_word_frames_are_ordered_and_inside_the_utterance() -> None:
    _, ems = _noisy(3)
    dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=8))
    for em in ems:
        h = dec.decode(em).hyps[0]
        assert [w for w, _, _ in h.words] == h.text.split()
        prev_end = 0
        for _, s, e in h.words:
            assert 0 <= s < e <= len(em)
            assert s >= prev_end - 1
            prev_end = e
        # every word starts on a frame where its first letter is likely
        for w, s, _ in h.words:
            assert em[s, CHAR_LABELS.index(w[0])] > -8.0


# ----------------------------------------------------------------------------------------------
# The LM helps; neural LMs and interpolations go through the same hook
# ----------------------------------------------------------------------------------------------
def test_kenlm_reduces_wer_on_noisy_emissions(bible_lm: KenLM) -> None:
    refs = [s for s in _sents("bible.test.txt", 80) if len(s) < 80][:40]
    ems = make_emission_set(refs, config="noisy", seed=11)
    greedy = [greedy_decode(e, CHAR_LABELS) for e in ems]
    plain = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=16))
    fused = CTCDecoder(CHAR_LABELS, [bible_lm], {"lm": 0.5, "words": 1.5, "oov": -10.0},
                       options=CTCOptions(beam_width=16))
    w_greedy = wer(refs, greedy)
    w_plain = wer(refs, [plain.decode_text(e) for e in ems])
    w_fused = wer(refs, [fused.decode_text(e) for e in ems])
    assert w_greedy > 0.1  # the emissions really are noisy
    assert w_fused < 0.6 * w_plain
    assert w_plain <= w_greedy + 0.02


def test_cache_never_scores_a_pair_twice_and_batches(bible_lm: KenLM) -> None:
    _, ems = _noisy(2, seed=9)
    counting = CountingLM(KenLM(bible_lm.path, name="lm"))
    dec = CTCDecoder(CHAR_LABELS, [counting], {"lm": 0.5, "words": 1.0}, options=CTCOptions(beam_width=32))
    dec.decode(ems[0])
    first = list(counting.pairs)
    assert first, "the LM was never asked"
    assert len(first) == len(set(first)), "a (state, word) pair was scored twice"
    assert max(counting.batches) > 1, "requests were not batched"
    dec.decode(ems[0])  # same utterance again: everything comes from the cache
    assert counting.pairs == first


def test_neural_and_interpolated_lms_through_the_same_hook(bible_lm: KenLM, tiny_spm) -> None:  # type: ignore[no-untyped-def]
    neural = pytest.importorskip("fusion.neural")
    from fusion.units import WordLevelLM

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    nn_lm = neural.NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0},
                                        tiny_spm, seed=0, name="nn_pieces")
    word_nn = WordLevelLM(nn_lm, name="nnlm")
    mix = LinearInterpolation([KenLM(bible_lm.path, name="kenlm"), WordLevelLM(nn_lm, name="nnw")], [0.7, 0.3],
                              name="mix")
    _, ems = _noisy(1, seed=13)
    ems = [ems[0][:45]]
    for lms, w in (([word_nn], {"nnlm": 0.3}), ([mix], {"mix": 0.5}), ([bible_lm, word_nn], {"lm": 0.5, "nnlm": 0.2})):
        dec = CTCDecoder(CHAR_LABELS, lms, {**w, "words": 1.0}, options=CTCOptions(beam_width=3, nbest=3))
        _same_nbest(dec.decode(ems[0]), reference_beam_search(dec, ems[0]), tol=1e-4)


def test_sentencepiece_vocabulary_with_word_and_token_lms(bible_lm: KenLM, tiny_spm) -> None:  # type: ignore[no-untyped-def]
    neural = pytest.importorskip("fusion.neural")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    labels = ["<blank>", *tiny_spm.pieces]
    vocab = CTCVocab.from_labels(labels)
    assert vocab.kind == "spm"
    text = "and the lord said unto moses"
    pieces = tiny_spm.encode(text)
    seq: list[int] = [0]
    for p in pieces:
        seq += [labels.index(p), labels.index(p), 0]
    em = peaky(seq, len(labels), p=0.9, seed=1)
    assert CTCDecoder(labels, options=CTCOptions(beam_width=8)).decode_text(em) == text
    nn_lm = neural.NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0},
                                        tiny_spm, seed=0, name="nnlm")
    dec = CTCDecoder(labels, [bible_lm, nn_lm], {"lm": 0.5, "nnlm": 0.2, "words": 1.0},
                     options=CTCOptions(beam_width=4, nbest=3))
    nb = dec.decode(em)
    assert nb.hyps[0].text == text
    _same_nbest(nb, reference_beam_search(dec, em), tol=1e-4)


# ----------------------------------------------------------------------------------------------
# Batch decoding in process pools (fork and spawn), streaming
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_matches_sequential(bible_lm: KenLM, tech_lm: KenLM, method: str) -> None:
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    refs, ems = _noisy(4, seed=17)
    mix = LinearInterpolation([KenLM(bible_lm.path, name="b"), KenLM(tech_lm.path, name="t")], [0.8, 0.2], name="mix")
    dec = CTCDecoder(CHAR_LABELS, [mix], {"mix": 0.5, "words": 1.0}, options=CTCOptions(beam_width=8, nbest=3))
    seq = dec.decode_batch(ems, refs=refs)
    par = dec.decode_batch(ems, refs=refs, processes=2, mp_context=method)
    assert [nb.to_json() for nb in par] == [nb.to_json() for nb in seq]
    assert dec.spec().lms[0].mix[0][0] == LMSpec("b", path=str(bible_lm.path), kind="kenlm")


def test_pool_needs_reloadable_lms() -> None:
    chars = CharBigram(["ab"], CHAR_LABELS)
    dec = CTCDecoder(CHAR_LABELS, [chars])
    with pytest.raises(LMFusionError, match="cannot be reopened in another process"):
        dec.decode_batch(make_emission_set(["a b", "b a"]), processes=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_equals_whole_utterance(bible_lm: KenLM, backend: str) -> None:
    _, ems = _noisy(2, seed=19)
    dec = CTCDecoder(CHAR_LABELS, [bible_lm], {"lm": 0.5, "words": 1.0},
                     options=CTCOptions(beam_width=12, nbest=4, backend=backend))
    for em in ems:
        whole = dec.decode(em)
        stream = dec.stream()
        bests = []
        for start in range(0, len(em), 17):
            stream.feed(em[start : start + 17])
            bests.append(stream.best().text)
        stream.feed(em[:0])
        nb = stream.finish()
        assert [h.text for h in nb.hyps] == [h.text for h in whole.hyps]
        for h, g in zip(nb.hyps, whole.hyps, strict=True):
            assert h.scores == pytest.approx(dict(g.scores))
            assert h.words == g.words
        assert bests[-1] == whole.hyps[0].text
        assert len(bests[0].split()) <= len(bests[-1].split())
        with pytest.raises(LMFusionError, match="after finish"):
            stream.feed(em[:3])


def test_torch_input(bible_lm: KenLM) -> None:
    torch = pytest.importorskip("torch")
    _, ems = _noisy(1)
    dec = CTCDecoder(CHAR_LABELS, options=CTCOptions(beam_width=4))
    assert dec.decode_text(torch.from_numpy(ems[0])) == dec.decode_text(ems[0])


# ----------------------------------------------------------------------------------------------
# Lexicon and emissions helpers
# ----------------------------------------------------------------------------------------------
def test_lookahead_is_the_best_word_below(bible_lm: KenLM) -> None:
    lex = Lexicon(["cat", "car", "dog"])
    look = lex.smear_max({"cat": -2.0, "car": -1.0, "dog": -5.0})
    assert look[lex.walk(0, "ca")] == -1.0 and look[lex.walk(0, "cat")] == -2.0 and look[lex.walk(0, "d")] == -5.0
    assert look[0] == 0.0
    dec = CTCDecoder(CHAR_LABELS, [bible_lm], {"lm": 0.5}, options=CTCOptions(lookahead=True))
    node = dec.lexicon.walk(0, "lor")  # type: ignore[union-attr]
    below = [w for w in dec.lexicon.words if w.startswith("lor")]  # type: ignore[union-attr]
    best = max(0.5 * bible_lm.score(bible_lm.begin(), w)[0] for w in below)
    assert dec.look[node] == pytest.approx(best)


def test_lexicon_trie_steps_by_tokens() -> None:
    lex = Lexicon(["cat", "car", "cart", "dog", ""])
    assert len(lex) == 4 and "cart" in lex and "ca" not in lex
    assert lex.is_prefix("ca") and not lex.is_prefix("cb") and lex.is_prefix("")
    tt = TokenTrie(lex, ["", "", "c", "a", "r", "t", "ca", "rt"])
    n_ca = lex.walk(0, "ca")
    got = tt.step(np.array([0, 0, n_ca, n_ca, -1]), np.array([6, 2, 7, 2, 3]))
    assert got.tolist() == [n_ca, lex.walk(0, "c"), lex.walk(0, "cart"), -1, -1]
    assert lex.terminal[lex.walk(0, "cart")] and lex.word_of[lex.walk(0, "car")] == "car"


def test_synthetic_emissions_are_seeded_log_probs() -> None:
    a = make_emission_set(["the lord said", "hello"], seed=4)
    b = make_emission_set(["the lord said", "hello"], seed=4)
    c = make_emission_set(["the lord said", "hello"], seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0]) or a[0].shape != c[0].shape
    for e in a:
        assert np.allclose(np.exp(e).sum(axis=1), 1.0, atol=1e-5)
    clean = make_emission_set(["the lord said"], config=EmissionConfig(confusion_rate=0, weak_space_rate=0,
                                                                        deletion_rate=0, noise=0.1), seed=0)
    assert greedy_decode(clean[0], CHAR_LABELS) == "the lord said"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        make_emission_set(["héllo"])


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors
# ----------------------------------------------------------------------------------------------
def test_bad_emissions_are_clear_errors() -> None:
    dec = CTCDecoder(CHAR_LABELS)
    good = make_emission_set(["a b"])[0].astype(np.float64)
    nan = good.copy()
    nan[2, 3] = np.nan
    with pytest.raises(InputError, match=r"NaN \(first at frame 2, label 3\)"):
        dec.decode(nan)
    inf = good.copy()
    inf[1, 0] = np.inf
    with pytest.raises(InputError, match=r"\+inf"):
        dec.decode(inf)
    with pytest.raises(InputError, match="28 columns but the vocabulary has 29"):
        dec.decode(good[:, :28])
    with pytest.raises(InputError, match="empty"):
        dec.decode(good[:0])
    with pytest.raises(InputError, match="2-D"):
        dec.decode(good[0])
    with pytest.raises(InputError, match="not log-probabilities"):
        dec.decode(good + 1.0)
    with pytest.raises(InputError, match="probability zero for every label"):
        zero = good.copy()
        zero[0] = -np.inf
        dec.decode(zero)
    with pytest.raises(InputError, match="no frames"):
        dec.stream().finish()


def test_bad_configuration_is_clear() -> None:
    with pytest.raises(LMFusionError, match="blank index 29 is out of range"):
        CTCDecoder(CHAR_LABELS, blank=29)
    with pytest.raises(LMFusionError, match="blank index -1"):
        CTCDecoder(CHAR_LABELS, blank=-1)
    with pytest.raises(LMFusionError, match="twice"):
        CTCDecoder(["<blank>", "a", "a"])
    with pytest.raises(LMFusionError, match="empty"):
        CTCDecoder([])
    with pytest.raises(LMFusionError, match="beam_width"):
        CTCOptions(beam_width=0)
    with pytest.raises(LMFusionError, match="token_min_logp"):
        CTCOptions(token_min_logp=float("nan"))
    with pytest.raises(LMFusionError, match="backend"):
        CTCOptions(backend="gpu")
    with pytest.raises(WeightsError, match=r"'lmm' names no score component \(known: am, words, oov, hotwords\)"):
        CTCDecoder(CHAR_LABELS, weights={"lmm": 1.0})
    with pytest.raises(WeightsError, match="finite"):
        CTCDecoder(CHAR_LABELS, weights={"words": float("inf")})
    with pytest.raises(WeightsError, match="'am' must be > 0"):
        CTCDecoder(CHAR_LABELS, weights={"am": 0.0})


def test_word_lm_needs_a_delimiter(bible_lm: KenLM) -> None:
    with pytest.raises(LMFusionError, match="no word delimiter"):
        CTCDecoder(["<blank>", "a", "b"], [bible_lm])
    dec = CTCDecoder(["_", "|", "a", "b"], [bible_lm], blank=0)
    assert dec.vocab.word_delimiter == "|"
