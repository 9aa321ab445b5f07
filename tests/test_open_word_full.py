"""VocabOpenWordScorer: the open-word n-gram over the whole vocabulary equals the partial scorer everywhere, and
lets the LM choose a word the model puts far outside any pre-beam (the MT register-word case, issue 19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decoders.hf import FusionLogitsProcessor
from decoders.seq2seq import BeamConfig, beam_search
from fusion.array_lm import ArrayNgramLM
from fusion.errors import LMFusionError
from fusion.ngram_arrays import read_arpa
from fusion.scorers import OpenWordLMScorer, VocabOpenWordScorer, units_from_pieces


@pytest.fixture(scope="module")
def arrays_lm(bible_arpa):
    from fusion.ngram import KenLM

    k = KenLM(bible_arpa, name="ngram")
    return k, ArrayNgramLM(read_arpa(bible_arpa), k.name, k.units)


def test_full_rows_equal_partial_scores_and_states(arrays_lm, tiny_spm) -> None:
    """Along a real sentence (word starts and continuations), every token's full-vocabulary score is the
    partial scorer's (over KenLM itself) for that candidate, and the selected states are the same."""
    kenlm, alm = arrays_lm
    units = [*units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()]), None, None]
    V, eos = len(units), len(units) - 2
    full = VocabOpenWordScorer(alm, units, eos, name="ngram")
    part = OpenWordLMScorer(alm, units, eos, name="ngram")
    by_kenlm = OpenWordLMScorer(kenlm, units, eos, name="ngram")
    assert not full.is_partial and part.is_partial
    path = [tiny_spm.piece_to_id[p] for p in tiny_spm.encode("and the lord spake unto moses saying")]
    assert any(not units[t].startswith("\u2581") for t in path if units[t])  # the path has continuation pieces
    fs, ps, ks = [full.init_state()], [part.init_state()], [by_kenlm.init_state()]
    cand = np.arange(V)[None, :]
    seen = np.array([u is not None for u in units])
    seen[eos] = True
    for t in path:
        frow, fctx = full.score([()], fs, None)
        prow, pctx = part.score([()], ps, cand)
        krow, kctx = by_kenlm.score([()], ks, cand)
        assert frow.shape == (1, V)
        np.testing.assert_allclose(frow, prow, atol=1e-9)
        np.testing.assert_allclose(frow[:, seen], krow[:, seen], atol=1e-9)  # KenLM's own numbers
        ks = by_kenlm.select_state(kctx, [0], [t])
        assert np.isfinite(frow).all()
        fs, ps = full.select_state(fctx, [0], [t]), part.select_state(pctx, [0], [t])
        assert fs[0][1:3] == pytest.approx(ps[0][1:3])  # type: ignore[index]  # same open word, same charge
    assert full.final_score(fs[0]) == pytest.approx(part.final_score(ps[0]), abs=1e-9)
    with pytest.raises(LMFusionError, match="ArrayNgramLM"):
        VocabOpenWordScorer(kenlm, units, eos)


def test_score_after_is_score_many_exactly(arrays_lm) -> None:
    """Many words after one state (back-offs looked up once) give score_many's numbers bit for bit, after
    contexts of every length, known and unknown words alike."""
    from fusion.ngram_arrays import score_after, score_many

    _, alm = arrays_lm
    arr = alm.arrays
    words = np.array([*range(min(len(arr.vocab), 400)), *arr.unit_ids(["unto", "thee", "nosuchword"])], dtype=np.int64)
    st = alm.begin()
    for w in [None, *"and the lord spake unto moses saying".split()]:
        if w is not None:
            st = alm.score(st, w)[1]
        many = score_many(arr, np.tile(np.asarray(st, np.int32), (len(words), 1)), words)[0]
        assert np.array_equal(score_after(arr, np.asarray(st, np.int32), words), many)


WORDS = ["and", "the", "lord", "spake", "unto", "to", "moses", "saying"]


def _register_case():
    """A toy model that says "and the lord spake to moses saying"; where it says "to", every other word is
    ln p -2 and "unto" -2.5, outside a pre-beam of 2."""
    units = ["\u2581" + w for w in WORDS] + [None]
    V, eos = len(units), len(units) - 1
    says = [WORDS.index(w) for w in "and the lord spake to moses saying".split()] + [eos]

    def step(prefixes, state):
        t = prefixes.shape[1] - 1
        lp = torch.full((prefixes.shape[0], V), -60.0)
        lp[:, says[min(t, len(says) - 1)]] = -0.05
        if t == 4:
            lp[:, : V - 1] = -2.0
            lp[:, WORDS.index("to")] = -0.05
            lp[:, WORDS.index("unto")] = -2.5
        return lp, state

    return units, V, eos, step


def test_full_scorer_reaches_a_word_outside_the_pre_beam(arrays_lm) -> None:
    """The partial scorer never sees "unto" (pre-beam 2 of the model's top tokens) and keeps "to"; the full
    scorer, whose LM gap outweighs the model's 2.45 nats, chooses "unto", in lmfusion's search and in
    generate()'s logits processor alike."""
    _, alm = arrays_lm
    units, V, eos, step = _register_case()
    s0 = alm.begin()
    for word in "and the lord spake".split():
        s0 = alm.score(s0, word)[1]
    gap = alm.score(s0, "unto")[0] - alm.score(s0, "to")[0]
    assert gap > 2.45 + 0.1  # the bible LM prefers "unto" after "the lord spake" by more than the model's gap
    w = {"ngram": 1.0}
    cfg = BeamConfig(beam=2, max_len=10, pre_beam=2, length_penalty=0.0, early_stopping=False)

    def run(scorer):
        nb = beam_search(step, None, 1, eos_id=eos, start_ids=[V], scorers=[scorer], weights=w, config=cfg,
                         token_units=units)
        return nb[0].hyps[0].text.split()

    assert "unto" not in run(OpenWordLMScorer(alm, units, eos, name="ngram"))
    assert run(VocabOpenWordScorer(alm, units, eos, name="ngram"))[4] == "unto"
    # generate()'s processor: after "and the lord spake", the fused top token
    prefix = torch.tensor([[V, *[WORDS.index(x) for x in "and the lord spake".split()]]])
    for scorer, want in ((OpenWordLMScorer(alm, units, eos, name="ngram"), "to"),
                         (VocabOpenWordScorer(alm, units, eos, name="ngram"), "unto")):
        proc = FusionLogitsProcessor([scorer], w, pre_beam=2)
        for i in range(1, prefix.shape[1] + 1):  # walk the prefix so the processor follows the states
            out = proc(prefix[:, :i], step(prefix[:, :i], None)[0])
        assert WORDS[int(out[0].argmax())] == want
        assert torch.equal(out[0, :V - 1].isfinite(), torch.ones(V - 1, dtype=torch.bool)) == (want == "unto")
