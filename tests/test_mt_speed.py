"""The MT recipe's speed checks: what they compare is checked, never how fast it is."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("transformers")

from fusion.errors import LMFusionError

SRC = ["in the beginning", "and the earth was without form"]
LSTM = {"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def mt(tiny_spm):
    """A random tiny Marian model over ``tiny_spm`` (shared vocabulary), its vocabularies and decoder units."""
    import torch
    from transformers import MarianMTModel

    from recipes.mt.evaluate import model_units
    from recipes.mt.model import Vocabs, marian_config

    vocabs = Vocabs(tiny_spm, tiny_spm)
    torch.manual_seed(0)
    model = MarianMTModel(marian_config(vocabs, d_model=32, layers=1, heads=2, ffn=64, dropout=0.0)).eval()
    with torch.no_grad():
        model.final_logits_bias[0, vocabs.eos_id] = 3.0  # short outputs
    return model, vocabs, model_units(model, vocabs)


def _nnlm(spm: Any, seed: int = 2) -> Any:
    from fusion.neural import NeuralLM

    return NeuralLM.from_config(LSTM, spm, seed=seed, name="nnlm")


def test_incremental_and_reread_agree_and_both_are_timed(mt, tiny_spm) -> None:
    from recipes.mt.speed import nnlm_incremental_vs_reread

    model, vocabs, units = mt
    s = nnlm_incremental_vs_reread(model, vocabs, SRC, lambda: _nnlm(tiny_spm), units, vocabs.eos_id, 0.5,
                                   beam=2, batch=2, repeats=1)
    assert s["max_score_gap"] <= 1e-4
    assert s["lm_seconds_incremental"] > 0 and s["lm_seconds_reread"] > 0
    assert s["lm_speedup"] == pytest.approx(s["lm_seconds_reread"] / s["lm_seconds_incremental"])


def test_a_reread_lm_that_scores_differently_is_refused(mt, tiny_spm) -> None:
    from recipes.mt.speed import nnlm_incremental_vs_reread

    model, vocabs, units = mt
    seeds = iter(range(100))  # every opened LM has other weights: the two scorers cannot agree
    with pytest.raises(LMFusionError, match="differ"):
        nnlm_incremental_vs_reread(model, vocabs, SRC, lambda: _nnlm(tiny_spm, next(seeds)), units, vocabs.eos_id,
                                   0.5, beam=2, batch=2, repeats=1)


def test_fusion_at_zero_weight_generates_the_plain_outputs(mt, bible_arpa) -> None:
    from fusion.ngram import KenLM
    from fusion.scorers import WordLMScorer
    from recipes.mt.speed import generate_overhead

    model, vocabs, units = mt
    kenlm = KenLM(bible_arpa, name="ngram")
    g = generate_overhead(model, vocabs, SRC, lambda: [WordLMScorer(kenlm, units, vocabs.eos_id, partial=True)],
                          {"am": 1.0, "ngram": 0.0}, beam=2, batch=2, repeats=2)
    assert g["texts_fused"] == g["texts_plain"]
    assert len(g["seconds_plain"]) == len(g["seconds_fused"]) == 2
    assert g["overhead"] == pytest.approx(g["median_fused"] / g["median_plain"])


def test_word_logprobs_are_the_models_at_the_reference_positions(mt) -> None:
    import torch

    from recipes.mt.diagnose import word_counts, word_logprobs

    model, vocabs, _ = mt
    word = next(p[1:] for p in vocabs.spm.pieces if p.startswith("\u2581") and len(p) > 2)
    refs = [f"{word} {word}", f"x {word}"]
    src = ["a b", "c d"]
    got = word_logprobs(model, vocabs, src, refs, [word, "zzzznotapiece"])
    assert set(got) == {word}
    i = vocabs.spm.pieces.index("\u2581" + word)
    expect = []
    with torch.no_grad():
        for s, t in zip(src, refs, strict=True):
            tgt = vocabs.encode_tgt(t)
            x = torch.tensor([vocabs.encode_src(s)])
            di = torch.tensor([[vocabs.pad_id, *tgt[:-1]]])
            lp = torch.log_softmax(model(input_ids=x, decoder_input_ids=di).logits[0], -1)
            expect += [float(lp[k, i]) for k, t_id in enumerate(tgt) if t_id == i]
    assert got[word]["n"] == len(expect) >= 3
    assert got[word]["mean_logprob"] == pytest.approx(sum(expect) / len(expect), abs=1e-4)
    assert word_counts(refs, [word, "x", "y"]) == {word: 3, "x": 1, "y": 0}
