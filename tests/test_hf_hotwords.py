"""Hotwords in Hugging Face ``generate()`` through the weights contract: a HotwordScorer in FusionLogitsProcessor."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from decoders.hf_logits import FusionLogitsProcessor, fusion_generate
from fusion.biasing import HotwordScorer, label_tokenizer

LABELS = ["_", " ", *"abcdefghijklmnopqrstuvwxyz"]
EOS, BOS = len(LABELS), len(LABELS) + 1
V = len(LABELS) + 2
TOK = label_tokenizer(LABELS, " ")


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    """A one-layer GPT-2 trained for a moment to continue <s> with "kafe" (3 in 5) or "kafka" (2 in 5)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only contend
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=BOS,
                     eos_token_id=EOS, pad_token_id=EOS)
    m = GPT2LMHeadModel(cfg)
    rows = [[BOS, *TOK(w), EOS] for w in ["kafe"] * 3 + ["kafka"] * 2]
    L = max(map(len, rows))
    x = torch.tensor([r + [EOS] * (L - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows])
    labels = x.masked_fill(mask == 0, -100)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    try:
        for _ in range(150):
            opt.zero_grad()
            m(input_ids=x, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return m.eval()


def _generate(model, proc: FusionLogitsProcessor | None) -> str:  # type: ignore[no-untyped-def]
    kw = {"input_ids": torch.tensor([[BOS]]), "num_beams": 4, "max_new_tokens": 8, "do_sample": False,
          "pad_token_id": EOS, "eos_token_id": EOS, "output_scores": True, "return_dict_in_generate": True}
    with torch.no_grad():
        out = fusion_generate(model, proc, **kw) if proc is not None else model.generate(**kw)
    return "".join(LABELS[t] for t in out.sequences[0, 1:].tolist() if t < len(LABELS))


def _proc(hot: list[str], w: float) -> FusionLogitsProcessor:
    return FusionLogitsProcessor([HotwordScorer.from_hotwords(hot, TOK, V, eos_id=EOS)], {"hotwords": w},
                                 max_new_tokens=8)


def test_boosted_word_recovered_in_generate(model) -> None:  # type: ignore[no-untyped-def]
    assert _generate(model, None) == "kafe"
    assert _generate(model, _proc(["kafka"], 0.0)) == "kafe"  # weight 0: the component counts nothing
    assert _generate(model, _proc(["kafka"], 1.0)) == "kafka"


def test_empty_list_changes_nothing_in_generate(model) -> None:  # type: ignore[no-untyped-def]
    kw = {"input_ids": torch.tensor([[BOS]]), "num_beams": 4, "max_new_tokens": 8, "do_sample": False,
          "pad_token_id": EOS, "eos_token_id": EOS, "output_scores": True, "return_dict_in_generate": True,
          "num_return_sequences": 4}
    with torch.no_grad():
        plain = model.generate(**kw)
        biased = fusion_generate(model, _proc([], 3.0), **kw)
    assert torch.equal(plain.sequences, biased.sequences)
    torch.testing.assert_close(plain.sequences_scores, biased.sequences_scores)
