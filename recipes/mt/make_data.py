"""Make phoneme-to-text parallel data from real sentences with espeak-ng.

Source domain (training pairs): Python 3.11 documentation sentences (Debian ``python3.11-doc``).
Target domain (dev/test pairs and LM text): King James Bible sentences (Debian ``bible-kjv``).

The text side is the normalised sentence (lower case, letters and apostrophes); the source side is
espeak-ng's ASCII phoneme transcription (``espeak-ng -q -x -v en-us``), one sentence per line.
No sentence appears in two splits; the bundled ``data/text`` dev/test sentences stay held out.

    apt-get install espeak-ng bible-kjv python3.11-doc
    python -m recipes.mt.make_data runs/mt/data
"""

from __future__ import annotations

import argparse
import random
import subprocess
from pathlib import Path

from fusion.io import atomic_write_text, read_sentences
from recipes.data.make_text_corpora import bible_sentences, normalise, tech_sentences

REPO = Path(__file__).resolve().parents[2]
TEXT = REPO / "data" / "text"


def phonemise(sentences: list[str], voice: str = "en-us", chunk: int = 2000) -> list[str]:
    """espeak-ng phonemes for each sentence (a period after each keeps one output line per sentence)."""
    out: list[str] = []
    for i in range(0, len(sentences), chunk):
        part = sentences[i : i + chunk]
        res = subprocess.run(
            ["espeak-ng", "-q", "-x", "-v", voice, "--stdin"],
            input="".join(s + ".\n" for s in part), capture_output=True, text=True, check=True,
        )
        lines = [" ".join(x.split()) for x in res.stdout.splitlines() if x.strip()]
        if len(lines) != len(part):
            # fall back to one process per sentence for this chunk (rare: espeak split a sentence)
            lines = []
            for s in part:
                r = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, s + "."], capture_output=True,
                                   text=True, check=True)
                lines.append(" ".join(r.stdout.split()))
        out.extend(lines)
    return out


def write_pairs(outdir: Path, name: str, sents: list[str]) -> None:
    ph = phonemise(sents)
    atomic_write_text(outdir / f"{name}.txt", "".join(s + "\n" for s in sents))
    atomic_write_text(outdir / f"{name}.ph", "".join(p + "\n" for p in ph))
    print(f"{name}: {len(sents)} pairs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--test-size", type=int, default=500, help="bible test sentences (bundled 250 + extra)")
    args = ap.parse_args(argv)
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)

    tech_held = set(read_sentences(TEXT / "tech.dev.txt")) | set(read_sentences(TEXT / "tech.test.txt"))
    tech = [s for s in dict.fromkeys(x for x in (normalise(y) for y in tech_sentences()) if x) if s not in tech_held]
    random.Random(7).shuffle(tech)
    bible_dev = read_sentences(TEXT / "bible.dev.txt")
    bible_test = read_sentences(TEXT / "bible.test.txt")
    held = set(bible_dev) | set(bible_test)
    bible = [s for s in dict.fromkeys(x for x in (normalise(y) for y in bible_sentences()) if x) if s not in held]
    random.Random(7).shuffle(bible)
    extra = max(0, args.test_size - len(bible_test))
    bible_test = bible_test + bible[:extra]
    bible_lm = bible[extra:]

    write_pairs(out, "tech.train", tech)
    write_pairs(out, "tech.dev", read_sentences(TEXT / "tech.dev.txt"))
    write_pairs(out, "bible.dev", bible_dev)
    write_pairs(out, "bible.test", bible_test)
    atomic_write_text(out / "bible.lm.txt", "".join(s + "\n" for s in bible_lm))
    atomic_write_text(out / "tech.lm.txt", "".join(s + "\n" for s in tech))
    print(f"bible.lm: {len(bible_lm)} sentences; tech.lm: {len(tech)} sentences")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
