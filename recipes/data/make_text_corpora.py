"""Make the bundled two-domain text corpora from Debian packages (run once; outputs are committed).

Domains:
  bible  the King James Bible (public domain), from Debian's ``bible-kjv`` (``bible -f``)
  tech   the Python 3.11 documentation sources (PSF licence), from Debian's ``python3.11-doc``

Text is normalised the way ASR references are: lower case, letters and apostrophes only, one
sentence per line, 4-25 words. Sentences are shuffled with a fixed seed, de-duplicated, and split
into train / dev / test with no sentence in two splits.

    apt-get install bible-kjv python3.11-doc
    python recipes/data/make_text_corpora.py data/text
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?")
SENT_SPLIT = re.compile(r"(?<=[.!?;:])\s+")
MIN_WORDS, MAX_WORDS = 4, 25
SIZES = {"train": 2000, "dev": 250, "test": 250}


def normalise(sentence: str) -> str | None:
    s = sentence.lower()
    if re.search(r"[0-9_=<>(){}\[\]/\\*#@|`$%^~+]", s):
        return None  # code, numbers and markup are not speakable text
    words = WORD_RE.findall(s)
    if not (MIN_WORDS <= len(words) <= MAX_WORDS):
        return None
    return " ".join(words)


def bible_sentences() -> list[str]:
    books = ["Gen", "Exo", "Deu", "Jos", "Jdg", "Rut", "1Sa", "2Sa", "1Ki",
             "Psa", "Pro", "Isa", "Mat", "Luk", "Joh", "Act"]
    out = []
    for b in books:
        txt = subprocess.run(["bible", "-f", f"{b}1:1-{b}150:200"], capture_output=True, text=True).stdout
        for line in txt.splitlines():
            verse = line.split(" ", 1)[1] if " " in line else ""
            out.extend(SENT_SPLIT.split(verse))
    return out


def tech_sentences() -> list[str]:
    root = Path("/usr/share/doc/python3.11/html/_sources")
    out = []
    for f in sorted(root.rglob("*.rst.txt")):
        para: list[str] = []
        for line in [*f.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
            st = line.strip()
            if not st or line.startswith((" ", "\t")) or st.startswith((".. ", "::", "==", "--", "**", "|")):
                if para:
                    text = re.sub(r":[a-z:]+:`([^`]*)`", r"\1", " ".join(para))
                    text = re.sub(r"``[^`]*``", "", text)
                    text = text.replace("`", "")
                    out.extend(SENT_SPLIT.split(text))
                    para = []
                continue
            para.append(st)
    return out


def main(outdir: str) -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, fn in (("bible", bible_sentences), ("tech", tech_sentences)):
        sents = list(dict.fromkeys(s for s in (normalise(x) for x in fn()) if s))
        random.Random(13).shuffle(sents)
        start = 0
        for split in ("dev", "test", "train"):
            chunk = sents[start : start + SIZES[split]]
            start += SIZES[split]
            (out / f"{name}.{split}.txt").write_text("".join(s + "\n" for s in chunk), encoding="utf-8")
            print(f"{name}.{split}: {len(chunk)} sentences of {len(sents)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/text")
