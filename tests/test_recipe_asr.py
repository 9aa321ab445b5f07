"""The ASR recipe: per-condition tuning recovers condition-specific weights; the pipeline runs, skips, errs well."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, write_nbest_jsonl
from fusion.profile import FusionProfile
from recipes.asr.run import SCHEMA, build_stages, check_overlap, run_recipe
from recipes.config import ConfigError, validate
from recipes.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]


def _constructed_lists(rng: np.random.Generator) -> list[NBestList]:
    """Noisy utterances need dlm weight > ~4 to pick the right hypothesis; clean ones need < ~0.8."""
    out = []
    for cond, n in (("15", 20), ("clean", 12)):  # more noisy data: the global weight follows the noisy optimum
        for i in range(n):
            ref = f"word{i} other words here"
            if cond == "15":  # the right answer has a worse acoustic score but a much better LM score
                d_am, d_lm = -(3.0 + rng.uniform(0, 1)), 1.0
            else:  # the right answer has the better acoustic score and a slightly worse LM score
                d_am, d_lm = 1.0, -(1.25 + rng.uniform(0, 0.5))
            am0, lm0 = rng.normal(-50, 5), rng.normal(-20, 2)
            right = ScoredHypothesis(ref, {"am": am0 + d_am, "dlm": lm0 + d_lm, "words": 4.0})
            wrong = ScoredHypothesis(f"word{i} odder words hair", {"am": am0, "dlm": lm0, "words": 4.0})
            hyps = (right, wrong) if i % 2 else (wrong, right)
            out.append(NBestList(f"{cond}-{i}", hyps, ref, {"domain": "d", "snr": cond}))
    return out


@pytest.mark.parametrize(("mode", "folds"), [("full", 1), ("full", 4), ("scale", 4)])
def test_per_condition_tuning_recovers_condition_specific_weights(tmp_path: Path, mode: str, folds: int) -> None:
    cfg = validate({"work_dir": str(tmp_path / "w"), "text": {"domains": ["d"]},
                    "nbest": {"dev": "unused", "test": "unused"},
                    "conditions": {"buckets": {"15": 15, "clean": 45}, "min_utts": 8},
                    "tune": {"free": ["dlm"], "bounds": {"dlm": [0.5, 10]}, "per_condition": mode,
                             "cv_folds": folds, "scale_bounds": [0, 20]}}, SCHEMA)  # fmt: skip
    w = Path(cfg["work_dir"])
    write_nbest_jsonl(w / "rescored" / "dev.jsonl", _constructed_lists(np.random.default_rng(0)))
    (w / "interpolation.json").write_text(json.dumps({"d": {"weights": {"d": 0.7, "general": 0.3},
                                                            "heldout": "x", "ppl": {}}}))  # fmt: skip
    stages = [s for s in build_stages(cfg) if s.name in ("tune", "profile")]
    Pipeline(w, log=None, progress=False).run(stages)
    tuned = json.loads((w / "tuning.json").read_text())
    by = {(c["domain"], c["bucket"]): c for c in tuned["conditions"]}
    assert by[("d", "15")]["weights"]["dlm"] > 4.0 and by[("d", "15")]["dev_wer"] == 0.0
    assert by[("d", "clean")]["weights"]["dlm"] < 0.8 and by[("d", "clean")]["dev_wer"] == 0.0
    # CV keeps a condition's own weights where its parent's (the global ones) fail it; backing off is
    # only allowed where the parent's weights are already perfect there
    assert not all(by[("d", b)]["backoff"] for b in ("15", "clean"))
    for b in ("15", "clean"):
        if by[("d", b)]["backoff"]:
            assert by[("d", b)]["cv"]["wer_parent"] == 0.0
    assert tuned["global"]["dev_wer"] > 0.0  # one weight cannot serve both conditions
    prof = FusionProfile.load(w / "profile.json")
    assert prof.select({"domain": "d", "snr": "15"}).fusion["dlm"] > 4.0
    assert prof.select({"domain": "d", "snr": "clean"}).fusion["dlm"] < 0.8
    assert prof.select({"domain": "d", "snr": "15"}).interpolation == {"d": 0.7, "general": 0.3}
    mid = prof.select({"domain": "d"}, snr=30.0).fusion["dlm"]  # halfway between the 15 and 45 dB centres
    lo, hi = by[("d", "clean")]["weights"]["dlm"], by[("d", "15")]["weights"]["dlm"]
    assert mid == pytest.approx((lo + hi) / 2)
    assert prof.provenance["metric"].startswith("WER")


def test_cv_backs_off_when_conditions_do_not_differ(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lists = []
    for cond in ("15", "clean"):  # the same random distribution in both conditions: nothing to learn
        for i in range(24):
            hyps = tuple(ScoredHypothesis(f"w{i} h{k}" + " x" * int(rng.integers(0, 3)),
                                          {"am": float(rng.normal(-50, 3)), "dlm": float(rng.normal(-20, 3)),
                                           "words": 2.0}) for k in range(4))  # fmt: skip
            ref = f"w{i} h{int(rng.integers(0, 4))}"
            lists.append(NBestList(f"{cond}-{i}", hyps, ref, {"domain": "d", "snr": cond}))
    cfg = validate({"work_dir": str(tmp_path / "w"), "text": {"domains": ["d"]},
                    "nbest": {"dev": "unused", "test": "unused"},
                    "conditions": {"buckets": {"15": 15, "clean": 45}, "min_utts": 8},
                    "tune": {"free": ["dlm", "words"], "per_condition": "full", "cv_folds": 4}}, SCHEMA)  # fmt: skip
    w = Path(cfg["work_dir"])
    write_nbest_jsonl(w / "rescored" / "dev.jsonl", lists)
    Pipeline(w, log=None, progress=False).run([s for s in build_stages(cfg) if s.name == "tune"])
    tuned = json.loads((w / "tuning.json").read_text())
    backed = [c for c in tuned["conditions"] if c["backoff"]]
    assert backed, "random conditions should not all keep their own (over-fitted) weights"
    for c in backed:
        assert c["cv"]["wer_own"] >= c["cv"]["wer_parent"]
        kept = {f"{x['domain'] or '*'}/{x['bucket'] or '*'}": x["weights"] for x in tuned["conditions"]}
        kept["*/*"] = tuned["global"]["weights"]
        assert c["weights"] == kept[c["parent"]]  # backed off = exactly the parent's weights


def _tiny_inputs(tmp_path: Path) -> Path:
    """Small text per domain (cut from the bundled text) and synthetic n-best lists of test sentences."""
    text = tmp_path / "text"
    text.mkdir()
    rng = np.random.default_rng(1)
    for dom in ("bible", "tech"):
        for split, n in (("train", 300), ("dev", 40), ("test", 12)):
            lines = (REPO / "data" / "text" / f"{dom}.{split}.txt").read_text().splitlines()[:n]
            (text / f"{dom}.{split}.txt").write_text("\n".join(lines) + "\n")
    for split in ("dev", "test"):
        lists = []
        for dom in ("bible", "tech"):
            src = "dev" if split == "dev" else "test"
            refs = (text / f"{dom}.{src}.txt").read_text().splitlines()[:12]
            for i, ref in enumerate(refs):
                words = ref.split()
                hyps = []
                for k in range(4):
                    ws = list(words)
                    for _ in range(k):
                        ws[rng.integers(len(ws))] = "the"
                    hyps.append(ScoredHypothesis(" ".join(ws), {"am": float(rng.normal(-100, 3)),
                                                                "lm": float(rng.normal(-40, 3))}))  # fmt: skip
                for snr in ("clean", "15"):
                    lists.append(NBestList(f"{dom}-{split}-{i}-{snr}", tuple(hyps), ref,
                                           {"domain": dom, "snr": snr, "snr_est": 40.0 if snr == "clean" else 16.0,
                                            "decoder_1best": hyps[0].text}))  # fmt: skip
        write_nbest_jsonl(tmp_path / f"{split}.jsonl", lists)
    cfg = {
        "name": "tiny", "work_dir": str(tmp_path / "work"),
        "text": {"dir": str(text), "domains": ["bible", "tech"]},
        "nbest": {"dev": str(tmp_path / "dev.jsonl"), "test": str(tmp_path / "test.jsonl")},
        "lms": {"order": 2, "spm_vocab": 200},
        "conditions": {"buckets": {"15": 15, "clean": 45}, "min_utts": 6},
        "evaluate": {"bootstrap": 100},
    }  # fmt: skip
    import yaml

    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


@pytest.mark.skipif(shutil.which("lmplz") is None and not (REPO / ".venv/bin/lmplz").exists(), reason="needs lmplz")
def test_recipe_runs_end_to_end_then_skips_everything(tmp_path: Path) -> None:
    f = _tiny_inputs(tmp_path)
    out = run_recipe(f, progress=False)
    assert [r.status for r in out["reports"]] == ["ran"] * 7
    p = out["paths"]
    ev = json.loads(p["eval"].read_text())
    assert set(ev["table"]) == {"bible/clean", "bible/15", "tech/clean", "tech/15", "all/all"}
    row = ev["table"]["all/all"]
    assert row["n-best oracle"] <= min(row[s] for s in ev["systems"])
    assert ev["overlap"]["in_training_text"] == 0
    report = p["report"].read_text()
    assert "per-condition" in report and "bible/15" in report
    assert (p["work"] / "wer_by_condition.png").stat().st_size > 1000
    prof = FusionProfile.load(p["profile"])
    assert {c.domain for c in prof.conditions} >= {"bible", "tech"}
    again = run_recipe(f, progress=False)
    assert [r.status for r in again["reports"]] == ["skipped"] * 7


def test_broken_recipe_config_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("work_dir: w\ntext:\n  domains: [a]\nnbest: {dev: a, test: b}\ntune:\n  method: newton\n")
    with pytest.raises(ConfigError) as e:
        run_recipe(f)
    assert e.value.field == "tune.method" and e.value.line == 6
    f.write_text("work_dir: w\ntext:\n  domians: [a]\n")
    with pytest.raises(ConfigError, match="did you mean 'domains'"):
        run_recipe(f)


def test_overlap_check_finds_copied_sentences(tmp_path: Path) -> None:
    t = tmp_path / "train.txt"
    t.write_text("a b c d e f\nthe cat sat on the mat\n")
    r = check_overlap(["the cat sat on the mat", "a b c d e x", "nothing like it at all"], [t])
    assert r["test_sentences"] == 3 and r["in_training_text"] == 1
    assert r["test_5gram_overlap"] == pytest.approx(3 / 5)
