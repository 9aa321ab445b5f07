"""Helpers shared by the benchmark scripts (timing, tables, bundled data and models)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "data" / "text"
WORK = REPO / ".cache" / "bench"


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` runs (the machines are shared: the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def table(rows: list[list[object]], header: list[str]) -> str:
    """A GitHub-flavoured Markdown table."""
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def bench_spm(vocab: int = 1000):
    """A sentencepiece model on both domains' training text (trained once, cached)."""
    from fusion.tokenizers import SentencePieceTokenizer, train_sentencepiece

    p = WORK / f"bench_spm{vocab}.model"
    if p.is_file():
        return SentencePieceTokenizer(p)
    WORK.mkdir(parents=True, exist_ok=True)
    return train_sentencepiece([TEXT / "bible.train.txt", TEXT / "tech.train.txt"], WORK / f"bench_spm{vocab}",
                               vocab_size=vocab)


def kenlm_models(order: int = 3) -> dict[str, Path]:
    """Word 3-grams on the bundled bible / tech / both-domain training text (built once, cached)."""
    from fusion.ngram import build_ngram

    WORK.mkdir(parents=True, exist_ok=True)
    specs = {
        "bible": [TEXT / "bible.train.txt"],
        "tech": [TEXT / "tech.train.txt"],
        "general": [TEXT / "bible.train.txt", TEXT / "tech.train.txt"],
    }
    out = {}
    for name, files in specs.items():
        p = WORK / f"{name}.o{order}.bin"
        if not p.is_file():
            build_ngram(files, p, order=order, progress=False)
        out[name] = p
    return out
