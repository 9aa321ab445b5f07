"""Hugging Face hooks: our beam search over an HF model equals generate(); the cached LogitsProcessor
equals uncached full-prefix scoring; Marian-style and Whisper-style tiny random models, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from decoders.hf import FusionLogitsProcessor, HFStep, hf_beam_search
from decoders.seq2seq import BeamConfig
from fusion.errors import LMFusionError
from fusion.reference import FullPrefixLMScorer
from fusion.scorers import TokenLMScorer, WordLMScorer, units_from_pieces


@pytest.fixture(scope="module")
def units(tiny_spm):  # type: ignore[no-untyped-def]
    """Decoder vocabulary: spm pieces, then </s>, then <pad> (= decoder start)."""
    return [*units_from_pieces(tiny_spm.pieces, specials=[tiny_spm.sp.unk_id()]), None, None]


@pytest.fixture(scope="module")
def nnlm(tiny_spm):  # type: ignore[no-untyped-def]
    from fusion.neural import NeuralLM

    return NeuralLM.from_config({"arch": "lstm", "emb": 16, "hidden": 24, "layers": 1, "dropout": 0.0}, tiny_spm,
                                seed=2)


@pytest.fixture(scope="module")
def kenlm(bible_arpa):  # type: ignore[no-untyped-def]
    from fusion.ngram import KenLM

    return KenLM(bible_arpa, name="ngram")


def tiny_marian(V: int, seed: int, eos_bias: float, init_std: float = 0.02):  # type: ignore[no-untyped-def]
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(
        vocab_size=V, decoder_vocab_size=V, share_encoder_decoder_embeddings=False, d_model=32, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=V - 1, eos_token_id=V - 2,
        decoder_start_token_id=V - 1, forced_eos_token_id=None, init_std=init_std,
    )
    torch.manual_seed(seed)
    m = MarianMTModel(cfg).eval()
    with torch.no_grad():
        m.final_logits_bias[0, V - 2] = eos_bias
        m.final_logits_bias[0, V - 1] = -1e4  # never generate the pad/start symbol
        m.final_logits_bias[0, 0] = -1e4  # nor <unk>
    return m


def hf_tokens(row: torch.Tensor, V: int) -> tuple[int, ...]:
    return tuple(int(t) for t in row[1:].tolist() if t not in (V - 1, V - 2))


def test_zero_weight_beam_search_equals_hf_generate() -> None:
    V = 40
    seen_lengths: set[int] = set()
    cases = 0
    for seed, bias in [(0, 0.0), (3, 0.3)]:  # chosen so EOS comes at several lengths
        m = tiny_marian(V, seed, bias)
        x = torch.randint(0, V - 2, (3, 6), generator=torch.Generator().manual_seed(seed))
        inputs = {"input_ids": x, "attention_mask": torch.ones_like(x)}
        for lp, es in [(1.0, True), (0.5, False)]:
            g = m.generate(**inputs, num_beams=4, num_return_sequences=4, max_new_tokens=10, length_penalty=lp,
                           early_stopping=es, do_sample=False, output_scores=True, return_dict_in_generate=True)
            nb = hf_beam_search(m, inputs, config=BeamConfig(beam=4, max_len=10, length_penalty=lp,
                                                             early_stopping=es))
            ours = [tuple(int(t) for t in h.tokens) for n in nb for h in n.hyps]
            theirs = [hf_tokens(r, V) for r in g.sequences]
            assert ours == theirs
            ours_scores = [h.scores["am"] / min(len(h.tokens) + 1, 10) ** lp for n in nb for h in n.hyps]
            np.testing.assert_allclose(ours_scores, g.sequences_scores.numpy(), atol=1e-4)
            seen_lengths.update(len(t) for t in ours)
            cases += 1
    assert cases == 4 and len(seen_lengths) >= 3  # EOS at several lengths, not only max-length stops


def test_beam_one_equals_hf_greedy() -> None:
    V = 40
    m = tiny_marian(V, 3, 0.3)
    x = torch.randint(0, V - 2, (2, 5), generator=torch.Generator().manual_seed(4))
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    g = m.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=10)
    nb = hf_beam_search(m, inputs, config=BeamConfig(beam=1, max_len=10, length_penalty=0.0))
    assert [tuple(int(t) for t in n.hyps[0].tokens) for n in nb] == [hf_tokens(r, V) for r in g]


class Checking:
    """Runs the cached processor and the full-prefix reference on the same inputs; records the gap."""

    def __init__(self, cached: FusionLogitsProcessor, reference: FusionLogitsProcessor) -> None:
        self.cached, self.reference = cached, reference
        self.max_gap = 0.0
        self.calls = 0
        self.reordered = False
        self._prev: list[tuple[int, ...]] | None = None

    def __call__(self, input_ids, scores):  # type: ignore[no-untyped-def]
        a = self.cached(input_ids, scores.clone())
        b = self.reference(input_ids, scores.clone())
        fin = torch.isfinite(b)
        assert torch.equal(fin, torch.isfinite(a))
        self.max_gap = max(self.max_gap, float((a[fin] - b[fin]).abs().max()))
        rows = [tuple(r[:-1]) for r in input_ids.tolist()]
        if self._prev is not None and rows != self._prev:
            self.reordered = True  # a row's parent is not the row it was last step: beams were reordered
        self._prev = [tuple(r) for r in input_ids.tolist()]
        self.calls += 1
        return a


def test_cached_processor_equals_full_prefix_scoring_through_generate(units, nnlm, kenlm) -> None:
    from transformers import LogitsProcessorList

    V = len(units)
    eos = V - 2
    m = tiny_marian(V, 7, 1.0)
    x = torch.randint(0, V - 2, (2, 6), generator=torch.Generator().manual_seed(7))
    w = {"am": 1.0, "nnlm": 0.5, "ngram": 0.3}
    cached = FusionLogitsProcessor(
        [TokenLMScorer(nnlm, units, eos, name="nnlm"), WordLMScorer(kenlm, units, eos, name="ngram")], w)
    ref = FusionLogitsProcessor(
        [FullPrefixLMScorer(nnlm, units, eos, name="nnlm", reread_forward=True),
         FullPrefixLMScorer(kenlm, units, eos, mode="word", name="ngram")], w)
    chk = Checking(cached, ref)
    m.generate(input_ids=x, attention_mask=torch.ones_like(x), num_beams=4, max_new_tokens=14, do_sample=False,
               logits_processor=LogitsProcessorList([chk]))
    assert chk.calls >= 10 and chk.reordered
    assert chk.max_gap < 1e-5
    assert cached.rebuilds == 0


def test_generate_with_processor_equals_our_fused_beam_search(units, nnlm, kenlm) -> None:
    from transformers import LogitsProcessorList

    V = len(units)
    eos = V - 2
    m = tiny_marian(V, 11, 0.0)
    x = torch.randint(0, V - 2, (3, 6), generator=torch.Generator().manual_seed(11))
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    w = {"am": 1.0, "nnlm": 0.6, "ngram": 0.4}

    def scorers():  # type: ignore[no-untyped-def]
        return [TokenLMScorer(nnlm, units, eos, name="nnlm"), WordLMScorer(kenlm, units, eos, name="ngram")]

    proc = FusionLogitsProcessor(scorers(), w)
    g = m.generate(**inputs, num_beams=3, max_new_tokens=25, do_sample=False, length_penalty=1.0,
                   early_stopping=True, logits_processor=LogitsProcessorList([proc]))
    nb = hf_beam_search(m, inputs, scorers=scorers(), weights=w,
                        config=BeamConfig(beam=3, max_len=25, length_penalty=1.0, early_stopping=True,
                                          final_scores=False),
                        token_units=units)
    assert [tuple(units[int(i)] for i in hf_tokens(r, V)) for r in g] == [n.hyps[0].tokens for n in nb]
    again = m.generate(**inputs, num_beams=3, max_new_tokens=25, do_sample=False, length_penalty=1.0,
                       early_stopping=True, logits_processor=LogitsProcessorList([proc]))  # reused processor
    assert torch.equal(again, g) and proc.rebuilds == 0
    plain = m.generate(**inputs, num_beams=3, max_new_tokens=25, do_sample=False)
    assert [hf_tokens(r, V) for r in plain] != [hf_tokens(r, V) for r in g]  # the LMs changed something


def test_whisper_style_decoder_with_prompt(units, nnlm) -> None:
    from transformers import LogitsProcessorList, WhisperConfig, WhisperForConditionalGeneration

    # Whisper-like vocabulary: the spm pieces, then </s>, then special task tokens the LM must not score
    n = len(units) - 2  # the spm pieces
    V = n + 5
    eos, sot, lang, task, notime = n, n + 1, n + 2, n + 3, n + 4
    wunits = [*units[:n], None, None, None, None, None]
    cfg = WhisperConfig(
        vocab_size=V, num_mel_bins=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, d_model=16, max_source_positions=10,
        max_target_positions=48, pad_token_id=eos, bos_token_id=sot, eos_token_id=eos, decoder_start_token_id=sot,
        suppress_tokens=[], begin_suppress_tokens=[],
    )
    torch.manual_seed(0)
    m = WhisperForConditionalGeneration(cfg).eval()
    feats = torch.randn(2, 8, 20, generator=torch.Generator().manual_seed(0))
    prompt = torch.tensor([[sot, lang, task, notime]] * 2)
    w = {"am": 1.0, "nnlm": 0.7}
    cached = FusionLogitsProcessor([TokenLMScorer(nnlm, wunits, eos, name="nnlm")], w)
    ref = FusionLogitsProcessor([FullPrefixLMScorer(nnlm, wunits, eos, name="nnlm")], w)
    chk = Checking(cached, ref)
    out = m.generate(input_features=feats, decoder_input_ids=prompt, num_beams=3, max_new_tokens=12,
                     do_sample=False, logits_processor=LogitsProcessorList([chk]))
    assert cached.prompt_len == 4  # the task tokens are never shown to the LM
    assert chk.calls >= 5 and chk.max_gap < 1e-5 and cached.rebuilds == 0
    assert out.shape[0] == 2


def test_hf_step_reorders_cache(units) -> None:
    V = len(units)
    m = tiny_marian(V, 3, 0.0)
    x = torch.randint(0, V - 2, (1, 5), generator=torch.Generator().manual_seed(3))
    step = HFStep(m, {"input_ids": x, "attention_mask": torch.ones_like(x)}, beam=2)
    pre = torch.tensor([[V - 1, 5], [V - 1, 9]])
    _lp0, past = step(pre[:, :1], None)
    lp1, past = step(pre, past)
    lp1_swapped, _ = step(pre[[1, 0]], HFStep.reorder(step(pre[:, :1], None)[1], torch.tensor([1, 0])))
    torch.testing.assert_close(lp1[[1, 0]], lp1_swapped)


def test_processor_bad_inputs(units, nnlm) -> None:
    V = len(units)
    eos = V - 2
    proc = FusionLogitsProcessor([TokenLMScorer(nnlm, units, eos, name="nnlm")], {"nnlm": 0.5})
    ids = torch.tensor([[V - 1], [V - 1]])
    bad = torch.zeros(2, V)
    bad[0, 3] = float("nan")
    with pytest.raises(LMFusionError, match="NaN"):
        proc(ids, bad)
    proc.reset()
    with pytest.raises(LMFusionError, match="covers"):
        proc(ids, torch.zeros(2, V + 5))


def test_t5_style_model_zero_weight_equals_generate() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    V = 40
    cfg = T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, relative_attention_num_buckets=8)
    torch.manual_seed(5)
    m = T5ForConditionalGeneration(cfg).eval()
    x = torch.randint(2, V, (2, 6), generator=torch.Generator().manual_seed(5))
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    g = m.generate(**inputs, num_beams=3, num_return_sequences=3, max_new_tokens=8, do_sample=False)
    nb = hf_beam_search(m, inputs, config=BeamConfig(beam=3, max_len=8))
    theirs = [tuple(int(t) for t in r[1:].tolist() if t not in (0, 1)) for r in g]
    assert [tuple(int(t) for t in h.tokens) for n in nb for h in n.hyps] == theirs


def test_processor_takes_a_profile_per_utterance(units, nnlm) -> None:
    """Inside generate(), rows of utterance u get the weights the profile selects for tags[u]."""
    from transformers import LogitsProcessorList

    from fusion.profile import ConditionWeights, FusionProfile

    V = len(units)
    eos = V - 2
    m = tiny_marian(V, 5, 0.0)
    x = torch.randint(0, V - 2, (3, 6), generator=torch.Generator().manual_seed(5))
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    light, heavy = {"am": 1.0, "nnlm": 0.05}, {"am": 1.0, "nnlm": 2.0}
    prof = FusionProfile(default=ConditionWeights(light), conditions=(ConditionWeights(heavy, domain="med"),))
    tags = [{"domain": "med"}, {"domain": "news"}, {"domain": "med"}]

    def gen(weights, **kw):  # type: ignore[no-untyped-def]
        proc = FusionLogitsProcessor([TokenLMScorer(nnlm, units, eos, name="nnlm")], weights, **kw)
        out = m.generate(**inputs, num_beams=3, max_new_tokens=20, do_sample=False,
                         logits_processor=LogitsProcessorList([proc]))
        return [hf_tokens(r, V) for r in out]

    by_profile, all_light, all_heavy = gen(prof, tags=tags), gen(light), gen(heavy)
    assert by_profile == [all_heavy[0], all_light[1], all_heavy[2]]
    assert all_light != all_heavy
    with pytest.raises(LMFusionError, match="whole number of beams"):
        gen(prof, tags=tags[:2])


def _ngram_scorers(units: tuple[str | None, ...], eos: int, lms, model) -> list:  # type: ignore[no-untyped-def]
    return [WordLMScorer(lms["ngram"], list(units), eos, name="ngram")]


def test_hf_batches_on_an_executor_equal_a_local_loop(units, kenlm, bible_arpa, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import functools
    import pickle

    from decoders.hf_batches import HFBatch, HFDecoderSpec, hf_beam_search_batches
    from fusion.abilities import LMSpec
    from fusion.executor import InProcess

    V = len(units)
    m = tiny_marian(V, 13, 0.0)
    m.save_pretrained(tmp_path / "model")
    factory = functools.partial(_ngram_scorers, tuple(units), V - 2)
    gen = torch.Generator().manual_seed(13)
    batches = []
    for b, n in enumerate((2, 1)):
        x = torch.randint(0, V - 2, (n, 5), generator=gen)
        batches.append(HFBatch({"input_ids": x, "attention_mask": torch.ones_like(x)},
                               tuple(f"b{b}u{i}" for i in range(n)), refs=tuple(f"ref {i}" for i in range(n))))
    opts = {"weights": {"am": 1.0, "ngram": 0.5}, "config": BeamConfig(beam=2, max_len=8), "token_units": units}
    want = []
    for bt in batches:
        want += hf_beam_search(m, bt.inputs, scorers=factory({"ngram": kenlm}, m), utt_ids=list(bt.utt_ids),
                               refs=list(bt.refs or ()), **opts)
    spec = HFDecoderSpec(str(tmp_path / "model"), (LMSpec("ngram", path=str(bible_arpa)),), factory)
    back = pickle.loads(pickle.dumps((spec, batches)))  # what travels: paths, specs, a function by reference
    assert back[0].model_dir == spec.model_dir and back[0].lms == spec.lms
    got = hf_beam_search_batches(*back, InProcess(), **opts)  # the model and LM rebuilt from their files
    assert [nb.to_json() for nb in got] == [nb.to_json() for nb in want]
    assert [nb.utt_id for nb in got] == [u for bt in batches for u in bt.utt_ids]
