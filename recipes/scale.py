"""Scale-out plumbing for the CLI: the ``--scheduler`` option, and a loopback Dask cluster of real
processes (a ``dask scheduler`` and ``dask worker`` subprocesses on 127.0.0.1) for tests and benchmarks.

``--scheduler`` takes an executor spec (:func:`fusion.executor.open_executor`): ``tcp://HOST:PORT`` for a
running Dask scheduler, ``processes[:N]`` for a local process pool, ``inprocess`` (the default); without
the option the environment variable ``LMFUSION_SCHEDULER`` is read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from fusion.abilities import LMSpec
from fusion.executor import SCHEDULER_ENV, Executor, ExecutorError, dask_config_env, open_executor
from fusion.lm import LanguageModel

if TYPE_CHECKING:
    from decoders.hypothesis import NBestList
    from decoders.nbest import RescoreStats

__all__ = ["LoopbackCluster", "cli_lm_specs", "executor_from_args", "rescore_on"]

REPO = Path(__file__).resolve().parents[1]


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor ``--scheduler`` (or ``$LMFUSION_SCHEDULER``) names."""
    return open_executor(
        getattr(args, "scheduler", None), connect_timeout=getattr(args, "connect_timeout", 10.0), env=True
    )


class LoopbackCluster:
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1 (ports chosen by the
    OS, no dashboards, no nannies: a killed worker stays dead; :data:`fusion.executor.DASK_CONFIG` in
    their environment), stopped on exit.

    Workers import this checkout (``PYTHONPATH`` points at it, then at ``pythonpath``). ``kill_worker(i)``
    sends SIGKILL.
    """

    def __init__(
        self, n_workers: int = 2, *, nthreads: int = 1, start_timeout: float = 30.0, pythonpath: Sequence[str] = ()
    ) -> None:
        self.n_workers = n_workers
        self.pythonpath = [str(REPO), *map(str, pythonpath)]
        self.nthreads = nthreads
        self.start_timeout = start_timeout
        self.address = ""
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="lmfusion-dask-")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        env.pop(SCHEDULER_ENV, None)
        env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
        for k, v in dask_config_env().items():  # fusion.executor.DASK_CONFIG, unless the caller set it
            env.setdefault(k, v)
        return env

    def _spawn(self, module: str, *args: str, log: str) -> subprocess.Popen[bytes]:
        with open(Path(self._dir.name) / log, "wb") as out:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", module, *args], env=self._env(), stdout=out, stderr=subprocess.STDOUT
            )

    def log(self, name: str) -> str:
        """A process's output so far (``scheduler``, ``worker0``, ...)."""
        p = Path(self._dir.name) / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def start(self) -> LoopbackCluster:
        sfile = str(Path(self._dir.name) / "scheduler.json")
        self.scheduler = self._spawn(
            "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", sfile, log="scheduler.log",
        )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        while not Path(sfile).exists():
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ExecutorError("the loopback dask scheduler did not start:\n" + self.log("scheduler")[-2000:])
            time.sleep(0.05)
        import json

        while not self.address:
            try:
                self.address = json.loads(Path(sfile).read_text())["address"]
            except (ValueError, KeyError):
                time.sleep(0.05)
        for i in range(self.n_workers):
            self.workers.append(self._start_worker(i))
        self.wait_for_workers(self.n_workers, deadline - time.monotonic())
        return self

    def _start_worker(self, i: int) -> subprocess.Popen[bytes]:
        return self._spawn(
            "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--nthreads", str(self.nthreads),
            "--no-nanny", "--no-dashboard", "--name", f"w{i}", "--memory-limit", "0",
            "--local-directory", self._dir.name, log=f"worker{i}.log",
        )  # fmt: skip

    def wait_for_workers(self, n: int, timeout: float) -> None:
        from distributed import Client

        with Client(self.address, timeout=max(timeout, 1.0), set_as_default=False) as c:
            try:
                c.wait_for_workers(n, timeout=max(timeout, 1.0))
            except TimeoutError:
                logs = "\n".join(self.log(f"worker{i}")[-1000:] for i in range(len(self.workers)))
                self.stop()
                raise ExecutorError(f"{n} dask workers did not connect within {timeout:.0f}s:\n{logs}") from None

    def add_worker(self, timeout: float = 30.0) -> int:
        """Start one more worker; wait until it has joined; its index."""
        self.workers.append(self._start_worker(len(self.workers)))
        alive = sum(p.poll() is None for p in self.workers)
        self.wait_for_workers(alive, timeout)
        return len(self.workers) - 1

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` (no goodbye to the scheduler: a crash, as on a lost machine)."""
        self.workers[i].kill()
        self.workers[i].wait(10)

    def stop(self) -> None:
        for p in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.workers.clear()
        self.scheduler = None
        self._dir.cleanup()

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LoopbackCluster({self.address or 'not started'}, workers={len(self.workers)})"


def cli_lm_specs(args: argparse.Namespace, lms: Mapping[str, LanguageModel]) -> list[LMSpec]:
    """The :class:`~fusion.abilities.LMSpec` of each LM ``lmfusion rescore`` opened from ``--lm`` (and
    the ``--mix`` of them), named as opened, so workers can open the same LMs."""
    from fusion.interpolate import LinearInterpolation
    from fusion.loading import parse_lm_spec

    specs = [
        LMSpec(name, path=str(parse_lm_spec(a)[1]), tokenizer=args.spm)
        for name, a in zip(list(lms)[: len(args.lm)], args.lm, strict=True)
    ]
    opened = list(lms.values())[: len(args.lm)]
    for name, lm in list(lms.items())[len(args.lm) :]:
        if not isinstance(lm, LinearInterpolation) or any(a is not b for a, b in zip(lm.models, opened, strict=True)):
            raise ExecutorError(f"cannot describe LM {name!r} for the workers (a mix over LMs of different units?)")
        specs.append(LMSpec(name, mix=tuple(zip(specs, map(float, lm.weights), strict=True)), mix_kind="linear"))
    return specs


def rescore_on(
    ex: Executor, lists: Iterable[NBestList], lms: Mapping[str, LanguageModel], args: argparse.Namespace
) -> Iterator[tuple[list[NBestList], RescoreStats]]:
    """``lmfusion rescore``'s work as a stream of shards on ``ex``
    (:func:`decoders.sharded.rescore_sharded_stream`): ``lists`` are read lazily, shard by shard."""
    from decoders.sharded import RescoreOptions, rescore_sharded_stream

    opts = RescoreOptions(
        word_count=not args.no_word_count,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        reuse=args.cached,
        count_oov=not args.no_oov_count,
    )
    return rescore_sharded_stream(
        lists, cli_lm_specs(args, lms), ex, shard_size=args.shard_size, options=opts, progress=not args.quiet
    )
