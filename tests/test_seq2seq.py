"""Batched seq2seq beam search with fusion scorers, over a toy step function (no HF needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decoders.hypothesis import read_nbest_jsonl, write_nbest_jsonl
from decoders.seq2seq import BeamConfig, beam_search, greedy_search
from fusion.errors import LMFusionError
from fusion.scorers import FullScorer, LengthBonus, TokenLMScorer, WordLMScorer, units_from_pieces


class ToyAM:
    """A deterministic 'translation model': logits = A[last token] + P[position] + S[utterance]."""

    def __init__(self, V: int, n_utts: int, beam: int, eos: int, seed: int = 0, eos_bias: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(V + 1, V, generator=g, dtype=torch.float64) * 2.0
        self.P = torch.randn(64, V, generator=g, dtype=torch.float64)
        self.S = torch.randn(n_utts, V, generator=g, dtype=torch.float64) * 2.0
        self.P[:, eos] += eos_bias + torch.arange(64, dtype=torch.float64) * 0.3
        self.V, self.beam, self.start = V, beam, V
        self.calls = 0

    def init_state(self) -> torch.Tensor:
        return torch.arange(self.S.shape[0]).repeat_interleave(self.beam)  # utterance of each row

    def step(self, prefixes: torch.Tensor, utt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        t = prefixes.shape[1] - 1
        logits = self.A[prefixes[:, -1]] + self.P[t] + self.S[utt]
        return torch.log_softmax(logits, dim=-1), utt

    @staticmethod
    def reorder(utt: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return utt[idx]

    def sequence_logprob(self, u: int, ids: list[int]) -> float:
        pre = [self.start]
        tot = 0.0
        for t in ids:
            lp, _ = self.step(torch.tensor([pre]), torch.tensor([u]))
            tot += float(lp[0, t])
            pre.append(t)
        return tot


@pytest.fixture(scope="module")
def units(tiny_spm):  # type: ignore[no-untyped-def]
    return [*units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()]), None]


@pytest.fixture(scope="module")
def nnlm(tiny_spm):  # type: ignore[no-untyped-def]
    from fusion.neural import NeuralLM

    return NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}, tiny_spm,
                                seed=3)


def run(am: ToyAM, n: int, eos: int, **kw):  # type: ignore[no-untyped-def]
    cfg = kw.pop("config")
    return beam_search(am.step, am.init_state(), n, eos_id=eos, start_ids=[am.start], reorder=ToyAM.reorder,
                       config=cfg, **kw)


def test_beam_one_is_greedy(units) -> None:
    V = len(units)
    eos = V - 1
    for seed in range(3):
        am = ToyAM(V, 4, 1, eos, seed=seed, eos_bias=-2.0)
        nb = run(am, 4, eos, config=BeamConfig(beam=1, max_len=20, length_penalty=0.0))
        greedy = greedy_search(am.step, am.init_state(), 4, eos_id=eos, start_ids=[am.start], max_len=20)
        for u in range(4):
            got = [int(x) for x in nb[u].hyps[0].tokens]  # without token_units, tokens are the ids
            want = [t for t in greedy[u] if t != eos]
            assert got == want


def test_batched_equals_one_at_a_time_and_scores_are_consistent(units, nnlm, tiny_spm) -> None:
    V = len(units)
    eos = V - 1
    n, beam = 3, 4
    lm = TokenLMScorer(nnlm, units, eos, name="nnlm")
    cfg = BeamConfig(beam=beam, max_len=15, length_penalty=1.0)
    w = {"am": 1.0, "nnlm": 0.4, "tokens": 0.2}
    am = ToyAM(V, n, beam, eos, seed=5, eos_bias=3.0)
    batched = run(am, n, eos, config=cfg, scorers=[lm, LengthBonus(V, eos)], weights=w, token_units=units)
    lengths = set()
    for u in range(n):
        single_am = ToyAM(V, n, beam, eos, seed=5, eos_bias=3.0)
        single_am.S = single_am.S[u : u + 1]
        one = run(single_am, 1, eos, config=cfg, scorers=[lm, LengthBonus(V, eos)], weights=w, token_units=units)
        assert [h.tokens for h in one[0].hyps] == [h.tokens for h in batched[u].hyps]
        for h in batched[u].hyps:
            ids = [units.index(x) for x in h.tokens]
            lengths.add(len(ids))
            closed = ids if len(ids) == cfg.max_len else [*ids, eos]  # at max_len no </s> was generated
            assert h.scores["am"] == pytest.approx(am.sequence_logprob(u, closed), abs=1e-6)
            assert h.scores["nnlm"] == pytest.approx(nnlm.score_sentence(list(h.tokens)).total, abs=1e-5)
            assert h.scores["tokens"] == len(ids)
            assert h.scores["words"] == len(h.text.split())  # a word: text between word starts
        totals = [h.total(w) / min(h.scores["tokens"] + 1, cfg.max_len) for h in batched[u].hyps]
        assert totals == sorted(totals, reverse=True)
    assert len(lengths) > 1  # hypotheses of several lengths: the test exercises EOS handling


def test_zero_lm_weight_is_the_models_own_search(units, nnlm, bible_arpa) -> None:
    from fusion.ngram import KenLM

    V = len(units)
    eos = V - 1
    cfg = BeamConfig(beam=5, max_len=12)
    base = run(ToyAM(V, 2, 5, eos, seed=2, eos_bias=-2.0), 2, eos, config=cfg)
    scorers = [TokenLMScorer(nnlm, units, eos, name="nnlm"), WordLMScorer(KenLM(bible_arpa), units, eos, name="ng")]
    zero = run(ToyAM(V, 2, 5, eos, seed=2, eos_bias=-2.0), 2, eos, config=cfg, scorers=scorers,
               weights={"am": 1.0, "nnlm": 0.0, "ng": 0.0})
    assert [[h.tokens for h in x.hyps] for x in base] == [[h.tokens for h in x.hyps] for x in zero]
    # the same LM added and subtracted (a degenerate density ratio) cancels too
    ratio = run(ToyAM(V, 2, 5, eos, seed=2, eos_bias=-2.0), 2, eos, config=cfg,
                scorers=[TokenLMScorer(nnlm, units, eos, name="lm"), TokenLMScorer(nnlm, units, eos, name="src")],
                weights={"am": 1.0, "lm": 0.7, "src": -0.7})
    assert [x.hyps[0].tokens for x in base] == [x.hyps[0].tokens for x in ratio]


class PreferTarget(FullScorer):
    """+bonus for the next token of a target sentence, 0 elsewhere (state = position in the target)."""

    def __init__(self, target: list[int], V: int, eos: int, bonus: float = 50.0) -> None:
        self.name, self.vocab_size, self.target, self.eos, self.bonus = "target", V, [*target, eos], eos, bonus

    def init_state(self):  # type: ignore[no-untyped-def]
        return 0

    def score(self, hyps, states, candidates=None):  # type: ignore[no-untyped-def]
        out = np.zeros((len(hyps), self.vocab_size))
        for b, (h, s) in enumerate(zip(hyps, states, strict=True)):
            if s is not None and list(h) == self.target[: len(h)] and s < len(self.target):
                out[b, self.target[s]] = self.bonus
        if candidates is not None:
            out = np.take_along_axis(out, candidates, axis=1)
        return out, list(states)

    def select_state(self, ctx, rows, tokens):  # type: ignore[no-untyped-def]
        return [ctx[r] + 1 for r in rows]


def test_a_scorer_that_prefers_a_sentence_produces_it(units, tiny_spm) -> None:
    V = len(units)
    eos = V - 1
    target = [tiny_spm.piece_to_id[p] for p in tiny_spm.encode("let there be light")]
    am = ToyAM(V, 2, 4, eos, seed=9)
    cfg = BeamConfig(beam=4, max_len=20)
    before = run(am, 2, eos, config=cfg, token_units=units)
    assert all(x.hyps[0].text != "let there be light" for x in before)
    nb = run(am, 2, eos, config=cfg, scorers=[PreferTarget(target, V, eos)], weights={"am": 1.0, "target": 1.0},
             token_units=units)
    assert [x.hyps[0].text for x in nb] == ["let there be light"] * 2


def test_partial_scorer_and_nbest_jsonl_roundtrip(units, bible_arpa, tmp_path) -> None:
    from fusion.ngram import KenLM

    V = len(units)
    eos = V - 1
    ng = WordLMScorer(KenLM(bible_arpa), units, eos, name="ngram", partial=True)
    nb = run(ToyAM(V, 2, 3, eos, seed=4, eos_bias=-1.0), 2, eos, config=BeamConfig(beam=3, max_len=10, pre_beam=2.0),
             scorers=[ng], weights={"am": 1.0, "ngram": 0.5}, token_units=units, utt_ids=["a", "b"], refs=["x", "y"])
    p = tmp_path / "nb.jsonl"
    write_nbest_jsonl(p, nb)
    back = read_nbest_jsonl(p)
    assert [x.utt_id for x in back] == ["a", "b"] and back[0].ref == "x"
    assert set(back[0].hyps[0].scores) == {"am", "ngram", "tokens", "words"}
    assert back[0].hyps[0].scores["ngram"] == pytest.approx(nb[0].hyps[0].scores["ngram"])


def test_bad_inputs(units, nnlm) -> None:
    V = len(units)
    eos = V - 1
    am = ToyAM(V, 1, 2, eos)

    def nan_step(prefixes, st):  # type: ignore[no-untyped-def]
        lp, st = am.step(prefixes, st)
        lp[0, 3] = float("nan")
        return lp, st

    with pytest.raises(LMFusionError, match="NaN"):
        beam_search(nan_step, am.init_state(), 1, eos_id=eos, start_ids=[V], config=BeamConfig(beam=2, max_len=5))
    small = TokenLMScorer(nnlm, [*units[:-2], None], len(units) - 3, name="nnlm")
    with pytest.raises(LMFusionError, match="covers"):
        run(am, 1, eos, config=BeamConfig(beam=2, max_len=5), scorers=[small], weights={"nnlm": 0.5})
    with pytest.raises(LMFusionError, match="unique"):
        lm = TokenLMScorer(nnlm, units, eos, name="x")
        run(am, 1, eos, config=BeamConfig(beam=2, max_len=5), scorers=[lm, lm], weights={"x": 0.5})
    with pytest.raises(ValueError, match="beam"):
        BeamConfig(beam=0)


def test_profile_gives_each_utterance_its_conditions_weights(units, nnlm) -> None:
    """A FusionProfile in place of weights: utterance u is searched with the weights its tags select."""
    from fusion.profile import ConditionWeights, FusionProfile

    V = len(units)
    eos = V - 1
    light, heavy = {"am": 1.0, "nnlm": 0.1}, {"am": 1.0, "nnlm": 3.0}
    prof = FusionProfile(
        default=ConditionWeights(light),
        conditions=(ConditionWeights(heavy, domain="noisy"), ConditionWeights(light, domain="clean")),
    )
    tags = [{"domain": "noisy"}, {"domain": "clean"}, {"domain": "noisy"}, {}]
    cfg = BeamConfig(beam=3, max_len=12, length_penalty=1.0)

    def search(weights):  # type: ignore[no-untyped-def]
        am = ToyAM(V, 4, 3, eos, seed=5, eos_bias=-1.0)
        return run(am, 4, eos, config=cfg, scorers=[TokenLMScorer(nnlm, units, eos, name="nnlm")],
                   weights=weights, tags=tags, token_units=units)

    by_profile, all_light, all_heavy = search(prof), search(light), search(heavy)
    want = [all_heavy[0], all_light[1], all_heavy[2], all_light[3]]
    assert [[h.tokens for h in nb.hyps] for nb in by_profile] == [[h.tokens for h in nb.hyps] for nb in want]
    for got, exp in zip(by_profile, want, strict=True):
        assert got.hyps[0].scores == pytest.approx(exp.hyps[0].scores)
    # the weights matter on these utterances, so the comparison above could fail
    assert [nb.hyps[0].tokens for nb in all_light] != [nb.hyps[0].tokens for nb in all_heavy]


def test_profile_interpolation_lambda_applied_per_utterance(units, bible_arpa, tech_arpa) -> None:
    """A profile's per-condition λ reaches a LinearInterpolation LM: each hypothesis's mixture score is the
    mixture with its utterance's λ (two λ in one batch), equal to a search with that λ fixed."""
    from fusion.interpolate import LinearInterpolation
    from fusion.ngram import KenLM
    from fusion.profile import ConditionWeights, FusionProfile

    V = len(units)
    eos = V - 1
    models = [KenLM(bible_arpa, name="bible"), KenLM(tech_arpa, name="tech")]
    mix = LinearInterpolation(models, [0.5, 0.5], name="mix")
    w = {"am": 1.0, "mix": 1.5}
    lam = {"bible": {"bible": 0.9, "tech": 0.1}, "tech": {"bible": 0.1, "tech": 0.9}}
    prof = FusionProfile(default=ConditionWeights(w),
                         conditions=tuple(ConditionWeights(w, interpolation=v, domain=k) for k, v in lam.items()))
    tags = [{"domain": "bible"}, {"domain": "tech"}]
    cfg = BeamConfig(beam=3, max_len=10)

    def search(weights, scorer_lm, **kw):  # type: ignore[no-untyped-def]
        am = ToyAM(V, 2, 3, eos, seed=9, eos_bias=-1.0)
        return run(am, 2, eos, config=cfg, scorers=[WordLMScorer(scorer_lm, units, eos, name="mix")],
                   weights=weights, token_units=units, **kw)

    by_profile = search(prof, mix, tags=tags)
    for u, dom in enumerate(["bible", "tech"]):
        fixed = LinearInterpolation(models, lam[dom], name="mix")
        alone = search(w, fixed, tags=tags)[u]
        assert [h.tokens for h in by_profile[u].hyps] == [h.tokens for h in alone.hyps]
        for h in by_profile[u].hyps:
            words = h.text.split()
            # ended with </s>, or closed at max_len with final scores: the whole sentence either way
            assert h.scores["mix"] == pytest.approx(fixed.score_sentence(words).total, abs=1e-6)
    plain = search(w, mix, tags=tags)  # no profile: the mixture's own λ (0.5/0.5)
    assert [nb.hyps[0].scores["mix"] for nb in plain] != pytest.approx([nb.hyps[0].scores["mix"] for nb in by_profile])
