"""Neural LMs in torch: a small LSTM / decoder-only Transformer family with incremental, batched scoring.

The units are the pieces of a sentencepiece model (``Units.token(tokenizer.identity)``). The output
distribution also covers an end-of-sentence symbol: the sentencepiece ``eos`` piece when the model has
one, else an extra output row after the last piece, so :meth:`NeuralLM.end` is a real probability and
sentence probabilities are proper. The same id is fed as the beginning-of-sentence input.

Incremental scoring. A state is a small frozen value (:class:`NeuralState`: the token-id prefix with a
precomputed hash). The model's recurrent state (LSTM ``h, c``) or the Transformer's key/value cache for a
prefix lives in an LM-side LRU cache keyed by that prefix. Scoring candidates creates the next states
lazily; they are materialised together in **one** batched forward step the next time any of them is
scored from. Extending a hypothesis by one unit therefore costs one step, and scoring ``B`` states x ``K``
candidates costs at most one forward pass over the ``B`` states. Evicted or never-seen prefixes are
recomputed from their longest cached ancestor, so results never depend on the cache.

:meth:`NeuralLM.score_sentences` is the plain full-sequence path (one padded forward over whole
sentences); tests check the incremental path against it.

Checkpoints are directories: ``lmfusion-lm.json`` (config), ``model.safetensors`` (weights) and the
sentencepiece model. Loading never unpickles.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion.errors import InputError, LMFusionError
from fusion.io import atomic_write_bytes, atomic_write_json, read_json
from fusion.lm import LanguageModel, SentenceScore, State
from fusion.tokenizers import SentencePieceTokenizer

CONFIG_NAME = "lmfusion-lm.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "lmfusion-neural-lm"
FORMAT_VERSION = 1
HF_FORMAT = "lmfusion-hf-lm"
"""``lmfusion-lm.json`` of this format marks a Hugging Face model directory (see :mod:`fusion.hf_lm`)."""

ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "lstm": {"emb": 128, "hidden": 256, "layers": 1, "dropout": 0.1},
    "transformer": {"d_model": 128, "layers": 2, "heads": 4, "d_ff": 512, "dropout": 0.1, "max_len": 512},
}
"""Hyper-parameters of each architecture and their defaults (the keys a model config may set)."""


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def normalize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults into a model config and validate it.

    A config is ``{"arch": "lstm" | "transformer", <hyper-parameter>: value, ...}``; see
    :data:`ARCH_DEFAULTS` for the keys.

    Raises:
        LMFusionError: unknown architecture, unknown key, or a value out of range (names the field).
    """
    if not isinstance(config, Mapping):
        raise LMFusionError(f"model config must be a mapping, got {type(config).__name__}")
    arch = config.get("arch")
    if arch not in ARCH_DEFAULTS:
        raise LMFusionError(f"model config field 'arch': unknown architecture {arch!r}; "
                            f"expected one of {sorted(ARCH_DEFAULTS)}")
    out: dict[str, Any] = {"arch": arch, **ARCH_DEFAULTS[arch]}
    for k, v in config.items():
        if k == "arch":
            continue
        if k not in ARCH_DEFAULTS[arch]:
            raise LMFusionError(f"model config field {k!r}: not a {arch} hyper-parameter "
                                f"(known: {sorted(ARCH_DEFAULTS[arch])})")
        out[k] = v
    for k, v in out.items():
        if k == "arch":
            continue
        if k == "dropout":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) < 1.0:
                raise LMFusionError(f"model config field 'dropout': must be in [0, 1), got {v!r}")
            out[k] = float(v)
        elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise LMFusionError(f"model config field {k!r}: must be a positive integer, got {v!r}")
    if arch == "transformer" and out["d_model"] % out["heads"]:
        raise LMFusionError(f"model config: d_model ({out['d_model']}) must be divisible by heads ({out['heads']})")
    return out


