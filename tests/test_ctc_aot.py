"""The CTC kernels compiled ahead of time (decoders/ctc/_aot*.so, built by ``make setup``) give exactly what numba's
JIT gives on the same functions, and a process that decodes with them never imports numba.

The rest of the CTC tests run whichever kernels :func:`decoders.ctc.kernels.default_kind` picks (the extension when it
is built) against the plain reference; here both sets run side by side on the same inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from decoders.ctc import CTCDecoder, CTCOptions, kernels
from decoders.ctc.aot_spec import EXPORTS, SOURCES
from decoders.emissions import CHAR_LABELS, make_emission_set
from decoders.hypothesis import NBestList
from fusion.errors import LMFusionError
from fusion.ngram import KenLM

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not kernels.aot_available(), reason="the ahead-of-time CTC kernels are not built "
                       "(python -m decoders.ctc.build_aot; make setup builds them)"),
    pytest.mark.skipif(not kernels.jit_available(), reason="numba not installed"),
]
PIECES = ("<blank>", "\u2581the", "\u2581and", "\u2581of", "\u2581", "th", "e", "a", "n", "d", "o", "f", "s", "t", "h")


def _emissions(n: int, seed: int) -> list[np.ndarray]:
    refs = [s for s in (ROOT / "data" / "text" / "bible.test.txt").read_text().splitlines() if 0 < len(s) < 50][:n]
    return make_emission_set(refs, config="very_noisy", seed=seed)


def _decode(monkeypatch: pytest.MonkeyPatch, kind: str, labels: tuple[str, ...], lm: Path, ems: list[np.ndarray],
            **opts: object) -> tuple[str, list[NBestList]]:
    monkeypatch.setenv(kernels.ENV, kind)
    dec = CTCDecoder(labels, [KenLM(lm, name="lm")], {"lm": 0.6, "words": 1.2, "oov": -3.0},
                     options=CTCOptions(beam_width=8, nbest=4, **opts))  # type: ignore[arg-type]
    return dec.backend, [dec.decode(e) for e in ems]


def _same(a: list[NBestList], b: list[NBestList]) -> None:
    for x, y in zip(a, b, strict=True):
        assert [h.text for h in x.hyps] == [h.text for h in y.hyps]
        for p, q in zip(x.hyps, y.hyps, strict=True):
            assert p.scores == q.scores  # the same machine code paths: bit-identical
            assert p.tokens == q.tokens and p.timesteps == q.timesteps


@pytest.mark.parametrize("case", ["open", "lexicon", "float64", "pieces-lexicon"])
def test_aot_equals_jit(monkeypatch: pytest.MonkeyPatch, bible_arpa: Path, case: str) -> None:
    labels = PIECES if case.startswith("pieces") else CHAR_LABELS
    ems = _emissions(6, seed=3)
    if case.startswith("pieces"):  # emissions over the piece labels: columns of the character ones, renormalized
        cols = [0] + [1 + (i % (len(CHAR_LABELS) - 1)) for i in range(len(PIECES) - 1)]
        ems = [(e[:, cols] - np.logaddexp.reduce(e[:, cols], axis=1, keepdims=True)).astype(np.float32) for e in ems]
    if case == "float64":
        ems = [e.astype(np.float64) for e in ems]
    opts = {"lexicon_constrained": case != "open", "align": True}
    b_aot, aot = _decode(monkeypatch, "aot", labels, bible_arpa, ems, **opts)
    b_jit, jit = _decode(monkeypatch, "jit", labels, bible_arpa, ems, **opts)
    assert (b_aot, b_jit) == ("compiled-aot", "compiled-jit")
    assert any(h.text for r in aot for h in r.hyps)
    _same(aot, jit)


def test_every_kernel_has_a_variant_and_wrong_arrays_are_refused() -> None:
    assert {e.name for e in EXPORTS} == set(SOURCES)
    K = kernels.load("aot")
    arr = np.log(np.full((3, 4), 0.25))
    assert np.allclose(K.row_mass(arr), 1.0) and np.allclose(K.row_mass32(arr.astype(np.float32)), 1.0)
    with pytest.raises(LMFusionError, match="no compiled variant"):
        K.row_mass(arr.astype(np.int64))  # the extension would read it as float64 memory
    with pytest.raises(LMFusionError, match="no compiled variant"):
        K.row_mass(arr[:, ::2])  # not C-ordered


def test_backend_aot_is_said_and_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.ENV, "jit")
    assert CTCDecoder(CHAR_LABELS, options=CTCOptions(backend="aot")).backend == "compiled-aot"
    assert CTCDecoder(CHAR_LABELS).backend == "compiled-jit"
    monkeypatch.setattr(kernels, "aot_available", lambda: False)
    with pytest.raises(LMFusionError, match="not built"):
        CTCDecoder(CHAR_LABELS, options=CTCOptions(backend="aot"))


_CHILD = """
import json, sys
import numpy as np
from decoders.ctc import CTCDecoder
from decoders.emissions import CHAR_LABELS, make_emission_set
from fusion.ngram import KenLM
dec = CTCDecoder(CHAR_LABELS, [KenLM(sys.argv[1], name="lm")], {"lm": 0.5, "words": 1.0})
em = make_emission_set(["in the beginning"], seed=0)[0]
out = dec.decode(em)
print(json.dumps({"backend": dec.backend, "lm_backend": dec.lm_backend, "text": out.hyps[0].text,
                  "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules}))
"""


def test_a_process_decoding_with_the_extension_never_imports_numba(bible_arpa: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", kernels.ENV: "aot"}
    res = subprocess.run([sys.executable, "-c", _CHILD, str(bible_arpa)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["backend"] == "compiled-aot" and got["lm_backend"] == "compiled-ngram"
    assert got["text"]
    assert not got["numba"] and not got["llvmlite"]


@pytest.mark.parametrize("kind", ["aot", "jit"])
def test_the_lm_step_index_grows_without_changing_a_result(monkeypatch: pytest.MonkeyPatch, bible_arpa: Path,
                                                          kind: str) -> None:
    """The compiled search's (context, word, token) -> step map (decoders.ctc.hashmap) started at 16 slots: it is
    grown (rehashed) many times mid-utterance (STATUS_GROW_INDEX) and the n-best lists stay exactly the same."""
    from decoders.ctc import ngramfusion

    ems = _emissions(4, seed=5)
    _, want = _decode(monkeypatch, kind, CHAR_LABELS, bible_arpa, ems)
    real = ngramfusion.new_map
    monkeypatch.setattr(ngramfusion, "new_map", lambda width, keys: real(width, 1 if width == 4 else keys))
    monkeypatch.setenv(kernels.ENV, kind)
    dec = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.6, "words": 1.2, "oov": -3.0},
                     options=CTCOptions(beam_width=8, nbest=4))
    got = [dec.decode(e) for e in ems]
    sh = dec._shared
    assert sh is not None and sh.lm_ix is not None
    assert sh.lm_ix.shape[0] >= 64 and int(sh.ix_n[0]) <= sh.lm_ix.shape[0] * 3 // 5  # grown, never over-full
    _same(got, want)


def test_hash_maps_keep_every_key_through_growth() -> None:
    """put/get of the int64-array maps (JIT) and their growth (both kernel sets) against a Python dict."""
    from decoders.ctc import hashmap

    rng = np.random.default_rng(0)
    keys = rng.integers(-(2**62), 2**62, size=(3000, 3))
    keys[:1000, 1:] = 0  # many keys sharing two of three parts
    ref: dict[tuple[int, int, int], int] = {}
    tab = kernels.new_map(4, 16)
    n = 0
    K = kernels.load("jit")
    for i, (a, b, c) in enumerate(keys.tolist()):
        tab = kernels.map_room(K, tab, n, 1)
        n += hashmap.put3(tab, a, b, c, i)
        ref[(a, b, c)] = i
    assert n == len(ref)
    for kind in ("aot", "jit"):
        big = kernels.new_map(4, 2 * n)
        kernels.load(kind).rehash3(tab, big)
        assert all(hashmap.get3(big, a, b, c) == v for (a, b, c), v in ref.items())
        assert hashmap.get3(big, 1, 2, 3) == -1
    one = kernels.new_map(2, 100)
    for k in range(100):
        hashmap.put1(one, int(keys[k, 0]), k)
    assert [hashmap.get1(one, int(keys[k, 0])) for k in range(100)] == list(range(100))
