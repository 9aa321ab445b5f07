"""Whisper tiny.en read from CTranslate2 files into Hugging Face: parity with ctranslate2's own Whisper.

The model is loaded once per module (about 15 s on 2 cores); every decode runs the two utterances as one
batch, so the module costs a handful of ``generate()`` calls.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from decoders.whisper_ct2 import CT2_BINARY_VERSION, WhisperBundle, load_whisper_ct2, read_ct2_model
from fusion.errors import InputError
from fusion.packaged import whisper_tiny_en_dir

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "speech_kal16.wav"
# line 4 of the bundled bible test text, spoken by flite's rms voice
FLITE_LINE = 4
FLITE_VOICE = "rms"
FLITE_EXPECTED = "But first must he suffer many things and be rejected of this generation."

# Both engines compute in float32 from the same float16-rounded weights; only summation order and
# kernels differ (float32 rounding, ~1e-7 relative, accumulated over 1500-frame attention and 8 layers:
# measured 1e-5 nats). A mapping error (swapped q/k, a lost bias, an untied projection) moves token
# log-probs by 0.1 nats or more, so 1e-3 separates the two by two orders of magnitude either way.
LOGPROB_TOL = 1e-3


@pytest.fixture(scope="module")
def bundle() -> WhisperBundle:
    return load_whisper_ct2()


@pytest.fixture(scope="module")
def ct2_model():  # type: ignore[no-untyped-def]
    ctranslate2 = pytest.importorskip("ctranslate2")
    return ctranslate2.models.Whisper(str(whisper_tiny_en_dir()), device="cpu", compute_type="float32",
                                      intra_threads=2)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    from recipes.asr.make_audio import read_wav, synth

    line = (REPO / "data" / "text" / "bible.test.txt").read_text().splitlines()[FLITE_LINE - 1]
    out = tmp_path_factory.mktemp("flite") / "flite.wav"
    synth(line, FLITE_VOICE, 1.0, out)
    return [read_wav(SPEECH).astype(np.float32), read_wav(out).astype(np.float32)]


@pytest.fixture(scope="module")
def features(bundle: WhisperBundle, audio: list[np.ndarray]) -> torch.Tensor:
    return bundle.features(audio)


def _ct2_generate(ct2_model, bundle: WhisperBundle, features: torch.Tensor, beam: int, **kw):  # type: ignore[no-untyped-def]
    import ctranslate2

    sv = ctranslate2.StorageView.from_array(features.numpy())
    return ct2_model.generate(sv, [bundle.prompt_ids()] * features.shape[0], beam_size=beam, **kw)


def _hf_generate(bundle: WhisperBundle, features: torch.Tensor, beam: int) -> list[list[int]]:
    with torch.inference_mode():
        out = bundle.model.generate(features, num_beams=beam, return_timestamps=False)
    seqs = out.sequences if hasattr(out, "sequences") else out
    n_prompt = len(bundle.prompt_ids())
    eos = bundle.tokenizer.eos_token_id
    res = []
    for row in seqs.tolist():
        body = row[n_prompt:] if row[:n_prompt] == bundle.prompt_ids() else row  # transformers 5 drops the prompt
        res.append(body[: body.index(eos)] if eos in body else body)
    return res


@pytest.mark.slow
@pytest.mark.parametrize("beam", [1, 5])
def test_same_transcripts_as_ctranslate2(bundle: WhisperBundle, ct2_model, features: torch.Tensor,  # type: ignore[no-untyped-def]
                                         beam: int) -> None:
    ref = [r.sequences_ids[0] for r in _ct2_generate(ct2_model, bundle, features, beam)]
    got = _hf_generate(bundle, features, beam)
    assert got == ref
    assert all(len(r) > 5 for r in ref)


@pytest.mark.slow
def test_token_logprobs_match_ctranslate2(bundle: WhisperBundle, ct2_model, features: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    """Teacher-forced HF log-probs of ctranslate2's greedy output vs ctranslate2's own step logits.

    ctranslate2 returns the logits after token suppression (-inf for ``suppress_ids``, and for
    ``suppress_ids_begin`` at the first step); the same mask is checked and applied to HF's logits.
    """
    import json

    cfg = json.loads((whisper_tiny_en_dir() / "config.json").read_text())
    res = _ct2_generate(ct2_model, bundle, features, 1, return_logits_vocab=True)
    prompt = bundle.prompt_ids()
    eos = bundle.tokenizer.eos_token_id
    for i, r in enumerate(res):
        ids = r.sequences_ids[0]
        ct = np.stack([np.asarray(x) for x in r.logits[0]]).astype(np.float64)  # [T, V]
        masked = ct < -1e30
        expect = np.zeros_like(masked)
        expect[:, cfg["suppress_ids"]] = True
        expect[0, cfg["suppress_ids_begin"]] = True
        assert (masked == expect).all()
        with torch.inference_mode():
            dec = torch.tensor([prompt + ids])
            lo = bundle.model(input_features=features[i : i + 1], decoder_input_ids=dec).logits[0].double()
        hf = lo[len(prompt) - 1 :].numpy()[: ct.shape[0]]
        assert np.abs(np.where(masked, 0, hf - ct)).max() < 1e-2  # raw logits
        hf_lp = torch.log_softmax(torch.from_numpy(np.where(masked, -np.inf, hf)), -1).numpy()
        ct_lp = torch.log_softmax(torch.from_numpy(ct), -1).numpy()
        tgt = [*ids, eos][: ct.shape[0]]
        rows = np.arange(len(tgt))
        diff = np.abs(hf_lp[rows, tgt] - ct_lp[rows, tgt])
        assert diff.max() < LOGPROB_TOL, diff.max()
        assert np.abs(np.where(masked, 0, hf_lp - ct_lp)).max() < LOGPROB_TOL  # whole distributions


@pytest.mark.slow
def test_transcribes_flite_sentence(bundle: WhisperBundle, audio: list[np.ndarray]) -> None:
    (text,) = bundle.transcribe(audio[1:])
    assert text == FLITE_EXPECTED
    line = (REPO / "data" / "text" / "bible.test.txt").read_text().splitlines()[FLITE_LINE - 1]
    assert text.lower().rstrip(".") == line


def test_reader_sees_whisper_layout() -> None:
    m = read_ct2_model(whisper_tiny_en_dir() / "model.bin")
    assert (m.version, m.spec) == (CT2_BINARY_VERSION, "WhisperSpec")
    assert m.get("decoder/embeddings/weight").dtype == np.float16
    qkv = m.get("encoder/layer_0/self_attention/linear_0/weight")
    assert qkv.shape == (3 * 384, 384)
    assert m.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"


def _copy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(whisper_tiny_en_dir() / f, d / f)
    return d


def test_truncated_model_bin_is_a_clear_error(tmp_path: Path) -> None:
    d = _copy_dir(tmp_path)
    with open(whisper_tiny_en_dir() / "model.bin", "rb") as f:
        (d / "model.bin").write_bytes(f.read(2_000_000))
    with pytest.raises(InputError, match=r"model\.bin.*truncated") as e:
        load_whisper_ct2(d)
    assert str(d / "model.bin") in str(e.value)


def _header(spec: str, version: int = CT2_BINARY_VERSION) -> bytes:
    name = spec.encode() + b"\0"
    return struct.pack("<I", version) + struct.pack("<H", len(name)) + name + struct.pack("<III", 1, 0, 0)


def test_wrong_spec_name_is_a_clear_error(tmp_path: Path) -> None:
    d = _copy_dir(tmp_path)
    (d / "model.bin").write_bytes(_header("TransformerSpec"))
    with pytest.raises(InputError, match=r"model\.bin.*'TransformerSpec'.*'WhisperSpec'"):
        load_whisper_ct2(d)


def test_unknown_binary_version_and_missing_files(tmp_path: Path) -> None:
    d = _copy_dir(tmp_path)
    (d / "model.bin").write_bytes(_header("WhisperSpec", version=99))
    with pytest.raises(InputError, match="binary version 99"):
        load_whisper_ct2(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(InputError, match=r"tokenizer\.json.*not found"):
        load_whisper_ct2(d)
    (d / "model.bin").unlink()
    with pytest.raises(InputError, match=r"model\.bin.*not found"):
        load_whisper_ct2(d)


def test_length_notice_dropped_other_warnings_kept(caplog: pytest.LogCaptureFixture) -> None:
    """transformers' per-call 'both max_new_tokens and max_length' notice is dropped, nothing else."""
    import logging

    from decoders.whisper_ct2 import quiet_length_notice

    quiet_length_notice()
    quiet_length_notice()  # idempotent: one filter
    log = logging.getLogger("transformers.generation.utils")
    assert sum(type(f).__name__ == "_BothLengthLimits" for f in log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="transformers.generation.utils"):
        log.warning("Both `max_new_tokens` (=96) and `max_length`(=448) seem to have been set.")
        log.warning("Setting `pad_token_id` to `eos_token_id`")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["Setting `pad_token_id` to `eos_token_id`"]
