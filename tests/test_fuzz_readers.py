"""Property-based fuzzing of every reader (issue 13): hostile bytes give a clear ``LMFusionError``
subclass or a valid result, never another exception, never a hang.

Each reader gets mutations of a valid seed file (random edits, plus tokens known to break parsers:
NaN, 1e400, huge integers, deep nesting, YAML anchors, tabs, NUL and non-UTF-8 bytes) and, for the
JSON readers, arbitrary JSON values. Examples are bounded (``MAX`` each, a deadline per example) so the
suite stays well under a minute; ``LMFUSION_FUZZ_EXAMPLES`` raises the count for a longer run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import decoders.ctc
import decoders.nbest
import fusion.neural
import fusion.ngram
import fusion.profile
import recipes.asr.run
import recipes.cli_args
import recipes.commands.rescore
from fusion.errors import LMFusionError

# imported up front: an example's time is its reader's, not an import's
assert decoders.ctc and decoders.nbest and fusion.neural and fusion.ngram and fusion.profile
assert recipes.asr.run and recipes.commands.rescore and recipes.cli_args

MAX = int(os.environ.get("LMFUSION_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=MAX,
    deadline=10_000,  # ms per example: a hang or an exponential blow-up fails the test (CPU is shared)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    derandomize=True,  # the same cases on every run (CI); the seed corpus is in the strategies
    database=None,
)
NASTY = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "-0", "[" * 3000, "{" * 3000, "\t", "\x00",
    "\n", "\r", " ", "&a", "*a", "<<: *a", "\\data\\", "ngram 1=", "\\1-grams:", "\\end\\", "!SIL", "<UNK>",
    "#0", "\u202e", "\ufeff", "..", "../../x", "{domain.__class__}", "'", '"', ":", "-", "~", "null", "true",
]  # fmt: skip


def mutated(seed: str) -> st.SearchStrategy[bytes]:
    """Bytes of ``seed`` after a few random edits (insert/delete/replace of text, nasty tokens, bytes)."""
    edit = st.tuples(
        st.sampled_from(["insert", "delete", "replace", "bytes"]),
        st.floats(0, 1),
        st.one_of(st.sampled_from(NASTY), st.text(max_size=8)),
        st.binary(max_size=4),
    )

    def apply(edits: list[tuple[str, float, str, bytes]]) -> bytes:
        data = seed.encode("utf-8")
        for kind, pos, text, raw in edits:
            i = int(pos * len(data))
            if kind == "insert":
                data = data[:i] + text.encode("utf-8") + data[i:]
            elif kind == "delete":
                data = data[:i] + data[i + 1 + len(text) :]
            elif kind == "replace":
                data = data[:i] + text.encode("utf-8") + data[i + len(text) :]
            else:
                data = data[:i] + raw + data[i:]
        return data

    return st.lists(edit, min_size=1, max_size=6).map(apply)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def check(read: Callable[[Path], Any], data: bytes, name: str = "input") -> None:
    """``read`` on a file holding ``data``: a result or an LMFusionError, nothing else."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        try:
            read(p)
        except LMFusionError as e:
            msg = str(e)
            assert msg and "Traceback" not in msg
        # any other exception propagates and fails the property


# ----------------------------------------------------------------------------------------------
# Seeds (valid files)
# ----------------------------------------------------------------------------------------------
NBEST = (
    '{"utt_id": "u1", "ref": "a b", "tags": {"domain": "x", "snr": 20.0}, '
    '"hyps": [{"text": "a b", "scores": {"am": -1.5, "lm": -2}, "tokens": ["a"], "words": [["a", 0, 3]]}]}\n'
    '{"utt_id": "u2", "hyps": []}\n'
)
TSV = "utt_id\ttext\tref\tam\tlm\nu1\ta b\ta b\t-1.5\t-2\nu1\ta\ta b\t-3\t-1\nu2\tc\tc\t0\t0\n"
KALDI_TEXT = "u1-1 a b\nu1-2 a\nu2-1 c\n"
KALDI_COST = "u1-1 1.5\nu1-2 3\nu2-1 0\n"
ARPA = (
    "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0\t<unk>\t0\n-0.5\t<s>\t-0.3\n-0.5\t</s>\t0\n"
    "-0.7\ta\t-0.2\n\n\\2-grams:\n-0.2\t<s> a\n-0.3\ta </s>\n\n\\end\\\n"
)
PROFILE = json.dumps({
    "format": "lmfusion-profile", "version": 1, "name": "p",
    "default": {"fusion": {"am": 1.0, "lm": 0.5}},
    "buckets": [{"name": "clean", "center": 40.0}],
    "conditions": [{"fusion": {"am": 1, "lm": 0.2}, "domain": "a", "bucket": "clean",
                    "interpolation": {"x": 0.5, "y": 0.5}}],
    "provenance": {},
})  # fmt: skip
CKPT = json.dumps({
    "format": "lmfusion-neural-lm", "version": 1, "name": "n", "model": {"arch": "lstm", "emb": 4},
    "tokenizer": {"type": "sentencepiece", "file": "t.model"}, "n_out": 10, "eos_id": 2,
})  # fmt: skip


