"""Why fusion cannot reach a register's words: what the MT model gives them, and how often each system says them.

* :func:`word_logprobs`: teacher-forced on reference translations, the model's log-probability and rank of
  each listed word's piece (``▁word``) at the positions where the reference has it. A word the training
  targets never contain sits at the label-smoothing floor, far outside any beam an LM weight can lift it into.
* :func:`word_counts`: how often each listed word occurs in texts (references, system outputs).

    python -m recipes.mt.diagnose runs/mt-es-en [--split dev]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KJV_WORDS = ("unto", "thee", "thou", "ye", "hath", "saith", "to", "you", "lord", "shall")
"""King James register words and their modern counterparts."""


def word_logprobs(model: Any, vocabs: Any, src: Sequence[str], refs: Sequence[str], words: Iterable[str],
                  batch: int = 16) -> dict[str, dict[str, float]]:
    """``{word: {"n", "mean_logprob", "median_rank"}}`` over the reference positions of the piece ``▁word``
    (words that are not one piece of the target vocabulary, or never occur, are left out). Rank 0 = the
    model's first choice."""
    import torch

    from recipes.mt.train import collate

    piece = {p: i for i, p in enumerate(vocabs.spm.pieces)}
    ids = {w: piece["\u2581" + w] for w in words if "\u2581" + w in piece}
    pairs = [(vocabs.encode_src(s), vocabs.encode_tgt(t)) for s, t in zip(src, refs, strict=True)]
    lps: dict[str, list[float]] = {w: [] for w in ids}
    ranks: dict[str, list[int]] = {w: [] for w in ids}
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(pairs), batch):
            x, a, di, y = collate(pairs, range(lo, min(lo + batch, len(pairs))), vocabs.pad_id, vocabs.eos_id)
            lp = torch.log_softmax(model(input_ids=x, attention_mask=a, decoder_input_ids=di).logits, -1)
            for w, i in ids.items():
                rows = lp[y == i]
                lps[w] += rows[:, i].tolist()
                ranks[w] += (rows > rows[:, i : i + 1]).sum(-1).tolist()
    return {w: {"n": len(lps[w]), "mean_logprob": sum(lps[w]) / len(lps[w]),
                "median_rank": float(sorted(ranks[w])[len(ranks[w]) // 2])} for w in ids if lps[w]}


def word_counts(texts: Iterable[str], words: Iterable[str]) -> dict[str, int]:
    """Occurrences of each word (whitespace tokens) in ``texts``."""
    want = {w: 0 for w in words}
    for t in texts:
        for tok in t.split():
            if tok in want:
                want[tok] += 1
    return want


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("dir", type=Path, help="a run_es_en directory (data/, model/, eval/)")
    ap.add_argument("--split", default="dev")
    args = ap.parse_args(argv)

    import torch

    from decoders.hypothesis import read_nbest_jsonl
    from fusion.io import read_sentences
    from recipes.mt.evaluate import best_texts
    from recipes.mt.model import load_model

    torch.set_num_threads(1)
    d: Path = args.dir
    model, vocabs = load_model(d / "model")
    src, refs = (read_sentences(d / "data" / f"{args.split}.{ext}") for ext in ("es", "kjv"))
    for w, r in word_logprobs(model, vocabs, src, refs, KJV_WORDS).items():
        print(f"{w}: {r['n']} {args.split} reference positions, mean ln p {r['mean_logprob']:.2f}, "
              f"median rank {r['median_rank']:.0f} (0 = the model's first choice)")
    rows = [("KJV references", read_sentences(d / "data" / "test.kjv")),
            ("WEB references", read_sentences(d / "data" / "test.web"))]
    rows += [(f.name, best_texts(read_nbest_jsonl(f))) for f in sorted((d / "eval").glob("test.*.jsonl"))]
    print("| test texts | " + " | ".join(KJV_WORDS) + " |")
    for name, texts in rows:
        c = word_counts(texts, KJV_WORDS)
        print(f"| {name} | " + " | ".join(str(c[w]) for w in KJV_WORDS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
