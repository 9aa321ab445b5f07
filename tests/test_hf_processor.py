"""FusionLogitsProcessor findings (issue 16), one test each, and the token-unit view of HF tokenizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from decoders.hf_logits import FusionLogitsProcessor
from fusion.scorers import OpenWordLMScorer, TokenLMScorer, WordBonus, WordLMScorer, units_from_pieces
from fusion.token_units import count_words, token_units_from_tokenizer, word_text


@pytest.fixture(scope="module")
def units(tiny_spm):  # type: ignore[no-untyped-def]
    """spm pieces (unk -> unseen), then </s>, then a timestamp-like special the LM cannot see."""
    return [*units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()]), None, None]


@pytest.fixture(scope="module")
def nnlm(tiny_spm):  # type: ignore[no-untyped-def]
    from fusion.neural import NeuralLM

    return NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}, tiny_spm,
                                seed=5)


@pytest.fixture(scope="module")
def kenlm(bible_arpa):  # type: ignore[no-untyped-def]
    from fusion.ngram import KenLM

    return KenLM(bible_arpa, name="ngram")


def ids_of(tiny_spm, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [tiny_spm.piece_to_id[p] for p in tiny_spm.encode(text)]


def test_new_prompt_one_token_longer_starts_a_new_run(units, nnlm, tiny_spm) -> None:
    """Decoder-only: the second prompt is exactly one token longer than the first run's last input."""
    V, eos = len(units), len(units) - 2
    proc = FusionLogitsProcessor([TokenLMScorer(nnlm, units, eos, name="nnlm")], {"nnlm": 1.0}, record=True)
    a = ids_of(tiny_spm, "in the beginning god created")
    b = ids_of(tiny_spm, "the module defines the following functions")
    a = a[: len(b) - 2]  # first run: prompt a, then one generated token: last input len(b) - 1
    zeros = torch.zeros(1, V)
    proc(torch.tensor([a]), zeros)
    proc(torch.tensor([[*a, 7]]), zeros)
    assert len(b) == len(a) + 2
    out = proc(torch.tensor([b]), zeros)  # one token longer than the last input, but another prompt
    fresh = FusionLogitsProcessor([TokenLMScorer(nnlm, units, eos, name="nnlm")], {"nnlm": 1.0})
    torch.testing.assert_close(out, fresh(torch.tensor([b]), zeros))
    assert proc.history[-1][0] == [()] and proc.prompt_len == len(b) and proc.runs == 2


def test_unseen_ids_are_not_free(units, nnlm, kenlm) -> None:
    V, eos, stamp = len(units), len(units) - 2, len(units) - 1
    for sc in (TokenLMScorer(nnlm, units, eos, name="nnlm"), WordLMScorer(kenlm, units, eos, name="nnlm")):
        expect = -math.log(len(sc.lm.vocab) + 1)  # type: ignore[arg-type]
        assert sc.unscored == pytest.approx(expect) and expect < -5
        proc = FusionLogitsProcessor([sc], {"nnlm": 0.5}, pre_beam=None)
        out = proc(torch.tensor([[V - 1]]), torch.zeros(1, V))
        assert float(out[0, stamp]) == pytest.approx(0.5 * expect)
    priced = TokenLMScorer(nnlm, units, eos, unscored=-3.0)
    row, _ = priced.score([()], [priced.init_state()], None)
    assert row[0, stamp] == -3.0 and row[0, 0] == -3.0  # the timestamp and <unk>


def walk(scorer, units, seq):  # type: ignore[no-untyped-def]
    st, total = scorer.init_state(), 0.0
    for t in seq:
        row, ctx = scorer.score([()], [st], None)
        total += float(row[0, t])
        st = scorer.select_state(ctx, [0], [t])[0]
    return total, st


