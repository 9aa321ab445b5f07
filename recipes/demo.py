"""``make demo`` / ``python -m recipes.demo``: the ASR recipe end to end on bundled data, in a few minutes.

Bundled: ``data/text`` (two domains: King James Bible, Python docs; train/dev/test) and ``data/asr``
(real pocketsphinx n-best lists with separate acoustic and LM scores, from flite voices mixed with pink
and babble noise at clean/30/20/15 dB by ``recipes/configs/asr.yaml``). The demo builds the LMs, EM-mixes
them per domain, rescores, tunes fusion weights globally and per condition, evaluates on the test lists
with paired bootstrap CIs, and writes a fusion profile, a Markdown report and PNG plots to ``runs/demo``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fusion.errors import LMFusionError
from fusion.io import read_json

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--force", action="store_true", help="re-run every stage")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    from recipes.asr.report import wer_table_markdown
    from recipes.asr.run import SCHEMA, build_stages, run_recipe
    from recipes.config import load_config

    t0 = time.perf_counter()
    try:
        force = [s.name for s in build_stages(load_config(a.config, SCHEMA))] if a.force else []
        out = run_recipe(a.config, force=force, progress=not a.quiet)
    except LMFusionError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    p = out["paths"]
    ev = read_json(p["eval"])
    row = ev["table"]["all/all"]
    d = row["per-condition minus global"]
    print()
    print("Test WER (%) per (domain, SNR) condition:")
    print(wer_table_markdown(ev))
    print()
    print(f"per-condition - global weights: {100 * d['delta']:+.2f} WER points, "
          f"95% CI [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}] (paired bootstrap over test utterances)")  # fmt: skip
    ov = ev["overlap"]
    print(f"test sentences in the LM training text: {ov['in_training_text']} of {ov['test_sentences']}")
    print()
    print(f"report:  {p['report']}")
    print(f"plots:   {p['work'] / 'wer_by_condition.png'}, {p['work'] / 'weights_by_condition.png'}")
    print(f"profile: {p['profile']}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
