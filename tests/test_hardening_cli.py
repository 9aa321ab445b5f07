"""Issue 13, commands: outputs never clobber inputs, unique LM names, damaged KenLM binaries, hostile
n-best values, streaming rescoring, leftover temporaries, umask."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis, read_nbest_jsonl, write_nbest_jsonl
from recipes.cli import main

REPO = Path(__file__).resolve().parents[1]


def _lists(n: int = 6) -> list[NBestList]:
    return [
        NBestList(f"u{i}", (ScoredHypothesis("in the beginning", {"am": -1.0 - i, "lm": -3.0}),
                            ScoredHypothesis("in the begin", {"am": -1.5, "lm": -4.0})), "in the beginning")
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture()
def nb(tmp_path: Path) -> Path:
    p = tmp_path / "nb.jsonl"
    write_nbest_jsonl(p, _lists())
    return p


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "recipes", "-q", *argv], capture_output=True, text=True, env=env,
                          cwd=REPO)  # fmt: skip


def test_build_lm_refuses_to_overwrite_its_training_text(tmp_path: Path, text_dir: Path) -> None:
    txt = tmp_path / "same.txt"
    shutil.copy(text_dir / "bible.dev.txt", txt)
    before = txt.read_bytes()
    assert main(["-q", "build-lm", "--text", str(txt), "-o", str(txt)]) == 2
    assert txt.read_bytes() == before
    assert main(["-q", "build-lm", "--text", str(txt), "-o", str(tmp_path)]) == 2  # a folder


def test_lm_names_must_be_unique_and_new(tmp_path: Path, bible_arpa: Path, nb: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(bible_arpa, tmp_path / "a" / "x.arpa")
    shutil.copy(bible_arpa, tmp_path / "b" / "x.arpa")
    heldout = str(REPO / "data" / "text" / "bible.dev.txt")
    two = [str(tmp_path / "a" / "x.arpa"), str(tmp_path / "b" / "x.arpa")]
    assert main(["-q", "mix", "--lm", *two, "--heldout", heldout]) == 2
    assert main(["-q", "ppl", "--lm", *two, "--text", heldout]) == 2
    assert "two LMs named 'x'" in capsys.readouterr().err
    # an LM named like the recogniser's own 'lm' column: refused, the column is kept
    out = tmp_path / "out.jsonl"
    assert main(["-q", "rescore", str(nb), "--lm", f"lm={bible_arpa}", "-o", str(out)]) == 2
    assert "already has a score component named 'lm'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["-q", "rescore", str(nb), "--lm", f"general={bible_arpa}", "-o", str(out)]) == 0
    # rescoring its own output again: the cache is used only when asked
    out2 = tmp_path / "out2.jsonl"
    assert main(["-q", "rescore", str(out), "--lm", f"general={bible_arpa}", "-o", str(out2)]) == 2
    assert main(["-q", "rescore", str(out), "--lm", f"general={bible_arpa}", "-o", str(out2), "--cached"]) == 0
    assert read_nbest_jsonl(out2) == read_nbest_jsonl(out)


def test_outputs_never_replace_inputs_or_folders(tmp_path: Path, nb: Path) -> None:
    before = nb.read_bytes()
    assert main(["-q", "rescore", str(nb), "-o", str(nb)]) == 2
    assert main(["-q", "rescore", str(nb), "-o", str(tmp_path)]) == 2
    assert main(["-q", "rescore", str(nb), "--weights", "am=1", "--onebest", str(nb)]) == 2
    assert main(["-q", "tune", "--dev", str(nb), "-o", str(tmp_path)]) == 2
    assert main(["-q", "tune", "--dev", str(nb), "-o", str(nb)]) == 2
    assert main(["-q", "tune", "--dev", str(nb), "--method", "optuna", "--trials", "0"]) == 2
    assert nb.read_bytes() == before


@pytest.mark.parametrize("flip", ["data", "header"])
def test_damaged_kenlm_binary_is_an_error_not_a_segfault(tmp_path: Path, text_dir: Path, nb: Path,
                                                         flip: str) -> None:  # fmt: skip
    from fusion.ngram import build_ngram, checksum_sidecar

    lm = build_ngram([text_dir / "bible.dev.txt"], tmp_path / "lm.bin", order=3, progress=False)
    data = bytearray(lm.read_bytes())
    at = len(data) // 2 if flip == "data" else 108
    data[at : at + 200] = bytes(b ^ 0x5A for b in data[at : at + 200])
    lm.write_bytes(bytes(data))
    if flip == "header":
        checksum_sidecar(lm).unlink()  # no checksum: the header checks alone must catch it
    for argv in (["ppl", "--lm", str(lm), "--text", str(text_dir / "bible.dev.txt")],
                 ["rescore", str(nb), "--lm", f"g={lm}"]):  # fmt: skip
        r = _run(*argv)
        assert r.returncode == 2, (r.returncode, r.stderr[-400:])
        assert "damaged" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "value", ["Infinity", "-Infinity", "1e400", "NaN", "-" + "9" * 400, "9" * 5000, "[" * 100_000]
)
def test_non_finite_and_huge_jsonl_values_are_located_errors(tmp_path: Path, value: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    p = tmp_path / "x.jsonl"
    good = json.dumps(_lists(1)[0].to_json())
    p.write_text(good + "\n" + '{"utt_id": "b", "hyps": [{"text": "a", "scores": {"am": ' + value + "}}]}\n")
    assert main(["-q", "rescore", str(p), "-o", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{p}:2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_tsv_infinite_score_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.tsv"
    p.write_text("utt_id\ttext\tam\nu1\ta b\t-inf\n")
    assert main(["-q", "rescore", str(p), "--format", "tsv"]) == 2
    assert "field 'am'" in capsys.readouterr().err


def test_utt_id_with_a_newline_cannot_inject_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"utt_id": "u1\nFAKE injected", "hyps": [{"text": "a", "scores": {"am": 0}}]}) + "\n")
    assert main(["-q", "rescore", str(p), "--weights", "am=1", "--onebest", str(tmp_path / "1b.txt")]) == 2
    assert "utt_id" in capsys.readouterr().err and not (tmp_path / "1b.txt").exists()


def test_weights_without_am_keep_the_acoustic_score(tmp_path: Path, nb: Path) -> None:
    # {"lm": 0.1}: am counts with weight 1 (it used to be dropped, so the LM alone picked the 1-best)
    lists = [NBestList("u", (ScoredHypothesis("good", {"am": -1.0, "lm": -5.0}),
                             ScoredHypothesis("bad", {"am": -9.0, "lm": -4.0})))]  # fmt: skip
    from decoders.nbest import apply_weights

    assert apply_weights(lists, {"lm": 0.1}) == ["good"]
    assert apply_weights(lists, {"am": 0.0, "lm": 0.1}) == ["bad"]


def test_stale_temporaries_are_removed_and_umask_is_respected(tmp_path: Path, nb: Path) -> None:
    out = tmp_path / "o.jsonl"
    stale = tmp_path / ".o.jsonl.999999999.abcd.tmp"  # left by a killed writer (no such pid)
    stale.write_text("half")
    old = os.umask(0o022)
    try:
        assert main(["-q", "rescore", str(nb), "-o", str(out)]) == 0
    finally:
        os.umask(old)
    assert not stale.exists()
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_disk_full_is_a_clear_error(tmp_path: Path, nb: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import errno

    def full(fd: int) -> None:  # the flush of the last block finds the disk full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    rc = main(["-q", "rescore", str(nb), "-o", str(tmp_path / "o.jsonl")])
    monkeypatch.undo()
    assert rc == 2 and "No space left" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["nb.jsonl"]


def test_streamed_rescore_matches_the_in_memory_one(tmp_path: Path, bible_arpa: Path) -> None:
    from decoders.nbest import rescore
    from fusion.ngram import KenLM

    lists = [NBestList(f"u{i}", nb.hyps, nb.ref) for i, nb in enumerate(_lists(1) * 50)]
    p = tmp_path / "in.jsonl"
    write_nbest_jsonl(p, lists)
    out = tmp_path / "out.jsonl"
    assert main(["-q", "rescore", str(p), "--lm", f"g={bible_arpa}", "-o", str(out), "--chunk-hyps", "7"]) == 0
    assert read_nbest_jsonl(out) == rescore(lists, {"g": KenLM(bible_arpa)})


def test_tune_says_which_component_it_leaves_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lists = _lists(8)
    hyps = (ScoredHypothesis("in the beginning", {"am": -1.0}),
            ScoredHypothesis("in the begin", {"am": -1.5, "lm": -4.0}))
    lacking = NBestList("u3", hyps, "in the beginning")
    lists[3] = lacking
    lists = [NBestList(nb.utt_id, tuple(h.with_scores(words=len(h.text.split())) for h in nb.hyps), nb.ref)
             for nb in lists]  # fmt: skip
    p = tmp_path / "dev.jsonl"
    write_nbest_jsonl(p, lists)
    assert main(["-q", "tune", "--dev", str(p), "--method", "grid", "--points", "3"]) == 0
    err = capsys.readouterr().err
    assert "component 'lm' is left out" in err and "'u3'" in err
