"""Shrink recipe n-best lists for bundling under ``data/asr`` (fewer hypotheses, rounded scores).

    python -m recipes.asr.bundle_nbest runs/asr-recipe/nbest/dev.jsonl data/asr/dev.jsonl --max-hyps 20

Scores are rounded to 3 decimals (well below any weight-tuning resolution); tags, references and the
decoder's own 1-best are kept, so the demo evaluates exactly what the full recipe would.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from decoders.hypothesis import NBestList, ScoredHypothesis, read_nbest_jsonl, write_nbest_jsonl


def shrink(nbests: Sequence[NBestList], max_hyps: int, decimals: int = 3) -> list[NBestList]:
    """The first ``max_hyps`` hypotheses of each list, scores rounded to ``decimals``."""
    out = []
    for nb in nbests:
        hyps = tuple(
            ScoredHypothesis(h.text, {k: round(v, decimals) for k, v in h.scores.items()}) for h in nb.hyps[:max_hyps]
        )
        out.append(NBestList(nb.utt_id, hyps, nb.ref, nb.tags))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--max-hyps", type=int, default=20)
    a = ap.parse_args(argv)
    write_nbest_jsonl(a.dst, shrink(read_nbest_jsonl(a.src), a.max_hyps))
    print(a.dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
