"""In-search weights by blind SNR estimate, the shared per-condition walk, the weights-vs-SNR plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusion.errors import LMFusionError
from fusion.tuning.walk import Cond, condition_groups, walk_conditions, walk_order
from recipes.asr.in_search import BLIND, GLOBAL, _blind_weights, blind_verdict
from recipes.asr.in_search_tune import (
    GridTuner,
    blind_bucket,
    bucket_agreement,
    grid_markdown,
    pick_weights,
    plot_in_search_weights,
)
from recipes.asr.make_audio import Utterance, write_wav
from recipes.asr.run import SCHEMA
from recipes.asr.whisper_fusion import in_search_markdown
from recipes.config import validate

POINTS = [{"am": 1.0}, {"am": 1.0, "dlm": 0.1}, {"am": 1.0, "dlm": 0.2, "words": 1.0}]


def _cfg(tmp_path: Path) -> dict[str, Any]:
    return validate({"work_dir": str(tmp_path / "w"), "text": {"domains": ["a", "b"]},
                     "nbest": {"dev": "unused", "test": "unused"},
                     "conditions": {"buckets": {"5": 5, "10": 10, "20": 20, "clean": 45}, "min_utts": 8}},
                    SCHEMA)  # fmt: skip


def _wav(path: Path, snr: float | None, seed: int) -> str:
    """Two tone bursts with pauses (digital silence when clean), white noise at ``snr`` dB over the whole."""
    rng = np.random.default_rng(seed)
    t = np.arange(32000) / 16000
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (((t > 0.3) & (t < 0.9)) | ((t > 1.1) & (t < 1.7)))
    if snr is not None:
        n = rng.standard_normal(len(t))
        speech = speech + n * np.sqrt(np.mean(speech**2) / 10 ** (snr / 10) / np.mean(n**2))
    write_wav(path, speech)
    return str(path)


def _utt(tmp_path: Path, uid: str, snr: float | None, tag: str) -> Utterance:
    wav = _wav(tmp_path / f"{uid}.wav", snr, seed=len(uid))
    return Utterance(uid, "a", "test", "x y", wav, "slt", 1.0, "white", tag)


def test_blind_bucket_follows_the_waveform_not_the_tag(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    # the tags lie ("clean" on noisy audio and the reverse): the estimate reads only the waveform
    assert blind_bucket(_utt(tmp_path, "n5", 5.0, "clean"), cfg) == "5"
    assert blind_bucket(_utt(tmp_path, "n20", 20.0, "5"), cfg) == "20"
    assert blind_bucket(_utt(tmp_path, "c", None, "5"), cfg) == "clean"


def test_condition_groups_count_an_utterance_once_and_parents_come_first() -> None:
    groups = condition_groups([(None, "5"), (None, "5"), ("a", "20")])
    assert groups[(None, "5")] == [0, 1]  # (None, b) is both "(*, b)" and "(d, b)" of a tag-less domain
    assert groups[(None, None)] == [0, 1]
    order = walk_order({**groups, ("a", None): [2], ("a", "20"): [2]})
    assert order.index(("a", None)) < order.index(("a", "20")) and (None, None) not in order


def test_one_walk_for_a_tuner_that_is_not_a_grid() -> None:
    """The walk only talks to the tuner: a fake one whose best weight per utterance is known."""
    best = np.array([0.0] * 12 + [1.0] * 12)  # bucket "5": weight 0 is right; bucket "20": weight 1

    class Fake:
        def fit(self, idx: Any, init: Any) -> dict[str, Any]:
            w = {"am": 1.0, "dlm": float(round(best[list(idx)].mean()))}
            return {"weights": w, "dev": {"error_rate": self.error_rate(idx, w)}}

        def error_rate(self, idx: Any, weights: Any) -> float:
            return float(np.mean(np.abs(best[list(idx)] - weights["dlm"])))

        def ref_words(self, idx: Any) -> int:
            return len(list(idx))

    conds: list[Cond] = [(None, "5" if i < 12 else "20") for i in range(24)]
    rows = walk_conditions(Fake(), conds, {"am": 1.0, "dlm": 0.0}, min_utts=8, folds=4, seed=0)
    by = {r["bucket"]: r for r in rows}
    assert set(by) == {"5", "20"} and all(r["domain"] is None and r["parent"] == "*/*" for r in rows)
    assert by["20"]["weights"]["dlm"] == 1.0 and not by["20"]["backoff"] and by["20"]["cv"]["wer_own"] == 0.0
    # bucket 5's own weight is the global one: no better in CV, so it backs off (to the same weights)
    assert by["5"]["backoff"] and by["5"]["weights"]["dlm"] == 0.0


def _blind_tuning() -> dict[str, Any]:
    """Dev errors where point 2 wins at 5 dB and plain Whisper wins when clean; tags and estimate differ."""
    true = ["5"] * 10 + ["clean"] * 10
    est = ["5"] * 8 + ["clean"] * 12  # two noisy utterances look clean to the estimator
    errors = np.full((3, 20), 3)
    errors[2, :10] = 0
    errors[0, 10:] = 1
    words = np.full(20, 10)
    tuned = pick_weights(errors, words, [("a", b) for b in true], POINTS, min_utts=8, folds=4, seed=0)
    tuned["blind_snr"] = {"estimator": "noise floor",
                          "conditions": pick_weights(errors, words, [(None, b) for b in est], POINTS, min_utts=8,
                                                     folds=4, seed=0)["conditions"],
                          "dev_buckets": bucket_agreement(true, est)}  # fmt: skip
    tuned.update(components=["am", "dlm", "words"], n_utts=20, beam=5,
                 grid=[{"weights": w, "dev_wer": float(errors[k].sum() / 200)} for k, w in enumerate(POINTS)])
    return tuned


def test_blind_picks_use_the_grid_walk_with_back_off() -> None:
    tuned = _blind_tuning()
    blind = {c["bucket"]: c for c in tuned["blind_snr"]["conditions"]}
    assert set(blind) == {"5", "clean"} and all(c["domain"] is None for c in blind.values())
    assert tuned["global"]["weights"] == POINTS[2]
    # estimated 5 dB: its own pick is the global one, no better in CV: backed off to it (same point)
    assert blind["5"]["weights"] == POINTS[2] and blind["5"]["point"] == 2 and blind["5"]["backoff"]
    # the estimated "clean" bucket mixes 2 noisy utterances in: its argmin, plain Whisper, still wins in CV
    assert blind["clean"]["weights"] == POINTS[0] and not blind["clean"]["backoff"]
    assert blind["clean"]["cv"]["wer_own"] < blind["clean"]["cv"]["wer_parent"]
    assert tuned["blind_snr"]["dev_buckets"] == {"agree": 0.9, "counts": {"5->5": 8, "5->clean": 2,
                                                                         "clean->clean": 10}}  # fmt: skip
    tuner = GridTuner(np.zeros((3, 2)), np.ones(2), POINTS)
    assert tuner.point_of({"dlm": 0.1, "am": 1.0}) == 1


def test_blind_weights_select_by_estimated_bucket(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    tuned = _blind_tuning()
    weights_of = _blind_weights(tuned, cfg)
    blind = {c["bucket"]: c["weights"] for c in tuned["blind_snr"]["conditions"]}
    assert weights_of(_utt(tmp_path, "n5", 5.0, "clean")) == blind["5"]
    assert weights_of(_utt(tmp_path, "n20", 20.0, "clean")) == tuned["global"]["weights"]  # no pick for "20"
    with pytest.raises(LMFusionError, match="force in_search_tune"):
        _blind_weights({k: v for k, v in tuned.items() if k != "blind_snr"}, cfg)


def test_weights_plot_and_markdown(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tuned = _blind_tuning()
    png = plot_in_search_weights(_cfg(tmp_path), tuned, tmp_path / "w.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = grid_markdown(tuned)
    assert "| */5 (blind SNR) | dlm 0.2, words 1 |" in md and "90% of the dev utterances" in md


@pytest.mark.parametrize(("lo", "hi", "word"), [(-0.03, -0.01, "beat"), (-0.01, 0.01, "do not beat"),
                                                (0.01, 0.02, "worse")])  # fmt: skip
def test_blind_verdict_reads_the_ci(lo: float, hi: float, word: str) -> None:
    v = blind_verdict({"delta": (lo + hi) / 2, "lo": lo, "hi": hi})
    assert word in v and f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" in v
    row = {"n_utts": 2, GLOBAL: 0.3, BLIND: 0.3, f"{BLIND} minus {GLOBAL}":
           {"delta": 0.0, "lo": lo, "hi": hi, "relative_reduction": 0.0}}  # fmt: skip
    md = in_search_markdown({"systems": [GLOBAL, BLIND], "pairs": [[GLOBAL, BLIND]], "beam": 5, "n_utts": 2,
                             "table": {"all/all": row}, "verdicts": [v], "plots": ["w.png"],
                             "blind_snr_test_buckets": {"agree": 0.5}})  # fmt: skip
    assert f"**{v}**" in md and "![w](w.png)" in md and "50% of the test utterances" in md
