"""One executor layer for batch work: in this process, in local processes, or on a Dask cluster.

Every batch entry point (n-best rescoring, tuning jobs, CTC batch decoding, recipe stages) takes an
``executor=`` and hands it a map over independent items — shards of utterances, tuning jobs, stages:

* :class:`InProcess` — a plain loop here (the default; no pickling).
* :class:`LocalProcesses` — a ``concurrent.futures`` process pool (fork, spawn or forkserver) on this
  machine.
* :class:`DaskExecutor` — a Dask distributed cluster (``dask scheduler`` + ``dask worker`` processes, on
  one machine or many, started by ``dask-jobqueue`` or on Kubernetes); needs ``pip install 'lmfusion[scale]'``.

The contract every back-end keeps:

* ``map(fn, items)`` returns ``[fn(x) for x in items]`` in input order, whatever order the items finish
  in. Items are submitted in input order; each becomes one task keyed by its index, so a retried task
  (a worker died) replaces, never duplicates, its result. ``fn`` must be a pure function of its item
  (idempotent), picklable by reference (a module-level function or a ``functools.partial`` of one).
* Heavy state (LMs) never travels: a task names a :class:`WorkerSetup` — a small picklable recipe such
  as :class:`LMSet` (a tuple of :class:`~fusion.abilities.LMSpec`) — and :func:`worker_state` builds it
  once per worker process and caches it there (:func:`with_setup` wires that up).
* Faults: a Dask worker that dies mid-task has its tasks re-run elsewhere (the scheduler's
  ``allowed-failures``); a scheduler that cannot be reached is a :class:`SchedulerUnreachable` within
  ``connect_timeout`` seconds; an exception inside a task cancels the rest and is re-raised here.
* Progress: a tqdm bar over finished tasks, shown only when asked and stderr is a terminal.

:func:`open_executor` turns a CLI/env spec (``tcp://HOST:PORT``, ``processes[:N]``, ``inprocess``) into
one; :data:`SCHEDULER_ENV` names the environment variable the CLI reads when ``--scheduler`` is absent.
This module imports nothing from ``decoders`` or ``recipes``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import multiprocessing as mp
import os
import pickle
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from fusion.abilities import LMSpec
from fusion.errors import LMFusionError
from fusion.lm import LanguageModel

__all__ = [
    "DASK_CONFIG",
    "SCHEDULER_ENV",
    "DaskExecutor",
    "Executor",
    "ExecutorError",
    "InProcess",
    "LMSet",
    "LocalProcesses",
    "SchedulerUnreachable",
    "StreamingExecutor",
    "WorkerSetup",
    "dask_config_env",
    "imap",
    "map_sharded",
    "open_executor",
    "shard_bounds",
    "shards",
    "with_setup",
    "worker_builds",
    "worker_state",
]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", covariant=True)

SCHEDULER_ENV = "LMFUSION_SCHEDULER"
"""Environment variable holding the executor spec when the CLI gets no ``--scheduler``."""

DASK_CONFIG: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
"""Dask settings for the scheduler and workers that run lmfusion's tasks (few, long, uniform shards).
Dask's defaults sample every worker thread's stack every 10 ms (the profiler), wake every process every
20 ms (the tick) and move queued tasks between workers (stealing); on this 2-core box they cost the
scheduler and a worker ~45 ms of CPU per second even when idle, 4x more than with these settings (see
the README's scale-out section). Pass them to ``dask scheduler`` / ``dask worker`` as environment
variables (:func:`dask_config_env`) or in a Dask YAML file; :class:`recipes.scale.LoopbackCluster` does."""


class ExecutorError(LMFusionError):
    """An executor cannot be opened or used (bad spec, missing Dask, closed executor)."""


class SchedulerUnreachable(ExecutorError):
    """The Dask scheduler did not answer within the connect timeout."""


# ----------------------------------------------------------------------------------------------
# Sharding: contiguous slices in input order
# ----------------------------------------------------------------------------------------------
def shard_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in order with slices of ``size`` (the last may be
    shorter). Depends on ``n`` and ``size`` only — never on the back-end or the number of workers — so
    every back-end computes the same shards."""
    if size < 1:
        raise ExecutorError(f"shard size must be >= 1, got {size}")
    if n < 0:
        raise ExecutorError(f"cannot shard {n} items")
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def shards(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into contiguous shards of ``size`` (see :func:`shard_bounds`)."""
    return [items[a:b] for a, b in shard_bounds(len(items), size)]


# ----------------------------------------------------------------------------------------------
# Worker-side state, built once per process from a picklable recipe
# ----------------------------------------------------------------------------------------------
@runtime_checkable
class WorkerSetup(Protocol[S]):
    """A picklable recipe (files and options, no model objects) for state a task needs, such as LMs."""

    def build(self) -> S:
        """Open the state (called once per worker process; the result is cached there)."""
        ...


@dataclass(frozen=True)
class LMSet:
    """LMs to open in a worker, by :class:`~fusion.abilities.LMSpec`; builds ``{name: LanguageModel}``
    in the order given."""

    specs: tuple[LMSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ExecutorError(f"LMSet: duplicate LM names {names}")

    def build(self) -> dict[str, LanguageModel]:
        from fusion.loading import open_spec

        return {s.name: open_spec(s) for s in self.specs}


_STATE: OrderedDict[str, Any] = OrderedDict()
_STATE_LOCK = threading.Lock()
_STATE_MAX = 4
"""Setups kept per worker process (least recently used dropped first)."""
_BUILDS: list[str] = []
"""The setup keys this process has built, in order (see :func:`worker_builds`)."""


def _setup_key(setup: WorkerSetup[Any]) -> str:
    return type(setup).__qualname__ + ":" + hashlib.sha1(pickle.dumps(setup, protocol=4)).hexdigest()


def worker_state(setup: WorkerSetup[S]) -> S:
    """The state ``setup`` builds, built at most once in this process (a per-process cache keyed by
    the setup's pickled bytes; thread-safe, so a multi-threaded Dask worker builds it once too)."""
    key = _setup_key(setup)
    with _STATE_LOCK:
        if key in _STATE:
            _STATE.move_to_end(key)
            return _STATE[key]
        state = setup.build()
        _BUILDS.append(key)
        _STATE[key] = state
        while len(_STATE) > _STATE_MAX:
            _STATE.popitem(last=False)
        return state


def worker_builds() -> list[str]:
    """The keys of the setups :func:`worker_state` has built in this process, one entry per build (run
    it on the workers, ``client.run(worker_builds)``, to check each built its LMs once)."""
    return list(_BUILDS)


def _call_with_state(fn: Callable[[Any, T], R], setup: WorkerSetup[Any], item: T) -> R:
    return fn(worker_state(setup), item)


def with_setup(fn: Callable[[S, T], R], setup: WorkerSetup[S]) -> Callable[[T], R]:
    """``item -> fn(state, item)`` where ``state = worker_state(setup)``: picklable when ``fn`` and
    ``setup`` are (a module-level function and a frozen dataclass), so any back-end can ship it."""
    return functools.partial(_call_with_state, fn, setup)


def _per_item(fn: Callable[[Any, T], R], state: Any, shard: Sequence[T]) -> list[R]:
    return [fn(state, x) for x in shard]


def map_sharded(
    executor: Executor,
    fn: Callable[[S, T], R],
    setup: WorkerSetup[S],
    items: Sequence[T],
    *,
    shard_size: int = 16,
    desc: str = "",
    progress: bool = False,
) -> list[R]:
    """``[fn(state, x) for x in items]`` with ``state = worker_state(setup)``, one task per shard of
    ``shard_size`` items, flattened back in input order — e.g. a batch decoder: ``setup`` a picklable
    decoder spec (its ``build()`` opens the LMs once per worker), ``fn`` decodes one utterance."""
    parts = executor.map(
        with_setup(functools.partial(_per_item, fn), setup), shards(items, shard_size), desc=desc, progress=progress
    )
    return [r for part in parts for r in part]


# ----------------------------------------------------------------------------------------------
# The protocol and its back-ends
# ----------------------------------------------------------------------------------------------
@runtime_checkable
class Executor(Protocol):
    """Runs a map over independent items; see the module docstring for the contract."""

    kind: str
    """``"inprocess"``, ``"processes"`` or ``"dask"``."""

    @property
    def workers(self) -> int:
        """How many items can run at once (a hint for shard sizes)."""
        ...

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "", progress: bool = False) -> list[R]:
        """``[fn(x) for x in items]``, in input order."""
        ...

    def close(self) -> None:
        """Release the back-end's resources (a pool's processes, a Dask client's connection)."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None: ...


@runtime_checkable
class StreamingExecutor(Executor, Protocol):
    """An executor that can also stream a map (every back-end here can; see :func:`imap`)."""

    def imap(self, fn: Callable[[T], R], items: Iterable[T], *, window: int | None = None, desc: str = "",
             progress: bool = False) -> Iterator[R]:  # fmt: skip
        """``fn(x)`` for each item, yielded in input order with at most ``window`` tasks in flight."""
        ...


def imap(
    executor: Executor,
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    window: int | None = None,
    desc: str = "",
    progress: bool = False,
) -> Iterator[R]:
    """``fn(x)`` for each of ``items``, yielded in input order as soon as it is ready, with at most
    ``window`` tasks in flight (default: twice the executor's workers, at least 4).

    ``items`` is read lazily — one more item is submitted each time a result is taken — so memory is
    bounded by the window, not by the input, and whatever the caller does with result ``i`` (building
    records, writing them) overlaps the workers' work on the items after it. An executor without its
    own ``imap`` runs windows of items through ``map``. Closing the iterator early cancels the tasks
    in flight."""
    w = window if window is not None else max(4, 2 * executor.workers)
    if w < 1:
        raise ExecutorError(f"imap: window must be >= 1, got {w}")
    if isinstance(executor, StreamingExecutor):
        return executor.imap(fn, items, window=w, desc=desc, progress=progress)
    return _imap_by_windows(executor, fn, items, w, desc, progress)


def _imap_by_windows(executor: Executor, fn: Callable[[T], R], items: Iterable[T], window: int, desc: str,
                     progress: bool) -> Iterator[R]:  # fmt: skip
    it = iter(items)
    while chunk := list(itertools.islice(it, window)):
        yield from executor.map(fn, chunk, desc=desc, progress=progress)


def _in_order(submit: Callable[[list[T]], list[Any]], result: Callable[[Any], R], cancel: Callable[[list[Any]], None],
              items: Iterable[T], window: int, bar: Any) -> Iterator[R]:  # fmt: skip
    """The streaming loop every back-end shares: keep up to ``window`` futures in flight and yield the
    oldest's result. Refills go in batches (once half the window is free, one ``submit`` of the free
    slots' items) — one message to a Dask scheduler per batch instead of one per task."""
    it = iter(items)
    pending: deque[Any] = deque(submit(list(itertools.islice(it, window))) or ())
    refill = max(1, window // 2)
    try:
        while pending:
            r = result(pending.popleft())
            if window - len(pending) >= refill and (more := list(itertools.islice(it, window - len(pending)))):
                pending.extend(submit(more))
            bar.update(1)
            yield r
    except BaseException:  # an error, or the caller closed the iterator early
        cancel(list(pending))
        raise
    finally:
        bar.close()


def _bar(total: int | None, desc: str, progress: bool) -> Any:
    from fusion.progress import progress_bar

    return progress_bar(total=total, desc=desc or "tasks", unit="task", progress=progress)


class _Closing:
    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        pass


class InProcess(_Closing):
    """Runs every item here, in order."""

    kind = "inprocess"

    @property
    def workers(self) -> int:
        return 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "", progress: bool = False) -> list[R]:
        bar = _bar(len(items), desc, progress)
        out = []
        for x in items:
            out.append(fn(x))
            bar.update(1)
        bar.close()
        return out

    def imap(self, fn: Callable[[T], R], items: Iterable[T], *, window: int | None = None, desc: str = "",
             progress: bool = False) -> Iterator[R]:  # fmt: skip
        bar = _bar(None, desc, progress)
        try:
            for x in items:
                r = fn(x)
                bar.update(1)
                yield r
        finally:
            bar.close()

    def __repr__(self) -> str:
        return "InProcess()"


class LocalProcesses(_Closing):
    """A process pool on this machine (the pool is created per :meth:`map` call, so a forked worker sees
    the parent's state at that time; with ``spawn`` workers import lmfusion afresh)."""

    kind = "processes"

    def __init__(self, processes: int | None = None, *, mp_context: str | None = None) -> None:
        n = processes if processes is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ExecutorError(f"LocalProcesses: processes must be >= 1, got {n}")
        self.processes = n
        self.mp_context = mp_context

    @property
    def workers(self) -> int:
        return self.processes

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "", progress: bool = False) -> list[R]:
        if not items:
            return []
        ctx = mp.get_context(self.mp_context)
        bar = _bar(len(items), desc, progress)
        by_value = not _picklable((fn, items[0]))  # closures and lambdas travel as Dask sends them
        with ProcessPoolExecutor(min(self.processes, len(items)), mp_context=ctx) as pool:
            if by_value:
                futs = [pool.submit(_run_by_value, _dumps_by_value((fn, x))) for x in items]
            else:
                futs = [pool.submit(fn, x) for x in items]
            for f in futs:
                f.add_done_callback(lambda _f: bar.update(1))
            done, _ = wait(futs, return_when=FIRST_EXCEPTION)
            failed = [f for f in futs if f in done and f.exception() is not None]
            if failed:
                for f in futs:
                    f.cancel()
                bar.close()
                raise failed[0].exception()  # type: ignore[misc]
            out = [f.result() for f in futs]
        bar.close()
        return out

    def imap(self, fn: Callable[[T], R], items: Iterable[T], *, window: int | None = None, desc: str = "",
             progress: bool = False) -> Iterator[R]:  # fmt: skip
        w = window or max(4, 2 * self.processes)
        by_value: list[bool] = []

        def submit(xs: list[T]) -> list[Any]:
            if not xs:
                return []
            if not by_value:
                by_value.append(not _picklable((fn, xs[0])))
            if by_value[0]:
                return [pool.submit(_run_by_value, _dumps_by_value((fn, x))) for x in xs]
            return [pool.submit(fn, x) for x in xs]

        def cancel(futs: list[Any]) -> None:
            for f in futs:
                f.cancel()

        with ProcessPoolExecutor(self.processes, mp_context=mp.get_context(self.mp_context)) as pool:
            yield from _in_order(submit, lambda f: f.result(), cancel, items, w, _bar(None, desc, progress))

    def __repr__(self) -> str:
        return f"LocalProcesses({self.processes}, mp_context={self.mp_context!r})"


def _picklable(obj: object) -> bool:
    try:
        pickle.dumps(obj)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def _dumps_by_value(obj: object) -> bytes:
    """Pickle functions by value (cloudpickle, which Dask uses), for closures and lambdas."""
    try:
        import cloudpickle
    except ImportError:
        raise ExecutorError(
            "LocalProcesses: the task function or item cannot be pickled (a lambda or closure?); use a "
            "module-level function, or pip install 'lmfusion[scale]' (cloudpickle) to send it by value"
        ) from None
    return bytes(cloudpickle.dumps(obj))


def _run_by_value(blob: bytes) -> Any:
    fn, item = pickle.loads(blob)  # our own bytes from _dumps_by_value, never a user file
    return fn(item)


def dask_config_env(config: dict[str, object] | None = None) -> dict[str, str]:
    """``config`` (default :data:`DASK_CONFIG`) as the ``DASK_*`` environment variables Dask reads at
    start-up (``distributed.admin.tick.interval`` -> ``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL``)."""
    out = {}
    for key, value in (DASK_CONFIG if config is None else config).items():
        name = "DASK_" + "__".join(part.replace("-", "_").upper() for part in key.split("."))
        out[name] = str(value)
    return out


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ExecutorError("the Dask back-end needs dask.distributed: pip install 'lmfusion[scale]'") from None
    return distributed


class DaskExecutor(_Closing):
    """Tasks on a Dask distributed cluster.

    Args:
        address: the scheduler, ``tcp://HOST:PORT`` (or a ``distributed.Client`` to reuse).
        connect_timeout: seconds to wait for the scheduler before :class:`SchedulerUnreachable`.
        retries: extra attempts of a task that *raised* (a worker that died is handled by the scheduler
            anyway: its tasks are re-run on the other workers, up to its ``allowed-failures``).

    Each task's input travels inside the task (not ``scatter``-ed), so the scheduler can re-run it after
    losing the worker that held it; results are gathered by shard index.
    """

    kind = "dask"

    def __init__(self, address: str | Any, *, connect_timeout: float = 10.0, retries: int = 0) -> None:
        distributed = _import_distributed()
        self.retries = retries
        if isinstance(address, distributed.Client):
            self.client, self._own = address, False
            self.address = str(address.scheduler.address)
            return
        self.address = str(address)
        try:
            self.client = distributed.Client(self.address, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise SchedulerUnreachable(
                f"cannot reach the Dask scheduler at {self.address} within {connect_timeout:g}s "
                f"({type(e).__name__}: {e}); is `dask scheduler` running there? (--scheduler or ${SCHEDULER_ENV})"
            ) from None
        self._own = True

    @property
    def workers(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def map(self, fn: Callable[[T], R], items: Sequence[T], *, desc: str = "", progress: bool = False) -> list[R]:
        if not items:
            return []
        distributed = _import_distributed()
        name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "task")
        run = uuid.uuid4().hex[:12]
        keys = [f"lmfusion-{name}-{run}-{i:07d}" for i in range(len(items))]
        futs = self.client.map(fn, list(items), key=keys, pure=False, retries=self.retries)
        bar = _bar(len(items), desc, progress)
        try:
            if bar.disable:  # one batched gather: the cheapest way to collect the results
                out: list[Any] = self.client.gather(futs)
            else:
                index = {f.key: i for i, f in enumerate(futs)}
                out = [None] * len(items)
                for f in distributed.as_completed(futs, loop=self.client.loop):
                    out[index[f.key]] = f.result()  # raises the task's own exception
                    bar.update(1)
        except BaseException:
            self.client.cancel(futs)
            raise
        finally:
            bar.close()
            for f in futs:
                f.release()
        return out

    def imap(self, fn: Callable[[T], R], items: Iterable[T], *, window: int | None = None, desc: str = "",
             progress: bool = False) -> Iterator[R]:  # fmt: skip
        """Streams: one task per item, keyed by its index (a task re-run after a worker died replaces its
        result), at most ``window`` in flight."""
        w = window or max(4, 2 * self.workers)
        name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "task")
        run = uuid.uuid4().hex[:12]
        count = itertools.count()

        def submit(xs: list[T]) -> list[Any]:
            if not xs:
                return []
            keys = [f"lmfusion-{name}-{run}-{next(count):07d}" for _ in xs]
            return list(self.client.map(fn, xs, key=keys, pure=False, retries=self.retries))

        def result(f: Any) -> Any:
            try:
                return f.result()
            finally:
                f.release()

        yield from _in_order(submit, result, self.client.cancel, items, w, _bar(None, desc, progress))

    def close(self) -> None:
        if self._own:
            self.client.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r})"


