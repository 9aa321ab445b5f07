"""Tuning that generalises: determinism, the smoothed objective, bounds, CV, shrinkage, adaptive policies,
MBR, per-utterance mixes and the ``tune --by`` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, parse_nbest_line, write_nbest_jsonl
from decoders.nbest import apply_weights, to_tuning_problem
from fusion.adaptive import (
    AdaptiveWeights,
    ConditionTable,
    FeatureSpec,
    condition_key,
    load_policy,
    nbest_features,
    save_policy,
)
from fusion.tuning import TuningProblem, error_rate, tune
from fusion.tuning.conditions import fit_conditions, shrink
from fusion.tuning.mbr import mbr_select, pairwise_distances
from fusion.tuning.smooth import (
    expected_error,
    expected_error_reference,
    normalised_expected_error,
    score_covariance,
)
from fusion.tuning.stable import (
    bound_warnings,
    cross_validate,
    default_components,
    fold_ids,
    scale_aware_bounds,
    utterance_errors,
)
from fusion.weights import UtteranceContext

COMPS = ("am", "lm", "words")


def synthetic(seed: int, u: int = 120, n: int = 8, lm_sign: float = 1.0, lm_scale: float = 1.0) -> TuningProblem:
    """Lists where the LM helps (``lm_sign=1``) or misleads (``-1``): errors drive am and lm scores."""
    rng = np.random.default_rng(seed)
    feats, errors = [], []
    for _ in range(u):
        e = rng.poisson(2.0, size=n)
        words = 10 + rng.integers(-2, 3, size=n)
        am = -3.0 * e + rng.normal(0, 6.0, size=n) - 2.0 * words
        lm = lm_scale * (lm_sign * -1.5 * e + rng.normal(0, 2.0, size=n) - 1.0 * words)
        feats.append(np.stack([am, lm, words.astype(float)], axis=1))
        errors.append(e)
    return TuningProblem(COMPS, feats, errors, np.full(u, 12))


BOUNDS = {"lm": (0.0, 10.0), "words": (-10.0, 10.0)}


@pytest.mark.parametrize("method", ["smooth", "mert"])
def test_same_seed_gives_the_same_weights(method: str) -> None:
    p = synthetic(0)
    a = tune(p, method, bounds=BOUNDS, seed=3, restarts=3)
    b = tune(p, method, bounds=BOUNDS, seed=3, restarts=3)
    assert a.weights == b.weights and a.error_rate == b.error_rate
    assert a.error_rate < error_rate(p, {"am": 1.0})  # it tuned something


def test_expected_error_and_its_gradient() -> None:
    p = synthetic(1, u=30)
    w = np.array([1.0, 0.7, -0.3])
    v, g = expected_error(p, w, 0.2, grad=True)
    assert v == pytest.approx(expected_error_reference(p, w, 0.2), rel=1e-12)
    assert g is not None
    d1 = np.array([0.0, 1e-6, 0.0])
    num1 = (expected_error(p, w + d1, 0.2)[0] - expected_error(p, w - d1, 0.2)[0]) / 2e-6
    assert g[1] == pytest.approx(num1, rel=1e-4, abs=1e-8)
    cov = score_covariance(p)
    val, grad = normalised_expected_error(p, w, 3.0, cov)
    eps = 1e-6
    for k in range(3):
        d = np.zeros(3)
        d[k] = eps
        num = normalised_expected_error(p, w + d, 3.0, cov)[0] - normalised_expected_error(p, w - d, 3.0, cov)[0]
        assert grad[k] == pytest.approx(num / (2 * eps), rel=1e-4, abs=1e-8)
    # the normalised objective does not change when every weight is scaled
    assert normalised_expected_error(p, 2.5 * w, 3.0, cov)[0] == pytest.approx(val, rel=1e-12)


def test_l2_pull_moves_the_weights_toward_the_prior() -> None:
    p = synthetic(2)
    free = tune(p, "smooth", bounds=BOUNDS, seed=0, restarts=1)
    pulled = tune(p, "smooth", bounds=BOUNDS, seed=0, restarts=1, l2=50.0, prior={"lm": 9.0, "words": 0.0})
    assert abs(pulled.weights["lm"] - 9.0) < abs(free.weights["lm"] - 9.0)


def test_scale_aware_bounds_follow_the_scores_and_a_bound_is_reported() -> None:
    p1 = synthetic(3, lm_scale=1.0)
    p10 = synthetic(3, lm_scale=10.0)
    b1 = scale_aware_bounds(p1, {"am": 1.0})
    b10 = scale_aware_bounds(p10, {"am": 1.0})
    assert b10["lm"][1] == pytest.approx(b1["lm"][1] / 10, rel=0.05)
    assert b1["words"][0] < 0 < b1["words"][1]
    res = tune(p1, "mert", bounds={"lm": (0.0, 0.05), "words": (-10.0, 10.0)}, seed=0)
    msgs = bound_warnings(res)
    assert any("lm=" in m and "upper bound" in m for m in msgs)
    wide = tune(p1, "mert", bounds=b1, seed=0)
    assert not any(m.startswith("weight lm=") for m in bound_warnings(wide))


def test_default_components_rule() -> None:
    assert default_components(["am", "lm", "words", "general", "tokens", "oov_general"]) == ["am", "general", "words"]
    assert default_components(["am", "lm", "words"]) == ["am", "lm", "words"]  # the only LM is kept


def test_kfold_cv_scores_each_utterance_with_weights_tuned_without_it() -> None:
    p = synthetic(4, u=60)
    f = fold_ids(60, 5, seed=1)
    assert np.array_equal(f, fold_ids(60, 5, seed=1)) and sorted(np.bincount(f)) == [12] * 5
    seen: list[set[str]] = []

    def fit(sub: TuningProblem) -> dict[str, float]:
        seen.append(set(sub.utt_ids))
        return tune(sub, "mert", bounds=BOUNDS, seed=0).weights

    p = TuningProblem(p.components, p.feats, p.errors, p.ref_lengths, tuple(f"u{i}" for i in range(60)))
    cv = cross_validate(p, fit, k=5, seed=1)
    for j, train in enumerate(seen):
        held = {f"u{i}" for i in np.flatnonzero(f == j)}
        assert not (train & held)
    assert cv.error_rate >= tune(p, "mert", bounds=BOUNDS, seed=0).error_rate - 1e-12  # CV is not rosier than dev


def _fit(sub: TuningProblem) -> dict[str, float]:
    return tune(sub, "mert", bounds=BOUNDS, seed=0, restarts=1).weights


@pytest.mark.parametrize("seed", [0, 1])
def test_shrinkage_is_never_worse_than_global_when_conditions_are_identical(seed: int) -> None:
    dev, test = synthetic(10 + seed, u=160), synthetic(20 + seed, u=160)
    keys = [f"c{i % 4}" for i in range(160)]
    cf = fit_conditions(dev, keys, _fit, by=("cond",), k=4, seed=seed)
    g = cf.table.global_weights
    pol_errs = sum(
        int(utterance_errors(test.subset([i]), cf.table.table.get(keys[i], g))[0]) for i in range(test.n_utts)
    )
    assert pol_errs <= int(utterance_errors(test, g).sum()) + 0.01 * test.total_ref_length


def test_shrinkage_picks_condition_weights_when_conditions_differ() -> None:
    a, b = synthetic(30, u=100, lm_sign=1.0), synthetic(31, u=100, lm_sign=-1.0)
    both = TuningProblem(COMPS, a.feats + b.feats, a.errors + b.errors, np.concatenate([a.ref_lengths, b.ref_lengths]))
    keys = ["good"] * 100 + ["bad"] * 100
    cf = fit_conditions(both, keys, _fit, by=("lmq",), k=4, seed=0)
    assert math.isfinite(cf.kappa) and cf.table.table["bad"]["lm"] < cf.table.table["good"]["lm"]
    assert cf.cv_errors[cf.kappa] < cf.cv_errors[math.inf]


def test_shrink_formula() -> None:
    assert shrink({"lm": 1.0}, {"lm": 3.0}, 10, 10.0) == {"lm": 2.0}
    assert shrink({"lm": 1.0}, {"lm": 3.0}, 10, math.inf) == {"lm": 1.0}


def test_condition_keys_from_tags_and_top_level_fields_with_a_null_snr() -> None:
    nb = parse_nbest_line('{"utt_id": "u", "domain": "bible", "snr": null, "tags": {"noise": "pink"}, "hyps": []}')
    assert nb.tags["domain"] == "bible" and nb.tags["noise"] == "pink"
    assert condition_key(nb.tags, ["domain", "noise", "snr"]) == "bible|pink|unknown"
    assert condition_key({"snr": 22.0}, ["snr"], (10, 17.5, 25)) == "17.5-25"
    assert condition_key({"snr": "clean"}, ["snr"], (10, 17.5, 25)) == "clean"
    assert condition_key({"snr": 30}, ["snr"], (10, 17.5, 25)) == ">=25"
    table = ConditionTable(("domain",), {"am": 1.0, "lm": 0.5}, {"bible": {"am": 1.0, "lm": 2.0}})
    assert table.weights_for(UtteranceContext(tags={"domain": "tech"}))["lm"] == 0.5


def _lists() -> list[NBestList]:
    """Two hypotheses per list: the LM prefers the second; whether it wins depends on the LM weight."""
    out = []
    for i, snr in enumerate([5.0, 35.0]):
        hyps = (
            ScoredHypothesis("a b", {"am": -10.0, "lm": -9.0, "words": 2.0}),
            ScoredHypothesis("a c", {"am": -11.0, "lm": -7.0, "words": 2.0}),
        )
        out.append(NBestList(f"u{i}", hyps, "a c", {"snr_est": snr}))
    return out


def test_adaptive_policy_round_trips_json_and_drives_apply_weights(tmp_path: Path) -> None:
    pol = AdaptiveWeights(
        base={"am": 1.0, "lm": 0.5, "words": 0.0},
        slopes={"lm": {"snr": -0.4}},
        norm={"snr": (20.0, 10.0)},
        spec=FeatureSpec("am", 1.0, {}),
    )
    path = tmp_path / "policy.json"
    save_policy(pol, path)
    assert "pickle" not in path.read_text()
    back = load_policy(path)
    assert back == pol
    # low SNR -> larger LM weight (0.5 + 0.4 * 1.5 = 1.1) -> the LM's choice; high SNR -> 0.5 - 0.6 < 0
    assert apply_weights(_lists(), back) == ["a c", "a b"]
    w = back.weights_for(UtteranceContext(tags={"snr_est": None}))  # a null SNR: the base weights
    assert w["lm"] == 0.5


def test_nbest_features_domain_posterior_and_confidence() -> None:
    scores = {
        "am": np.array([-10.0, -10.5, -30.0]),
        "bible": np.array([-20.0, -21.0, -22.0]),
        "tech": np.array([-40.0, -41.0, -30.0]),
        "words": np.array([4.0, 4.0, 4.0]),
    }
    f = nbest_features(scores, FeatureSpec("am", 1.0, {"bible": "bible", "tech": "tech"}), words=scores["words"])
    assert f["p_domain=bible"] > 0.99 and f["p_domain=bible"] + f["p_domain=tech"] == pytest.approx(1.0)
    assert f["margin"] == pytest.approx(0.5 / 4)
    assert 0.0 < f["entropy"] < 1.0


def test_mbr_picks_the_consensus_hypothesis() -> None:
    texts = ["x y z w", "a b c d", "a b c e", "a b c f"]
    scores = np.array([0.0, -0.2, -0.2, -0.2])  # the MAP choice is the outlier
    assert int(np.argmax(scores)) == 0
    assert mbr_select(texts, scores, scale=1.0) in (1, 2, 3)
    assert mbr_select(texts, scores, scale=1000.0) == 0  # a sharp posterior is MAP
    d = pairwise_distances(texts)
    assert d[1, 2] == 1 and d[0, 1] == 4 and np.array_equal(d, d.T)


@pytest.mark.slow
def test_per_utterance_mix_equals_the_interpolated_model(bible_arpa: Path, tech_arpa: Path) -> None:
    from decoders.nbest_policy import add_utterance_mix
    from fusion.interpolate import LinearInterpolation
    from fusion.ngram import KenLM
    from fusion.profile import ConditionWeights, FusionProfile

    bible, tech = KenLM(bible_arpa, name="bible"), KenLM(tech_arpa, name="tech")
    prof = FusionProfile(
        ConditionWeights({"am": 1.0}, {"bible": 0.5, "tech": 0.5}),
        conditions=(
            ConditionWeights({"am": 1.0}, {"bible": 0.9, "tech": 0.1}, domain="bible"),
            ConditionWeights({"am": 1.0}, {"bible": 0.2, "tech": 0.8}, domain="tech"),
        ),
    )
    hyps = (ScoredHypothesis("in the beginning god created", {}), ScoredHypothesis("the function returns", {}))
    nbs = [NBestList("b", hyps, None, {"domain": "bible"}), NBestList("t", hyps, None, {"domain": "tech"})]
    out = add_utterance_mix(nbs, {"bible": bible, "tech": tech}, prof, "mix")
    for nb, lam in zip(out, [(0.9, 0.1), (0.2, 0.8)], strict=True):
        ref = LinearInterpolation([bible, tech], list(lam))
        for h in nb.hyps:
            assert h.scores["mix"] == pytest.approx(ref.score_text(h.text).total, rel=1e-9)


def test_sentence_bleu_tuning_problem() -> None:
    from fusion.tuning.sentence_loss import corpus_score, loss_problem

    p = TuningProblem(("am",), [np.array([[0.0], [-1.0]])], [np.array([0, 0])], np.array([3]))
    lp = loss_problem(p, [["the cat sat", "a dog ran off"]], ["the cat sat"], "chrf")
    assert lp.errors[0][0] == 0 and lp.errors[0][1] > 0
    assert corpus_score("bleu", ["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_tune_by_condition_on_the_command_line(tmp_path: Path) -> None:
    from recipes.cli import main

    rng = np.random.default_rng(0)
    nbs = []
    for i in range(40):
        hyps = tuple(
            ScoredHypothesis(t, {"am": float(rng.normal(-10, 1)), "lm": float(rng.normal(-8, 1)), "words": 2.0})
            for t in ("a b", "a c", "b c")
        )
        nbs.append(NBestList(f"u{i}", hyps, "a c", {"domain": "bible" if i % 2 else "tech", "snr": None}))
    dev = tmp_path / "dev.jsonl"
    write_nbest_jsonl(dev, nbs)
    pol = tmp_path / "pol.json"
    rc = main(
        [
            "tune",
            "--dev",
            str(dev),
            "--test",
            str(dev),
            "--by",
            "domain,snr",
            "--policy",
            str(pol),
            "--kfold",
            "2",
            "--method",
            "mert",
            "--bootstrap",
            "0",
            "-o",
            str(tmp_path / "w.json"),
        ]
    )
    assert rc == 0
    doc = json.loads(pol.read_text())
    assert doc["kind"] == "conditions" and doc["by"] == ["domain", "snr"]
    assert set(json.loads((tmp_path / "w.json").read_text())["conditions"]) >= {"kappa", "test"}
    out = tmp_path / "1best"
    assert main(["rescore", str(dev), "--weights", str(pol), "--onebest", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 40
    assert to_tuning_problem(nbs, COMPS).n_utts == 40


def test_blind_domain_interpolation_from_the_domain_posterior() -> None:
    from decoders.nbest import list_context

    pol = AdaptiveWeights(
        {"am": 1.0}, spec=FeatureSpec("am", 1.0, {"bible": "bible", "tech": "tech"}), interpolation_floor=0.1
    )
    hyps = (
        ScoredHypothesis("x", {"am": -1.0, "bible": -5.0, "tech": -15.0}),
        ScoredHypothesis("y", {"am": -2.0, "bible": -6.0, "tech": -14.0}),
    )
    lam = pol.interpolation_for(list_context(NBestList("u", hyps), pol))  # no domain tag anywhere
    assert set(lam) == {"bible", "tech"} and sum(lam.values()) == pytest.approx(1.0)
    assert lam["bible"] > 0.9 and lam["tech"] >= 0.05  # the floor keeps the other LM in the mix
    assert pol.interpolation_for(UtteranceContext()) == {}  # no features: no opinion
