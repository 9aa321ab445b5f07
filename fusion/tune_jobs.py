"""Independent tuning runs as a map over an executor: methods, conditions, CV folds, seeds.

A :class:`TuneJob` is one call of :func:`fusion.tuning.tune` — its problem (the cached score matrices and
error counts, plain arrays) and its settings — so it can run in another process or on a Dask worker;
:func:`tune_jobs` runs many of them on an :class:`~fusion.executor.Executor` and returns the results in
job order. Each job is seeded by its own ``seed``, so its result depends only on the job, never on
where or in which order it ran (``seconds`` aside).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusion.executor import Executor, open_executor
from fusion.tuning import DEFAULT_FIXED, TuningProblem, TuningResult, tune

__all__ = ["TuneJob", "run_tune_job", "tune_jobs"]


@dataclass(frozen=True)
class TuneJob:
    """The arguments of one :func:`fusion.tuning.tune` call (picklable: arrays, strings, numbers)."""

    problem: TuningProblem
    method: str = "mert"
    fixed: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FIXED))
    init: Mapping[str, float] | None = None
    bounds: Mapping[str, tuple[float, float]] | None = None
    seed: int = 0
    opts: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    """A name for reports (a condition, a fold)."""

    def __post_init__(self) -> None:  # a MappingProxyType (DEFAULT_FIXED) does not pickle
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "opts", dict(self.opts))
        if self.init is not None:
            object.__setattr__(self, "init", dict(self.init))
        if self.bounds is not None:
            object.__setattr__(self, "bounds", dict(self.bounds))


def run_tune_job(job: TuneJob) -> TuningResult:
    """Run one job here (what a worker does)."""
    return tune(job.problem, job.method, fixed=job.fixed, init=job.init, bounds=job.bounds, seed=job.seed, **job.opts)


def tune_jobs(
    jobs: Sequence[TuneJob], executor: Executor | str | None = None, *, progress: bool = False
) -> list[TuningResult]:
    """``[run_tune_job(j) for j in jobs]`` on ``executor`` (None: here), in job order."""
    ex = open_executor(executor)
    try:
        return ex.map(run_tune_job, list(jobs), desc="tuning jobs", progress=progress)
    finally:
        if ex is not executor:
            ex.close()
