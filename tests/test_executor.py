"""The executor layer without a Dask cluster: sharding order, spec parsing, result order, the per-worker
state cache, an unreachable scheduler, and sharded rescoring / tuning jobs equal to the plain runs."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from decoders.hypothesis import NBestList, ScoredHypothesis
from decoders.nbest import rescore_with_stats, to_tuning_problem
from decoders.sharded import RescoreOptions, rescore_sharded, rescore_sharded_stream
from fusion.abilities import LMSpec
from fusion.errors import LMFusionError
from fusion.executor import (
    SCHEDULER_ENV,
    DaskExecutor,
    Executor,
    ExecutorError,
    InProcess,
    LMSet,
    LocalProcesses,
    SchedulerUnreachable,
    imap,
    map_sharded,
    open_executor,
    shard_bounds,
    shards,
    with_setup,
    worker_state,
)
from fusion.interpolate import LinearInterpolation
from fusion.loading import load_lm
from fusion.tune_jobs import TuneJob, tune_jobs

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def nbest_lists(n: int, seed: int, k: int = 6) -> list[NBestList]:
    """Dev sentences with ``k - 1`` corrupted variants each, a noisy ``am`` score, a reference and a tag."""
    rng = random.Random(seed)
    refs = [s.strip() for s in (TEXT / "bible.dev.txt").read_text().splitlines() if s.strip()]
    refs += [s.strip() for s in (TEXT / "tech.dev.txt").read_text().splitlines() if s.strip()]
    rng.shuffle(refs)
    vocab = sorted({w for r in refs for w in r.split()})
    out = []
    for i in range(n):
        r = refs[i % len(refs)]
        hyps = [ScoredHypothesis(r, {"am": rng.gauss(0, 1)})]
        for _ in range(k - 1):
            ws = r.split()
            ws[rng.randrange(len(ws))] = rng.choice(vocab)
            if rng.random() < 0.3:
                del ws[rng.randrange(len(ws))]
            hyps.append(ScoredHypothesis(" ".join(ws), {"am": rng.gauss(0, 1)}))
        rng.shuffle(hyps)
        out.append(NBestList(f"utt{i:05d}", tuple(hyps), r, {"domain": "bible" if i % 2 else "tech"}))
    return out


# ----------------------------------------------------------------------------------------------
# Sharding and specs
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 17, 100])
@pytest.mark.parametrize("size", [1, 3, 16, 1000])
def test_shards_cover_the_input_once_in_order(n: int, size: int) -> None:
    b = shard_bounds(n, size)
    flat = [i for a, z in b for i in range(a, z)]
    assert flat == list(range(n))
    assert all(0 < z - a <= size for a, z in b)
    assert all(z - a == size for a, z in b[:-1])
    items = [f"x{i}" for i in range(n)]
    assert [x for part in shards(items, size) for x in part] == items


def test_shard_size_must_be_positive() -> None:
    with pytest.raises(ExecutorError, match="shard size"):
        shard_bounds(10, 0)


def test_open_executor_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert isinstance(open_executor(None), InProcess)
    assert isinstance(open_executor("inprocess"), InProcess)
    ex = open_executor("processes:3")
    assert isinstance(ex, LocalProcesses) and ex.workers == 3
    assert isinstance(ex, Executor)
    same = InProcess()
    assert open_executor(same) is same
    monkeypatch.setenv(SCHEDULER_ENV, "processes:2")
    ex = open_executor(None, env=True)
    assert isinstance(ex, LocalProcesses) and ex.workers == 2
    assert isinstance(open_executor(None), InProcess)  # the variable is read only when asked
    for bad in ("processes:x", "nonsense", "processes:0"):
        with pytest.raises(ExecutorError):
            open_executor(bad)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_scheduler_is_a_clear_error_within_the_timeout() -> None:
    addr = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(
        SchedulerUnreachable, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:\d+ within 2s"
    ):
        DaskExecutor(addr, connect_timeout=2.0)
    assert time.monotonic() - t0 < 2.0 + 8.0  # the timeout plus start-up slack on a busy 2-core box
    with pytest.raises(SchedulerUnreachable):
        open_executor(addr, connect_timeout=1.0)


# ----------------------------------------------------------------------------------------------
# map: order, errors, worker state
# ----------------------------------------------------------------------------------------------
def _slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.02 * (5 - x % 5))  # later items finish first
    return x, x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("item 3 is bad")
    return x


@pytest.mark.parametrize("ex", [InProcess(), LocalProcesses(2)], ids=["inprocess", "processes"])
def test_map_returns_results_in_input_order_and_raises_task_errors(ex: Executor) -> None:
    items = list(range(12))
    assert ex.map(_slow_square, items) == [(x, x * x) for x in items]
    assert ex.map(_slow_square, []) == []
    with pytest.raises(ValueError, match="item 3 is bad"):
        ex.map(_fail_on_three, items)


@pytest.mark.parametrize("ex", [InProcess(), LocalProcesses(2)], ids=["inprocess", "processes"])
def test_imap_streams_in_order_with_a_bounded_window(ex: Executor) -> None:
    read: list[int] = []

    def items() -> Iterator[int]:
        for x in range(20):
            read.append(x)
            yield x

    it = imap(ex, _slow_square, items(), window=4)
    assert next(it) == (0, 0)
    assert len(read) <= 4 + 1  # only the window was read (and submitted) before the first result
    assert [x for x, _ in it] == list(range(1, 20)) and len(read) == 20
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(imap(ex, _fail_on_three, iter(range(12)), window=3))
    with pytest.raises(ExecutorError, match="window"):
        imap(ex, _slow_square, [1], window=0)


def test_rescoring_on_an_executor_reads_its_input_lazily(bible_arpa: Path) -> None:
    nbs = nbest_lists(60, seed=8)
    read: list[str] = []

    def lists() -> Iterator[NBestList]:
        for nb in nbs:
            read.append(nb.utt_id)
            yield nb

    specs = [LMSpec("bible", path=str(bible_arpa))]
    stream = rescore_sharded_stream(lists(), specs, LocalProcesses(2), shard_size=5, window=2)
    first, st = next(stream)
    assert [nb.utt_id for nb in first] == [nb.utt_id for nb in nbs[:5]] and st.n_utts == 5
    assert len(read) <= 5 * (2 + 1)  # the window of shards, not the whole input
    rest = [nb for part, _ in stream for nb in part]
    want, _ = rescore_with_stats(nbs, {"bible": load_lm(bible_arpa, name="bible")})
    assert [*first, *rest] == want


BUILDS: list[int] = []


@dataclass(frozen=True)
class CountingSetup:
    tag: str

    def build(self) -> dict[str, object]:
        BUILDS.append(os.getpid())
        return {"tag": self.tag, "pid": os.getpid(), "builds_here": BUILDS.count(os.getpid())}


def _state_of(state: dict[str, object], item: int) -> tuple[int, object, object, object]:
    return item, state["tag"], state["pid"], state["builds_here"]


def test_worker_state_is_built_once_per_process() -> None:
    a = worker_state(CountingSetup("a"))
    assert worker_state(CountingSetup("a")) is a  # equal recipes share the cached state
    assert worker_state(CountingSetup("b")) is not a
    out = LocalProcesses(2).map(with_setup(_state_of, CountingSetup("c")), list(range(20)))
    assert [o[0] for o in out] == list(range(20))
    assert {o[1] for o in out} == {"c"}
    assert {o[3] for o in out} == {1}  # every process built it exactly once, however many tasks it ran
    assert os.getpid() not in {o[2] for o in out}


def _tagged(state: dict[str, object], item: int) -> tuple[int, object, object]:
    return item, state["tag"], state["pid"]


def test_map_sharded_keeps_input_order_and_one_state_per_process() -> None:
    items = list(range(37))
    for ex in (InProcess(), LocalProcesses(2)):
        out = map_sharded(ex, _tagged, CountingSetup("m"), items, shard_size=5)
        assert [o[0] for o in out] == items and {o[1] for o in out} == {"m"}
    assert map_sharded(InProcess(), _tagged, CountingSetup("m"), [], shard_size=5) == []


def test_lmset_rejects_duplicate_names() -> None:
    with pytest.raises(ExecutorError, match="duplicate"):
        LMSet((LMSpec("a", path="x"), LMSpec("a", path="y")))


# ----------------------------------------------------------------------------------------------
# Sharded rescoring and tuning jobs equal the plain runs
# ----------------------------------------------------------------------------------------------
def lm_specs(bible_arpa: Path, tech_arpa: Path) -> list[LMSpec]:
    b = LMSpec("bible", path=str(bible_arpa))
    t = LMSpec("tech", path=str(tech_arpa))
    return [b, t, LMSpec("mix", mix=((b, 0.7), (t, 0.3)))]


def test_sharded_rescoring_equals_the_plain_rescore(bible_arpa: Path, tech_arpa: Path) -> None:
    nbs = nbest_lists(120, seed=1)
    nbs[5] = NBestList("empty", (), "a ref")  # an empty list survives sharding too
    b, t = load_lm(bible_arpa, name="bible"), load_lm(tech_arpa, name="tech")
    lms = {"bible": b, "tech": t, "mix": LinearInterpolation([b, t], [0.7, 0.3], name="mix")}
    want, wst = rescore_with_stats(nbs, lms)
    specs = lm_specs(bible_arpa, tech_arpa)
    for size in (1, 7, 1000):
        got, st = rescore_sharded(nbs, specs, InProcess(), shard_size=size)
        assert got == want
        assert [list(h.scores) for nb in got for h in nb.hyps] == [list(h.scores) for nb in want for h in nb.hyps]
        assert (st.n_utts, st.n_hyps, st.n_no_hyps, st.n_duplicates) == (
            wst.n_utts, wst.n_hyps, wst.n_no_hyps, wst.n_duplicates,
        )  # fmt: skip
        assert st.oov == wst.oov and st.failed == wst.failed
    got, _ = rescore_sharded(nbs, specs, LocalProcesses(2), shard_size=25)
    assert got == want


def test_sharded_rescoring_keeps_the_score_cache(bible_arpa: Path, tech_arpa: Path) -> None:
    nbs = nbest_lists(30, seed=2)
    h0 = nbs[0].hyps[0]
    nbs[0] = replace(nbs[0], hyps=(ScoredHypothesis(h0.text, {"am": 0.5, "bible": -1.25}), *nbs[0].hyps[1:]))
    specs = lm_specs(bible_arpa, tech_arpa)[:1]
    got, st = rescore_sharded(nbs, specs, InProcess(), shard_size=4)
    assert got[0].hyps[0].scores["bible"] == -1.25 and st.cached["bible"] == 1
    got, st = rescore_sharded(nbs, specs, InProcess(), shard_size=4, options=RescoreOptions(overwrite=True))
    assert got[0].hyps[0].scores["bible"] != -1.25 and st.cached["bible"] == 0
    with pytest.raises(LMFusionError, match="words"):
        rescore_sharded(nbs, [LMSpec("words", path=str(bible_arpa))], InProcess())


def tuning_jobs(bible_arpa: Path) -> list[TuneJob]:
    nbs, _ = rescore_with_stats(nbest_lists(80, seed=3), {"bible": load_lm(bible_arpa, name="bible")})
    p = to_tuning_problem(nbs, ["am", "bible", "words"])
    folds = [[i for i in range(p.n_utts) if i % 3 != k] for k in range(3)]
    jobs = [TuneJob(p, m, seed=s, opts=o, label=m) for m, s, o in [
        ("mert", 0, {"restarts": 2}), ("mert", 1, {"restarts": 2}), ("grid", 0, {"points": 7}),
        ("coordinate", 0, {"points": 9}),
    ]]  # fmt: skip
    jobs += [TuneJob(p.subset(f), "mert", seed=0, opts={"restarts": 1}, label=f"fold{k}") for k, f in enumerate(folds)]
    return jobs


def same_result(a: object, b: object) -> bool:
    return replace(a, seconds=0.0) == replace(b, seconds=0.0)  # type: ignore[type-var]


def test_tuning_jobs_equal_one_by_one_runs(bible_arpa: Path) -> None:
    jobs = tuning_jobs(bible_arpa)
    from fusion.tune_jobs import run_tune_job

    want = [run_tune_job(j) for j in jobs]
    for ex in (InProcess(), LocalProcesses(2)):
        got = tune_jobs(jobs, ex)
        assert len(got) == len(want) and all(same_result(g, w) for g, w in zip(got, want, strict=True))


# ----------------------------------------------------------------------------------------------
# Recipe stages
# ----------------------------------------------------------------------------------------------
def test_stage_waves_group_only_independent_neighbours(tmp_path: Path) -> None:
    from recipes.pipeline import Stage, stage_waves

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "dir"

    def noop(ctx: object) -> None:
        pass

    stages = [
        Stage("s1", noop, [], [a]),
        Stage("s2", noop, [], [b]),  # independent of s1
        Stage("s3", noop, [a], [c]),  # reads s1's output
        Stage("s4", noop, [c / "x"], [tmp_path / "d"]),  # reads inside s3's output directory
        Stage("s5", noop, [b], [tmp_path / "e"]),  # s2's output, from an earlier wave: joins s4
    ]
    assert [[s.name for s in w] for w in stage_waves(stages)] == [["s1", "s2"], ["s3"], ["s4", "s5"]]


def test_independent_stages_run_side_by_side_on_an_executor(tmp_path: Path) -> None:
    from recipes.pipeline import Pipeline, Stage

    def writer(path: Path, extra: str = "") -> Stage:
        def run(ctx: object) -> None:  # a closure: it travels by value, as Dask sends it
            text = f"{os.getpid()}{extra}"
            if extra:
                text += (tmp_path / "a").read_text()
            path.write_text(text)

        return Stage(path.name, run, [tmp_path / "a"] if extra else [], [path], {"v": 1})

    stages = [writer(tmp_path / "a"), writer(tmp_path / "b"), writer(tmp_path / "c", extra="+")]
    logs: list[str] = []
    reps = Pipeline(tmp_path / "work", log=logs.append).run(stages, executor=LocalProcesses(2))
    assert [(r.name, r.status) for r in reps] == [("a", "ran"), ("b", "ran"), ("c", "ran")]
    pids = {p: (tmp_path / p).read_text().split("+")[0] for p in "abc"}
    assert str(os.getpid()) not in (pids["a"], pids["b"])  # a and b ran in the pool; c (alone) here, after a
    assert (tmp_path / "c").read_text().endswith(pids["a"])
    reps = Pipeline(tmp_path / "work", log=logs.append).run(stages, executor=LocalProcesses(2))
    assert [r.status for r in reps] == ["skipped"] * 3
