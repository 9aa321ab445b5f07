"""Make Spanish -> English parallel data from verse-aligned public-domain Bibles, with held-out books.

Modules (Debian packages ``sword-text-sparv``, ``sword-text-web``, ``sword-text-kjv``, read with
``diatheke``):

* ``spaRV1909eb`` — Reina-Valera 1909, the Spanish source;
* ``engWEB2015eb`` — World English Bible, the modern-English target the model is trained on;
* ``engKJV2006eb`` — King James Version, the target *register* of the adaptation test.

Verses are aligned by reference (book, chapter, verse); only references present in all three modules
are kept. Whole books are held out for dev and test (:data:`DEV_BOOKS`, :data:`TEST_BOOKS`); the model
trains on Spanish -> WEB pairs of every other book, and dev/test references are the KJV verses of the
held-out books. LM text: KJV and WEB verses of the training books only; :func:`main` checks and prints
that no KJV verse of a dev/test book occurs in any LM training text.

Text is normalised like ASR references: lower case, letters and apostrophes (Spanish keeps its accented
letters); punctuation dropped.

    apt-get install diatheke sword-text-sparv sword-text-web sword-text-kjv
    python -m recipes.mt.make_es_en runs/mt-es-en/data
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from fusion.errors import InputError
from fusion.io import atomic_write_json, atomic_write_text

SOURCE, TRAIN_TARGET, ADAPT_TARGET = "spaRV1909eb", "engWEB2015eb", "engKJV2006eb"
DEV_BOOKS = ("Ruth", "Jonah", "Philippians")
TEST_BOOKS = ("Esther", "Amos", "Micah", "Colossians", "I Thessalonians", "Titus", "James")
ALL_KEY = "Genesis 1:1 - Revelation of John 22:21"

_REF = re.compile(r"((?:I{1,3} )?[A-Z][A-Za-z]+(?: [A-Za-z]+)*?) (\d+):(\d+): (.*)$")
_TAG = re.compile(r"<[^>]*>")
_EN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_ES_WORD = re.compile(r"[a-záéíóúüñ]+")

Ref = tuple[str, int, int]
MAX_WORDS = 150
MAX_RATIO = 3.0
"""A verse pair is dropped when a side has more words than this, or one side is this many times longer (a
module's last verse can carry its appendix, e.g. the WEB glossary after Revelation 22:21)."""


def plausible_pair(*sides: str) -> bool:
    """Every side non-empty, at most :data:`MAX_WORDS` words, lengths within :data:`MAX_RATIO` of each other."""
    n = [len(x.split()) for x in sides]
    return min(n) > 0 and max(n) <= MAX_WORDS and max(n) <= MAX_RATIO * min(n) + 5


def parse_osis(lines: Iterable[str]) -> dict[Ref, str]:
    """``diatheke -f OSIS`` output (one verse a line, a heading possibly before the reference) as verses."""
    verses: dict[Ref, str] = {}
    for line in lines:
        m = _REF.search(line)
        if m is not None:
            verses[(m.group(1), int(m.group(2)), int(m.group(3)))] = " ".join(_TAG.sub(" ", m.group(4)).split())
    return verses


def read_module(module: str, key: str = ALL_KEY, *, min_verses: int = 1000) -> dict[Ref, str]:
    """Every verse of a SWORD module as ``{(book, chapter, verse): text}`` (OSIS markup stripped).

    Raises:
        InputError: ``diatheke`` is missing or the module is not installed.
    """
    if shutil.which("diatheke") is None:
        raise InputError("diatheke not found: apt-get install diatheke sword-text-sparv sword-text-web sword-text-kjv")
    res = subprocess.run(["diatheke", "-b", module, "-f", "OSIS", "-k", key], capture_output=True, text=True)
    verses = parse_osis(res.stdout.splitlines())
    if len(verses) < min_verses:
        raise InputError(f"SWORD module {module!r} gave {len(verses)} verses: is its package installed?")
    return verses


def normalise_en(text: str) -> str:
    """Lower-case English words and apostrophes (curly quotes folded)."""
    s = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(_EN_WORD.findall(s))


def normalise_es(text: str) -> str:
    """Lower-case Spanish words (accented letters kept)."""
    return " ".join(_ES_WORD.findall(text.lower()))


def _lines(xs: Iterable[str]) -> str:
    return "".join(x + "\n" for x in xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    args = ap.parse_args(argv)
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    es, web, kjv = (read_module(m) for m in (SOURCE, TRAIN_TARGET, ADAPT_TARGET))
    refs = [r for r in es if r in web and r in kjv]
    books = {r[0] for r in refs}
    for b in (*DEV_BOOKS, *TEST_BOOKS):
        if b not in books:
            raise InputError(f"held-out book {b!r} not found in the modules (books: {sorted(books)})")
    split: dict[str, list[Ref]] = {"train": [], "dev": [], "test": []}
    dropped = 0
    for r in refs:
        name = "dev" if r[0] in DEV_BOOKS else "test" if r[0] in TEST_BOOKS else "train"
        if plausible_pair(normalise_es(es[r]), normalise_en(web[r]), normalise_en(kjv[r])):
            split[name].append(r)
        else:
            dropped += 1
    for name, rs in split.items():
        atomic_write_text(out / f"{name}.es", _lines(normalise_es(es[r]) for r in rs))
        atomic_write_text(out / f"{name}.web", _lines(normalise_en(web[r]) for r in rs))
        atomic_write_text(out / f"{name}.kjv", _lines(normalise_en(kjv[r]) for r in rs))
        atomic_write_text(out / f"{name}.refs", _lines(f"{b} {c}:{v}" for b, c, v in rs))
    # LM text: the training books only (KJV register = target LM, WEB = source LM of the density ratio)
    atomic_write_text(out / "kjv.lm.txt", _lines(normalise_en(kjv[r]) for r in split["train"]))
    atomic_write_text(out / "web.lm.txt", _lines(normalise_en(web[r]) for r in split["train"]))
    held = {normalise_en(kjv[r]) for r in split["dev"] + split["test"]}
    lm_text = {normalise_en(kjv[r]) for r in split["train"]} | {normalise_en(web[r]) for r in split["train"]}
    overlap = sorted(held & lm_text)
    counts = {k: len(v) for k, v in split.items()}
    print(f"pairs: {counts} ({dropped} implausible verse pairs dropped)")
    print(f"dev books: {', '.join(DEV_BOOKS)}; test books: {', '.join(TEST_BOOKS)}")
    print(f"held-out KJV verses also in LM text (identical strings, e.g. refrains): {len(overlap)}")
    atomic_write_json(out / "data-info.json", {"pairs": counts, "dropped": dropped, "dev_books": list(DEV_BOOKS),
                                               "test_books": list(TEST_BOOKS), "held_out_in_lm_text": len(overlap),
                                               "modules": [SOURCE, TRAIN_TARGET, ADAPT_TARGET]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
