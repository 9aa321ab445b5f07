"""The Dask back-end against real processes on 127.0.0.1: a ``dask scheduler`` and two ``dask worker``
processes started and stopped by the tests. Rescoring and tuning give the local run's output; a worker
SIGKILLed in the middle of a rescore loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_executor import nbest_lists, same_result, tuning_jobs

from decoders.hypothesis import write_nbest_jsonl
from decoders.sharded import rescore_sharded
from fusion.abilities import LMSpec
from fusion.executor import DaskExecutor, InProcess, LMSet
from fusion.lm import LanguageModel, SentenceScore, State
from fusion.tune_jobs import tune_jobs
from recipes.cli import main
from recipes.scale import LoopbackCluster

pytest.importorskip("distributed")  # the 'scale' extra
pytestmark = pytest.mark.slow  # a real scheduler and workers start in ~5-20 s on a busy 2-core box

HERE = Path(__file__).resolve().parent
TEXT = HERE.parent / "data" / "text"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    with LoopbackCluster(2, pythonpath=[str(HERE)]) as c:
        yield c


def run_cli(args: list[str]) -> None:
    assert main(args) == 0


def test_cli_rescore_on_dask_writes_the_local_bytes(
    cluster: LoopbackCluster, bible_arpa: Path, tech_arpa: Path, tmp_path: Path
) -> None:
    nb = tmp_path / "in.jsonl"
    write_nbest_jsonl(nb, nbest_lists(300, seed=4))
    common = [
        "rescore",
        str(nb),
        "--lm",
        f"bible={bible_arpa}",
        f"tech={tech_arpa}",
        "--mix",
        "mix",
        "--interpolation",
        "0.6",
        "0.4",
    ]
    common += ["--weights", "am=1,bible=0.5,words=0.2"]
    run_cli(["-q", *common, "-o", str(tmp_path / "local.jsonl"), "--onebest", str(tmp_path / "local.txt")])
    dask = ["--scheduler", cluster.address, "--shard-size", "23"]
    run_cli(["-q", *common, *dask, "-o", str(tmp_path / "dask.jsonl"), "--onebest", str(tmp_path / "dask.txt")])
    assert (tmp_path / "dask.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "dask.txt").read_bytes() == (tmp_path / "local.txt").read_bytes()


def test_cli_tune_on_dask_equals_local(
    cluster: LoopbackCluster, bible_arpa: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = tmp_path / "in.jsonl"
    write_nbest_jsonl(nb, nbest_lists(150, seed=5))
    run_cli(["-q", "rescore", str(nb), "--lm", f"bible={bible_arpa}", "-o", str(tmp_path / "dev.jsonl")])
    tune = ["-q", "tune", "--dev", str(tmp_path / "dev.jsonl"), "--method", "mert", "grid", "coordinate"]
    tune += ["--restarts", "2", "--points", "9"]
    run_cli([*tune, "-o", str(tmp_path / "local.json")])
    monkeypatch.setenv("LMFUSION_SCHEDULER", cluster.address)  # the CLI's fallback for --scheduler
    run_cli([*tune, "-o", str(tmp_path / "dask.json")])
    local, dask = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("local", "dask"))
    local.pop("created"), dask.pop("created")
    assert dask == local


def test_tuning_jobs_on_dask_equal_local(cluster: LoopbackCluster, bible_arpa: Path) -> None:
    jobs = tuning_jobs(bible_arpa)
    want = tune_jobs(jobs, InProcess())
    with DaskExecutor(cluster.address) as ex:
        assert ex.workers == 2
        got = tune_jobs(jobs, ex)
    assert all(same_result(g, w) for g, w in zip(got, want, strict=True)) and len(got) == len(want)


# ----------------------------------------------------------------------------------------------
# A worker killed mid-run
# ----------------------------------------------------------------------------------------------
class SlowLM(LanguageModel):
    """An LM that takes ``delay`` seconds per batch and leaves a marker file per batch (pid, time)."""

    def __init__(self, inner: LanguageModel, delay: float, marks: str | None) -> None:
        super().__init__(inner.name, inner.units)
        self.inner, self.delay, self.marks = inner, delay, marks

    def begin(self) -> State:
        return self.inner.begin()

    def score(self, state: State, unit: str) -> tuple[float, State]:
        return self.inner.score(state, unit)

    def end(self, state: State) -> float:
        return self.inner.end(state)

    @property
    def vocab(self) -> frozenset[str] | None:
        return self.inner.vocab

    def tokenize(self, text: str) -> list[str]:
        return self.inner.tokenize(text)

    def score_sentences(self, sentences: Any, *, eos: bool = True) -> list[SentenceScore]:
        time.sleep(self.delay)
        out = self.inner.score_sentences(list(sentences), eos=eos)
        if self.marks:
            Path(self.marks, f"{os.getpid()}-{time.monotonic_ns()}").touch()
        return out


@dataclass(frozen=True)
class SlowLMSet(LMSet):
    delay: float = 0.0
    marks: str | None = None

    def build(self) -> dict[str, LanguageModel]:
        return {k: SlowLM(v, self.delay, self.marks) for k, v in super().build().items()}


def pids(marks: Path) -> list[int]:
    return [int(p.name.split("-")[0]) for p in marks.iterdir()]


def test_a_worker_killed_mid_rescore_loses_and_duplicates_nothing(
    cluster: LoopbackCluster, bible_arpa: Path, tmp_path: Path
) -> None:
    nbs = nbest_lists(200, seed=6)
    specs: Sequence[LMSpec] = (LMSpec("bible", path=str(bible_arpa)),)
    want, _ = rescore_sharded(nbs, SlowLMSet(tuple(specs)), InProcess(), shard_size=4)
    marks = tmp_path / "marks"
    marks.mkdir()
    box: dict[str, Any] = {}
    k = cluster.add_worker()  # a third worker, the one to kill (the module's two stay for other tests)
    with DaskExecutor(cluster.address) as ex:
        victim = cluster.workers[k].pid
        setup = SlowLMSet(tuple(specs), delay=0.1, marks=str(marks))

        def work() -> None:
            try:
                box["out"] = rescore_sharded(nbs, setup, ex, shard_size=4)
            except BaseException as e:  # pragma: no cover - reported below
                box["error"] = e

        t = threading.Thread(target=work)
        t.start()
        deadline = time.monotonic() + 40
        while victim not in pids(marks) and time.monotonic() < deadline:  # the victim is at work
            time.sleep(0.02)
        n_before = len(pids(marks))
        assert 0 < n_before < 50, f"the kill must land in the middle of the 50 shards, not after {n_before}"
        cluster.kill_worker(k)
        t.join(60)
        assert not t.is_alive(), "the job did not complete after a worker died"
    assert "error" not in box, box.get("error")
    got, st = box["out"]
    assert got == want  # every utterance, once, in order, with the local scores
    assert [nb.utt_id for nb in got] == [nb.utt_id for nb in nbs] and st.n_utts == len(nbs)
    survivors = [p for p in pids(marks) if p != victim]
    assert len(pids(marks)) > n_before and survivors  # the rest ran on the surviving worker


# ----------------------------------------------------------------------------------------------
# CTC batch decoding on the cluster
# ----------------------------------------------------------------------------------------------
def test_ctc_decode_batch_on_dask_equals_local(cluster: LoopbackCluster, bible_arpa: Path) -> None:
    from decoders.ctc import CTCDecoder, CTCOptions
    from decoders.emissions import CHAR_LABELS, make_emission_set
    from fusion.executor import worker_builds
    from fusion.ngram import KenLM

    refs = [s.strip() for s in (TEXT / "bible.test.txt").read_text().splitlines() if 0 < len(s.strip()) < 40][:6]
    ems = make_emission_set(refs, config="very_noisy", seed=21)
    dec = CTCDecoder(CHAR_LABELS, [KenLM(bible_arpa, name="lm")], {"lm": 0.5, "words": 1.0},
                     options=CTCOptions(beam_width=6, nbest=3, backend="numpy"))  # fmt: skip
    hot = [["the lord"] if i % 2 else [] for i in range(len(ems))]
    tags = [{"domain": "bible", "i": i} for i in range(len(ems))]
    kw: dict[str, Any] = {"refs": refs, "tags": tags, "hotwords": hot, "hotword_weight": 2.0, "beam_width": 4}
    want = dec.decode_batch(ems, **kw)
    with DaskExecutor(cluster.address) as ex:
        before = ex.client.run(worker_builds)
        got = dec.decode_batch(ems, executor=ex, shard_size=1, **kw)
        built = {w: len(b) - len(before[w]) for w, b in ex.client.run(worker_builds).items()}
    assert [nb.to_json() for nb in got] == [nb.to_json() for nb in want]
    assert [nb.utt_id for nb in got] == [f"utt{i}" for i in range(len(ems))]
    assert all(n <= 1 for n in built.values()) and sum(built.values()) >= 1  # the decoder is built once per worker