def test_one_definition_of_a_word(kenlm) -> None:
    """A lone '▁' is not a word: word bonus, word LM and count_words agree."""
    units = ["▁", "▁the", "7", "▁earth", "th", None, "</s>"]
    eos = 6
    bonus = WordBonus(units, eos)
    word_lm = WordLMScorer(kenlm, units, eos, unscored=0.0)
    cases = {(0, 2): ["7"], (1, 0, 0, 0): ["the"], (1, 3, 4, 0, 0): ["the", "earthth"], (2, 0, 1): ["7", "the"]}
    for seq, words in cases.items():
        got, _ = walk(bonus, units, [*seq, eos])
        assert got == count_words([units[i] for i in seq]) == len(words)
        lm_total, _ = walk(word_lm, units, [*seq, eos])
        assert lm_total == pytest.approx(kenlm.score_sentence(words).total, abs=1e-6)


def byte_bpe_tokenizer(tmp_path):  # type: ignore[no-untyped-def]
    """A GPT-2-style byte-level BPE tokenizer trained in-test, with Whisper-like timestamp specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the cat sat on the mat", "a black coffee in the morning"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|0.00|>", "<|0.02|>"]})
    return fast


def test_byte_level_bpe_units_decode_to_utf8(tmp_path, kenlm) -> None:
    tok = byte_bpe_tokenizer(tmp_path)
    units = token_units_from_tokenizer(tok)
    assert len(units) == len(tok)
    for special in ("<|endoftext|>", "<|0.00|>", "<|0.02|>"):
        assert units[tok.convert_tokens_to_ids(special)] is None
    ids = tok.encode("the café noir")
    pieces = [units[i] for i in ids]
    assert any(p is not None and "Ã" in tok.convert_ids_to_tokens(i) for i, p in zip(ids, pieces, strict=True))
    assert all(p is not None and "Ã" not in p and "Ġ" not in p for p in pieces)
    text = word_text("".join(p for p in pieces if p is not None)).replace("▁", " ")
    assert text == "the café noir" and count_words(pieces) == 3
    # the word LM scores the words 'the', 'café', 'noir' (never the byte string 'cafÃ©')
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    total, _ = walk(WordLMScorer(kenlm, units, eos), units, [*ids, eos])
    assert total == pytest.approx(kenlm.score_sentence(["the", "café", "noir"]).total, abs=1e-6)


def test_sentencepiece_tokenizers_view(tiny_spm) -> None:
    """Llama-, T5- and Marian-style HF tokenizers (a sentencepiece unigram behind ``Metaspace``) keep their
    pieces; their specials are None. Built in-test from the tiny sentencepiece model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    sp = tiny_spm.sp
    vocab = [(sp.IdToPiece(i), sp.GetScore(i)) for i in range(sp.GetPieceSize())]
    backend = Tokenizer(models.Unigram(vocab, unk_id=sp.unk_id()))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")
    units = token_units_from_tokenizer(tok)
    ids = tok.encode("the function returns", add_special_tokens=False)
    assert [units[i] for i in ids] == tiny_spm.encode("the function returns")
    for sid in tok.all_special_ids:
        assert units[sid] is None
    assert units[tok.pad_token_id] is None and tok.pad_token_id == len(units) - 1  # added after the pieces


def test_open_last_word_scored_at_length_limit(units, kenlm, tiny_spm) -> None:
    """Summed along a path cut at max_new_tokens, the fused word-LM scores are the whole sentence's."""
    V, eos = len(units), len(units) - 2
    path = ids_of(tiny_spm, "and god said let there be light")
    proc = FusionLogitsProcessor([WordLMScorer(kenlm, units, eos, name="ngram")], {"ngram": 1.0},
                                 pre_beam=None, max_new_tokens=len(path), record=True)
    start = V - 1
    total = 0.0
    for i in range(len(path)):
        out = proc(torch.tensor([[start, *path[:i]]]), torch.zeros(1, V))
        total += float(out[0, path[i]])
    words = tiny_spm.decode([tiny_spm.pieces[i] for i in path]).split()
    assert total == pytest.approx(kenlm.score_sentence(words).total, abs=1e-6)
    no_limit = FusionLogitsProcessor([WordLMScorer(kenlm, units, eos, name="ngram")], {"ngram": 1.0}, pre_beam=None)
    cut = sum(float(no_limit(torch.tensor([[start, *path[:i]]]), torch.zeros(1, V))[0, path[i]])
              for i in range(len(path)))
    assert cut > total + 1.0  # without the limit the last word and </s> were never scored


