"""The neural LM trainer and the CLI around it: learning, atomic checkpoints, exact resume, ppl/mix."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import pytest
import torch

from fusion.errors import InputError
from fusion.neural import load_checkpoint
from fusion.nnlm_train import TrainConfig, read_ids, train_nnlm
from fusion.reference import score_unit_by_unit
from recipes.cli import main

torch.set_num_threads(1)

TINY = {"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}


def _unigram_ppl(train: list[list[int]], dev: list[list[int]], n_sym: int, eos: int) -> float:
    """Add-one unigram over pieces + end-of-sentence: the baseline a trained LM must beat."""
    c = collections.Counter(i for s in train for i in [*s, eos])
    n = sum(c.values())
    lp = sum(math.log((c[i] + 1) / (n + n_sym)) for s in dev for i in [*s, eos])
    return math.exp(-lp / sum(len(s) + 1 for s in dev))


def test_trained_model_beats_unigram(tiny_nnlm: Path, tiny_spm, text_dir: Path) -> None:  # type: ignore[no-untyped-def]
    lm = load_checkpoint(tiny_nnlm)
    train = read_ids([str(text_dir / "bible.train.txt"), str(text_dir / "tech.train.txt")], tiny_spm, 256)
    dev_files = [str(text_dir / "bible.dev.txt"), str(text_dir / "tech.dev.txt")]
    dev = read_ids(dev_files, tiny_spm, 256)
    uni = _unigram_ppl(train, dev, lm.n_out, lm.eos_id)
    scores = lm.score_sentences([[lm.pieces[i] for i in s] for s in dev])
    ppl = math.exp(-sum(s.total for s in scores) / sum(s.n_predictions for s in scores))
    assert ppl < 0.8 * uni
    meta = lm.meta
    assert meta["steps"] > 0 and meta["dev_ppl"] == pytest.approx(ppl, rel=1e-4)  # logged dev ppl is this one
    state = json.loads((tiny_nnlm / "train-state.json").read_text())
    assert state["history"] and state["history"][-1]["dev_ppl"] == pytest.approx(ppl, rel=1e-4)


@pytest.fixture(scope="module")
def small_text(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("small")
    tr = (text_dir / "bible.train.txt").read_text().splitlines()[:240]
    dv = (text_dir / "bible.dev.txt").read_text().splitlines()[:40]
    (d / "train.txt").write_text("\n".join(tr) + "\n")
    (d / "dev.txt").write_text("\n".join(dv) + "\n")
    return str(d / "train.txt"), str(d / "dev.txt")


def _cfg(small_text: tuple[str, str], tiny_spm, out: Path, **kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = {"text": [small_text[0]], "dev": [small_text[1]], "spm": str(tiny_spm.path), "output": str(out),
            "model": TINY, "epochs": 2, "batch_tokens": 512, "lr": 1e-2, "eval_every": 4, "seed": 3,
            "progress": False}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_interrupted_run_resumes_to_identical_weights(small_text, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    straight = train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "a"))
    assert straight.steps >= 12

    def interrupt(rec: dict[str, float]) -> None:
        if rec["step"] == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "b"), on_eval=interrupt)
    # the interrupted checkpoint is complete and loadable, at the step reached
    mid = load_checkpoint(tmp_path / "b")
    assert mid.meta["steps"] == 8
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    resumed = train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "b"))
    assert resumed.resumed_from_step == 8 and resumed.steps == straight.steps
    a, b = load_checkpoint(tmp_path / "a").model.state_dict(), load_checkpoint(tmp_path / "b").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert resumed.dev_ppl == pytest.approx(straight.dev_ppl, rel=1e-6)
    # running again when finished does nothing more
    again = train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "b"))
    assert again.steps == straight.steps


def test_resume_with_other_settings_is_refused(small_text, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "c", max_steps=2))
    with pytest.raises(InputError, match="different settings"):
        train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "c", lr=1e-3))
    fresh = train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "c", lr=1e-3, max_steps=2, resume=False))
    assert fresh.resumed_from_step == 0


def test_corrupt_training_state(small_text, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "d", max_steps=2))
    (tmp_path / "d" / "train-state.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"train-state\.pt: unreadable training state"):
        train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "d", max_steps=3))


def test_transformer_trains(small_text, tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = {"arch": "transformer", "d_model": 32, "layers": 1, "heads": 2, "d_ff": 64, "dropout": 0.0,
             "max_len": 96}
    res = train_nnlm(_cfg(small_text, tiny_spm, tmp_path / "t", model=model, epochs=3, eval_every=0))
    ppls = [h["dev_ppl"] for h in res.history]
    assert len(ppls) == 3 and ppls[-1] < ppls[0]
    lm = load_checkpoint(tmp_path / "t")
    u = lm.tokenize("and the lord said")
    torch.testing.assert_close(torch.tensor(score_unit_by_unit(lm, u).logprobs),
                               torch.tensor(lm.score_sentence(u).logprobs), atol=1e-5, rtol=0)


def test_empty_training_text(tiny_spm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "e.txt").write_text("\n  \n")
    with pytest.raises(InputError, match="no sentences"):
        train_nnlm(TrainConfig(text=[str(tmp_path / "e.txt")], spm=str(tiny_spm.path), output=str(tmp_path / "o"),
                               progress=False))


def test_cli_train(small_text, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cli"
    rc = main(["-q", "train-nnlm", "--text", small_text[0], "--dev", small_text[1], "--spm", str(tmp_path / "n.model"),
               "--spm-vocab-size", "150", "-o", str(out), "--emb", "16", "--hidden", "24", "--epochs", "2",
               "--batch-tokens", "512", "--lr", "0.01", "--name", "nn"])
    assert rc == 0
    assert "dev ppl" in capsys.readouterr().out
    lm = load_checkpoint(out)
    assert lm.config["hidden"] == 24 and lm.name == "nn" and len(lm.tokenizer) <= 150
    rc = main(["-q", "ppl", "--lm", f"nn={out}", "--text", small_text[1], "--json"])
    assert rc == 0
    tok_report = json.loads(capsys.readouterr().out)
    assert tok_report[0]["name"] == "nn"
    assert tok_report[0]["ppl"] == pytest.approx(lm.meta["dev_ppl"], rel=1e-4)  # per piece, as the trainer logs


def test_cli_mix_kenlm_with_neural(tiny_nnlm: Path, bible_arpa: Path, text_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    held = tmp_path / "held.txt"
    held.write_text("\n".join((text_dir / "tech.dev.txt").read_text().splitlines()[:80]) + "\n")
    w = tmp_path / "w.json"
    rc = main(["-q", "mix", "--lm", f"ken={bible_arpa}", f"nn={tiny_nnlm}", "--heldout", str(held), "-o", str(w)])
    assert rc == 0
    est = json.loads(w.read_text())
    assert set(est["weights"]) == {"ken", "nn"} and min(est["weights"].values()) > 0.05
    assert est["ppl"]["mix"] < min(est["ppl"]["ken"], est["ppl"]["nn"])
    capsys.readouterr()
    rc = main(["-q", "ppl", "--lm", f"ken={bible_arpa}", f"nn={tiny_nnlm}", "--text", str(held),
               "--interpolation", str(w), "--json"])
    assert rc == 0
    rep = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rep["nn"]["n_predictions"] == rep["ken"]["n_predictions"]  # both scored per word
    assert rep["mix(ken,nn)"]["ppl"] < min(rep["ken"]["ppl"], rep["nn"]["ppl"])


def test_cli_reports_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "lmfusion-lm.json").write_text("{")
    (tmp_path / "t.txt").write_text("a b\n")
    assert main(["-q", "ppl", "--lm", str(d), "--text", str(tmp_path / "t.txt")]) == 2
    assert "lmfusion-lm.json" in capsys.readouterr().err
