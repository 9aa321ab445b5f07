"""SRILM n-best files (three forms) and Kaldi binary ark/scp n-best tables."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from decoders.kaldi_ark import read_float_table, read_kaldi_ark_nbest
from decoders.nbest import read_kaldi_nbest
from decoders.srilm_nbest import BYTELOG_TO_LN, read_srilm_nbest, read_srilm_nbest_file
from fusion.errors import InputError


def bytelog(p: float) -> int:
    """SRILM's definition: log base 1.0001, divided by 1024, rounded."""
    return round(math.log(p) / math.log(1.0001) / 1024)


def test_bytelog_scale_matches_srilms_definition(tmp_path: Path) -> None:
    probs = [1e-5, 0.3, 1e-40]
    f = tmp_path / "u1"
    f.write_text("NBestList1.0\n" + "".join(f"({bytelog(p)}) w{i} x\n" for i, p in enumerate(probs)))
    nb = read_srilm_nbest_file(f)
    assert nb.utt_id == "u1" and [h.text for h in nb.hyps] == ["w0 x", "w1 x", "w2 x"]
    for h, p in zip(nb.hyps, probs, strict=True):
        assert set(h.scores) == {"am"}
        assert abs(h.scores["am"] - math.log(p)) <= BYTELOG_TO_LN / 2 + 1e-9  # rounding to one bytelog


def test_nbestlist2_sums_word_scores_and_skips_subword_units(tmp_path: Path) -> None:
    f = tmp_path / "sw_0042.nbest.gz"
    line = ("(-300) <s> ( st: 0 et: 10 g: -5 a: -20 ) the ( st: 10 et: 30 g: -40 a: -100 ) "
            "dh ( st: 10 et: 18 g: 0 a: -60 ) ah ( st: 18 et: 30 g: 0 a: -40 ) "
            "cat ( st: 30 et: 60 g: -80 a: -150 ) </s> ( st: 60 et: 61 g: -7 a: -1 )")
    with gzip.open(f, "wt") as g:
        g.write(f"NBestList2.0\n{line}\n")
    nb = read_srilm_nbest(f)[0]
    assert nb.utt_id == "sw_0042"
    (h,) = nb.hyps
    assert h.text == "the cat"
    assert h.scores["lm"] == pytest.approx((-5 - 40 - 80 - 7) * BYTELOG_TO_LN)
    assert h.scores["am"] == pytest.approx((-20 - 100 - 150 - 1) * BYTELOG_TO_LN)


def test_plain_form_is_log10_and_a_directory_reads_every_file(tmp_path: Path) -> None:
    d = tmp_path / "nbest"
    d.mkdir()
    (d / "b").write_text("-120.5 -14.25 3 the black cat\n-121 -13 2 the cat\n")
    (d / "a").write_text("-10 -2 0\n")
    nbs = read_srilm_nbest(d)
    assert [nb.utt_id for nb in nbs] == ["a", "b"]
    assert nbs[0].hyps[0].text == "" and nbs[0].hyps[0].scores["lm"] == pytest.approx(-2 * math.log(10))
    h = nbs[1].hyps[0]
    assert h.text == "the black cat"
    assert h.scores == pytest.approx({"am": -120.5 * math.log(10), "lm": -14.25 * math.log(10)})


@pytest.mark.parametrize(("content", "match"), [
    ("NBestList1.0\n-12 the cat\n", r"u9:2: expected '\(score\) words"),
    ("NBestList2.0\n(-3) the ( st: 0 et: 1 g: -1 )\n", r"u9:2: block of 'the' needs"),
    ("-1 -2 x the cat\n", r"u9:1: word count 'x'"),
    ("-1 nan 2 the cat\n", r"u9:1: LM score 'nan' is not finite"),
])
def test_srilm_errors_name_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "u9"
    f.write_text(content)
    with pytest.raises(InputError, match=match):
        read_srilm_nbest_file(f)


def write_float_ark(path: Path, table: dict[str, float]) -> None:
    """A Kaldi binary single-float table, as BaseFloatWriter writes it (key, '\\0B', size byte, float)."""
    with path.open("wb") as f:
        for k, v in table.items():
            f.write(k.encode() + b" \0B\4" + struct.pack("<f", v))


