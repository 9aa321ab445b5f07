"""The fast word view of a neural LM gives the numbers of its references.

* :meth:`fusion.units.WordLevelLM.score_pairs` (all pairs' pieces walked as one trie, one batched step per
  depth) equals the per-word path :meth:`~fusion.units.WordLevelLM.score_pairs_reference` and the
  protocol-only :class:`fusion.reference.SlowWordLevelLM`, with fewer forward passes;
* in a beam search driven through :class:`decoders.hf.FusionLogitsProcessor`, the incremental
  :class:`~fusion.scorers.OpenWordLMScorer` over the fast view gives, at every step, the same fused scores
  as the same scorer over the slow view and as :class:`fusion.reference.RereadWordLMScorer` (every
  candidate's whole text re-read, whisper-lm's way), which reads each candidate's text once and never the
  prefix alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decoders.hf import FusionLogitsProcessor
from fusion.neural import NeuralLM
from fusion.reference import RereadWordLMScorer, SlowWordLevelLM
from fusion.scorers import OpenWordLMScorer, units_from_pieces
from fusion.units import WordLevelLM

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def nnlm(tiny_spm) -> NeuralLM:
    return NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}, tiny_spm,
                                seed=7, name="nnlm")  # fmt: skip


def _states(w: WordLevelLM, texts: list[str]) -> list[object]:
    out = []
    for text in texts:
        st = w.begin()
        for x in text.split():
            _, st = w.score(st, x)
        out.append(st)
    return out


def test_trie_pairs_equal_per_word_reference_with_fewer_forwards(nnlm: NeuralLM) -> None:
    w = WordLevelLM(nnlm)
    states = _states(w, ["", "in the", "import the module", "in the"])  # a repeated state is shared
    words = "the then they of a function functions unbelievably lord".split()  # shared starts
    rng = np.random.default_rng(0)
    pairs = [(int(b), words[int(k)]) for b, k in zip(rng.integers(0, len(states), 40), rng.integers(0, len(words), 40),
                                                       strict=True)]  # fmt: skip
    nnlm.clear_cache()
    nnlm.logprobs_tensor(states)  # the start states cached, as in a search
    f0 = nnlm.forward_calls
    lp, nxt = w.score_pairs([states[b] for b, _ in pairs], [x for _, x in pairs])
    fast_calls = nnlm.forward_calls - f0
    depth = max(len(w.word_ids(x)) for _, x in pairs)
    assert fast_calls <= depth  # one batched step per piece depth, all pairs together
    nnlm.clear_cache()
    nnlm.logprobs_tensor(states)
    f0 = nnlm.forward_calls
    ref, ref_next = w.score_pairs_reference([states[b] for b, _ in pairs], [x for _, x in pairs])
    assert nnlm.forward_calls - f0 > fast_calls  # the per-word path steps each word on its own
    np.testing.assert_allclose(lp, ref, rtol=0, atol=1e-5)  # float32 forwards batched otherwise: ~1e-7
    assert nxt == ref_next
    slow = SlowWordLevelLM(nnlm)
    for i, (b, x) in enumerate(pairs):
        assert lp[i] == pytest.approx(slow.score(states[b], x)[0], abs=1e-5)
    grid, grid_next = w.score_batch(states, words)  # score_batch is score_pairs over the B x K grid
    ref_grid, ref_grid_next = w.score_batch_reference(states, words)
    np.testing.assert_allclose(grid, ref_grid, rtol=0, atol=1e-5)
    assert grid_next == ref_grid_next


def _search(units: list[str | None], procs: list[FusionLogitsProcessor], steps: int, beam: int) -> list[float]:
    """A beam search over random model scores; every processor sees the same rows. Returns per-step gaps."""
    V = len(units)
    rng = torch.Generator().manual_seed(3)
    ids = torch.tensor([[V - 1]])  # a prompt token the LM cannot see
    total = torch.zeros(1, dtype=torch.float64)
    gaps = []
    for _ in range(steps):
        am = torch.log_softmax(3.0 * torch.randn(ids.shape[0], V, generator=rng), dim=-1)
        outs = [p(ids, am.clone()) for p in procs]
        fin = torch.isfinite(outs[0])
        gap = 0.0
        for o in outs[1:]:
            assert torch.equal(fin, torch.isfinite(o))  # the same candidates scored
            gap = max(gap, float((o[fin] - outs[0][fin]).abs().max()))
        gaps.append(gap)
        flat = (total[:, None] + outs[0].double()).reshape(-1)
        top = torch.topk(flat, beam).indices
        rows, toks = top // V, top % V
        ids = torch.cat([ids[rows], toks[:, None]], dim=1)
        total = flat[top]
    return gaps


def test_incremental_open_word_equals_slow_view_and_reread(nnlm: NeuralLM, tiny_spm) -> None:
    units: list[str | None] = [*units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()]), None, None]
    eos = len(units) - 2
    steps, beam, pre_beam = 9, 4, 6
    fast = OpenWordLMScorer(WordLevelLM(nnlm), units, eos, name="nnlm")
    slow = OpenWordLMScorer(SlowWordLevelLM(nnlm), units, eos, name="nnlm")
    reread = RereadWordLMScorer(WordLevelLM(nnlm, retokenize=True), units, eos, name="nnlm")
    w = {"nnlm": 0.7}
    procs = [FusionLogitsProcessor([s], w, pre_beam=pre_beam, max_new_tokens=steps) for s in (fast, slow, reread)]
    gaps = _search(units, procs, steps, beam)
    assert max(gaps) < 1e-5
    # whisper-lm's amount of work: one whole-text read per scored candidate (pre-beam + </s>), none per prefix
    candidates = 1 * (pre_beam + 1) + (steps - 1) * beam * (pre_beam + 1)
    finals = beam * (pre_beam + 1)  # the length limit's final scores at the last step
    assert candidates // 2 <= reread.reads <= candidates + finals  # a read of each prefix alone would exceed it
    assert procs[0].rebuilds == procs[2].rebuilds == 0
