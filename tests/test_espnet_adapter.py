"""lmfusion scorers as ESPnet scorers: ESPnet's meanings, and sentence scores equal to KenLM's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decoders.espnet_adapter import ESPnetLMScorer, espnet_token_units
from fusion.scorers import lm_scorer

SENTENCES = ["in the beginning god created the heaven and the earth", "and god said let there be light"]


@pytest.fixture(scope="module")
def setup(bible_arpa):  # type: ignore[no-untyped-def]
    """An ESPnet-style word token list (``<blank>``, ``<unk>``, words, ``<sos/eos>`` last) and a KenLM."""
    import kenlm

    from fusion.ngram import KenLM

    words = sorted({w for s in SENTENCES for w in s.split()})
    token_list = ["<blank>", "<unk>", *[f"▁{w}" for w in words], "<sos/eos>"]
    eos = len(token_list) - 1
    lm = KenLM(bible_arpa, name="lm")
    adapter = ESPnetLMScorer(lm_scorer(lm, espnet_token_units(token_list), eos))
    return token_list, eos, adapter, kenlm.Model(str(bible_arpa))


def kenlm_ln(model, sentence: str) -> float:  # type: ignore[no-untyped-def]
    return float(model.score(sentence, bos=True, eos=True)) * math.log(10.0)


def test_contract_walk_equals_kenlm_sentence_score(setup) -> None:  # type: ignore[no-untyped-def]
    """ESPnet's calling pattern by hand: y includes <sos>, the state is the parent's, final_score at the end."""
    token_list, eos, adapter, model = setup
    for sentence in SENTENCES:
        ids = [token_list.index(f"▁{w}") for w in sentence.split()] + [eos]
        y = torch.tensor([eos])  # ESPnet: <sos> = <eos> id
        state = adapter.init_state(torch.zeros(3, 2))
        total = 0.0
        for t in ids:
            scores, state = adapter.score(y, state, torch.zeros(3, 2))
            assert scores.shape == (len(token_list),) and scores.dtype == torch.float32
            total += float(scores[t])
            y = torch.cat([y, torch.tensor([t])])
        total += adapter.final_score(state)  # ESPnet adds it to every hypothesis ending in <eos>
        assert total == pytest.approx(kenlm_ln(model, sentence), abs=1e-4)  # float32 scores
        assert adapter.scorer.final_score(state.inner) != 0.0  # forwarding lmfusion's would count </s> twice


def test_contract_batch_score_equals_score(setup) -> None:  # type: ignore[no-untyped-def]
    _, eos, adapter, _ = setup
    ys = torch.tensor([[eos, 3, 4], [eos, 5, 2]])
    x = torch.zeros(2, 3, 2)
    init = adapter.batch_init_state(x)
    batch, states = adapter.batch_score(ys, [init, init], x)
    for i in range(2):
        one, st = adapter.score(ys[i], init, x[i])
        torch.testing.assert_close(batch[i], one)
        assert adapter.select_state(states, i) == st


def _forced_decoder(target: list[int], vocab: int):  # type: ignore[no-untyped-def]
    """An ESPnet scorer that allows only the next target token (a stand-in for an ASR decoder)."""
    from espnet.nets.scorer_interface import BatchScorerInterface

    class Forced(BatchScorerInterface):  # type: ignore[misc]
        def score(self, y, state, x):  # type: ignore[no-untyped-def]
            out = torch.full((vocab,), -1e4)
            pos = len(y) - 1
            out[target[pos] if pos < len(target) else target[-1]] = 0.0
            return out, None

        def batch_score(self, ys, states, xs):  # type: ignore[no-untyped-def]
            return torch.stack([self.score(y, None, None)[0] for y in ys]), [None] * len(ys)

    return Forced()


@pytest.mark.parametrize("batch", [False, True])
def test_in_espnet_beam_search_scores_equal_kenlm(setup, batch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("espnet.nets.beam_search")
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.beam_search import BeamSearch

    token_list, eos, adapter, model = setup
    sentence = SENTENCES[0]
    target = [token_list.index(f"▁{w}") for w in sentence.split()] + [eos]
    cls = BatchBeamSearch if batch else BeamSearch
    search = cls(scorers={"decoder": _forced_decoder(target, len(token_list)), "lm": adapter},
                 weights={"decoder": 1.0, "lm": 0.3}, beam_size=2, vocab_size=len(token_list), sos=eos, eos=eos,
                 token_list=token_list, pre_beam_score_key=None)
    hyps = search(x=torch.zeros(30, 2), maxlenratio=0.0, minlenratio=0.0)
    best = hyps[0]
    assert best.yseq.tolist() == [eos, *target]
    assert float(best.scores["lm"]) == pytest.approx(kenlm_ln(model, sentence), abs=1e-4)
    assert np.isfinite(float(best.score))