ExecutorLike = Executor | str | None
"""An executor, a spec for :func:`open_executor`, or None (in-process)."""


def open_executor(spec: ExecutorLike = None, *, connect_timeout: float = 10.0, env: bool = False) -> Executor:
    """An executor from a spec.

    ``None``/``""``/``"inprocess"``: :class:`InProcess`; ``"processes"`` or ``"processes:N"``:
    :class:`LocalProcesses`; ``"tcp://HOST:PORT"`` (any Dask address with ``://``): :class:`DaskExecutor`.
    With ``env`` and no spec, :data:`SCHEDULER_ENV` is read (the CLI's fallback for ``--scheduler``).
    """
    if isinstance(spec, Executor):
        return spec
    if not spec and env:
        spec = os.environ.get(SCHEDULER_ENV, "")
    s = (spec or "").strip()
    if s in ("", "inprocess", "local"):
        return InProcess()
    if s == "processes" or s.startswith("processes:"):
        n = s.partition(":")[2]
        try:
            return LocalProcesses(int(n) if n else None)
        except ValueError:
            raise ExecutorError(f"bad executor spec {s!r}: expected processes:N") from None
    if "://" in s:
        return DaskExecutor(s, connect_timeout=connect_timeout)
    raise ExecutorError(f"bad executor spec {s!r}: expected tcp://HOST:PORT, processes[:N] or inprocess")
