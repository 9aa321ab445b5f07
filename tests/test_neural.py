"""Built-in neural LMs: incremental == full-sequence, batched == unbatched, checkpoints and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion.errors import InputError, LMFusionError
from fusion.incremental import NeuralState
from fusion.lm import LanguageModel
from fusion.neural import NeuralLM, load_checkpoint
from fusion.nn_models import normalize_config
from fusion.reference import score_unit_by_unit

torch.set_num_threads(1)

CONFIGS = {
    "lstm": {"arch": "lstm", "emb": 32, "hidden": 48, "layers": 2, "dropout": 0.0},
    "transformer": {"arch": "transformer", "d_model": 32, "layers": 2, "heads": 4, "d_ff": 64, "dropout": 0.0,
                    "max_len": 128},
}
SENTS = [
    "in the beginning was the word",
    "how do i debug an extension",
    "a",
    "the list of arguments must all be passed in together and the lord said",
]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def lm(request, tiny_spm) -> NeuralLM:  # type: ignore[no-untyped-def]
    return NeuralLM.from_config(CONFIGS[request.param], tiny_spm, seed=1, name=request.param)


def test_units_and_vocab(lm: NeuralLM, tiny_spm) -> None:  # type: ignore[no-untyped-def]
    assert lm.units == tiny_spm.units
    assert lm.n_out == len(tiny_spm) + 1  # tokenizer has no eos piece: an extra output row
    assert lm.eos_id == len(tiny_spm)
    assert "<unk>" not in lm.vocab and "▁the" in lm.vocab
    assert lm.is_oov("zzz-not-a-piece") and not lm.is_oov("▁the")


def test_distribution_is_proper(lm: NeuralLM) -> None:
    st = lm.extend(lm.begin(), lm.tokenize("in the"))
    lp = lm.logprobs_tensor([lm.begin(), st]).double()
    assert lp.shape == (2, lm.n_out)
    np.testing.assert_allclose(torch.logsumexp(lp, dim=1).numpy(), 0.0, atol=1e-5)
    # logprobs_all: pieces only; with end() it covers the whole distribution
    la = lm.logprobs_all([st])
    assert la.shape == (1, len(lm.pieces))
    assert math.isclose(np.logaddexp(np.logaddexp.reduce(la[0]), lm.end(st)), 0.0, abs_tol=1e-5)


@pytest.mark.parametrize("text", SENTS)
def test_incremental_equals_full_sequence(lm: NeuralLM, text: str) -> None:
    units = lm.tokenize(text)
    full = lm.score_sentences([units])[0]
    lm.clear_cache()
    inc = score_unit_by_unit(lm, units)
    assert full.logprobs.shape == (len(units) + 1,)
    np.testing.assert_allclose(inc.logprobs, full.logprobs, atol=1e-5, rtol=0)
    assert np.all(np.isfinite(full.logprobs)) and np.all(full.logprobs < 0)


def test_full_batch_padding_does_not_leak(lm: NeuralLM) -> None:
    tok = [lm.tokenize(s) for s in SENTS]
    together = lm.score_sentences(tok)
    for units, sc in zip(tok, together, strict=True):
        alone = lm.score_sentences([units])[0]
        np.testing.assert_allclose(sc.logprobs, alone.logprobs, atol=1e-5)


def test_batched_equals_unbatched_and_one_forward(lm: NeuralLM) -> None:
    rng = np.random.default_rng(0)
    vocab = sorted(lm.vocab)  # type: ignore[arg-type]
    lm.clear_cache()
    # states of different lengths, materialised
    states = [lm.begin()]
    for n in (1, 3, 7, 2):
        st = lm.begin()
        for u in rng.choice(vocab, n):
            _, st = lm.score(st, str(u))
        states.append(st)
    cands = [str(u) for u in rng.choice(vocab, 6)] + ["not-a-piece"]
    lp, nxt = lm.score_batch(states, cands)
    assert lp.shape == (len(states), len(cands))
    for b, st in enumerate(states):
        for k, c in enumerate(cands):
            one, ns = lm.score(st, c)
            assert abs(one - lp[b, k]) < 1e-6
            assert ns == nxt[b][k] and hash(ns) == hash(nxt[b][k])
    # the B x K next states are materialised by ONE batched forward on the next call
    flat = [s for row in nxt for s in row]
    before = lm.forward_calls
    lp2, _ = lm.score_batch(flat, cands[:3])
    assert lm.forward_calls - before == 1
    # and they equal scoring each of them from scratch (cold cache)
    lm.clear_cache()
    for i in (0, 5, len(flat) - 1):
        ref = lm.score_sentences([[lm.pieces[j] for j in flat[i].ids] + [cands[0]]], eos=False)[0]  # type: ignore[attr-defined]
        assert abs(ref.logprobs[-1] - lp2[i, 0]) < 1e-5


def test_score_pairs_and_end_batch(lm: NeuralLM) -> None:
    s1 = lm.extend(lm.begin(), ["▁the"])
    s2 = lm.begin()
    lp, nxt = lm.score_pairs([s1, s2], ["▁lord", "▁in"])
    assert abs(lp[0] - lm.score(s1, "▁lord")[0]) < 1e-6
    assert abs(lp[1] - lm.score(s2, "▁in")[0]) < 1e-6
    assert nxt[0] == lm.extend(s1, ["▁lord"])
    e = lm.end_batch([s1, s2])
    assert abs(e[0] - lm.end(s1)) < 1e-6 and abs(e[1] - lm.end(s2)) < 1e-6


def test_cache_eviction_never_changes_scores(tiny_spm) -> None:  # type: ignore[no-untyped-def]
    lm = NeuralLM.from_config(CONFIGS["transformer"], tiny_spm, seed=3, cache_bytes=1)  # evicts all but one
    units = lm.tokenize(SENTS[3])
    ref = lm.score_sentences([units])[0].logprobs
    inc = score_unit_by_unit(lm, units).logprobs
    np.testing.assert_allclose(inc, ref, atol=1e-5)
    assert lm.cache_info["entries"] == 1


def test_states_are_immutable_and_hashable(lm: NeuralLM) -> None:
    a = lm.extend(lm.begin(), ["▁the", "▁lord"])
    b = lm.extend(lm.extend(lm.begin(), ["▁the"]), ["▁lord"])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != lm.begin()
    with pytest.raises(AttributeError):
        a.ids = ()  # type: ignore[misc]
    with pytest.raises(LMFusionError, match="not a state"):
        lm.score(("foreign",), "▁the")


def test_dtype_option(tiny_spm) -> None:  # type: ignore[no-untyped-def]
    a = NeuralLM.from_config(CONFIGS["lstm"], tiny_spm, seed=2)
    b = NeuralLM.from_config(CONFIGS["lstm"], tiny_spm, seed=2, dtype=torch.float64)
    assert b.dtype == torch.float64
    units = a.tokenize(SENTS[0])
    np.testing.assert_allclose(a.score_sentence(units).logprobs, b.score_sentence(units).logprobs, atol=1e-4)
    np.testing.assert_allclose(score_unit_by_unit(b, units).logprobs,
                               b.score_sentence(units).logprobs, atol=1e-10)


def test_seed_determinism(tiny_spm) -> None:  # type: ignore[no-untyped-def]
    a = NeuralLM.from_config(CONFIGS["transformer"], tiny_spm, seed=5)
    b = NeuralLM.from_config(CONFIGS["transformer"], tiny_spm, seed=5)
    c = NeuralLM.from_config(CONFIGS["transformer"], tiny_spm, seed=6)
    u = a.tokenize(SENTS[1])
    assert np.array_equal(a.score_sentence(u).logprobs, b.score_sentence(u).logprobs)
    assert not np.allclose(a.score_sentence(u).logprobs, c.score_sentence(u).logprobs)


def test_save_load_roundtrip(lm: NeuralLM, tmp_path: Path) -> None:
    d = lm.save(tmp_path / "ckpt", meta={"note": "test"})
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["lmfusion-lm.json", "model.safetensors", lm.tokenizer.path.name])
    back = load_checkpoint(d, name="back")
    assert back.name == "back" and back.units == lm.units and back.meta == {"note": "test"}
    u = lm.tokenize(SENTS[0])
    np.testing.assert_array_equal(back.score_sentence(u).logprobs, lm.score_sentence(u).logprobs)
    # saving again over an existing checkpoint replaces it
    lm.save(d)
    assert load_checkpoint(d).meta == lm.meta
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generic_loader_opens_checkpoint(lm: NeuralLM, tmp_path: Path) -> None:
    from fusion.loading import load_lm as generic

    d = lm.save(tmp_path / "c")
    m = generic(f"mine={d}")
    assert isinstance(m, NeuralLM) and isinstance(m, LanguageModel) and m.name == "mine"


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture()
def ckpt(tiny_spm, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return NeuralLM.from_config(CONFIGS["lstm"], tiny_spm).save(tmp_path / "ck")


def _edit_config(d: Path, **changes) -> None:  # type: ignore[no-untyped-def]
    p = d / "lmfusion-lm.json"
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        node = cfg
        *head, last = k.split("__")
        for h in head:
            node = node[h]
        node[last] = v
    p.write_text(json.dumps(cfg))


def test_config_not_matching_weights(ckpt: Path) -> None:
    _edit_config(ckpt, model__hidden=64)
    with pytest.raises(InputError, match=r"model.safetensors.*do not match the config.*hidden=64"):
        load_checkpoint(ckpt)


def test_config_layers_not_matching_weights(ckpt: Path) -> None:
    _edit_config(ckpt, model__layers=3)
    with pytest.raises(InputError, match="missing tensors"):
        load_checkpoint(ckpt)


def test_unknown_tokenizer_type(ckpt: Path) -> None:
    _edit_config(ckpt, tokenizer__type="wordpiece")
    with pytest.raises(InputError, match=r"field 'tokenizer.type': unknown tokenizer type 'wordpiece'"):
        load_checkpoint(ckpt)


def test_wrong_tokenizer_file(ckpt: Path, tmp_path: Path) -> None:
    from fusion.tokenizers import train_sentencepiece

    cfg = json.loads((ckpt / "lmfusion-lm.json").read_text())
    other = train_sentencepiece([Path(__file__).parents[1] / "data/text/tech.dev.txt"], tmp_path / "o/x",
                                vocab_size=120)
    (ckpt / cfg["tokenizer"]["file"]).write_bytes(other.path.read_bytes())
    with pytest.raises(InputError, match="not the one the model was trained with"):
        load_checkpoint(ckpt)


def test_missing_tokenizer_file(ckpt: Path) -> None:
    cfg = json.loads((ckpt / "lmfusion-lm.json").read_text())
    (ckpt / cfg["tokenizer"]["file"]).unlink()
    with pytest.raises(InputError, match="sentencepiece model not found"):
        load_checkpoint(ckpt)


def test_truncated_weights(ckpt: Path) -> None:
    w = ckpt / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"model.safetensors: truncated"):
        load_checkpoint(ckpt)
    w.write_bytes(data[:5])
    with pytest.raises(InputError, match="truncated"):
        load_checkpoint(ckpt)


def test_pickle_instead_of_safetensors(ckpt: Path) -> None:
    w = ckpt / "model.safetensors"
    torch.save({"x": torch.zeros(2)}, w)  # zip container holding a pickle
    with pytest.raises(InputError, match="never unpickles"):
        load_checkpoint(ckpt)
    import pickle

    w.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(InputError, match="pickle"):
        load_checkpoint(ckpt)


def test_truncated_or_bad_config(ckpt: Path) -> None:
    p = ckpt / "lmfusion-lm.json"
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"lmfusion-lm.json.*invalid JSON"):
        load_checkpoint(ckpt)
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="field 'format'"):
        load_checkpoint(ckpt)


def test_bad_model_config() -> None:
    with pytest.raises(LMFusionError, match="unknown architecture 'gru'"):
        normalize_config({"arch": "gru"})
    with pytest.raises(LMFusionError, match="field 'hiden'"):
        normalize_config({"arch": "lstm", "hiden": 3})
    with pytest.raises(LMFusionError, match="divisible"):
        normalize_config({"arch": "transformer", "d_model": 30, "heads": 4})
    with pytest.raises(LMFusionError, match="'layers'"):
        normalize_config({"arch": "lstm", "layers": 0})


def test_transformer_max_len_is_a_clear_error(tiny_spm) -> None:  # type: ignore[no-untyped-def]
    lm = NeuralLM.from_config({**CONFIGS["transformer"], "max_len": 8}, tiny_spm)
    with pytest.raises(LMFusionError, match="max_len 8"):
        lm.score_sentence(["▁the"] * 10)


def test_state_repr_and_len(lm: NeuralLM) -> None:
    s = lm.extend(lm.begin(), ["▁the", "▁lord"])
    assert isinstance(s, NeuralState) and len(s) == 2 and "len=2" in repr(s)
