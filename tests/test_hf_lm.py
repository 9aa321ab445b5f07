"""The Hugging Face adapter, offline: tiny causal LMs built from configs with random weights and tokenizers
trained here on the bundled text (no hub access)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from fusion.errors import InputError, LMFusionError  # noqa: E402
from fusion.hf_lm import HFCausalLM, mark_hf_dir  # noqa: E402
from fusion.reference import SlowWordLevelLM, score_unit_by_unit  # noqa: E402
from fusion.units import WordLevelLM  # noqa: E402

torch.set_num_threads(1)
TEXT = Path(__file__).resolve().parents[1] / "data" / "text"
SENTS = ["in the beginning was the word", "how do i debug an extension", "a"]


def _bpe_tokenizer(kind: str, vocab: int = 300):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>" if kind == "spm" else None))
    if kind == "byte":
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>"]
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        specials = ["<unk>", "<s>", "</s>"]
        alphabet = []
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet)
    tk.train([str(TEXT / "bible.train.txt"), str(TEXT / "tech.train.txt")], tr)
    if kind == "byte":
        return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", bos_token="<s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def gpt2() -> HFCausalLM:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _bpe_tokenizer("byte")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return HFCausalLM(GPT2LMHeadModel(cfg), tok, name="gpt2")


@pytest.fixture(scope="module")
def llama() -> HFCausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _bpe_tokenizer("spm")
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
    return HFCausalLM(LlamaForCausalLM(cfg), tok, name="llama")


@pytest.fixture(params=["gpt2", "llama"])
def lm(request) -> HFCausalLM:  # type: ignore[no-untyped-def]
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def test_units_identity_and_vocab(lm: HFCausalLM) -> None:
    assert lm.units.kind == "token" and lm.units.tokenizer.startswith("hf@")  # type: ignore[union-attr]
    assert lm.n_out >= len(lm.tokenizer)
    assert lm.tokenizer.eos_token not in lm.vocab  # type: ignore[operator]
    lp = lm.logprobs_tensor([lm.begin()]).double()
    assert float(torch.logsumexp(lp[0], 0)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("text", SENTS)
def test_incremental_equals_full(lm: HFCausalLM, text: str) -> None:
    u = lm.tokenize(text)
    full = lm.score_sentences([u])[0].logprobs
    lm.clear_cache()
    inc = score_unit_by_unit(lm, u).logprobs
    np.testing.assert_allclose(inc, full, atol=1e-5, rtol=0)
    assert full.shape == (len(u) + 1,)


def test_full_batch_padding_does_not_leak(lm: HFCausalLM) -> None:
    toks = [lm.tokenize(s) for s in SENTS]
    for u, sc in zip(toks, lm.score_sentences(toks), strict=True):
        np.testing.assert_allclose(sc.logprobs, lm.score_sentences([u])[0].logprobs, atol=1e-5)


def test_batched_equals_unbatched(lm: HFCausalLM) -> None:
    lm.clear_cache()
    states = [lm.begin(), lm.extend(lm.begin(), lm.tokenize("the lord")),
              lm.extend(lm.begin(), lm.tokenize("import the module and then"))]
    cands = sorted(lm.vocab)[10:18]  # type: ignore[arg-type]
    lp, nxt = lm.score_batch(states, cands)
    for b, st in enumerate(states):
        for k, c in enumerate(cands):
            one, ns = lm.score(st, c)
            assert one == pytest.approx(lp[b, k], abs=1e-6) and ns == nxt[b][k]
    flat = [s for row in nxt for s in row]
    before = lm.forward_calls
    lp2 = lm.end_batch(flat)
    assert lm.forward_calls - before == 1  # 24 states of 3 different lengths: one padded forward
    lm.clear_cache()
    for i in (0, 9, len(flat) - 1):
        ids = flat[i].ids  # type: ignore[attr-defined]
        ref = lm.score_sentences([[lm.pieces[j] for j in ids]])[0].logprobs[-1]
        assert ref == pytest.approx(lp2[i], abs=1e-5)


def test_word_view_over_hf(lm: HFCausalLM) -> None:
    fast, slow = WordLevelLM(lm), SlowWordLevelLM(lm, encode_word=lm.encode_word, word_start=lm.space_marker)
    st_f, st_s = fast.begin(), slow.begin()
    for w in ["and", "the"]:
        a, st_f = fast.score(st_f, w)
        b, st_s = slow.score(st_s, w)
        assert a == pytest.approx(b, abs=1e-5)
    words = ["lord", "function", "beginning"]
    lp, _ = fast.score_batch([st_f], words)
    for k, w in enumerate(words):
        assert lp[0, k] == pytest.approx(slow.score(st_s, w)[0], abs=1e-5)
    s = "and the lord said".split()
    np.testing.assert_allclose(fast.score_sentences([s])[0].logprobs, score_unit_by_unit(fast, s).logprobs,
                               atol=1e-5)


def test_save_pretrained_then_load_by_path(gpt2: HFCausalLM, tmp_path: Path) -> None:
    from fusion.loading import load_lm

    d = tmp_path / "tiny-gpt2"
    gpt2.model.save_pretrained(d)
    gpt2.tokenizer.save_pretrained(d)
    assert (d / "model.safetensors").is_file()
    mark_hf_dir(d, name="g")
    back = load_lm(d)
    assert isinstance(back, HFCausalLM) and back.name == "g" and back.units == gpt2.units
    u = gpt2.tokenize(SENTS[0])
    np.testing.assert_allclose(back.score_sentence(u).logprobs, gpt2.score_sentence(u).logprobs, atol=1e-6)


def test_bad_input(gpt2: HFCausalLM, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a local Hugging Face model directory"):
        HFCausalLM.from_pretrained(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no config\.json"):
        mark_hf_dir(tmp_path)
    d = tmp_path / "broken"
    gpt2.model.save_pretrained(d)
    gpt2.tokenizer.save_pretrained(d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(InputError, match=r"model\.safetensors: truncated"):
        HFCausalLM.from_pretrained(d)
    w.unlink()
    with pytest.raises(InputError, match="could not load the Hugging Face model"):
        HFCausalLM.from_pretrained(d)  # no safetensors weights (pickled .bin files are never used)


def test_tokenizer_without_eos_is_refused(gpt2: HFCausalLM) -> None:
    import copy

    tok = copy.deepcopy(gpt2.tokenizer)
    tok.eos_token = None
    with pytest.raises(LMFusionError, match="no eos token"):
        HFCausalLM(gpt2.model, tok)


def test_prefix_shared_sentence_scores_equal_reference(lm: HFCausalLM) -> None:
    from fusion.abilities import SentenceBatchScorer

    assert isinstance(lm, SentenceBatchScorer)
    texts = ["and the lord said", "and the lord saith", "and the lord", "and then", "import the module", "a",
             "and the lord said"]
    got = lm.sentence_logprobs(texts)
    ref = lm.sentence_logprobs_reference(texts)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    full = [s.total for s in lm.score_sentences([lm.tokenize(t) for t in texts])]
    np.testing.assert_allclose(got, full, atol=1e-4, rtol=0)
    assert got[0] == got[-1]  # a repeated text is scored once and shared
    # rows split when a trie outgrows max_row: same scores
    lm.max_row, old = 4, lm.max_row
    try:
        np.testing.assert_allclose(lm.sentence_logprobs(texts), ref, atol=1e-4, rtol=0)
    finally:
        lm.max_row = old
    no_eos = lm.sentence_logprobs(texts, eos=False)
    np.testing.assert_allclose(no_eos, lm.sentence_logprobs_reference(texts, eos=False), atol=1e-4, rtol=0)
    with pytest.raises(LMFusionError, match="bos=False"):
        lm.sentence_logprobs(texts, bos=False)


def test_byte_level_tokenize_is_concatenated_words(gpt2: HFCausalLM) -> None:
    words = "in the beginning".split()
    assert gpt2.tokenize(" ".join(words)) == [p for w in words for p in gpt2.encode_word(w)]