def test_sampling_has_no_hidden_top_k(units, kenlm) -> None:
    V, eos = len(units), len(units) - 2
    proc = FusionLogitsProcessor([WordLMScorer(kenlm, units, eos, name="ngram", partial=True)], {"ngram": 0.5})
    ids, scores = torch.tensor([[V - 1]]), torch.randn(1, V, generator=torch.Generator().manual_seed(0))
    top16 = set(torch.topk(scores[0], 16).indices.tolist())
    n_scored = 16 + (eos not in top16)  # beam search: a pre-beam of 16, and </s> always
    assert int(torch.isinf(proc(ids, scores)).sum()) == V - n_scored
    proc.configure(do_sample=True, top_k=0)
    assert proc.pre_beam is None and bool(torch.isfinite(proc(ids, scores)).all())
    proc.configure(do_sample=True, top_k=50)  # a top-k of 50 needs at least 50 scored tokens
    assert proc.pre_beam is None  # already unrestricted stays unrestricted
    assert FusionLogitsProcessor([], {}).configure(do_sample=True, top_k=50).pre_beam == 50
    full = np.asarray(proc(ids, scores))
    assert np.isfinite(full).all()


def test_end_of_sentence_is_always_a_candidate_of_partial_scorers(units, kenlm) -> None:
    """The pre-beam never hides </s>: a word LM can always end a hypothesis (with its real cost)."""
    V, eos = len(units), len(units) - 2
    sc = WordLMScorer(kenlm, units, eos, name="ngram", partial=True)
    proc = FusionLogitsProcessor([sc], {"ngram": 1.0}, pre_beam=4)
    scores = torch.zeros(1, V)
    scores[0, eos] = -50.0  # far below the top 4
    out = proc(torch.tensor([[V - 1]]), scores)
    want = float(kenlm.end(kenlm.begin()))  # an empty hypothesis: no open word, only ln P(</s> | <s>)
    assert float(out[0, eos]) == pytest.approx(-50.0 + want)
    assert int(torch.isfinite(out).sum()) == 5


def test_open_word_scorer_charges_at_once_and_telescopes_to_the_sentence(units, kenlm, tiny_spm) -> None:
    """OpenWordLMScorer: a word's first piece already costs; summed along a path, the scores are exactly
    the sentence's KenLM log-probability (as WordLMScorer's), also when cut at the length limit."""
    V, eos = len(units), len(units) - 2
    path = ids_of(tiny_spm, "and god said let there be light")
    words = "and god said let there be light".split()
    whole = kenlm.score_sentence(words).total
    for limit, seq in ((None, [*path, eos]), (len(path), path)):
        proc = FusionLogitsProcessor([OpenWordLMScorer(kenlm, units, eos, name="ngram")], {"ngram": 1.0},
                                     pre_beam=None, max_new_tokens=limit)
        steps = [float(proc(torch.tensor([[V - 1, *seq[:i]]]), torch.zeros(1, V))[0, seq[i]])
                 for i in range(len(seq))]
        assert sum(steps) == pytest.approx(whole, abs=1e-6)
        assert steps[0] == pytest.approx(float(kenlm.score(kenlm.begin(), "and")[0]), abs=1e-6)
    deferred = FusionLogitsProcessor([WordLMScorer(kenlm, units, eos, name="ngram")], {"ngram": 1.0}, pre_beam=None)
    first = float(deferred(torch.tensor([[V - 1]]), torch.zeros(1, V))[0, path[0]])
    assert first == 0.0  # the deferred scorer lets the first word through until the next one starts
