"""A small stage runner for recipes: stages are skipped when their inputs and parameters are unchanged.

Each :class:`Stage` declares its ``inputs`` (files or directories), ``outputs`` and JSON-able
``params``. Before running a stage the runner computes a *stamp*: the SHA-1 of the parameters plus the
content hash of every input. A stage whose stamp file (``<work>/.stamps/<name>.json``) records the same
stamp and whose outputs all exist is skipped. Otherwise it runs, and the stamp is written (atomically)
only after it returns, so an interrupted stage is never mistaken for a finished one.

Long stages resume inside themselves through the context's journal: ``ctx.is_done(key)`` /
``ctx.mark_done(key)`` record finished work items in ``<work>/.stamps/<name>.journal``; the journal
belongs to one stamp and is discarded when the stage's inputs or parameters change.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion.errors import LMFusionError
from fusion.executor import Executor
from fusion.io import atomic_write_json

__all__ = ["Pipeline", "Stage", "StageContext", "StageReport", "hash_path", "stage_waves"]


def hash_path(path: Path, h: Any = None) -> str:
    """Content hash of a file, or of a directory (relative names + contents, sorted); missing -> error."""
    own = h is None
    h = h or hashlib.sha1()
    if path.is_file():
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file() and ".stamps" not in q.parts):
            h.update(str(p.relative_to(path)).encode() + b"\0")
            hash_path(p, h)
    else:
        raise LMFusionError(f"stage input {path} does not exist")
    return h.hexdigest() if own else ""


@dataclass(frozen=True)
class StageReport:
    """What happened to one stage: ``"ran"`` or ``"skipped"`` (up to date), and how long it took."""

    name: str
    status: str
    seconds: float
    stamp: str


class StageContext:
    """Handed to a stage function: its stage, the stamp, and the resume journal."""

    def __init__(self, stage: Stage, stamp: str, journal: Path, progress: bool) -> None:
        self.stage = stage
        self.stamp = stamp
        self.progress = progress
        self._journal = journal
        self._done: set[str] = set()
        if journal.exists():
            lines = journal.read_text(encoding="utf-8").splitlines()
            if lines and lines[0] == stamp:
                self._done = {ln for ln in lines[1:] if ln}
        if not self._done:
            journal.parent.mkdir(parents=True, exist_ok=True)
            journal.write_text(stamp + "\n", encoding="utf-8")

    @property
    def params(self) -> Mapping[str, Any]:
        return self.stage.params

    def is_done(self, key: str) -> bool:
        """Whether a work item was finished by an earlier (interrupted) run with the same stamp."""
        return key in self._done

    def mark_done(self, key: str) -> None:
        """Record a finished work item (appended and flushed at once)."""
        if "\n" in key:
            raise ValueError("journal keys cannot contain newlines")
        if key not in self._done:
            self._done.add(key)
            with self._journal.open("a", encoding="utf-8") as f:
                f.write(key + "\n")

    @property
    def n_done(self) -> int:
        return len(self._done)


@dataclass(frozen=True)
class Stage:
    """One step of a recipe. ``run(ctx)`` must write every path in ``outputs`` (atomically)."""

    name: str
    run: Callable[[StageContext], None]
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


class Pipeline:
    """Runs stages in order under a work directory, skipping the up-to-date ones."""

    def __init__(self, work_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] | None = print):
        self.work_dir = Path(work_dir)
        self.stamp_dir = self.work_dir / ".stamps"
        self.progress = progress
        self.log = log or (lambda s: None)

    def stamp_of(self, stage: Stage) -> str:
        """SHA-1 over the stage name, its params (canonical JSON) and the content of its inputs."""
        h = hashlib.sha1()
        h.update(stage.name.encode() + b"\0")
        try:
            h.update(json.dumps(stage.params, sort_keys=True, default=str).encode() + b"\0")
        except (TypeError, ValueError) as e:
            raise LMFusionError(f"stage {stage.name!r}: params are not JSON-able: {e}") from None
        for p in stage.inputs:
            h.update(str(p).encode() + b"\0" + hash_path(Path(p)).encode())
        return h.hexdigest()

    def _stamp_file(self, stage: Stage) -> Path:
        return self.stamp_dir / f"{stage.name}.json"

    def is_up_to_date(self, stage: Stage, stamp: str | None = None) -> bool:
        f = self._stamp_file(stage)
        if not f.exists():
            return False
        try:
            recorded = json.loads(f.read_text(encoding="utf-8")).get("stamp")
        except json.JSONDecodeError:
            return False
        stamp = stamp or self.stamp_of(stage)
        return recorded == stamp and all(Path(o).exists() for o in stage.outputs)

    def run(self, stages: Iterable[Stage], *, force: Sequence[str] = (), only: Sequence[str] | None = None,
            executor: Executor | None = None) -> list[StageReport]:  # fmt: skip
        """Run (or skip) each stage in order. ``force`` names stages to re-run; ``only`` restricts.

        With an ``executor`` other than in-process, consecutive stages that do not read each other's
        outputs (:func:`stage_waves`) run side by side on it (each stage's function travels to a worker
        by value, so the work directory must be shared); stamps are written here, in stage order.
        """
        stages = list(stages)
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise LMFusionError(f"duplicate stage names: {names}")
        for n in [*force, *(only or [])]:
            if n not in names:
                raise LMFusionError(f"unknown stage {n!r} (stages: {', '.join(names)})")
        parallel = executor is not None and executor.kind != "inprocess"
        groups = stage_waves(stages) if parallel else [[s] for s in stages]
        number = {s.name: i for i, s in enumerate(stages, 1)}
        reports = []
        for group in groups:
            todo: list[tuple[Stage, str, float]] = []
            for stage in group:
                if only is not None and stage.name not in only:
                    continue
                t0 = time.perf_counter()
                stamp = self.stamp_of(stage)
                where = f"[{number[stage.name]}/{len(stages)}] {stage.name}"
                if stage.name not in force and self.is_up_to_date(stage, stamp):
                    self.log(f"{where}: up to date, skipped")
                    reports.append(StageReport(stage.name, "skipped", time.perf_counter() - t0, stamp))
                    continue
                self.log(f"{where}: {stage.description or 'running'}")
                sf = self._stamp_file(stage)
                if sf.exists():
                    sf.unlink()  # a half-run stage must not look finished
                todo.append((stage, stamp, t0))
            tasks = [(st, stamp, self.stamp_dir / f"{st.name}.journal", self.progress) for st, stamp, _ in todo]
            if parallel and len(tasks) > 1:
                assert executor is not None
                executor.map(_run_stage, tasks, desc="stages")
            else:
                for t in tasks:
                    _run_stage(t)
            for stage, stamp, t0 in todo:
                reports.append(self._finish(stage, stamp, time.perf_counter() - t0))
        return reports

    def _finish(self, stage: Stage, stamp: str, dt: float) -> StageReport:
        missing = [str(o) for o in stage.outputs if not Path(o).exists()]
        if missing:
            raise LMFusionError(f"stage {stage.name!r} finished without writing {missing}")
        atomic_write_json(self._stamp_file(stage), {"stage": stage.name, "stamp": stamp, "seconds": round(dt, 3),
                                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
        journal = self.stamp_dir / f"{stage.name}.journal"
        if journal.exists():
            journal.unlink()
        return StageReport(stage.name, "ran", dt, stamp)


def _run_stage(task: tuple[Stage, str, Path, bool]) -> None:
    """Run one stage's function (here or on a worker)."""
    stage, stamp, journal, progress = task
    stage.run(StageContext(stage, stamp, journal, progress))


def _within(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies under it (or the other way round)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents or a in b.parents


def stage_waves(stages: Sequence[Stage]) -> list[list[Stage]]:
    """Consecutive stages grouped into waves whose members do not read each other's outputs (an input
    equal to, under, or above an output of an earlier member), in order: a wave's stages may run at once."""
    waves: list[list[Stage]] = []
    for st in stages:
        cur = waves[-1] if waves else None
        if cur is not None and not any(_within(Path(i), Path(o)) for m in cur for o in m.outputs for i in st.inputs):
            cur.append(st)
        else:
            waves.append([st])
    return waves