def _yaml_seed() -> str:
    return (Path(__file__).resolve().parents[1] / "recipes" / "configs" / "demo.yaml").read_text()


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------
def _read_jsonl(p: Path) -> None:
    from decoders.hypothesis import format_nbest_jsonl
    from decoders.nbest import read_nbest

    format_nbest_jsonl(read_nbest(p, "jsonl"))  # what was read can be written back (finite, valid)


@FUZZ
@given(mutated(NBEST))
def test_fuzz_nbest_jsonl(data: bytes) -> None:
    check(_read_jsonl, data)


@FUZZ
@given(st.lists(JSON_VALUES, min_size=1, max_size=3))
def test_fuzz_nbest_jsonl_values(values: list[Any]) -> None:
    lines = [json.dumps({"utt_id": "u", "hyps": [{"text": "a", "scores": v}], "tags": v}) for v in values[:1]]
    lines += [json.dumps(v) for v in values]
    check(_read_jsonl, "\n".join(lines).encode())


@FUZZ
@given(mutated(TSV))
def test_fuzz_nbest_tsv(data: bytes) -> None:
    from decoders.nbest import read_nbest

    check(lambda p: read_nbest(p, "tsv"), data)


@FUZZ
@given(st.sampled_from(["text", "ac", "lm"]), mutated(KALDI_TEXT), mutated(KALDI_COST))
def test_fuzz_nbest_kaldi(which: str, text: bytes, cost: bytes) -> None:
    from decoders.nbest import read_nbest

    def read(p: Path) -> None:
        files = {"text": KALDI_TEXT.encode(), "ac": KALDI_COST.encode(), "lm": KALDI_COST.encode()}
        files[which] = text if which == "text" else cost
        for k, v in files.items():
            (p.parent / k).write_bytes(v)
        read_nbest([p.parent / "text", p.parent / "ac", p.parent / "lm"], "kaldi")

    check(read, b"")


@FUZZ
@given(mutated(ARPA))
def test_fuzz_arpa(data: bytes) -> None:
    from fusion.ngram import KenLM, read_arpa_vocab

    def read(p: Path) -> None:
        read_arpa_vocab(p)
        lm = KenLM(p)
        assert np.isfinite(lm.sentence_logprobs(["a", "a a b"])).all()

    check(read, data, "m.arpa")


@FUZZ
@given(mutated(_yaml_seed()))
def test_fuzz_yaml_config(data: bytes) -> None:
    from recipes.asr.settings import load_recipe

    check(load_recipe, data, "c.yaml")


@FUZZ
@given(st.one_of(mutated(PROFILE), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_fuzz_profile(data: bytes) -> None:
    from fusion.profile import FusionProfile

    def read(p: Path) -> None:
        prof = FusionProfile.load(p)
        prof.select({"domain": "a", "snr": 40.0})
        prof.select({"snr": "clean"})

    check(read, data, "p.json")


@FUZZ
@given(st.one_of(mutated('{"weights": {"am": 1.0, "lm": 0.5, "words": -1}}'), mutated("am=1 lm=0.5 words=-1")))
def test_fuzz_weights(data: bytes) -> None:
    from fusion.weights import check_weights
    from recipes.cli_args import read_weights

    def read(p: Path) -> None:
        spec = str(p) if data.startswith(b"{") else data.decode("utf-8", errors="replace")
        if "\x00" in spec:
            spec = spec.replace("\x00", "")
        w = read_weights([spec] if data.startswith(b"{") else spec.split())
        if isinstance(w, dict):
            check_weights(w, ["lm", "words"])

    check(read, data, "w.json")


@FUZZ
@given(st.one_of(mutated(CKPT), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_fuzz_checkpoint_config(data: bytes) -> None:
    from fusion.neural import read_checkpoint_config

    def read(p: Path) -> None:
        p.rename(p.parent / "lmfusion-lm.json")
        read_checkpoint_config(p.parent)

    check(read, data, "cfg")


@FUZZ
@given(
    st.integers(0, 6),
    st.integers(0, 6),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=36),
    st.sampled_from(["float64", "float32", "float16", "int32", "object"]),
)
def test_fuzz_emissions(t: int, v: int, cells: list[float], dtype: str) -> None:
    from decoders.ctc import as_logprobs

    vals = (cells + [0.0] * (t * v))[: t * v]
    arr: Any = np.array(vals, dtype=np.float64).reshape(t, v)
    if dtype == "object":
        arr = arr.astype(object)
        if arr.size:
            arr.flat[0] = "x"
    else:
        with np.errstate(all="ignore"):
            arr = arr.astype(dtype)
    try:
        out = as_logprobs(arr, 4)
        assert out.shape[1] == 4 and not np.isnan(out).any()
    except LMFusionError:
        pass


@pytest.mark.parametrize("n", [MAX])
def test_fuzz_budget_is_bounded(n: int) -> None:
    assert 1 <= n <= 100_000
