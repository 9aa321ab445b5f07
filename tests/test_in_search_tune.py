"""In-search tuning of the Whisper recipe: the grid, the pick per condition with CV back-off, the decode cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusion.weights import WeightsError
from recipes.asr.decode_cache import DecodeCache, DecodeTask, decode_pairs, plan_tasks, weights_key
from recipes.asr.in_search_tune import best_point, grid_points, pick_weights
from recipes.asr.make_audio import Utterance


def test_grid_points_start_with_plain_and_check_names() -> None:
    pts = grid_points({"dlm": [0.0, 0.1], "words": [0, 1.0]}, ["am", "dlm", "words"])
    assert pts[0] == {"am": 1.0}
    assert len(pts) == 4  # (0, 0) is plain, listed once
    assert {"am": 1.0, "dlm": 0.1, "words": 1.0} in pts
    with pytest.raises(WeightsError, match="nnlm"):
        grid_points({"nnlm": [0.1]}, ["am", "dlm", "words"])


def test_weights_key_ignores_zeros_and_am() -> None:
    assert weights_key({}) == weights_key({"am": 1.0, "dlm": 0.0}) == "{}"
    assert weights_key({"words": 1.0, "dlm": 0.1}) == weights_key({"am": 1.0, "dlm": 0.1, "words": 1})


def _fake_errors(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[str | None, str | None]]]:
    """3 points x 40 utterances: point 1 is best on domain a, point 2 on domain b; bucket labels are noise."""
    rng = np.random.default_rng(seed)
    conds = [("a" if i < 20 else "b", "x" if i % 2 else "y") for i in range(40)]
    errors = rng.integers(2, 4, size=(3, 40))
    errors[1, :20] -= 2  # point 1: 2 fewer errors on every utterance of domain a
    errors[2, 20:] -= 2  # point 2: same on domain b
    return errors, np.full(40, 10), conds  # type: ignore[return-value]


def test_pick_weights_takes_the_argmin_globally_and_per_condition() -> None:
    errors, words, conds = _fake_errors()
    points = [{"am": 1.0}, {"am": 1.0, "dlm": 0.1}, {"am": 1.0, "dlm": 0.3}]
    out = pick_weights(errors, words, conds, points, min_utts=8, folds=4, seed=0)
    g = int(np.argmin(errors.sum(axis=1)))
    assert out["global"]["weights"] == points[g]
    assert out["global"]["dev"]["error_rate"] == pytest.approx(errors[g].sum() / words.sum())
    by = {(c["domain"], c["bucket"]): c for c in out["conditions"]}
    assert by[("a", None)]["weights"] == points[1] and by[("b", None)]["weights"] == points[2]
    # the domain whose point is not the global one keeps it through cross-validation
    assert not by[("a" if g != 1 else "b", None)]["backoff"]
    # (a, x) has its own argmin = point 1 = its parent's (a, *): no better in CV, so it backs off to the parent
    ax = by[("a", "x")]
    assert ax["parent"] == "a/*" and ax["weights"] == points[1]
    for c in out["conditions"]:  # every kept point is the argmin of its condition's utterances
        if not c["backoff"]:
            idx = [i for i, (d, b) in enumerate(conds) if c["domain"] in (None, d) and c["bucket"] in (None, b)]
            assert c["weights"] == points[best_point(errors, idx)]


def test_pick_weights_backs_off_when_the_own_point_does_not_generalise() -> None:
    # domain a: point 1 wins one utterance by a lot (its in-sample argmin) but loses by 1 on the other nine;
    # domain b: point 0 wins every utterance by 1, so the global pick is point 0
    conds = [("a", "x")] * 10 + [("b", "x")] * 30
    errors = np.array([[20] + [3] * 9 + [3] * 30, [0] + [4] * 9 + [4] * 30])
    points = [{"am": 1.0}, {"am": 1.0, "dlm": 0.1}]
    out = pick_weights(errors, np.full(40, 10), conds, points, min_utts=8, folds=5, seed=0)
    assert out["global"]["weights"] == points[0]
    a = next(c for c in out["conditions"] if (c["domain"], c["bucket"]) == ("a", None))
    assert best_point(errors, range(10)) == 1  # its own argmin on dev ...
    assert a["backoff"] and a["tuned_weights"] == points[1] and a["weights"] == points[0]  # ... is not kept
    assert a["cv"]["wer_own"] > a["cv"]["wer_parent"]
    without_cv = pick_weights(errors, np.full(40, 10), conds, points, min_utts=8, folds=1, seed=0)
    a1 = next(c for c in without_cv["conditions"] if (c["domain"], c["bucket"]) == ("a", None))
    assert a1["weights"] == points[1] and not a1["backoff"]


def _utts(n: int, domain: str = "bible") -> list[Utterance]:
    return [Utterance(f"u{i}", domain, "dev", "a b", f"u{i}.wav", "slt", 1.0, "none", "clean") for i in range(n)]


def test_decode_pairs_resumes_without_redoing_cached_decodes(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def decode(task: DecodeTask) -> list[dict[str, object]]:
        key = weights_key(task.weights)
        calls.extend((uid, key) for uid, _ in task.utts)
        return [{"utt_id": uid, "key": key, "text": f"{uid}@{key}", "seconds": 0.0} for uid, _ in task.utts]

    utts = _utts(5)
    w = {"dlm": 0.1, "words": 1.0}
    cache = DecodeCache(tmp_path / "dev.jsonl")
    got = decode_pairs([(u, {}) for u in utts[:3]], cache, lambda: decode, batch=2)
    assert sorted(calls) == sorted((u.utt_id, "{}") for u in utts[:3])
    assert got[("u0", "{}")] == "u0@{}"
    # an interrupted append leaves a torn line: it is dropped, the rest kept
    with (tmp_path / "dev.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"utt_id": "u3", "ke')
    calls.clear()
    cache = DecodeCache(tmp_path / "dev.jsonl")
    assert len(cache.entries) == 3
    got = decode_pairs([(u, x) for x in ({}, w) for u in utts], cache, lambda: decode, batch=2)
    assert sorted(calls) == sorted([("u3", "{}"), ("u4", "{}")] + [(u.utt_id, weights_key(w)) for u in utts])
    assert got[("u4", weights_key(w))] == f"u4@{weights_key(w)}"
    lines = (tmp_path / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10 and all(json.loads(x) for x in lines)
    # everything cached: no decoder is even made
    calls.clear()
    decode_pairs([(u, w) for u in utts], DecodeCache(tmp_path / "dev.jsonl"), None)
    assert calls == []


def test_plan_tasks_batches_by_weights_and_domain_in_request_order(tmp_path: Path) -> None:
    from dataclasses import replace

    utts = [replace(u, utt_id=f"{u.domain}-{u.utt_id}") for u in _utts(3) + _utts(2, "tech")]
    w = {"dlm": 0.3}
    tasks = plan_tasks([(u, x) for x in ({}, w) for u in utts], DecodeCache(tmp_path / "none.jsonl"), batch=2)
    assert [(weights_key(t.weights), t.domain, len(t.utts)) for t in tasks] == [
        ("{}", "bible", 2), ("{}", "bible", 1), ("{}", "tech", 2),
        (weights_key(w), "bible", 2), (weights_key(w), "bible", 1), (weights_key(w), "tech", 2)]  # fmt: skip


def test_whisper_config_runs_in_search_tuning_before_the_test_decode() -> None:
    from recipes.asr.run import build_stages
    from recipes.asr.settings import load_recipe

    cfg = load_recipe(Path(__file__).parents[1] / "recipes" / "configs" / "whisper.yaml")
    stages = build_stages(cfg)
    assert [s.name for s in stages][-2:] == ["in_search_tune", "in_search"]
    tune, search = stages[-2:]
    assert set(tune.outputs) <= set(search.inputs)  # a re-tune re-runs the test decode
    assert grid_points(cfg["in_search"]["grid"], ["am", "dlm", "words"])[0] == {"am": 1.0}


def test_appended_jsonl_drops_only_a_torn_tail(tmp_path: Path) -> None:
    """A torn last line is dropped (file rewritten without it); a bad line before the last is an error
    naming the line, and the file, with the lines after it, is left as it was."""
    from fusion.errors import InputError
    from fusion.io import read_appended_jsonl

    f = tmp_path / "a.jsonl"
    assert read_appended_jsonl(f) == []
    f.write_text('{"utt_id": "u0"}\n{"utt_id": "u1"}\n{"utt_id": "u2", "te', encoding="utf-8")
    assert [r["utt_id"] for r in read_appended_jsonl(f)] == ["u0", "u1"]
    assert f.read_text(encoding="utf-8") == '{"utt_id": "u0"}\n{"utt_id": "u1"}\n'
    bad = '{"utt_id": "u0"}\n{"utt_id": "u1", "te\n{"utt_id": "u2"}\n'
    f.write_text(bad, encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.jsonl:2: "):
        read_appended_jsonl(f)
    assert f.read_text(encoding="utf-8") == bad
    with pytest.raises(InputError, match=r"a\.jsonl:2: "):
        DecodeCache(f)
