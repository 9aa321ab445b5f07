"""The built-in torch LM architectures: a small LSTM and a decoder-only Transformer, and their configs.

Both expose the same three methods, so :class:`fusion.neural.NeuralLM` drives either:

* ``empty_past() -> Tensor`` — the recurrent state / KV cache of nothing;
* ``advance(pasts, ids) -> (logits [B, T, V], new pasts)`` — feed ids ``[B, T]`` after each row's past;
* ``forward(ids) -> logits [B, T, V]`` — a whole (right-padded) batch from scratch.

A "past" is one row's state as a single tensor (so LM-side caches can hold it per prefix).
:func:`sequence_logprobs` is the plain full-sequence path (also used in training).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion.errors import LMFusionError

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
