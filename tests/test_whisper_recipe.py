"""The Whisper parts of the ASR recipe: n-best with exact log-probs, token units, fusion inside generate()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from decoders.hypothesis import NBestList  # noqa: E402
from fusion.lm import LanguageModel, Units  # noqa: E402
from recipes.asr.decode_whisper import nbest_from, normalise_transcript, sequence_logprobs  # noqa: E402
from recipes.asr.make_audio import Utterance, read_wav, write_manifest  # noqa: E402
from recipes.asr.manifest_decode import decode_resumable, done_ids  # noqa: E402

WAV = Path(__file__).parent / "data" / "speech_kal16.wav"


def test_normalise_transcript_matches_reference_form() -> None:
    assert normalise_transcript(" And God said, “Let there be light.” It’s 3 o'clock!") == (
        "and god said let there be light it's 3 o'clock"
    )
    assert normalise_transcript("...") == ""


def test_nbest_from_dedupes_after_normalising_and_ranks() -> None:
    hyps = nbest_from(["Hello world.", "hello, world", "Hello word"], [-3.0, -2.0, -2.5])
    assert [h.text for h in hyps] == ["hello world", "hello word"]
    assert hyps[0].scores == {"am": -2.0, "words": 2.0}


def _tiny_whisper() -> object:
    cfg = transformers.WhisperConfig(vocab_size=40, num_mel_bins=8, encoder_layers=1, decoder_layers=1, d_model=16,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, max_source_positions=20, max_target_positions=32,
                                     pad_token_id=3, eos_token_id=3, decoder_start_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    return transformers.WhisperForConditionalGeneration(cfg).eval()


def test_sequence_logprobs_is_the_exact_sum_up_to_eos() -> None:
    model = _tiny_whisper()
    feats = torch.randn(2, 8, 40)
    # prompt [1, 2]; row 0 ends with eos (3) then padding (3s); row 1 has no eos
    seqs = torch.tensor([[1, 2, 10, 11, 3, 3, 3], [1, 2, 12, 13, 14, 15, 16]])
    got = sequence_logprobs(model, feats, seqs, prompt_len=2, eos_id=3)
    with torch.no_grad():
        lp = torch.log_softmax(model(input_features=feats, decoder_input_ids=seqs[:, :-1]).logits, -1)
    want0 = sum(float(lp[0, t - 1, seqs[0, t]]) for t in range(2, 5))  # 10, 11, eos
    want1 = sum(float(lp[1, t - 1, seqs[1, t]]) for t in range(2, 7))
    np.testing.assert_allclose(got, [want0, want1], rtol=1e-5)


def test_decode_resumable_keeps_done_and_drops_a_torn_line(tmp_path: Path) -> None:
    utts = [Utterance(f"u{i}", "bible", "dev", "a b", str(WAV), "slt", 1.0, "none", "clean") for i in range(3)]
    write_manifest(utts, tmp_path / "m.jsonl")
    out = tmp_path / "nb.jsonl"
    torn = '{"utt_id": "u1", tor'
    out.write_text(json.dumps(NBestList("u0", (), "a b", {}).to_json()) + "\n" + torn, encoding="utf-8")
    assert done_ids(out) == {"u0"}
    calls: list[str] = []

    def batch(us: object) -> list[NBestList]:
        calls.extend(u.utt_id for u in us)  # type: ignore[attr-defined]
        return [NBestList(u.utt_id, (), u.text, {}) for u in us]  # type: ignore[attr-defined]

    decode_resumable(tmp_path / "m.jsonl", out, batch, batch_size=2, progress=False)
    assert calls == ["u1", "u2"]
    assert [json.loads(x)["utt_id"] for x in out.read_text().splitlines()] == ["u0", "u1", "u2"]


@pytest.fixture(scope="module")
def bundle() -> object:
    whisper_ct2 = pytest.importorskip("decoders.whisper_ct2")
    return whisper_ct2.load_whisper_ct2()


def test_token_units_fold_case_drop_punctuation_and_suppress_specials(bundle: object) -> None:
    from recipes.asr.whisper_fusion import whisper_token_units

    tok = bundle.tokenizer  # type: ignore[attr-defined]
    units, suppress = whisper_token_units(tok)
    ids = tok.encode(" Hello, world's end.", add_special_tokens=False)
    assert [units[i] for i in ids] == ["▁hello", None, "▁world", "'s", "▁end", None]
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert eos not in suppress
    assert {tok.convert_tokens_to_ids("<|0.00|>"), tok.convert_tokens_to_ids("<|notimestamps|>")} <= set(suppress)
    assert all(units[i] is None for i in suppress)


class Uniform(LanguageModel):
    """Every word equally likely (ln P = -5): an LM whose only effect is a per-word cost."""

    def begin(self):  # type: ignore[no-untyped-def]
        return ()

    def score(self, state, unit):  # type: ignore[no-untyped-def]
        return -5.0, state

    def end(self, state):  # type: ignore[no-untyped-def]
        return -5.0


REF = "and the spirit of god moved upon the face of the waters and god said let there be light"


@pytest.mark.slow
def test_fusion_in_generate_changes_output_only_with_weight(bundle: object, tmp_path: Path) -> None:
    """A per-word cost never adds words; an in-domain n-gram (Genesis 1) lowers the WER."""
    from fusion.metrics import error_counts
    from fusion.ngram import KenLM
    from recipes.asr.whisper_fusion import WhisperFusion

    fz = WhisperFusion(bundle, beam=2, max_new_tokens=40)
    x = read_wav(WAV)
    plain = fz.transcribe([x])
    assert "spirit of god" in plain[0]
    lm = Uniform("dlm", Units.word())
    # a strong per-word cost against no bonus: never more words than plain (the open word is charged at
    # once, </s> is always a candidate, the length limit closes the open word, no length normalisation)
    short = fz.transcribe([x], fz.scorers({"dlm": lm}), {"dlm": 4.0, "words": 0.0})
    assert len(short[0].split()) <= len(plain[0].split())
    assert short[0].split()[:3] == plain[0].split()[:3]
    arpa = tmp_path / "genesis.arpa"  # a copy: nothing is written beside the bundled file
    arpa.write_bytes((Path(__file__).parent / "data" / "tiny.arpa").read_bytes())
    genesis = KenLM(arpa, name="dlm")
    fused = fz.transcribe([x], fz.scorers({"dlm": genesis}), {"dlm": 1.0, "words": 0.0})
    errs = [int(error_counts([REF], h)[0][0]) for h in (plain, fused)]
    assert fused != plain and errs[1] < errs[0], (plain, fused)


def test_whisper_specials_and_timestamps_are_never_free(bundle: object, bible_arpa: Path) -> None:
    """Every id without an LM unit (timestamps, task and language tokens) is suppressed in the search, and
    a fused scorer prices it at the uniform cost (< 0) when a caller does not suppress it."""
    from fusion.ngram import KenLM
    from recipes.asr.whisper_fusion import WhisperFusion

    fz = WhisperFusion(bundle, beam=2)
    tok = bundle.tokenizer  # type: ignore[attr-defined]
    specials = [tok.convert_tokens_to_ids(t) for t in ("<|0.00|>", "<|1.50|>", "<|notimestamps|>",
                                                       "<|startoftranscript|>", "<|transcribe|>")]
    assert set(specials) <= set(fz.suppress)
    for sc in fz.scorers({"dlm": KenLM(bible_arpa, name="dlm")}, word_bonus=False):
        row, _ = sc.score([()], [sc.init_state()], np.array([specials]))
        assert (row < -5).all() and np.allclose(row, sc.unscored)


@pytest.mark.slow
def test_encoder_output_reused_and_zero_weights_fused_equal_plain(bundle: object) -> None:
    """Decoding from the cached encoder output gives the plain transcript, and so does the fused search
    (processor and scorers in the loop) when every LM and bonus weight is 0 (same length penalty)."""
    from decoders.hf import FusionLogitsProcessor, fusion_generate
    from recipes.asr.whisper_fusion import WhisperFusion

    fz = WhisperFusion(bundle, beam=2, max_new_tokens=40)
    x = read_wav(WAV)
    plain = fz.transcribe([x])
    enc = fz.encode([x])
    assert fz.transcribe(None, encoded=enc) == plain
    scorers = fz.scorers({"dlm": Uniform("dlm", Units.word())})
    proc = FusionLogitsProcessor(scorers, {"dlm": 0.0, "words": 0.0}, pre_beam=fz.pre_beam, record=True)
    from transformers.modeling_outputs import BaseModelOutput

    model, tok = bundle.model, bundle.tokenizer  # type: ignore[attr-defined]
    with torch.inference_mode():
        out = fusion_generate(model, proc, encoder_outputs=BaseModelOutput(last_hidden_state=enc), num_beams=2,
                              return_timestamps=False, max_new_tokens=40, suppress_tokens=fz.suppress)  # fmt: skip
    seqs = out.sequences if hasattr(out, "sequences") else out
    fused0 = [normalise_transcript(t) for t in tok.batch_decode(seqs, skip_special_tokens=True)]
    assert proc.history and all(not a.any() for _, a in proc.history)  # in the loop, adding nothing
    assert fused0 == plain
