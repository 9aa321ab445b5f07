"""A fusion profile works wherever n-best weights do: each list is ranked with its condition's weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from decoders.hypothesis import NBestList, ScoredHypothesis, write_nbest_jsonl
from decoders.nbest import apply_weights, best_indices, count_ties, onebest_error_rates, weights_per_list
from fusion.profile import ConditionWeights, FusionProfile, default_buckets


def _lists() -> list[NBestList]:
    # hyp 0 is acoustically better, hyp 1 is what the LM likes; which wins depends on the LM weight
    hyps = (
        ScoredHypothesis("the cat sat", {"am": -10.0, "lm": -9.0}),
        ScoredHypothesis("the cat sad", {"am": -11.0, "lm": -7.0}),
    )
    return [
        NBestList("clean-1", hyps, ref="the cat sat", tags={"domain": "a", "snr": 40.0}),
        NBestList("noisy-1", hyps, ref="the cat sad", tags={"domain": "a", "snr": 0.0}),
        NBestList("other", hyps, ref="the cat sat", tags={"domain": "zzz"}),
    ]


def _profile() -> FusionProfile:
    return FusionProfile(
        default=ConditionWeights({"am": 1.0, "lm": 0.1}),
        buckets=default_buckets({"noisy": 0.0, "clean": 40.0}),
        conditions=(
            ConditionWeights({"am": 1.0, "lm": 0.2}, domain="a", bucket="clean"),
            ConditionWeights({"am": 1.0, "lm": 2.0}, domain="a", bucket="noisy"),
        ),
        name="test",
    )


def test_profile_picks_weights_per_list() -> None:
    lists, prof = _lists(), _profile()
    assert [w["lm"] for w in weights_per_list(lists, prof)] == [0.2, 2.0, 0.1]
    # clean: lm 0.2 -> am wins (-10 - 1.8 > -11 - 1.4); noisy: lm 2 -> LM wins; unknown domain: default 0.1
    assert best_indices(lists, prof) == [0, 1, 0]
    assert apply_weights(lists, prof) == ["the cat sat", "the cat sad", "the cat sat"]
    # a single global weight cannot do both
    assert best_indices(lists, {"am": 1.0, "lm": 0.2}) == [0, 0, 0]
    assert best_indices(lists, {"am": 1.0, "lm": 2.0}) == [1, 1, 1]
    assert onebest_error_rates(lists, prof)["rescored"] == 0.0
    assert count_ties(lists, prof) == 0


def test_rescore_cli_takes_a_profile(tmp_path: Path) -> None:
    nb, prof = tmp_path / "nb.jsonl", tmp_path / "profile.json"
    write_nbest_jsonl(nb, _lists())
    _profile().save(prof)
    assert json.loads(prof.read_text())["format"] == "lmfusion-profile"
    out = tmp_path / "1best.txt"
    r = subprocess.run(
        [sys.executable, "-m", "recipes", "-q", "rescore", str(nb), "--weights", str(prof), "--onebest", str(out)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "profile 'test'" in r.stdout
    assert out.read_text().splitlines() == ["clean-1 the cat sat", "noisy-1 the cat sad", "other the cat sat"]
