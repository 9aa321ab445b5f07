"""Scale-out on Dask: the Dask back-end's overhead against in-process rescoring, 1 vs 2 workers, and the
scheduler's task rate (from which the README projects a 100-machine cluster).

One run, same n-best lists and the same LMs for every side:

* anchor — ``decoders.nbest.rescore_with_stats`` in this process (LMs opened before timing);
* in-process sharded — ``decoders.sharded.rescore_sharded`` on :class:`~fusion.executor.InProcess`
  (the sharding and record rebuilding alone);
* Dask, 1 worker and 2 workers — the same call on a loopback cluster of real ``dask scheduler`` /
  ``dask worker`` processes (no nanny, 1 thread per worker). "cold" is the first run on fresh workers
  (it opens the LMs there); the timed runs after it find the LMs cached in the workers, as the anchor
  finds them open — caches of *results* are never reused (every task key is new).
* the scheduler's task rate: ``N`` no-op tasks through ``DaskExecutor.map`` and through a bare
  ``client.map`` + ``gather``, on 2 workers.

Medians of ``--repeat`` runs; time to first result = one shard alone; peak RSS of this process and of
each worker. The LM is a word 3-gram KenLM (binary) on the bundled text: the cheapest LM per hypothesis,
so the worst case for the overhead ratio; ``--neural`` adds a small LSTM LM (trained once, cached),
whose cost per hypothesis is closer to a real neural rescorer's.

    nice -n 10 .venv/bin/python benchmarks/bench_dask.py [--sizes 10000 100000] [--repeat 3] [--neural]
    nice -n 10 .venv/bin/python benchmarks/bench_dask.py --breakdown 100 250 1000   # CPU per process
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TEXT, WORK, kenlm_models, table

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest import rescore_with_stats
from decoders.sharded import RescoreOptions, rescore_sharded, shard_task
from fusion.abilities import LMSpec
from fusion.executor import DaskExecutor, InProcess
from fusion.loading import open_spec
from recipes.scale import LoopbackCluster

HERE = str(Path(__file__).resolve().parent)


def make_nbests(n_hyps: int, nbest: int = 10, seed: int = 0) -> list[NBestList]:
    rng = random.Random(seed)
    sents = []
    for name in ("bible.dev.txt", "tech.dev.txt", "bible.test.txt", "tech.test.txt"):
        sents += [s.strip() for s in (TEXT / name).read_text(encoding="utf-8").splitlines() if s.strip()]
    vocab = sorted({w for s in sents for w in s.split()})
    out = []
    for u in range(n_hyps // nbest):
        ref = sents[u % len(sents)]
        hyps = [ScoredHypothesis(ref, {"am": -rng.random() * 50})]
        for _ in range(nbest - 1):
            ws = ref.split()
            for _ in range(rng.randint(1, 3)):
                ws[rng.randrange(len(ws))] = rng.choice(vocab)
            hyps.append(ScoredHypothesis(" ".join(ws), {"am": -rng.random() * 50}))
        out.append(NBestList(f"utt{u:07d}", tuple(hyps), ref))
    return out


def neural_spec() -> LMSpec:
    """A small LSTM LM over 1000 sentencepiece pieces (trained once on the bundled text, cached)."""
    from _common import bench_spm

    from fusion.nnlm_train import TrainConfig, train_nnlm

    out = WORK / "dask_lstm"
    if not (out / "lmfusion-lm.json").is_file():
        tok = bench_spm()
        train_nnlm(TrainConfig(
            text=[str(TEXT / "bible.train.txt"), str(TEXT / "tech.train.txt")], dev=[str(TEXT / "bible.dev.txt")],
            spm=str(tok.path), output=str(out), model={"arch": "lstm", "emb": 64, "hidden": 128, "layers": 1,
                                                      "dropout": 0.0},
            epochs=1, batch_tokens=4096, lr=3e-3, seed=0, threads=1, progress=False, name="lstm",
        ))  # fmt: skip
    return LMSpec("lstm", path=str(out))


def median_time(fn: Callable[[], object], repeat: int, cpu: Callable[[], float] = time.process_time
                ) -> tuple[float, float]:  # fmt: skip
    """Median wall seconds and median CPU seconds (``cpu()`` before and after) of ``repeat`` runs."""
    ts, cs = [], []
    for _ in range(repeat):
        c, t = cpu(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(cpu() - c)
    return statistics.median(ts), statistics.median(cs)


def _cpu_s() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def cluster_cpu(ex: DaskExecutor) -> Callable[[], float]:
    """CPU seconds used so far by this process, the scheduler and every worker (a shared box's load
    inflates wall times; CPU seconds show the work each side does)."""
    return lambda: time.process_time() + sum(ex.client.run(_cpu_s).values()) + ex.client.run_on_scheduler(_cpu_s)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def task_rate(address: str, n: int, repeat: int) -> dict[str, float]:
    """``n`` no-op tasks on 2 workers: tasks/s (wall) through ``DaskExecutor.map`` and through a bare
    ``client.map`` + gather, and the scheduler's own CPU seconds per task (its capacity on an idle core
    is about the inverse: the scheduler is one single-threaded process)."""
    with DaskExecutor(address) as ex:
        ex.map(abs, list(range(100)))  # warm the connections (abs: a no-op task any worker can import)
        c = ex.client

        def sched_cpu() -> float:
            return float(c.run_on_scheduler(_cpu_s))

        t_ex, cpu_ex = median_time(lambda: ex.map(abs, list(range(n))), repeat, sched_cpu)

        def bare() -> None:
            futs = c.map(abs, range(n), pure=False)
            c.gather(futs)
            del futs

        t_bare, _ = median_time(bare, repeat)
    return {"executor": n / t_ex, "bare": n / t_bare, "sched_cpu_per_task": cpu_ex / n}


def bench_rescore(args: argparse.Namespace, specs: list[LMSpec], label: str) -> list[list[object]]:
    """Each Dask run is timed right after an in-process run of the same lists (pairs, so the box's load
    hits both sides alike); the anchor row is the median over all its runs."""
    lms = {s.name: open_spec(s) for s in specs}
    rows: list[list[object]] = []
    for size in args.sizes:
        nbs = make_nbests(size)
        n_hyps = sum(len(nb.hyps) for nb in nbs)
        one = nbs[: args.shard_size]
        task0 = shard_task(nbs[: args.shard_size], list(lms), RescoreOptions())
        payload, payload_hyps = len(pickle.dumps(task0)), task0.n_hyps
        want, _ = rescore_with_stats(nbs, lms)

        def anchor(nbs: list[NBestList] = nbs) -> object:
            return rescore_with_stats(nbs, lms)

        first = median_time(lambda one=one: rescore_with_stats(one, lms), args.repeat)[0]
        sh = median_time(lambda nbs=nbs: rescore_sharded(nbs, specs, InProcess(), shard_size=args.shard_size),
                         args.repeat)  # fmt: skip
        anchors: list[tuple[float, float]] = []
        dask_rows = []
        for workers in (1, 2):
            with LoopbackCluster(workers, pythonpath=[HERE]) as cl, DaskExecutor(cl.address) as ex:
                t = time.perf_counter()
                got, _ = rescore_sharded(nbs, specs, ex, shard_size=args.shard_size)
                cold = time.perf_counter() - t
                if got != want:
                    raise SystemExit(f"Dask output differs from the in-process output ({label}, {n_hyps})")
                pairs = []
                for _ in range(args.repeat):
                    a = median_time(anchor, 1)
                    d = median_time(lambda nbs=nbs, ex=ex: rescore_sharded(nbs, specs, ex, shard_size=args.shard_size),
                                    1, cluster_cpu(ex))  # fmt: skip
                    anchors.append(a)
                    pairs.append((a, d))
                t_f = median_time(lambda ex=ex, one=one: rescore_sharded(one, specs, ex, shard_size=args.shard_size),
                                  args.repeat)[0]  # fmt: skip
                wmem = max(ex.client.run(_rss_mb).values())
            d_wall = statistics.median(d[0] for _, d in pairs)
            d_cpu = statistics.median(d[1] for _, d in pairs)
            paired = statistics.median(d[0] / a[0] - 1 for a, d in pairs)
            dask_rows.append([label, n_hyps, f"Dask, {workers} worker{'s' if workers > 1 else ''}", cold, d_wall,
                              n_hyps / d_wall, t_f, d_cpu, wmem, 100 * paired])  # fmt: skip
        a_wall = statistics.median(a[0] for a in anchors)
        a_cpu = statistics.median(a[1] for a in anchors)
        rows.append([label, n_hyps, "in-process (anchor)", "-", a_wall, n_hyps / a_wall, first, a_cpu, "-", 0.0])
        rows.append([label, n_hyps, "in-process sharded", "-", sh[0], n_hyps / sh[0], "-", sh[1], "-",
                     100 * (sh[0] / a_wall - 1)])  # fmt: skip
        rows += dask_rows
        print(f"  {label} {n_hyps} hyps done; shard payload {payload / 1024:.0f} KiB "
              f"({payload / payload_hyps:.0f} B/hyp)", flush=True)  # fmt: skip
    return rows


def breakdown(specs: list[LMSpec], n_hyps: int, sizes: list[int], repeat: int) -> None:
    """Where the CPU goes: per shard size, the median CPU seconds of this process (the client), the
    worker and the scheduler for one Dask run on 1 worker, beside the anchor's; then the worker's and the
    scheduler's CPU per second while idle."""
    lms = {s.name: open_spec(s) for s in specs}
    nbs = make_nbests(n_hyps)
    a = median_time(lambda: rescore_with_stats(nbs, lms), repeat)
    print(f"breakdown, {n_hyps} hyps, 1 worker: anchor {a[0]:.2f} s wall, {a[1]:.2f} s CPU")
    with LoopbackCluster(1, pythonpath=[HERE]) as cl, DaskExecutor(cl.address) as ex:
        def procs() -> tuple[float, float, float]:
            return time.process_time(), sum(ex.client.run(_cpu_s).values()), ex.client.run_on_scheduler(_cpu_s)

        for size in sizes:
            rescore_sharded(nbs, specs, ex, shard_size=size)  # warm: the LM opened in the worker
            runs = []
            for _ in range(repeat):
                p0, t0 = procs(), time.perf_counter()
                rescore_sharded(nbs, specs, ex, shard_size=size)
                wall, p1 = time.perf_counter() - t0, procs()
                runs.append((wall, *(y - x for x, y in zip(p0, p1, strict=True))))
            med = [statistics.median(r[i] for r in runs) for i in range(4)]
            print(f"  shards of {size} utterances: {med[0]:.2f} s wall; CPU s client {med[1]:.2f} / worker "
                  f"{med[2]:.2f} / scheduler {med[3]:.2f}")  # fmt: skip
        p0 = procs()
        time.sleep(4)
        p1 = procs()
        print(f"  idle: worker {1000 * (p1[1] - p0[1]) / 4:.0f} ms/s, scheduler {1000 * (p1[2] - p0[2]) / 4:.0f} ms/s "
              "of CPU")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="hypotheses per run")
    ap.add_argument("--shard-size", type=int, default=1000, help="utterances per task (10 hypotheses each)")
    ap.add_argument("--repeat", type=int, default=3, help="median of N timed runs")
    ap.add_argument("--tasks", type=int, default=5000, help="no-op tasks for the scheduler's task rate")
    ap.add_argument("--neural", action="store_true", help="also rescore with a small LSTM LM")
    ap.add_argument("--breakdown", type=int, nargs="+", metavar="SHARD",
                    help="only: CPU per process (client / worker / scheduler) at 100k hypotheses, 1 worker, for "
                    "these shard sizes")  # fmt: skip
    args = ap.parse_args()
    if args.breakdown:
        breakdown([LMSpec("kenlm", path=str(kenlm_models()["general"]))], 100_000, args.breakdown, args.repeat)
        return
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; shards of "
          f"{args.shard_size} utterances; median of {args.repeat}", flush=True)  # fmt: skip
    specs = [LMSpec("kenlm", path=str(kenlm_models()["general"]))]
    rows = bench_rescore(args, specs, "KenLM 3-gram")
    if args.neural:
        rows += bench_rescore(args, [neural_spec()], "LSTM")
    print(table(rows, ["LM", "hyps", "run", "cold s", "median s", "hyps/s", "first shard s", "CPU s (all procs)",
                       "worker MB", "wall overhead %"]))  # fmt: skip
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    with LoopbackCluster(2, pythonpath=[HERE]) as cl:
        r = task_rate(cl.address, args.tasks, args.repeat)
    print(f"scheduler task rate, 2 workers, {args.tasks} no-op tasks: {r['executor']:.0f} tasks/s through "
          f"DaskExecutor.map, {r['bare']:.0f} tasks/s with a bare client.map + gather; the scheduler spends "
          f"{1e6 * r['sched_cpu_per_task']:.0f} us CPU per task (about {1 / r['sched_cpu_per_task']:.0f} "
          "tasks/s on a core of its own)")  # fmt: skip


if __name__ == "__main__":
    main()
