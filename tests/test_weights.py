"""The one meaning of a weights mapping, and the weight policies (fusion.weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.errors import WeightsError
from fusion.profile import ConditionWeights, FusionProfile
from fusion.weights import (
    ConstantWeights,
    ProfileWeights,
    UtteranceContext,
    WeightPolicy,
    as_policy,
    check_weights,
    combine_scores,
    resolve_per_utterance,
    weight_arrays,
)


def test_missing_weight_counts_zero_and_am_defaults_to_one() -> None:
    w = check_weights({"lm": 0.5}, ["lm", "words"])
    assert w == {"am": 1.0, "lm": 0.5, "words": 0.0}
    assert check_weights(None, ["lm"]) == {"am": 1.0, "lm": 0.0}
    assert check_weights({"am": 0.3}, [])["am"] == 0.3


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(WeightsError, match=r"'nnlm'.*known: am, lm, words"):
        check_weights({"nnlm": 1.0}, ["lm", "words"], where="w.json")


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", True, None])
def test_non_finite_or_non_number_is_refused(bad: object) -> None:
    with pytest.raises(WeightsError, match="'lm'"):
        check_weights({"lm": bad}, ["lm"])  # type: ignore[dict-item]


def test_combine_scores_zero_weight_against_minus_inf_is_zero() -> None:
    s = {"am": np.array([-1.0, -2.0]), "lm": np.array([-np.inf, -3.0]), "words": np.array([2.0, 3.0])}
    tot = combine_scores(s, {"am": 1.0, "lm": 0.0, "words": 0.5})
    np.testing.assert_allclose(tot, [0.0, -0.5])
    np.testing.assert_allclose(combine_scores(s, {"lm": -1.0}), [np.inf, 3.0])


def test_policies_resolve_the_same_way() -> None:
    prof = FusionProfile(
        default=ConditionWeights({"lm": 0.1}),
        conditions=(ConditionWeights({"lm": 0.9, "words": 2.0}, {"a": 0.3, "b": 0.7}, domain="tech"),),
    )
    ctxs = [UtteranceContext("u1", {"domain": "tech"}), UtteranceContext("u2", {"domain": "bible"})]
    per = resolve_per_utterance(prof, ["lm", "words"], ctxs)
    assert per == [{"am": 1.0, "lm": 0.9, "words": 2.0}, {"am": 1.0, "lm": 0.1, "words": 0.0}]
    pol = as_policy(prof)
    assert isinstance(pol, ProfileWeights) and isinstance(pol, WeightPolicy)
    assert pol.interpolation_for(ctxs[0]) == {"a": 0.3, "b": 0.7}
    assert isinstance(as_policy({"lm": 1.0}), ConstantWeights)
    arr = weight_arrays(per, ["lm", "words"])
    np.testing.assert_allclose(arr["lm"], [0.9, 0.1])
    np.testing.assert_allclose(arr["am"], [1.0, 1.0])


def test_policy_errors_name_the_utterance() -> None:
    with pytest.raises(WeightsError, match="utterance u7"):
        resolve_per_utterance({"xx": 1.0}, ["lm"], [UtteranceContext("u7")])
    with pytest.raises(WeightsError, match="mapping"):
        as_policy(3.0)  # type: ignore[arg-type]


def test_abilities_are_protocols_checked_with_isinstance() -> None:
    from fusion.abilities import FullDistribution, LMSpec, Reloadable, SentenceBatchScorer, spec_of
    from fusion.errors import LMFusionError
    from fusion.lm import LanguageModel, Units

    class Plain(LanguageModel):
        def begin(self):  # type: ignore[no-untyped-def]
            return ()

        def score(self, state, unit):  # type: ignore[no-untyped-def]
            return -1.0, state

        def end(self, state):  # type: ignore[no-untyped-def]
            return -1.0

    class Described(Plain):
        def spec(self) -> LMSpec:
            return LMSpec(self.name, path="x.arpa")

    p, d = Plain("p", Units.word()), Described("d", Units.word())
    assert not isinstance(p, (SentenceBatchScorer, FullDistribution, Reloadable))
    assert isinstance(d, Reloadable) and spec_of(d) == LMSpec("d", path="x.arpa")
    with pytest.raises(LMFusionError, match=r"'p'.*cannot be reopened"):
        spec_of(p)
