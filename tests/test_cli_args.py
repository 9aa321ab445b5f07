"""The one argument grammar of the ``lmfusion`` commands (recipes/cli_args.py)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from fusion.errors import InputError
from recipes.cli import build_parser
from recipes.cli_args import parse_numbers, parse_pairs, parse_ranges, read_interpolation, read_weights

REPO = Path(__file__).resolve().parents[1]


def test_one_pair_grammar_commas_or_words() -> None:
    assert parse_pairs("am=1,lm=0.5", "--weights") == parse_pairs(["am=1", "lm=0.5"], "--weights")
    assert parse_numbers(["am=1,lm=0.5", "words=-2"], "--weights") == {"am": 1.0, "lm": 0.5, "words": -2.0}
    assert parse_ranges("lm=0:30,words=-30:30", "--bounds") == {"lm": (0.0, 30.0), "words": (-30.0, 30.0)}
    for bad in (["lm"], ["=1"], ["lm="], ["lm=1", "lm=2"]):
        with pytest.raises(InputError):
            parse_pairs(bad, "--x")
    for bad_num in (["lm=nan"], ["lm=x"], ["lm=inf"]):
        with pytest.raises(InputError, match="finite number"):
            parse_numbers(bad_num, "--weights")
    with pytest.raises(InputError, match="LO:HI"):
        parse_ranges(["lm=3"], "--bounds")


def test_weights_is_fusion_weights_from_pairs_json_or_profile(tmp_path: Path) -> None:
    assert read_weights(None) is None
    assert read_weights(["am=1", "lm=0.3"]) == {"am": 1.0, "lm": 0.3}
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"weights": {"am": 1, "lm": 0.25}, "method": "mert"}))
    assert read_weights([str(tuned)]) == {"am": 1.0, "lm": 0.25}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": {"lm": "high"}}))
    with pytest.raises(InputError, match=r"weights\.lm"):
        read_weights(str(bad))
    from fusion.profile import ConditionWeights, FusionProfile

    FusionProfile(default=ConditionWeights({"am": 1.0, "lm": 0.5}), name="p").save(tmp_path / "p.json")
    prof = read_weights(str(tmp_path / "p.json"))
    assert isinstance(prof, FusionProfile) and prof.default.fusion["lm"] == 0.5


def test_interpolation_is_lambda_from_json_pairs_or_numbers(tmp_path: Path) -> None:
    assert read_interpolation(["0.3,0.7"]) == [0.3, 0.7]
    assert read_interpolation(["0.3", "0.7"]) == [0.3, 0.7]
    assert read_interpolation(["a=0.3", "b=0.7"]) == {"a": 0.3, "b": 0.7}
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"weights": {"a": 0.4, "b": 0.6}, "ppl": {}}))
    assert read_interpolation(str(mix)) == {"a": 0.4, "b": 0.6}
    with pytest.raises(InputError, match="--interpolation"):
        read_interpolation(["0.3", "x"])


class _Recorder:
    """A ``SubParsers`` that keeps the parser of every command."""

    def __init__(self) -> None:
        self.parsers: dict[str, argparse.ArgumentParser] = {}

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        self.parsers[name] = argparse.ArgumentParser(prog=name)
        return self.parsers[name]


def test_shared_flags_mean_the_same_in_every_command() -> None:
    import importlib
    import pkgutil

    import recipes.commands

    rec = _Recorder()
    for info in pkgutil.iter_modules(recipes.commands.__path__):
        importlib.import_module(f"recipes.commands.{info.name}").register(rec)
    seen: dict[str, dict[str, str]] = {}
    for name, p in rec.parsers.items():
        for a in p._actions:
            for flag in ("--lm", "--weights", "--interpolation", "--spm", "--output", "--overwrite", "--tag"):
                if flag in a.option_strings:
                    seen.setdefault(flag, {})[name] = (a.help or "").split(";")[0]
    assert {"ppl", "mix", "rescore"} <= set(seen["--lm"])
    assert "rescore" in seen["--weights"] and "ppl" not in seen["--weights"]
    assert {"ppl", "rescore"} <= set(seen["--interpolation"])
    for flag, helps in seen.items():
        if flag in ("--lm", "--weights", "--interpolation"):
            assert len(set(helps.values())) == 1, (flag, helps)  # one definition, one meaning


def test_lm_flag_is_repeatable() -> None:
    args = build_parser().parse_args(["ppl", "--lm", "a=x.arpa", "--lm", "b=y.arpa", "c=z.arpa", "--text", "t"])
    assert args.lm == ["a=x.arpa", "b=y.arpa", "c=z.arpa"]


def test_no_private_argparse_anywhere() -> None:
    needle = "_SubParsers" + "Action"
    for f in sorted([*(REPO / "recipes").rglob("*.py"), *(REPO / "tests").rglob("*.py")]):
        assert not re.search(needle, f.read_text()), f


def test_rescore_mix_takes_lambda_from_interpolation(tiny_arpa: Path, tmp_path: Path) -> None:
    import math

    from decoders.hypothesis import read_nbest_jsonl
    from recipes.cli import main

    nb = tmp_path / "n.jsonl"
    nb.write_text(json.dumps({"utt_id": "u", "ref": "the lord is my shepherd", "hyps": [
        {"text": "the lord is my shepherd", "scores": {"am": -3.0}},
        {"text": "the lord said unto moses", "scores": {"am": -2.0}}]}) + "\n")  # fmt: skip
    out = tmp_path / "r.jsonl"
    lms = ["--lm", f"a={tiny_arpa}", f"b={tiny_arpa}"]
    assert main(["-q", "rescore", str(nb), *lms, "--mix", "m", "--interpolation", "a=0.3", "b=0.7", "-o", str(out),
                 "--weights", "am=1", "a=0.5"]) == 0  # fmt: skip
    for h in read_nbest_jsonl(out)[0].hyps:
        s = h.scores
        assert s["m"] == pytest.approx(math.log(0.3 * math.exp(s["a"]) + 0.7 * math.exp(s["b"])), abs=1e-6)
    assert main(["-q", "rescore", str(nb), *lms, "--mix", "m"]) == 2  # --mix without --interpolation
    assert main(["-q", "rescore", str(nb), *lms, "--mix", "m", "--interpolation", "0.5,0.7"]) == 2  # not λ
    assert main(["-q", "rescore", str(nb), *lms, "--mix", "m", "--interpolation", "a=0.3", "c=0.7"]) == 2
    assert main(["-q", "rescore", str(nb), *lms, "--interpolation", "0.5,0.5"]) == 2
