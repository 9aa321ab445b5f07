"""Streamed ``tune`` input (issue 13): n-best lists read in batches into one compact tuning problem,
equal to the list-based problem and giving the same tuned weights and report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, write_nbest_jsonl
from decoders.nbest import stream_tuning_problem, to_tuning_problem
from fusion.errors import LMFusionError
from fusion.tuning import Ragged, TuningProblem, best_indices, error_rate, tune
from recipes.cli import main

ASR = Path(__file__).resolve().parents[1] / "data" / "asr"


def _lists(n: int, seed: int) -> list[NBestList]:
    """Random lists with empty lists, one-hypothesis lists, repeated texts and a unicode reference."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "café", "dog"]
    out = []
    for u in range(n):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        k = 0 if u % 7 == 3 else 1 if u % 5 == 2 else rng.randint(2, 6)
        hyps = []
        for _ in range(k):
            text = ref if rng.random() < 0.2 else " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
            sc = {"am": -rng.random() * 40, "lm": -rng.random() * 20, "words": float(len(text.split()))}
            hyps.append(ScoredHypothesis(text, sc))
        if k > 1:
            hyps.append(hyps[0])  # a repeated text
        out.append(NBestList(f"u{u}", tuple(hyps), ref))
    return out


def _same(a: TuningProblem, b: TuningProblem) -> None:
    assert a.components == b.components and a.utt_ids == b.utt_ids
    assert np.array_equal(a.ref_lengths, b.ref_lengths)
    assert a.n_utts == b.n_utts and a.n_hyps == b.n_hyps
    for fa, fb, ea, eb in zip(a.feats, b.feats, a.errors, b.errors, strict=True):
        assert np.array_equal(fa, fb) and np.array_equal(ea, eb)
    for k in ("feats", "errors", "valid", "bias"):
        assert np.array_equal(getattr(a._padded, k), getattr(b._padded, k))


@pytest.mark.parametrize("unit", ["word", "char"])
def test_streamed_problem_equals_list_problem(unit: str) -> None:
    nbs = _lists(60, seed=1)
    ref = to_tuning_problem(nbs, ["am", "lm", "words"], unit)  # type: ignore[arg-type]
    for batch in (1, 7, 10_000):  # batches of one list, a few lists, everything
        got = stream_tuning_problem(iter(nbs), ["am", "lm", "words"], unit, batch_hyps=batch)  # type: ignore[arg-type]
        assert isinstance(got.feats, Ragged)
        _same(got, ref)
    sub = stream_tuning_problem(iter(nbs), ["words", "am"], unit)  # type: ignore[arg-type]
    _same(sub, to_tuning_problem(nbs, ["words", "am"], unit))  # type: ignore[arg-type]


def test_compact_problem_tunes_like_the_list_problem() -> None:
    nbs = _lists(80, seed=2)
    ref = to_tuning_problem(nbs, ["am", "lm", "words"])
    got = stream_tuning_problem(iter(nbs), ["am", "lm", "words"], batch_hyps=50)
    w = {"am": 1.0, "lm": 0.8, "words": -0.5}
    assert error_rate(got, w) == error_rate(ref, w)
    assert np.array_equal(best_indices(got, w), best_indices(ref, w))
    assert got.oracle_error_rate() == ref.oracle_error_rate()
    assert got.first_error_rate() == ref.first_error_rate()
    for method in ("mert", "grid"):
        a, b = tune(got, method, seed=3), tune(ref, method, seed=3)  # type: ignore[arg-type]
        assert a.weights == b.weights and a.error_rate == b.error_rate
    idx = [5, 0, 3]
    _same(got.subset(idx), ref.subset(idx))


def test_default_components_and_dropped_ones_over_the_stream() -> None:
    nbs = _lists(12, seed=3)
    first = next(nb for nb in nbs if len(nb.hyps) > 1)
    hyps = (ScoredHypothesis(first.hyps[0].text, {"am": -1.0, "words": 2.0}), *first.hyps[1:])
    nbs[nbs.index(first)] = NBestList(first.utt_id, hyps, first.ref)  # one hypothesis lacks "lm"
    seen: list[tuple[list[str], dict[str, str]]] = []

    def choose(names: list[str], dropped: dict[str, str]) -> list[str]:
        seen.append((names, dropped))
        return names

    got = stream_tuning_problem(iter(nbs), choose=choose, batch_hyps=4)
    assert seen == [(["am", "words"], {"lm": first.utt_id})]
    _same(got, to_tuning_problem(nbs, ["am", "words"]))
    with pytest.raises(LMFusionError, match=rf"utterance '{first.utt_id}', hypothesis 0 .* has no 'lm' score"):
        stream_tuning_problem(iter(nbs), ["am", "lm"])
    with pytest.raises(LMFusionError, match="no reference"):
        stream_tuning_problem([NBestList("x", (ScoredHypothesis("a", {"am": 0.0}),))], ["am"])


def test_compact_problem_checks_its_numbers() -> None:
    off = np.array([0, 2, 3])
    f = np.array([[0.0], [1.0], [np.inf]])
    with pytest.raises(LMFusionError, match="utterance b: non-finite"):
        TuningProblem(("am",), Ragged(f, off), Ragged(np.zeros(3, np.int64), off), np.array([1, 1]), ("a", "b"))
    with pytest.raises(LMFusionError, match="offsets"):
        Ragged(f, np.array([0, 2]))


def _tune_json(tmp_path: Path, name: str, extra: list[str]) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    argv = ["-q", "tune", "--dev", str(ASR / "dev.jsonl"), "--test", str(ASR / "test.jsonl"), "-o", str(out)]
    assert main([*argv, "--method", "mert", "grid", "--restarts", "2", "--points", "5", "--kfold", "2",
                 "--bootstrap", "50", *extra]) == 0  # fmt: skip
    doc = json.loads(out.read_text(encoding="utf-8"))
    doc.pop("created")
    doc.pop("dev")["files"]  # type: ignore[attr-defined]
    return doc


def test_tune_cli_streamed_equals_list_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole report (weights, dev/test/CV error rates, bootstrap) of the streamed input equals the one
    of the lists read whole (the path --mbr/--by/--adaptive still take)."""
    import recipes.commands.tune as tune_cmd

    streamed = _tune_json(tmp_path, "s", [])
    monkeypatch.setattr(tune_cmd, "_needs_lists", lambda args: True)
    listed = _tune_json(tmp_path, "l", [])
    assert streamed == listed
    assert streamed["weights"]["lm"] > 0  # type: ignore[index]


def test_tune_cli_streams_a_file_with_an_empty_test(tmp_path: Path) -> None:
    nbs = _lists(30, seed=5)
    write_nbest_jsonl(tmp_path / "dev.jsonl", nbs)
    (tmp_path / "test.jsonl").write_text("", encoding="utf-8")
    out = tmp_path / "w.json"
    assert main(["-q", "tune", "--dev", str(tmp_path / "dev.jsonl"), "--test", str(tmp_path / "test.jsonl"),
                 "--method", "grid", "--points", "3", "-o", str(out)]) == 0  # fmt: skip
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["test"] is None and doc["components"] == ["am", "lm", "words"]
    assert doc["dev"]["n_utts"] == 30
