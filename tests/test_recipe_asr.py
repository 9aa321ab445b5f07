"""The ASR recipe: per-condition tuning recovers condition-specific weights; the pipeline runs, skips, errs well."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, write_nbest_jsonl
from fusion.profile import FusionProfile
from recipes.asr.evaluate import check_overlap
from recipes.asr.run import SCHEMA, build_stages, run_recipe
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
    assert by[("d", "15")]["weights"]["dlm"] > 4.0 and by[("d", "15")]["dev"]["error_rate"] == 0.0
    assert by[("d", "clean")]["weights"]["dlm"] < 0.8 and by[("d", "clean")]["dev"]["error_rate"] == 0.0
    # CV keeps a condition's own weights where its parent's (the global ones) fail it; backing off is
    # only allowed where the parent's weights are already perfect there
    assert not all(by[("d", b)]["backoff"] for b in ("15", "clean"))
    for b in ("15", "clean"):
        if by[("d", b)]["backoff"]:
            assert by[("d", b)]["cv"]["wer_parent"] == 0.0
    assert tuned["global"]["dev"]["error_rate"] > 0.0  # one weight cannot serve both conditions
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


# ---- lattice n-best extraction (no pocketsphinx needed) ------------------------------------------
SLF = """# Lattice generated by hand
VERSION=1.0
start=0
end=5
N=6\tL=7
I=0\tt=0.00\tW=!SENT_START\tv=1
I=1\tt=0.10\tW=a\tv=1
I=2\tt=0.10\tW=b(2)\tv=1
I=3\tt=0.50\tW=c\tv=1
I=4\tt=0.50\tW=!NULL\tv=1
I=5\tt=1.00\tW=!SENT_END\tv=1
J=0\tS=0\tE=1\ta=-1.0\tp=0
J=1\tS=0\tE=2\ta=-2.0\tp=0
J=2\tS=1\tE=3\ta=-10.0\tp=0
J=3\tS=2\tE=3\ta=-8.0\tp=0
J=4\tS=1\tE=4\ta=-9.0\tp=0
J=5\tS=4\tE=5\ta=-3.0\tp=0
J=6\tS=3\tE=5\ta=-4.0\tp=0
"""


def _bigram(word: str, history: tuple[str, ...]) -> float:
    table = {("<s>", "a"): -1.0, ("<s>", "b"): -2.0, ("a", "c"): -0.5, ("b", "c"): -3.0}
    return table.get((history[-1], word), -1.5)


def test_slf_parse_and_nbest_separates_acoustic_and_lm_scores() -> None:
    from recipes.asr.decode_pocketsphinx import lattice_nbest, parse_slf

    lat = parse_slf(SLF)
    assert lat.nodes[2].word == "b"  # alternative pronunciation marker stripped
    nb = lattice_nbest(lat, _bigram, n=5, beam=10, lw=2.0, wip=1.0, silprob=1.0)
    got = {words: (am, lm) for words, am, lm in nb}
    assert got[("a", "c")] == (pytest.approx(-15.0), pytest.approx(-1.0 - 0.5 - 1.5))
    assert got[("b", "c")] == (pytest.approx(-14.0), pytest.approx(-2.0 - 3.0 - 1.5))
    assert got[("a",)] == (pytest.approx(-13.0), pytest.approx(-1.0 - 1.5))  # through the filler node
    totals = [am + 2.0 * lm for _, am, lm in nb]
    assert totals == sorted(totals, reverse=True)


def test_lattice_beam_search_matches_exhaustive_reference_on_random_lattices() -> None:
    from recipes.asr.decode_pocketsphinx import SlfLattice, SlfNode, lattice_nbest, lattice_nbest_reference

    rng = np.random.default_rng(0)
    vocab = ["x", "y", "z", "!NULL"]
    for _ in range(20):
        k = int(rng.integers(4, 9))
        nodes = [SlfNode("!SENT_START", 0.0)]
        nodes += [SlfNode(str(rng.choice(vocab)), float(i)) for i in range(1, k)]
        nodes.append(SlfNode("!SENT_END", float(k)))
        links = [(i, j, float(rng.normal(-5, 2))) for i in range(k) for j in range(i + 1, k + 1) if rng.random() < 0.6]
        links += [(i, i + 1, float(rng.normal(-5, 2))) for i in range(k)]  # keep it connected
        lat = SlfLattice(tuple(nodes), tuple(links), 0, k)
        ref = lattice_nbest_reference(lat, _bigram, n=10)
        fast = lattice_nbest(lat, _bigram, n=10, beam=10_000)
        assert [w for w, _, _ in fast] == [w for w, _, _ in ref]
        for (_, a1, l1), (_, a2, l2) in zip(fast, ref, strict=True):
            assert a1 == pytest.approx(a2) and l1 == pytest.approx(l2)


def test_sox_mixing_hits_the_requested_snr(tmp_path: Path) -> None:
    from recipes.asr.make_audio import mix_at_snr, pink_noise, read_wav

    speech = REPO / "tests" / "data" / "speech_kal16.wav"
    noise = tmp_path / "pink.wav"
    pink_noise(6.0, noise, seed=1)
    for snr in (20.0, 5.0):
        out = tmp_path / f"mix{snr}.wav"
        gain = mix_at_snr(speech, noise, snr, out)
        s, y, nz = read_wav(speech), read_wav(out), read_wav(noise)
        n_part = y - s  # what was added (16-bit rounding aside)
        measured = 10 * np.log10(np.mean(s**2) / np.mean(n_part**2))
        assert abs(measured - snr) < 0.2, (snr, measured)
        assert np.mean((gain * nz[: len(s)]) ** 2) == pytest.approx(np.mean(n_part**2), rel=0.05)


def test_bundled_nbest_lists_are_consistent() -> None:
    from decoders.hypothesis import read_nbest_jsonl

    for split in ("dev", "test"):
        lists = read_nbest_jsonl(REPO / "data" / "asr" / f"{split}.jsonl")
        assert len(lists) == 240
        assert {(nb.tags["domain"], nb.tags["snr"]) for nb in lists} == {
            (d, s) for d in ("bible", "tech") for s in ("clean", "30", "20", "15")
        }
        assert all({"am", "lm", "words"} <= set(nb.hyps[0].scores) for nb in lists if nb.hyps)
        empty = [nb for nb in lists if not nb.hyps]  # the recogniser heard no word at all (noisy audio)
        assert len(empty) < 0.05 * len(lists) and all(nb.tags["decoder_1best"] == "" for nb in empty)
        refs = {nb.ref for nb in lists}
        assert refs <= set((REPO / "data" / "text" / f"bible.{split}.txt").read_text().splitlines()) | set(
            (REPO / "data" / "text" / f"tech.{split}.txt").read_text().splitlines()
        )


@pytest.mark.parametrize("name", ["demo.yaml", "asr.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    from recipes.config import load_config

    cfg = load_config(REPO / "recipes" / "configs" / name, SCHEMA)
    names = [s.name for s in build_stages(cfg)]
    assert names[-3:] == ["profile", "evaluate", "report"]
    assert ("audio" in names) == cfg["audio"]["enabled"]


@pytest.mark.slow
def test_interrupted_recipe_resumes_to_the_uninterrupted_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, finding 12: a recipe interrupted inside ``build_lms`` (between two KenLMs, then inside the
    neural LM's training) and inside ``tune``, and resumed each time, ends with the same ``tuning.json`` and
    ``profile.json`` bytes as an uninterrupted run (and the same rescored n-best lists, which carry every LM's
    scores: the tiny LMs get weight 0 in places, where tuning could not show them differ), and its stamps
    then say every stage is up to date."""
    import shutil

    import torch

    import fusion.ngram
    import fusion.tuning.walk as walk
    import recipes.asr.tune_stages as tune_stages

    f = _tiny_inputs(tmp_path)
    over = {"lms": {"neural": {"enabled": True, "emb": 16, "hidden": 16, "epochs": 2, "max_steps": 12,
                               "batch_tokens": 512}}, "tune": {"cv_folds": 2}}  # fmt: skip
    monkeypatch.setattr(tune_stages, "now_iso", lambda: "2000-01-01T00:00:00+00:00")  # the profile's date
    upto = ["build_lms", "interpolate", "rescore", "tune", "profile"]  # evaluate and report do not feed them

    def outputs() -> list[bytes]:
        p = run_recipe(f, overrides=over, only=upto, progress=False)["paths"]
        return [p[k].read_bytes() for k in ("tune", "profile", "dev_rescored", "test_rescored")]

    straight = outputs()
    shutil.rmtree(tmp_path / "work")

    def fail_on_call(obj: object, name: str, n: int, exc: type[BaseException]) -> None:
        real, calls = getattr(obj, name), {"n": 0}

        def wrapped(*a: object, **k: object) -> object:
            out = real(*a, **k)  # the call's work is done (an optimiser step applied, not yet counted) ...
            calls["n"] += 1
            if calls["n"] == n:  # ... when the interruption strikes
                raise exc(f"simulated interruption in {name}")
            return out

        monkeypatch.setattr(obj, name, wrapped)

    interruptions = [  # each: where it strikes; the run is resumed after it
        (fusion.ngram, "build_ngram", 2, KeyboardInterrupt),  # after the first domain's KenLM
        (torch.optim.AdamW, "step", 7, KeyboardInterrupt),  # inside a neural LM training step
        (walk, "cv_errors", 3, RuntimeError),  # inside the per-condition tuning (the walk's K-fold CV)
    ]
    for obj, name, n, exc in interruptions:
        real = getattr(obj, name)
        fail_on_call(obj, name, n, exc)
        with pytest.raises(exc, match="simulated"):
            outputs()
        monkeypatch.setattr(obj, name, real)
    assert outputs() == straight
    again = run_recipe(f, overrides=over, only=upto, progress=False)
    assert [r.status for r in again["reports"]] == ["skipped"] * len(upto)
