"""Contextual biasing (fusion/biasing.py): the context graph's bonuses, take-backs, and the beam-search scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.biasing import (
    ContextGraph,
    HotwordError,
    HotwordScorer,
    build_context_graph,
    label_tokenizer,
    normalize_hotwords,
)

LABELS = ["_", " ", *"abcdefghijklmnopqrstuvwxyz"]
TOK = label_tokenizer(LABELS, " ")


def graph(hot, boost: float = 1.0) -> ContextGraph:  # type: ignore[no-untyped-def]
    g = build_context_graph(hot, TOK, len(LABELS), boost)
    assert g is not None
    return g


def ids(text: str) -> list[int]:
    return TOK(text)


def test_completed_phrase_earns_boost_per_unit() -> None:
    g = graph({"kafka": 1.5})
    assert g.score_units(ids("kafka")) == pytest.approx(5 * 1.5)
    assert g.score_units(ids("my kafka log")) == pytest.approx(5 * 1.5)
    assert g.score_units(ids("kafka kafka")) == pytest.approx(10 * 1.5)


def test_abandoned_prefix_bonus_is_taken_back_exactly() -> None:
    g = graph({"kafka": 2.0})
    s, total = 0, 0.0
    deltas = []
    for u in ids("kafe"):
        s, d = g.step(s, u)
        deltas.append(d)
        total += d
    # k, a, f earn 2 each; e breaks the phrase: the 6 earned are taken back
    assert deltas == pytest.approx([2.0, 2.0, 2.0, -6.0])
    assert total == 0.0 and s == 0
    # unfinished at the end: the final score takes it back
    s, total = 0, 0.0
    for u in ids("kaf"):
        s, d = g.step(s, u)
        total += d
    assert total == pytest.approx(6.0)
    assert g.final(s) == pytest.approx(-6.0)
    assert g.score_units(ids("kaf")) == 0.0


def test_back_off_to_longest_suffix() -> None:
    # "abab" broken by "c" after "aba": back off to "ab" of "abc", which then completes
    g = graph({"abab": 1.0, "abc": 1.0})
    seq = ids("ababc")
    s, trace = 0, []
    for u in seq:
        s, d = g.step(s, u)
        trace.append(d)
    # a,b,a,b complete abab (4, locked); c: "abab"+"c" -> suffix "abc" matched, credits its 3 units
    assert sum(trace) + g.final(s) == pytest.approx(4.0 + 3.0)
    g2 = graph({"abcd": 1.0, "bce": 1.0})
    # a b c (3 earned) then e: back off to "bc"+"e" = bce complete: -3 + 3
    assert g2.score_units(ids("abce")) == pytest.approx(3.0)


def test_phrase_that_prefixes_another_keeps_its_bonus() -> None:
    g = graph({"new": 1.0, "new york": 1.0})
    assert g.score_units(ids("new jersey")) == pytest.approx(3.0)
    assert g.score_units(ids("new york")) == pytest.approx(8.0)
    assert g.score_units(ids("new yo")) == pytest.approx(3.0)


def test_vectorised_step_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcde"), size=rng.integers(2, 6))) for _ in range(50)]
    g = graph(words, 0.7)
    states = rng.integers(0, len(g), 200)
    units = rng.integers(0, len(LABELS), 200)
    n, d = g.step_many(states, units)
    for s, u, nn, dd in zip(states, units, n, d, strict=True):
        assert (nn, dd) == pytest.approx(g.step(int(s), int(u)))


def test_empty_and_bad_input() -> None:
    assert build_context_graph([], TOK, len(LABELS)) is None
    assert build_context_graph(None, TOK, len(LABELS)) is None
    assert build_context_graph(["  "], TOK, len(LABELS)) is None
    assert normalize_hotwords(["a  b", " c"], 2.0) == {"a b": 2.0, "c": 2.0}
    with pytest.raises(HotwordError, match="finite"):
        normalize_hotwords({"a": float("nan")})
    with pytest.raises(HotwordError, match="not a label"):
        build_context_graph(["kafka!"], TOK, len(LABELS))


def test_spm_tokenizer_longest_match() -> None:
    labels = ["<b>", "▁", "▁ka", "f", "ka", "▁new", "▁york", "k", "a"]
    tok = label_tokenizer(labels)
    assert [labels[i] for i in tok("kafka")] == ["▁ka", "f", "ka"]
    assert [labels[i] for i in tok("new york")] == ["▁new", "▁york"]


def test_scorer_agrees_with_graph_and_takes_back_at_eos() -> None:
    V = len(LABELS) + 1
    eos = V - 1
    g = graph({"kafka": 1.0})
    sc = HotwordScorer(g, vocab_size=V, eos_id=eos)
    st = [sc.init_state()]
    total = 0.0
    for u in ids("kaf"):
        scores, ctx = sc.score([[]], st)
        assert scores.shape == (1, V)
        total += scores[0, u]
        st = sc.select_state(ctx, [0], [u])
    scores, _ = sc.score([[]], st)
    assert total == pytest.approx(3.0)
    assert scores[0, eos] == pytest.approx(-3.0) == sc.final_score(st[0])
    # partial scoring over candidates gives the same numbers
    cand = np.array([[ids("k")[0], eos]])
    ps, pctx = sc.score([[]], st, cand)
    assert ps[0, 1] == pytest.approx(-3.0)
    assert sc.select_state(pctx, [0], [eos]) == [0]


def test_seq2seq_beam_search_recovers_boosted_word() -> None:
    """A toy AM preferring "kafe"; with the hotword "kafka" boosted the beam search outputs kafka."""
    from decoders.seq2seq import BeamConfig, beam_search

    V = len(LABELS) + 1
    eos = V - 1
    target_a, target_b = ids("kafe"), ids("kafka")
    L = 6

    def step(prefixes: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = prefixes.shape[1] - 1
        logits = torch.full((prefixes.shape[0], V), -8.0, dtype=torch.float64)
        if t < len(target_a):
            logits[:, target_a[t]] = 2.0
        if t < len(target_b):
            logits[:, target_b[t]] = torch.maximum(logits[:, target_b[t]], torch.tensor(1.2, dtype=torch.float64))
        if t >= 4:
            logits[:, eos] = 2.0
        return torch.log_softmax(logits, -1), state

    def run(hot: list[str], w: float) -> list[int]:
        scorers = []
        g = build_context_graph(hot, TOK, len(LABELS))
        if g is not None:
            scorers.append(HotwordScorer(g, vocab_size=V, eos_id=eos))
        nb = beam_search(step, torch.zeros(4), 1, eos_id=eos, start_ids=[V], scorers=scorers,
                         weights={"am": 1.0, "hotwords": w} if scorers else None,
                         config=BeamConfig(beam=4, max_len=L, length_penalty=0.0),
                         reorder=lambda s, i: s[i], detokenize=lambda x: "".join(LABELS[i] for i in x))
        return [nb[0].hyps[0].text]  # type: ignore[list-item]

    assert run([], 0.0) == ["kafe"]
    assert run(["kafka"], 0.0) == ["kafe"]
    assert run(["kafka"], 1.0) == ["kafka"]


def test_scorer_from_an_empty_list_adds_nothing_in_beam_search() -> None:
    """An empty hotword list keeps the "hotwords" component valid and changes no hypothesis or score."""
    from decoders.seq2seq import BeamConfig, beam_search

    V = len(LABELS) + 1
    eos = V - 1
    empty = HotwordScorer.from_hotwords([], TOK, V, eos_id=eos)
    scores, _ = empty.score([[]], [empty.init_state()])
    assert not scores.any() and empty.final_score(empty.init_state()) == 0.0
    gen = torch.Generator().manual_seed(3)
    table = torch.log_softmax(torch.randn(8, V, generator=gen, dtype=torch.float64), -1)

    def step(prefixes: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return table[prefixes.shape[1] - 1].expand(prefixes.shape[0], V), state

    def run(scorers: list[HotwordScorer], w: dict[str, float] | None):  # type: ignore[no-untyped-def]
        nb = beam_search(step, torch.zeros(4), 1, eos_id=eos, start_ids=[V], scorers=scorers, weights=w,
                         config=BeamConfig(beam=4, max_len=6, length_penalty=0.0), reorder=lambda s, i: s[i],
                         detokenize=lambda x: "".join(LABELS[i] for i in x))
        return [(h.text, h.scores["am"]) for h in nb[0].hyps]

    assert run([empty], {"hotwords": 5.0}) == run([], None)
    full = HotwordScorer.from_hotwords(["kafka"], TOK, V, eos_id=eos)
    assert full.graph.score_units(ids("kafka")) == pytest.approx(5.0)
