"""KenLM n-best rescoring throughput: ``decoders.nbest.rescore`` vs a plain loop of ``kenlm.Model.score``.

Builds a 3-gram on the bundled bible+tech training text with lmplz (KenLM binary), makes n-best
lists of distinct hypotheses (dev/test sentences with random word edits, so many words are rare or
unseen), then scores every hypothesis

* anchor: ``[model.score(text, bos=True, eos=True) for every hypothesis]`` (the bare kenlm loop);
* lmfusion, score column: ``score_hypotheses(nbests, KenLM(...))`` -- every hypothesis' ln-score as a
  flat array (the score-cache column tuning reads): de-duplication, log10 -> ln; then again with
  ``count_oov=True`` (one split of every distinct text: costs about as much as KenLM's scoring);
* lmfusion, full: ``rescore(nbests, {"ngram": KenLM(...)})`` -- the above plus the word-count
  component and new immutable n-best records (what the CLI writes back as JSONL).

    .venv/bin/python benchmarks/bench_rescore.py [--utts 2000] [--nbest 20] [--repeat 5]

Prints hypotheses/second of both and the ratio lmfusion/anchor (goal >= 0.8).

``--memory`` measures the ``lmfusion rescore`` command end to end instead (issue 13: streaming): an
n-best JSONL of 100k and 1M hypotheses (20 per utterance) rescored with two KenLM binaries (bible,
tech) and written back, by this checkout and by an older one (``--old DIR``: a ``git worktree`` of
``--old-ref``, default the last commit before issue 13, that the script adds when DIR does not exist),
each run in a fresh process (no warm caches), interleaved, median of ``--repeat``.
Reports peak RSS (the child's ``ru_maxrss``), wall time, CPU time
(user + system: steadier than wall time on a shared machine), hypotheses per CPU second, and time to
the first output byte::

    .venv/bin/python benchmarks/bench_rescore.py --memory --old /tmp/old [--sizes 100000 1000000]

``--memory --tune`` measures ``lmfusion tune`` the same way instead: a dev JSONL of 100k and 1M
hypotheses with ``am``, ``lm`` and ``words`` scores and references, tuned by a 5-point grid (no bootstrap),
against ``--old`` (for this comparison, a checkout of the version before streamed ``tune`` input)::

    .venv/bin/python benchmarks/bench_rescore.py --memory --tune --old /tmp/old-tune --old-ref main
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest import rescore_with_stats, score_hypotheses
from fusion.ngram import LN10, KenLM, build_ngram

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def make_nbests(utts: int, nbest: int, seed: int) -> list[NBestList]:
    rng = random.Random(seed)
    sents = []
    for name in ("bible.dev.txt", "tech.dev.txt", "bible.test.txt", "tech.test.txt"):
        sents += [s.strip() for s in (TEXT / name).read_text(encoding="utf-8").splitlines() if s.strip()]
    vocab = sorted({w for s in sents for w in s.split()}) + [f"unseen{i}" for i in range(50)]
    out = []
    for u in range(utts):
        ref = sents[u % len(sents)]
        texts: dict[str, None] = {ref: None}
        while len(texts) < nbest:
            ws = ref.split()
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(ws))
                ws[j] = rng.choice(vocab)
            texts[" ".join(ws)] = None
        hyps = tuple(ScoredHypothesis(t, {"am": -rng.random() * 50}) for t in texts)
        out.append(NBestList(f"utt{u}", hyps, ref))
    return out


_CHILD = """
import resource, runpy, sys, time
sys.argv = ["lmfusion"] + sys.argv[1:]
try:
    runpy.run_module("recipes", run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
ru = resource.getrusage(resource.RUSAGE_SELF)
print("MAXRSS_KB", ru.ru_maxrss, ru.ru_utime + ru.ru_stime, file=sys.stderr)
sys.exit(code)
"""


def write_big_jsonl(path: Path, n_hyps: int, nbest: int = 20, seed: int = 0, *, lm_scores: bool = False) -> None:
    """An n-best JSONL of ``n_hyps`` hypotheses (edited dev/test sentences), streamed to disk; with
    ``lm_scores`` each hypothesis also gets a random ``lm`` score and its ``words`` count (for ``tune``)."""
    import json

    per = 2000
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n_hyps // nbest, per):
            for nb in make_nbests(min(per, n_hyps // nbest - start), nbest, seed + start):
                d = nb.to_json()
                d["utt_id"] = f"u{start}-{d['utt_id']}"
                if lm_scores:
                    for h in d["hyps"]:
                        h["scores"].update(lm=-rng.random() * 30, words=float(len(h["text"].split())))
                f.write(json.dumps(d, ensure_ascii=False) + "\n")


def run_cli(tree: Path, argv: list[str], out: Path) -> dict[str, float]:
    """One ``lmfusion`` run of the code in ``tree`` in a fresh process: peak RSS, seconds, first byte."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = None
    while proc.poll() is None:  # time to the first output byte (the temporary file the writer fills)
        if first is None and any(
            p.stat().st_size > 0 for p in out.parent.iterdir() if p.name.startswith((".out", "out"))
        ):
            first = time.perf_counter() - t0
        time.sleep(0.02)
    secs = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: lmfusion {' '.join(argv)} failed:\n{err[-2000:]}")
    rss, cpu = next(line.split()[1:3] for line in err.splitlines() if line.startswith("MAXRSS_KB"))
    return {"rss_mb": int(rss) / 1024, "seconds": secs, "cpu": float(cpu), "first": secs if first is None else first}


def memory_benchmark(args: argparse.Namespace) -> None:
    import shutil
    import statistics
    import subprocess

    new = Path(__file__).resolve().parents[1]
    old = Path(args.old) if args.old else None
    if old is not None and not old.exists():
        subprocess.run(["git", "-C", str(new), "worktree", "add", "--detach", str(old), args.old_ref], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        lms = [build_ngram([TEXT / f"{n}.train.txt"], d / f"{n}.bin", order=3, progress=False)
               for n in ("bible", "tech")]  # fmt: skip
        trees = [("new", new)] + ([("old", old)] if old is not None else [])
        print("| hypotheses | version | peak RSS (MB) | wall s | CPU s | hyps/CPU s | first output (s) |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for n in args.sizes:
            nb = d / f"nb{n}.jsonl"
            write_big_jsonl(nb, n, lm_scores=args.tune)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
            for _ in range(args.repeat):
                for name, tree in trees:
                    work = d / f"run-{name}"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    out = work / "out.jsonl"
                    argv = ["-q", "rescore", str(nb), "--lm", f"bible={lms[0]}", f"tech={lms[1]}", "-o", str(out)]
                    if args.tune:
                        argv = ["-q", "tune", "--dev", str(nb), "--method", "grid", "--points", "5",
                                "--bootstrap", "0", "-o", str(out.with_suffix(".json"))]  # fmt: skip
                    runs[name].append(run_cli(tree, argv, out))
            for name, _ in trees:
                med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
                print(f"| {n:,} | {name} | {med['rss_mb']:.0f} | {med['seconds']:.1f} | {med['cpu']:.1f} | "
                      f"{n / med['cpu']:,.0f} | {med['first']:.1f} |", flush=True)  # fmt: skip
            nb.unlink()
        what = "tune --method grid --points 5" if args.tune else "rescore with two KenLMs"
        print(f"({what}: median of {args.repeat} fresh-process runs each; input {d}/nb*.jsonl, 20 hyps per utterance)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utts", type=int, default=2000)
    ap.add_argument("--nbest", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="best of N timings for each side")
    ap.add_argument("--memory", action="store_true", help="peak RSS/throughput of the rescore command (see above)")
    ap.add_argument("--tune", action="store_true", help="--memory: measure `lmfusion tune` instead of rescore")
    ap.add_argument("--old", help="--memory: an older checkout to compare with (a worktree of main is added here)")
    ap.add_argument("--old-ref", default="776ebda", help="--memory: the commit --old checks out (before issue 13)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="--memory: hypotheses")
    args = ap.parse_args()
    if args.memory:
        memory_benchmark(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        lm_path = build_ngram(
            [TEXT / "bible.train.txt", TEXT / "tech.train.txt"], Path(tmp) / "lm.bin", order=3, progress=False
        )
        lm = KenLM(lm_path, name="ngram")
        model = lm.model
        nbests = make_nbests(args.utts, args.nbest, seed=0)
        texts = [h.text for nb in nbests for h in nb.hyps]
        n = len(texts)
        print(f"{len(nbests)} utterances, {n} hypotheses ({len(set(texts))} distinct), 3-gram KenLM binary")

        def anchor() -> list[float]:
            return [model.score(t, bos=True, eos=True) for t in texts]

        def column() -> list[float]:
            return score_hypotheses(nbests, lm, count_oov=False)[0].tolist()

        def column_oov() -> list[float]:
            return score_hypotheses(nbests, lm, count_oov=True)[0].tolist()

        def full() -> list[float]:
            out = rescore_with_stats(nbests, {"ngram": lm})[0]
            return [h.scores["ngram"] for nb in out for h in nb.hyps]

        sides = (("anchor", anchor), ("column", column), ("column_oov", column_oov), ("full", full))
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        results = {}
        for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
            for name, fn in sides:
                t0 = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t0)
        rate = {k: n / min(v) for k, v in times.items()}
        for name in ("column", "column_oov", "full"):
            worst = max(abs(g - r * LN10) for g, r in zip(results[name], results["anchor"], strict=True))
            assert worst < 1e-9, f"{name} differs from the anchor by {worst}"
        a = rate["anchor"]
        print(f"anchor  kenlm.Model.score loop:      {a:>9.0f} hyps/s")
        print(
            f"lmfusion score_hypotheses, scores:   {rate['column']:>9.0f} hyps/s  "
            f"ratio {rate['column'] / a:.2f} (goal >= 0.8)"
        )
        print(
            f"  ... with OOV counts (count_oov):   {rate['column_oov']:>9.0f} hyps/s  "
            f"ratio {rate['column_oov'] / a:.2f}"
        )
        print(f"lmfusion rescore, full records:      {rate['full']:>9.0f} hyps/s  ratio {rate['full'] / a:.2f}")


if __name__ == "__main__":
    main()
