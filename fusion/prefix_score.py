"""Score many token sequences with a causal transformer, sharing common prefixes (tree attention).

The hypotheses of an n-best list mostly share their first words. Instead of one forward per hypothesis,
the sequences are merged into prefix tries; each trie is laid out as one row of tokens (every trie node
once, parents before children) and run in a single forward pass with a tree attention mask — a node
attends to itself and its ancestors only — and ``position_ids`` = the node's depth. The logits at a
node are then exactly the next-token logits after that node's prefix, so each shared prefix is computed
once and many tries (utterances) go through one padded batch.

:func:`trie_rows` packs sequences into rows (sorted so sequences with shared prefixes fall in one row);
:func:`tree_sequence_logprobs` runs the model on them; :func:`reference_sequence_logprobs` is the plain
reference (one forward per sequence) that tests and benchmarks compare against.

Works with Hugging Face causal LMs that honour a 4-D boolean ``attention_mask`` and explicit
``position_ids`` (Llama, Qwen, Mistral, GPT-2 in ``transformers`` 5.x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["TrieRow", "reference_sequence_logprobs", "tree_sequence_logprobs", "trie_rows"]


@dataclass
class TrieRow:
    """One packed prefix trie: node tokens (node 0 = the start symbol), parents, depths, sequence ends."""

    tokens: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    ends: list[tuple[int, int]] = field(default_factory=list)  # (sequence index, its last node)
    children: dict[tuple[int, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def new_nodes(self, seq: Sequence[int]) -> int:
        """How many nodes adding ``seq`` would create."""
        node = 0
        for k, t in enumerate(seq):
            nxt = self.children.get((node, t))
            if nxt is None:
                return len(seq) - k
            node = nxt
        return 0

    def add(self, index: int, seq: Sequence[int]) -> None:
        node = 0
        for t in seq:
            nxt = self.children.get((node, t))
            if nxt is None:
                nxt = len(self.tokens)
                self.children[(node, t)] = nxt
                self.tokens.append(int(t))
                self.parent.append(node)
                self.depth.append(self.depth[node] + 1)
            node = nxt
        self.ends.append((index, node))


def trie_rows(seqs: Sequence[Sequence[int]], start: int, *, max_row: int = 512) -> list[TrieRow]:
    """Pack ``seqs`` (without the start symbol) into prefix tries of at most ``max_row`` nodes.

    Sequences are visited in lexicographic order, so ones sharing a prefix land in the same row; a
    sequence longer than ``max_row - 1`` gets a row of its own.
    """
    order = sorted(range(len(seqs)), key=lambda i: tuple(seqs[i]))
    rows: list[TrieRow] = []
    row: TrieRow | None = None
    for i in order:
        s = seqs[i]
        if row is None or len(row) + row.new_nodes(s) > max_row:
            row = TrieRow([int(start)], [-1], [0])
            rows.append(row)
        row.add(i, s)
    return rows


def _tree_batch(rows: Sequence[TrieRow], pad: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    b, n = len(rows), max(len(r) for r in rows)
    ids = torch.full((b, n), pad, dtype=torch.long)
    pos = torch.zeros((b, n), dtype=torch.long)
    par = torch.zeros((b, n), dtype=torch.long)
    mask = torch.eye(n, dtype=torch.bool).repeat(b, 1, 1)  # padding attends to itself (no empty rows)
    for i, r in enumerate(rows):
        m = len(r)
        ids[i, :m] = torch.as_tensor(r.tokens)
        pos[i, :m] = torch.as_tensor(r.depth)
        par[i, :m] = torch.as_tensor(r.parent).clamp(min=0)
        anc = mask[i]
        for j in range(1, m):  # parents come first: a node's ancestors are its parent's plus itself
            anc[j, :j] |= anc[r.parent[j], :j]
    return ids.to(device), pos.to(device), par.to(device), mask[:, None].to(device)


def tree_sequence_logprobs(
    model: Any,
    seqs: Sequence[Sequence[int]],
    *,
    start: int,
    end: int | None,
    pad: int = 0,
    max_row: int = 512,
    max_tokens: int = 2048,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """``Σ ln P(token | prefix)`` (plus ``ln P(end | sequence)`` when ``end`` is given) of each sequence.

    Args:
        model: a causal LM called as ``model(input_ids, attention_mask=4-D bool, position_ids)``.
        seqs: token-id sequences, without the start symbol.
        start: the symbol every sequence is conditioned on (BOS).
        end: the end-of-sentence id scored after each sequence, or ``None``.
        max_row: most trie nodes in one row; max_tokens: most tokens (rows x longest row) per forward.
    """
    out = np.zeros(len(seqs), dtype=np.float64)
    rows = sorted(trie_rows(seqs, start, max_row=max_row), key=len)
    dev = torch.device(device)
    lo = 0
    while lo < len(rows):
        hi = lo + 1
        while hi < len(rows) and (hi + 1 - lo) * len(rows[hi]) <= max_tokens:
            hi += 1
        batch = rows[lo:hi]
        ids, pos, par, mask = _tree_batch(batch, pad, dev)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits.float()
            lse = torch.logsumexp(logits, dim=-1)  # [B, N]
            tok_lp = _node_logprobs(logits, lse, ids, par)
            eos_lp = (logits[..., end] - lse) if end is not None else None
        tok = tok_lp.double().cpu().numpy()
        eos = eos_lp.double().cpu().numpy() if eos_lp is not None else None
        for i, r in enumerate(batch):
            cum = np.zeros(len(r))
            for j in range(1, len(r)):
                cum[j] = cum[r.parent[j]] + tok[i, j]
            for s, node in r.ends:
                out[s] = cum[node] + (eos[i, node] if eos is not None else 0.0)
        lo = hi
    return out


def _node_logprobs(logits: torch.Tensor, lse: torch.Tensor, ids: torch.Tensor, par: torch.Tensor) -> torch.Tensor:
    """``[B, N]``: log-prob of each node's token under its parent's next-token distribution."""
    b_idx = torch.arange(logits.shape[0], device=logits.device)[:, None]
    return logits[b_idx, par, ids] - lse.gather(1, par)


def reference_sequence_logprobs(
    model: Any, seqs: Sequence[Sequence[int]], *, start: int, end: int | None, device: torch.device | str = "cpu"
) -> np.ndarray:
    """The plain reference: one forward per sequence (``[start, *seq]``), no sharing, no padding."""
    out = np.zeros(len(seqs), dtype=np.float64)
    dev = torch.device(device)
    for i, s in enumerate(seqs):
        x = torch.as_tensor([[start, *s]], dtype=torch.long, device=dev)
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0].double(), dim=-1)
        tgt = [*s, end] if end is not None else list(s)
        out[i] = float(lp[torch.arange(len(tgt)), torch.as_tensor(tgt)].sum())
    return out
