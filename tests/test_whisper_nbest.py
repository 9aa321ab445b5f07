"""Whisper n-best lists on real speech: distinct hypotheses with exact log-probabilities, best first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from recipes.asr.decode_whisper import sequence_logprobs  # noqa: E402
from recipes.asr.make_audio import Utterance, read_wav  # noqa: E402

WAV = Path(__file__).parent / "data" / "speech_kal16.wav"


@pytest.fixture(scope="module")
def bundle() -> object:
    whisper_ct2 = pytest.importorskip("decoders.whisper_ct2")
    return whisper_ct2.load_whisper_ct2()


@pytest.mark.slow
def test_hf_nbest_has_distinct_hypotheses_with_exact_sorted_logprobs(bundle: object) -> None:
    from recipes.asr.decode_whisper import WhisperHFNBest, normalise_transcript

    torch.set_num_threads(1)
    x = read_wav(WAV)
    nb = WhisperHFNBest(bundle, n=4, beam=4)
    seqs, beam_scores, am = nb.beam_sequences([x])
    rows = [tuple(s) for s in seqs.tolist()]
    assert len(set(rows)) == 4  # four different beams, not four copies of the best one
    eos = int(bundle.model.generation_config.eos_token_id)  # type: ignore[attr-defined]
    prompt = len(bundle.prompt_ids())  # type: ignore[attr-defined]
    lengths = [(np.asarray(r[prompt:]) != eos).sum() + 1 for r in rows]  # generated tokens and <|endoftext|>
    # the beam search's own sums (length penalty 1) agree with the teacher-forced exact sums
    np.testing.assert_allclose(am, beam_scores * np.array(lengths), rtol=1e-4)
    hyps = nb.decode_audio([x])[0]
    texts = [h.text for h in hyps]
    scores = [h.scores["am"] for h in hyps]
    assert len(hyps) > 1 and len(set(texts)) == len(texts)
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    raw = bundle.tokenizer.batch_decode(seqs, skip_special_tokens=True)  # type: ignore[attr-defined]
    for h in hyps:  # each text keeps the best exact score of the beams that normalise to it
        best = max(a for t, a in zip(raw, am, strict=True) if normalise_transcript(t) == h.text)
        assert h.scores["am"] == pytest.approx(best)


@pytest.mark.slow
def test_ct2_nbest_scores_are_its_token_sums(bundle: object) -> None:
    pytest.importorskip("ctranslate2")
    from recipes.asr.decode_whisper import WhisperCT2NBest

    x = read_wav(WAV)
    eng = WhisperCT2NBest(n=4, beam=4, threads=1)
    utt = Utterance("u", "bible", "test", "", str(WAV), "kal16", 1.0, "none", "clean")
    hyps = eng([utt])[0].hyps
    assert len(hyps) > 1  # beams 1-3 differ only in case and punctuation here: one text after normalising
    scores = [h.scores["am"] for h in hyps]
    assert scores == sorted(scores, reverse=True)
    # the same hypotheses scored by the converted model, renormalised over the tokens CT2 does not suppress
    import ctranslate2

    b = eng.bundle
    feats = b.features([x])
    prompt = b.prompt_ids()
    toks = [b.tokenizer.convert_ids_to_tokens(i) for i in prompt]
    res = eng.model.generate(ctranslate2.StorageView.from_array(feats.numpy()), [toks], beam_size=4,
                             num_hypotheses=4, return_scores=True)[0]  # fmt: skip
    for ids, s in zip(res.sequences_ids, res.scores, strict=True):
        eos = int(b.model.generation_config.eos_token_id)
        seq = torch.tensor([[*prompt, *ids, eos]])
        sup = b.model.generation_config.suppress_tokens
        exact = sequence_logprobs(b.model, feats, seq, len(prompt), eos, suppressed=sup)[0]
        assert s * len(ids) == pytest.approx(exact, abs=1e-3)
        assert exact > sequence_logprobs(b.model, feats, seq, len(prompt), eos)[0]