def test_kaldi_binary_ark_and_scp_equal_the_text_triplet(tmp_path: Path) -> None:
    import kaldiio

    words = {"<eps>": 0, "the": 1, "cat": 2, "sat": 3, "!SIL": 4}
    (tmp_path / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in words.items()))
    hyps = {"utt1-1": ["the", "cat"], "utt1-2": ["the", "cat", "sat"], "utt2-1": [], "utt1-3": ["cat"]}
    ac = {"utt1-1": 120.5, "utt1-2": 119.75, "utt2-1": 3.5, "utt1-3": 200.0}
    lm = {"utt1-1": 10.25, "utt1-2": 14.5, "utt2-1": 1.0, "utt1-3": 8.0}
    kaldiio.save_ark(str(tmp_path / "words.ark"), {k: np.array([words[w] for w in v], dtype=np.int32)
                                                   for k, v in hyps.items()}, scp=str(tmp_path / "words.scp"))
    write_float_ark(tmp_path / "ac.ark", ac)
    (tmp_path / "lm.txt.ark").write_text("".join(f"{k} {v}\n" for k, v in lm.items()))  # ark,t: form
    # the text triplet with the same content
    (tmp_path / "text").write_text("".join(f"{k} {' '.join(v)}\n" for k, v in hyps.items()))
    (tmp_path / "ac_cost").write_text("".join(f"{k} {v}\n" for k, v in ac.items()))
    (tmp_path / "lm_cost").write_text("".join(f"{k} {v}\n" for k, v in lm.items()))
    want = read_kaldi_nbest(tmp_path / "text", tmp_path / "ac_cost", tmp_path / "lm_cost")
    for w in ("words.ark", "words.scp"):
        got = read_kaldi_ark_nbest(tmp_path / w, tmp_path / "ac.ark", tmp_path / "lm.txt.ark",
                                   words_txt=tmp_path / "words.txt")
        assert got == want
    assert read_float_table(tmp_path / "ac.ark") == ac  # exact in float32
    with pytest.raises(InputError, match=r"word id 2 of .utt1-1. is not in .*small\.txt"):
        (tmp_path / "small.txt").write_text("the 1\n")
        read_kaldi_ark_nbest(tmp_path / "words.ark", tmp_path / "ac.ark", tmp_path / "lm.txt.ark",
                             words_txt=tmp_path / "small.txt")
    write_float_ark(tmp_path / "ac_extra.ark", {**ac, "utt3-1": 1.0})
    with pytest.raises(InputError, match="cost but no word ids"):
        read_kaldi_ark_nbest(tmp_path / "words.ark", tmp_path / "ac_extra.ark", tmp_path / "lm.txt.ark",
                             words_txt=tmp_path / "words.txt")


def test_rescore_cli_reads_srilm_and_kaldi_ark(tmp_path: Path, tiny_arpa: Path) -> None:
    """``lmfusion rescore --format srilm|kaldi-ark`` as a user runs it."""
    import json
    import subprocess
    import sys

    import kaldiio

    d = tmp_path / "nbest"
    d.mkdir()
    (d / "u1.gz").write_bytes(gzip.compress(b"-12.5 -3.25 2 the cat\n-13 -4 1 cat\n"))
    (d / "u2").write_text("NBestList1.0\n(-100) a cat\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "recipes", "-q", "rescore"]
    r = subprocess.run([*cmd, str(d), "--format", "srilm", "--lm", f"tiny={tiny_arpa}", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["utt_id"] for x in rows] == ["u1", "u2"]
    first = rows[0]["hyps"][0]
    assert first["text"] == "the cat" and first["scores"]["am"] == pytest.approx(-12.5 * math.log(10))
    assert "tiny" in first["scores"]

    (tmp_path / "words.txt").write_text("<eps> 0\nthe 1\ncat 2\n")
    kaldiio.save_ark(str(tmp_path / "w.ark"), {"u1-1": np.array([1, 2], dtype=np.int32)})
    write_float_ark(tmp_path / "ac.ark", {"u1-1": 5.0})
    write_float_ark(tmp_path / "lm.ark", {"u1-1": 2.0})
    out2 = tmp_path / "out2.jsonl"
    r = subprocess.run([*cmd, str(tmp_path / "w.ark"), str(tmp_path / "ac.ark"), str(tmp_path / "lm.ark"),
                        "--format", "kaldi-ark", "--words-txt", str(tmp_path / "words.txt"),
                        "--lm", f"tiny={tiny_arpa}", "-o", str(out2)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    hyp = json.loads(out2.read_text())["hyps"][0]
    assert hyp["text"] == "the cat" and hyp["scores"]["am"] == -5.0 and hyp["scores"]["lm"] == -2.0
