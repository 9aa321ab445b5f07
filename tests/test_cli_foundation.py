"""`lmfusion build-lm`, `ppl` and `mix`, run as a user would (the installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LMFUSION = [sys.executable, "-m", "recipes"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LMFUSION, "-q", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_build_ppl_mix_end_to_end(text_dir: Path, tmp_path: Path) -> None:
    bible, tech = tmp_path / "bible.bin", tmp_path / "tech.arpa"
    for out, src in ((bible, "bible"), (tech, "tech")):
        r = run("build-lm", "--text", str(text_dir / f"{src}.train.txt"), "-o", str(out), "--order", "3")
        assert r.returncode == 0, r.stderr
        assert out.is_file()
    r = run("mix", "--lm", f"bible={bible}", f"tech={tech}", "--heldout", str(text_dir / "tech.dev.txt"),
            "-o", str(tmp_path / "w.json"))
    assert r.returncode == 0, r.stderr
    est = json.loads((tmp_path / "w.json").read_text())
    assert set(est["weights"]) == {"bible", "tech"} and est["weights"]["tech"] > est["weights"]["bible"]
    assert est["ppl"]["mix"] <= min(est["ppl"]["bible"], est["ppl"]["tech"])
    r = run("ppl", "--lm", f"bible={bible}", f"tech={tech}", "--text", str(text_dir / "tech.test.txt"),
            "--interpolation", str(tmp_path / "w.json"), "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"bible", "tech", "mix(bible,tech)"}
    assert rows["mix(bible,tech)"]["ppl"] < rows["bible"]["ppl"]
    assert rows["tech"]["n_predictions"] == rows["bible"]["n_predictions"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ppl", "--lm", "missing.arpa", "--text", "x.txt"], "missing.arpa: language model not found"),
        (["build-lm", "--text", "nope.txt", "-o", "out.arpa"], "nope.txt: training text not found"),
    ],
)
def test_errors_are_one_clear_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = subprocess.run([*LMFUSION, *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_mix_weights_must_sum_to_one_on_the_command_line(bible_arpa: Path, tech_arpa: Path, text_dir: Path) -> None:
    r = run("ppl", "--lm", str(bible_arpa), str(tech_arpa), "--text", str(text_dir / "tech.dev.txt"),
            "--interpolation", "0.5,0.7")
    assert r.returncode == 2 and "sum to 1" in r.stderr