# ----------------------------------------------------------------------------------------------
# Models. Both expose the same three methods:
#   empty_past() -> Tensor                      the recurrent state / KV cache of nothing
#   advance(pasts, ids) -> (logits [B,T,V], new pasts)   feed ids [B,T] after each row's past
#   forward(ids) -> logits [B,T,V]              a whole (right-padded) batch from scratch
# A "past" is one row's state as a single tensor (so LM-side caches can hold it per prefix).
# ----------------------------------------------------------------------------------------------
class LSTMLM(nn.Module):
    """Embedding -> LSTM -> linear output. A past is ``[2, layers, hidden]`` (``h`` and ``c``)."""

    def __init__(self, n_vocab: int, emb: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.n_vocab = n_vocab
        self.layers = layers
        self.hidden = hidden
        self.embed = nn.Embedding(n_vocab, emb)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(emb, hidden, num_layers=layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(hidden, n_vocab)

    def empty_past(self) -> torch.Tensor:
        p = next(self.parameters())
        return torch.zeros(2, self.layers, self.hidden, device=p.device, dtype=p.dtype)

    def _run(
        self, ids: torch.Tensor, hc: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.drop(self.embed(ids))
        y, (h, c) = self.rnn(x, hc)
        return self.out(self.drop(y)), h, c

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._run(ids, None)[0]

    def advance(self, pasts: Sequence[torch.Tensor], ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        st = torch.stack(list(pasts), dim=0)  # [B, 2, L, H]
        h0 = st[:, 0].transpose(0, 1).contiguous()
        c0 = st[:, 1].transpose(0, 1).contiguous()
        logits, h, c = self._run(ids, (h0, c0))
        new = torch.stack([h, c], dim=0).permute(2, 0, 1, 3)  # [B, 2, L, H]
        return logits, list(new.unbind(0))


class _Block(nn.Module):
    """Pre-LayerNorm Transformer decoder block with explicit key/value inputs."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, d_ff)
        self.ff2 = nn.Linear(d_ff, d)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(
        self,
        x: torch.Tensor,
        past_k: torch.Tensor | None,
        past_v: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        kk = k if past_k is None else torch.cat([past_k, k], dim=2)
        vv = v if past_v is None else torch.cat([past_v, v], dim=2)
        dp = self.p if self.training else 0.0
        if mask is None:
            a = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, dropout_p=dp)
        else:
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, dropout_p=dp)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(x)))))
        return x, k, v


class TransformerLM(nn.Module):
    """Decoder-only Transformer with learned positions.

    A past is a :class:`KVRef`: a row of a shared, preallocated key/value buffer and the prefix length it
    owns. A batched step whose rows all extend the newest entries of one buffer writes the new keys and
    values in place (no copy of the prefixes); otherwise the rows are first copied into a fresh buffer.
    """

    def __init__(
        self, n_vocab: int, d_model: int, layers: int, heads: int, d_ff: int, dropout: float, max_len: int
    ) -> None:
        super().__init__()
        self.n_vocab = n_vocab
        self.d_model = d_model
        self.n_layers = layers
        self.heads = heads
        self.max_len = max_len
        self.embed = nn.Embedding(n_vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([_Block(d_model, heads, d_ff, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def _check_len(self, n: int) -> None:
        if n > self.max_len:
            raise LMFusionError(
                f"sequence of {n} positions (with <s>) exceeds the transformer's max_len {self.max_len}"
            )

    def empty_past(self) -> None:
        return None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _b, t = ids.shape
        self._check_len(t)
        pos = torch.arange(t, device=ids.device)
        x = self.drop(self.embed(ids) + self.pos(pos)[None])
        for blk in self.blocks:
            x, _, _ = blk(x, None, None, None)
        return self.out(self.ln_f(x))

    def _new_buffer(self, pasts: Sequence[KVRef | None], cap: int) -> KVBuffer:
        """A buffer with one row per past, holding a copy of each past's prefix."""
        p = next(self.parameters())
        dh = self.d_model // self.heads
        buf = KVBuffer(torch.zeros(self.n_layers, 2, len(pasts), cap, self.heads, dh, device=p.device,
                                   dtype=p.dtype))
        groups: dict[int, tuple[KVBuffer, list[int], list[int], int]] = {}
        for i, r in enumerate(pasts):
            if r is None or r.length == 0:
                continue
            g = groups.setdefault(id(r.buf), (r.buf, [], [], 0))
            g[1].append(i)
            g[2].append(r.row)
            groups[id(r.buf)] = (g[0], g[1], g[2], max(g[3], r.length))
        for src, dst, rows, n in groups.values():
            d = torch.as_tensor(dst, device=p.device)
            buf.kv[:, :, d, :n] = src.kv[:, :, torch.as_tensor(rows, device=p.device), :n]
        buf.used = [0 if r is None else r.length for r in pasts]
        return buf

    def advance(self, pasts: Sequence[KVRef | None], ids: torch.Tensor) -> tuple[torch.Tensor, list[KVRef]]:
        b, t = ids.shape
        dev = ids.device
        lens = [0 if r is None else r.length for r in pasts]
        pmax = max(lens)
        total = pmax + t
        self._check_len(total)
        first = pasts[0]
        fast = first is not None and total <= first.buf.kv.shape[3]
        if fast:
            assert first is not None
            rows_l = []
            for r in pasts:
                if r is None or r.buf is not first.buf or r.buf.used[r.row] != r.length:
                    fast = False
                    break
                rows_l.append(r.row)
            fast = fast and len(set(rows_l)) == len(rows_l)
        if fast:
            assert first is not None
            buf = first.buf
            rows = rows_l
        else:
            cap = min(self.max_len, max(32, 2 * total))
            buf = self._new_buffer(pasts, cap)
            rows = list(range(b))
        n_rows = buf.kv.shape[2]
        whole = rows == list(range(n_rows))
        rows_t = torch.as_tensor(rows, device=dev)
        lens_t = torch.as_tensor(lens, device=dev)
        pos = lens_t[:, None] + torch.arange(t, device=dev)[None]  # [B, T] positions written
        x = self.drop(self.embed(ids) + self.pos(pos))
        keys = torch.arange(total, device=dev)
        mask = (keys[None, None, :] <= pos[:, :, None])[:, None]  # [B, 1, T, S]: own prefix + causal
        hd = self.d_model // self.heads
        blocks: list[_Block] = list(self.blocks)  # type: ignore[arg-type]
        for i, blk in enumerate(blocks):
            q, k, v = blk.qkv(blk.ln1(x)).view(b, t, 3, self.heads, hd).unbind(2)  # [B, T, h, dh]
            buf.kv[i, 0][rows_t[:, None], pos] = k
            buf.kv[i, 1][rows_t[:, None], pos] = v
            kk = buf.kv[i, 0, :, :total] if whole else buf.kv[i, 0, rows_t, :total]
            vv = buf.kv[i, 1, :, :total] if whole else buf.kv[i, 1, rows_t, :total]
            a = F.scaled_dot_product_attention(q.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2),
                                               attn_mask=mask)
            x = x + blk.drop(blk.proj(a.transpose(1, 2).reshape(b, t, self.d_model)))
            x = x + blk.drop(blk.ff2(F.gelu(blk.ff1(blk.ln2(x)))))
        logits = self.out(self.ln_f(x))
        row_bytes = buf.kv[:, :, 0].nbytes  # a state is charged its row's whole capacity
        out = []
        for row, n in zip(rows, lens, strict=True):
            buf.used[row] = n + t
            out.append(KVRef(buf, row, n + t, row_bytes))
        return logits, out


class KVBuffer:
    """Preallocated keys/values ``[layers, 2, rows, capacity, heads, d_head]``; ``used[row]`` positions claimed."""

    __slots__ = ("kv", "used")

    def __init__(self, kv: torch.Tensor) -> None:
        self.kv = kv
        self.used: list[int] = [0] * kv.shape[2]


@dataclass(frozen=True)
class KVRef:
    """A prefix's key/value cache: positions ``[0, length)`` of ``buf``'s row ``row``."""

    buf: KVBuffer
    row: int
    length: int
    nbytes: int


def build_model(config: Mapping[str, Any], n_vocab: int) -> nn.Module:
    """Instantiate the module a (normalised) config describes, over ``n_vocab`` input/output symbols."""
    c = normalize_config(config)
    if c["arch"] == "lstm":
        return LSTMLM(n_vocab, c["emb"], c["hidden"], c["layers"], c["dropout"])
    return TransformerLM(n_vocab, c["d_model"], c["layers"], c["heads"], c["d_ff"], c["dropout"], c["max_len"])


def _padded_batch(
    seqs: Sequence[Sequence[int]], bos: int, eos: int, device: torch.device, pad: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[B, T]`` (``bos`` + ids) and targets ``[B, T]`` (ids + ``eos``), right-padded with ``pad``."""
    t = max(len(s) for s in seqs) + 1
    inp = torch.full((len(seqs), t), pad, dtype=torch.long, device=device)
    tgt = torch.full((len(seqs), t), pad, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        n = len(s)
        inp[i, 0] = bos
        if n:
            ids = torch.as_tensor(list(s), dtype=torch.long, device=device)
            inp[i, 1 : n + 1] = ids
            tgt[i, :n] = ids
        tgt[i, n] = eos
    return inp, tgt


def sequence_logprobs(
    model: nn.Module, seqs: Sequence[Sequence[int]], bos: int, eos: int, *, pad: int = 0
) -> list[torch.Tensor]:
    """Full-sequence log-probabilities: for each id sequence, ``ln P`` of each id then of ``eos``.

    One right-padded forward over the batch (the plain reference path, also used in training).
    """
    if not seqs:
        return []
    inp, tgt = _padded_batch(seqs, bos, eos, next(model.parameters()).device, pad)
    lp = torch.log_softmax(model(inp).float(), dim=-1).gather(2, tgt[..., None])[..., 0]
    return [lp[i, : len(s) + 1] for i, s in enumerate(seqs)]


def sequence_distributions(
    model: nn.Module, seqs: Sequence[Sequence[int]], bos: int, *, pad: int = 0
) -> list[torch.Tensor]:
    """For each id sequence, the next-symbol log-probs ``[len + 1, V]`` at every position (one forward)."""
    if not seqs:
        return []
    inp, _ = _padded_batch(seqs, bos, bos, next(model.parameters()).device, pad)
    lp = torch.log_softmax(model(inp).float(), dim=-1)
    return [lp[i, : len(s) + 1] for i, s in enumerate(seqs)]


# ----------------------------------------------------------------------------------------------
# States and the LM
# ----------------------------------------------------------------------------------------------
class NeuralState:
    """An immutable, hashable LM state: the token-id prefix (after ``<s>``), hash precomputed."""

    __slots__ = ("_hash", "ids")
    ids: tuple[int, ...]
    _hash: int

    def __init__(self, ids: tuple[int, ...]) -> None:
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_hash", hash(ids))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NeuralState is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return isinstance(other, NeuralState) and self._hash == other._hash and self.ids == other.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"NeuralState(len={len(self.ids)}, tail={self.ids[-4:]})"


@dataclass(frozen=True)
class _Entry:
    logp: torch.Tensor  # [n_out] next-symbol log-probs after the prefix
    past: Any  # the model's past for the prefix (tensor, or model-specific)
    nbytes: int


class CachedIncrementalLM(LanguageModel):
    """Shared machinery of token-level neural LMs: prefix states, an LRU cache of pasts, batched steps.

    Subclasses set ``pieces`` (unit strings in id order), ``n_out``, ``eos_id``, ``bos_id``, ``unk_id``
    and implement :meth:`_empty_past`, :meth:`_advance` and :meth:`full_distributions`.
    """

    pieces: list[str]
    piece_to_id: dict[str, int]
    n_out: int
    eos_id: int
    bos_id: int
    unk_id: int | None
    special_ids: frozenset[int]

    def __init__(self, name: str, units: Any, *, cache_bytes: int, max_batch: int) -> None:
        super().__init__(name, units)
        self.cache_bytes = int(cache_bytes)
        self.max_batch = int(max_batch)
        self._cache: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._cached_bytes = 0
        self.forward_calls = 0
        """Number of model forward passes run (for tests and benchmarks)."""

    # -- model hooks -----------------------------------------------------------------------------
    def _empty_past(self) -> Any:
        raise NotImplementedError

    def _advance(self, pasts: Sequence[Any], ids: list[list[int]]) -> tuple[torch.Tensor, list[Any]]:
        """Feed equal-length ``ids`` rows after ``pasts``: ``(last-position log-probs [B, n_out], new pasts)``."""
        raise NotImplementedError

    def full_distributions(self, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per id sequence: next-symbol log-probs ``[len + 1, n_out]`` after ``<s>`` and each id, from scratch."""
        raise NotImplementedError

    def _full_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per sequence: ``ln P`` of each id then of end-of-sentence, one forward from scratch."""
        out = []
        for s, d in zip(seqs, self.full_distributions(seqs), strict=True):
            tgt = torch.as_tensor([*s, self.eos_id], dtype=torch.long, device=d.device)
            out.append(d.gather(1, tgt[:, None])[:, 0].double().cpu().numpy())
        return out

    # -- word boundaries (used by fusion.units.WordLevelLM) ----------------------------------------
    def word_start_ids(self) -> list[int]:
        """Ids of the pieces that begin a word (sentencepiece: a leading ``▁``; specials excluded)."""
        return [i for i, p in enumerate(self.pieces) if p.startswith("▁") and i not in self.special_ids]

    def boundary_mask(self) -> torch.Tensor:
        """Bool ``[n_out]``: the symbols that may follow a complete word (word starts and end-of-sentence)."""
        m = getattr(self, "_boundary_mask", None)
        if m is None:
            m = torch.zeros(self.n_out, dtype=torch.bool)
            m[self.word_start_ids()] = True
            m[self.eos_id] = True
            self._boundary_mask = m
        return m

    def encode_word(self, word: str) -> list[str]:
        """The pieces of one whitespace-free word as it appears in running text."""
        return self.tokenize(word)

    def _past_nbytes(self, past: Any) -> int:
        if past is None:
            return 0
        n = getattr(past, "nbytes", None)
        if n is not None:
            return int(n)
        return sum(self._past_nbytes(p) for p in past)

    # -- unit mapping ----------------------------------------------------------------------------
    def unit_id(self, unit: str) -> int:
        """The id of a unit; unknown units map to ``<unk>`` (or raise when the model has none)."""
        i = self.piece_to_id.get(unit)
        if i is not None and i not in self.special_ids:
            return i
        if self.unk_id is None:
            raise LMFusionError(f"{self.name}: unit {unit!r} is not in the vocabulary and the model has no <unk>")
        return self.unk_id

    def is_oov(self, unit: str) -> bool:
        i = self.piece_to_id.get(unit)
        return i is None or i in self.special_ids

    @property
    def vocab(self) -> frozenset[str] | None:
        return frozenset(p for i, p in enumerate(self.pieces) if i not in self.special_ids)

    # -- cache -----------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        """Forget every cached past (states stay valid: they are recomputed on demand)."""
        self._cache.clear()
        self._cached_bytes = 0

    @property
    def cache_info(self) -> dict[str, int]:
        return {"entries": len(self._cache), "bytes": self._cached_bytes, "forward_calls": self.forward_calls}

    def _put(self, key: tuple[int, ...], entry: _Entry) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.nbytes
        self._cache[key] = entry
        self._cached_bytes += entry.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, ev = self._cache.popitem(last=False)
            self._cached_bytes -= ev.nbytes

    def _make_entry(self, logp: torch.Tensor, past: Any) -> _Entry:
        return _Entry(logp, past, logp.numel() * logp.element_size() + self._past_nbytes(past))

    def _materialise(self, states: Sequence[State]) -> list[_Entry]:
        """Entries of ``states``; the missing ones whose parent is cached are computed in batched steps."""
        found: dict[tuple[int, ...], _Entry] = {}
        one_step: list[tuple[int, ...]] = []
        parents: list[_Entry] = []
        deep: list[tuple[int, ...]] = []
        for s in states:
            if not isinstance(s, NeuralState):
                raise LMFusionError(f"{self.name}: not a state of this LM: {s!r}")
            key = s.ids
            if key in found:
                continue
            e = self._cache.get(key)
            if e is not None:
                self._cache.move_to_end(key)
                found[key] = e
            elif key and key[:-1] in self._cache:
                found[key] = None  # type: ignore[assignment]
                one_step.append(key)
                parents.append(self._cache[key[:-1]])  # held now: later insertions may evict it
            else:
                found[key] = None  # type: ignore[assignment]
                deep.append(key)
        for key in deep:  # rare: begin(), or a prefix whose ancestors were evicted
            anc = None
            for cut in range(len(key) - 1, -1, -1):
                anc = self._cache.get(key[:cut])
                if anc is not None:
                    break
            if anc is None:
                cut = 0
                logp, pasts = self._advance([self._empty_past()], [[self.bos_id]])
                self.forward_calls += 1
                anc = self._make_entry(logp[0], pasts[0])
                self._put((), anc)
            if cut < len(key):
                logp, pasts = self._advance([anc.past], [list(key[cut:])])
                self.forward_calls += 1
                ent = self._make_entry(logp[0], pasts[0])
                self._put(key, ent)
            else:
                ent = anc
            found[key] = ent
        for lo in range(0, len(one_step), self.max_batch):
            keys = one_step[lo : lo + self.max_batch]
            logp, pasts = self._advance([p.past for p in parents[lo : lo + self.max_batch]], [[k[-1]] for k in keys])
            self.forward_calls += 1
            for i, k in enumerate(keys):
                ent = self._make_entry(logp[i], pasts[i])
                self._put(k, ent)
                found[k] = ent
        return [found[s.ids] for s in states]  # type: ignore[attr-defined]

    # -- protocol --------------------------------------------------------------------------------
    def begin(self) -> State:
        return NeuralState(())

    def extend_ids(self, state: State, ids: Sequence[int]) -> NeuralState:
        """The state after the symbol ids ``ids`` (no scoring; materialised lazily)."""
        if not isinstance(state, NeuralState):
            raise LMFusionError(f"{self.name}: not a state of this LM: {state!r}")
        return NeuralState(state.ids + tuple(ids))

    def extend(self, state: State, units: Iterable[str]) -> State:
        """The state after ``units`` (no scoring; materialised lazily)."""
        assert isinstance(state, NeuralState)
        return NeuralState(state.ids + tuple(self.unit_id(u) for u in units))

    def score(self, state: State, unit: str) -> tuple[float, State]:
        lp, nxt = self.score_batch([state], [unit])
        return float(lp[0, 0]), nxt[0][0]

    def end(self, state: State) -> float:
        return float(self.end_batch([state])[0])

    def logprobs_tensor(self, states: Sequence[State]) -> torch.Tensor:
        """Next-symbol log-probs ``[B, n_out]`` on the model's device (columns: ids, incl. end-of-sentence)."""
        with torch.inference_mode():
            ents = self._materialise(states)
            return torch.stack([e.logp for e in ents])

    def logprobs_all(self, states: Sequence[State]) -> np.ndarray:
        """Next-token log-probs ``[B, V]`` over the whole tokenizer vocabulary in id order (float64).

        End-of-sentence is :meth:`end_batch` (it is a column here only when the tokenizer has an eos piece).
        """
        return self.logprobs_tensor(states)[:, : len(self.pieces)].double().cpu().numpy()

    def score_batch(
        self, states: Sequence[State], candidates: Sequence[str]
    ) -> tuple[np.ndarray, list[list[State]]]:
        ids = [self.unit_id(c) for c in candidates]
        if not states:
            return np.zeros((0, len(candidates))), []
        lp = self.logprobs_tensor(states)
        idx = torch.as_tensor(ids, dtype=torch.long, device=lp.device)
        out = lp.index_select(1, idx).double().cpu().numpy()
        nxt = [[NeuralState((*s.ids, i)) for i in ids] for s in states]  # type: ignore[attr-defined]
        return out, nxt  # type: ignore[return-value]

    def score_pairs(self, states: Sequence[State], units: Sequence[str]) -> tuple[np.ndarray, list[State]]:
        if len(states) != len(units):
            raise ValueError(f"score_pairs: {len(states)} states but {len(units)} units")
        ids = [self.unit_id(u) for u in units]
        if not states:
            return np.zeros(0), []
        lp = self.logprobs_tensor(states)
        idx = torch.as_tensor(ids, dtype=torch.long, device=lp.device)
        out = lp.gather(1, idx[:, None])[:, 0].double().cpu().numpy()
        return out, [NeuralState((*s.ids, i)) for s, i in zip(states, ids, strict=True)]  # type: ignore[attr-defined]

    def end_batch(self, states: Sequence[State]) -> np.ndarray:
        if not states:
            return np.zeros(0)
        return self.logprobs_tensor(states)[:, self.eos_id].double().cpu().numpy()

    def score_sentences(self, sentences: Iterable[Sequence[str]], *, eos: bool = True,
                        max_tokens: int = 4096) -> list[SentenceScore]:
        """Score whole sentences with padded full-sequence forwards (sorted by length, batched)."""
        sents = [list(s) for s in sentences]
        seqs = [[self.unit_id(u) for u in s] for s in sents]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        res: list[np.ndarray | None] = [None] * len(seqs)
        batch: list[int] = []
        with torch.inference_mode():
            for j, i in enumerate(order):
                batch.append(i)
                t = len(seqs[i]) + 1
                if j + 1 == len(order) or (len(batch) + 1) * (len(seqs[order[j + 1]]) + 1) > max(max_tokens, t):
                    for bi, blp in zip(batch, self._full_logprobs([seqs[b] for b in batch]), strict=True):
                        res[bi] = blp
                    batch = []
        out = []
        for s, lp in zip(sents, res, strict=True):
            assert lp is not None
            oov = tuple(self.is_oov(u) for u in s)
            self.oov_seen += sum(oov)
            out.append(SentenceScore(tuple(s), lp if eos else lp[:-1], oov))
        return out

    def score_sentence(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        return self.score_sentences([units], eos=eos)[0]

    def score_sentence_incremental(self, units: Sequence[str], *, eos: bool = True) -> SentenceScore:
        """Score unit by unit through :meth:`score` (the incremental path; see :meth:`score_sentences`)."""
        return LanguageModel.score_sentence(self, units, eos=eos)


class NeuralLM(CachedIncrementalLM):
    """A built-in torch LM (:class:`LSTMLM` or :class:`TransformerLM`) over a sentencepiece vocabulary.

    Args:
        model: the module (see :func:`build_model`); put in eval mode and moved to ``device``/``dtype``.
        tokenizer: its sentencepiece tokenizer; units are ``Units.token(tokenizer.identity)``.
        config: the model config (``{"arch": ..., hyper-parameters}``).
        name: short name for reports and weights (default ``"nnlm"``).
        device, dtype: where and in what precision to run (``"cpu"``, ``"cuda"``; ``torch.float32`` ...).
        cache_bytes: LRU bound on the cached hidden states / KV caches.
        max_batch: most states advanced in one forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: SentencePieceTokenizer,
        config: Mapping[str, Any],
        *,
        name: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        cache_bytes: int = 1 << 30,
        max_batch: int = 4096,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name or "nnlm", tokenizer.units, cache_bytes=cache_bytes, max_batch=max_batch)
        self.tokenizer = tokenizer
        self.config = normalize_config(config)
        self.meta = dict(meta or {})
        self.pieces = list(tokenizer.pieces)
        self.piece_to_id = dict(tokenizer.piece_to_id)
        sp = tokenizer.sp
        v = len(self.pieces)
        self.eos_id = sp.eos_id() if sp.eos_id() >= 0 else v
        self.n_out = v if sp.eos_id() >= 0 else v + 1
        self.bos_id = self.eos_id
        self.unk_id = sp.unk_id() if sp.unk_id() >= 0 else None
        self.special_ids = frozenset(i for i in range(v) if sp.IsControl(i) or sp.IsUnknown(i))
        if getattr(model, "n_vocab", None) != self.n_out:
            raise LMFusionError(f"model has {getattr(model, 'n_vocab', '?')} output symbols but tokenizer "
                                f"{tokenizer.identity} needs {self.n_out} ({v} pieces + end-of-sentence)")
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.dtype = next(self.model.parameters()).dtype

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], tokenizer: SentencePieceTokenizer, seed: int = 0, **kwargs: Any
    ) -> NeuralLM:
        """A model with random weights (seeded; the global RNG is left untouched)."""
        cfg = normalize_config(config)
        v = len(tokenizer)
        n_out = v if tokenizer.sp.eos_id() >= 0 else v + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(cfg, n_out)
        return cls(model, tokenizer, cfg, **kwargs)

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text)

    # -- hooks -------------------------------------------------------------------------------------
    def _empty_past(self) -> Any:
        return self.model.empty_past()  # type: ignore[operator]

    def _advance(self, pasts: Sequence[Any], ids: list[list[int]]) -> tuple[torch.Tensor, list[Any]]:
        x = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        logits, new = self.model.advance(pasts, x)  # type: ignore[operator]
        return torch.log_softmax(logits[:, -1].float(), dim=-1), new

    def _full_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        lps = sequence_logprobs(self.model, seqs, self.bos_id, self.eos_id)
        return [lp.double().cpu().numpy() for lp in lps]

    def full_distributions(self, seqs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return sequence_distributions(self.model, seqs, self.bos_id)

    # -- checkpoints -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The checkpoint config (what ``lmfusion-lm.json`` holds)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "model": self.config,
            "tokenizer": {
                "type": "sentencepiece",
                "file": self.tokenizer.path.name,
                "identity": self.tokenizer.identity,
                "pieces": len(self.pieces),
            },
            "n_out": self.n_out,
            "eos_id": self.eos_id,
            "weights": WEIGHTS_NAME,
            "meta": self.meta,
        }

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.model.state_dict().items()}

    def save(self, directory: str | Path, *, meta: Mapping[str, Any] | None = None) -> Path:
        """Write a checkpoint directory atomically (built beside it, then swapped in)."""
        if meta is not None:
            self.meta = dict(meta)
        return save_checkpoint(directory, self.to_json(), self.state_dict_cpu(), self.tokenizer.path)


# ----------------------------------------------------------------------------------------------
# Checkpoint I/O
# ----------------------------------------------------------------------------------------------
def _replace_dir(tmp: Path, target: Path) -> None:
    """Move directory ``tmp`` to ``target``, replacing it; a reader sees the old or the new one."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def save_checkpoint(
    directory: str | Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    tokenizer_file: str | Path,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``config`` JSON + safetensors weights + the tokenizer file into ``directory``, atomically."""
    from safetensors.torch import save as st_save

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tok = Path(tokenizer_file)
        atomic_write_bytes(tmp / tok.name, tok.read_bytes())
        atomic_write_bytes(tmp / WEIGHTS_NAME, st_save(dict(tensors), metadata={"format": FORMAT}))
        for name, data in (extra_files or {}).items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_json(tmp / CONFIG_NAME, dict(config))
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


PICKLE_HINT = "lmfusion never unpickles weights; convert them with safetensors.torch.save_file"


def check_safetensors_file(path: str | Path) -> None:
    """Refuse pickles and truncated or corrupt safetensors files with a located, specific error."""
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path=path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        raise InputError(f"a zip archive (torch.save/pickle format), expected safetensors; {PICKLE_HINT}", path=path)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        raise InputError(f"a Python pickle, expected safetensors; {PICKLE_HINT}", path=path)
    if size < 8:
        raise InputError(f"truncated safetensors file ({size} bytes)", path=path)
    n = int.from_bytes(head[:8], "little")
    if n <= 0 or 8 + n > size:
        raise InputError(f"truncated or corrupt safetensors file (header says {n} bytes, file has {size})", path=path)
    with path.open("rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        hdr = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in hdr.items() if k != "__metadata__"), default=0)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise InputError("corrupt safetensors header", path=path) from None
    if 8 + n + end > size:
        raise InputError(f"truncated safetensors file: tensors need {8 + n + end} bytes, file has {size}", path=path)


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing pickles and explaining truncated or corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"unreadable safetensors file ({e})", path=path) from None


def check_weights(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], path: Path,
                  config_desc: str) -> None:
    """Raise a clear error when ``found`` tensors do not match the names and shapes a config needs."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise InputError(
            f"weights do not match the config ({config_desc}): missing tensors {missing[:5]}, "
            f"unexpected tensors {extra[:5]}", path=path)
    for k, t in expected.items():
        if tuple(found[k].shape) != tuple(t.shape):
            raise InputError(
                f"weights do not match the config ({config_desc}): tensor {k!r} has shape "
                f"{list(found[k].shape)} in the file but the config needs {list(t.shape)}", path=path)
        if not torch.isfinite(found[k]).all():
            raise InputError(f"tensor {k!r} contains NaN or infinity", path=path)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``lmfusion-lm.json`` of a checkpoint directory."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("neural LM checkpoint directory not found", path=d)
    cfg_path = d / CONFIG_NAME
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise InputError("expected a JSON object", path=cfg_path)
    if cfg.get("format") != FORMAT:
        raise InputError(f"not an lmfusion neural LM config (format {cfg.get('format')!r}, expected {FORMAT!r})",
                         path=cfg_path, field="format")
    if cfg.get("version") != FORMAT_VERSION:
        raise InputError(f"unsupported version {cfg.get('version')!r}", path=cfg_path, field="version")
    for f in ("model", "tokenizer"):
        if not isinstance(cfg.get(f), dict):
            raise InputError("missing or not an object", path=cfg_path, field=f)
    return cfg


def load_tokenizer(directory: Path, tok_cfg: Mapping[str, Any], cfg_path: Path) -> SentencePieceTokenizer:
    """The tokenizer a checkpoint config names, checked against the identity it recorded."""
    kind = tok_cfg.get("type")
    if kind != "sentencepiece":
        raise InputError(f"unknown tokenizer type {kind!r} (this loader knows 'sentencepiece')",
                         path=cfg_path, field="tokenizer.type")
    fname = tok_cfg.get("file")
    if not isinstance(fname, str) or not fname or Path(fname).name != fname:
        raise InputError(f"tokenizer file must be a plain file name, got {fname!r}", path=cfg_path,
                         field="tokenizer.file")
    tok = SentencePieceTokenizer(directory / fname)
    want = tok_cfg.get("identity")
    if want is not None and want != tok.identity:
        raise InputError(f"tokenizer {tok.identity} is not the one the model was trained with ({want})",
                         path=directory / fname, field="tokenizer.identity")
    return tok


def load_lm(
    path: str | Path,
    name: str | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> NeuralLM:
    """Open a checkpoint directory (``lmfusion-lm.json`` + ``model.safetensors`` + sentencepiece model).

    A Hugging Face model directory whose ``lmfusion-lm.json`` says ``{"format": "lmfusion-hf-lm"}`` (see
    :func:`fusion.hf_lm.mark_hf_dir`) opens as a :class:`fusion.hf_lm.HFCausalLM`.

    Raises:
        InputError: missing files, an unknown tokenizer, a config that does not match the weights,
            a truncated file, or a pickle where safetensors were expected (each names the file).
    """
    d = Path(path)
    raw = read_json(d / CONFIG_NAME) if d.is_dir() else None
    if isinstance(raw, dict) and raw.get("format") == HF_FORMAT:
        from fusion.hf_lm import HFCausalLM

        return HFCausalLM.from_pretrained(d, name=name or raw.get("name") or d.name, device=str(device),  # type: ignore[return-value]
                                          dtype=dtype, **kwargs)
    cfg = read_checkpoint_config(d)
    cfg_path = d / CONFIG_NAME
    try:
        mcfg = normalize_config(cfg["model"])
    except LMFusionError as e:
        raise InputError(str(e), path=cfg_path, field="model") from None
    tok = load_tokenizer(d, cfg["tokenizer"], cfg_path)
    n_out = len(tok) if tok.sp.eos_id() >= 0 else len(tok) + 1
    if cfg.get("n_out", n_out) != n_out:
        raise InputError(f"config says {cfg.get('n_out')} output symbols, tokenizer gives {n_out}",
                         path=cfg_path, field="n_out")
    wname = cfg.get("weights", WEIGHTS_NAME)
    if not isinstance(wname, str) or Path(wname).name != wname:
        raise InputError(f"weights must be a plain file name, got {wname!r}", path=cfg_path, field="weights")
    tensors = load_safetensors(d / wname)
    with torch.device("meta"):
        skeleton = build_model(mcfg, n_out)
    desc = ", ".join(f"{k}={v}" for k, v in mcfg.items())
    check_weights(skeleton.state_dict(), tensors, d / wname, desc)
    model = build_model(mcfg, n_out)
    model.load_state_dict(tensors, strict=True)
    return NeuralLM(model, tok, mcfg, name=name or cfg.get("name") or d.name, device=device, dtype=dtype,
                    meta=cfg.get("meta") or {}, **kwargs)


def clone_lm(lm: NeuralLM, **kwargs: Any) -> NeuralLM:
    """A copy of ``lm`` with its own cache (e.g. on another device: ``clone_lm(lm, device="cuda")``)."""
    model = copy.deepcopy(lm.model)
    kw: dict[str, Any] = {"name": lm.name, "device": lm.device, "meta": lm.meta}
    kw.update(kwargs)
    return NeuralLM(model, lm.tokenizer, lm.config, **kw)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def perplexity_of(lm: CachedIncrementalLM, sentences: Sequence[str]) -> float:
    """Perplexity (natural log, ``</s>`` included) of text sentences under a token-level LM."""
    scores = lm.score_sentences([lm.tokenize(s) for s in sentences])
    total = sum(s.total for s in scores)
    n = sum(s.n_predictions for s in scores)
    return math.exp(-total / n)
