"""Plots for tuning reports (matplotlib, Agg backend, imported lazily so plotting stays optional)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fusion.errors import LMFusionError
from fusion.io import atomic_write_bytes
from fusion.tuning import TuningProblem, default_bounds, total_errors_batch


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise LMFusionError("plots need matplotlib: pip install 'lmfusion[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def error_surface(
    problem: TuningProblem,
    weights: Mapping[str, float],
    x: str,
    y: str | None,
    x_range: tuple[float, float],
    y_range: tuple[float, float] | None = None,
    points: int = 41,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Error rate over a grid of ``x`` (and ``y``) weights, the other weights as in ``weights``.

    Returns ``(xs [P], ys [Q] or None, rates [Q, P] or [P])``.
    """
    total = problem._check_rate_defined()
    base = problem.weight_vector(weights)
    ix = problem.components.index(x)
    xs = np.linspace(*x_range, points)
    if y is None:
        W = np.tile(base, (points, 1))
        W[:, ix] = xs
        return xs, None, total_errors_batch(problem, W) / total
    iy = problem.components.index(y)
    assert y_range is not None
    ys = np.linspace(*y_range, points)
    gx, gy = np.meshgrid(xs, ys)
    W = np.tile(base, (gx.size, 1))
    W[:, ix] = gx.ravel()
    W[:, iy] = gy.ravel()
    return xs, ys, (total_errors_batch(problem, W) / total).reshape(gx.shape)


def plot_error_surface(
    path: str | Path,
    problem: TuningProblem,
    weights: Mapping[str, float],
    x: str,
    y: str | None = None,
    *,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    points: int = 41,
    metric: str = "WER",
    title: str | None = None,
) -> Path:
    """Save a plot of the dev error over the ``x`` weight (a curve) or ``x`` and ``y`` (a heatmap).

    The tuned point ``weights`` is marked; the other weights stay at their tuned values. The PNG
    (or any format matplotlib knows from the suffix) is written atomically.
    """
    for k in (x, y):
        if k is not None and k not in problem.components:
            raise LMFusionError(f"cannot plot over {k!r}: the components are {list(problem.components)}")
    bounds = dict(bounds or {})
    xr = bounds.get(x, default_bounds(x))
    yr = bounds.get(y, default_bounds(y)) if y is not None else None
    xs, ys, rates = error_surface(problem, weights, x, y, xr, yr, points)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    try:
        if ys is None:
            ax.plot(xs, 100 * rates, color="C0")
            ax.axvline(weights.get(x, 0.0), color="C3", ls="--", label=f"tuned {x}={weights.get(x, 0.0):.3g}")
            ax.set_xlabel(f"weight of {x}")
            ax.set_ylabel(f"dev {metric} (%)")
            ax.legend()
        else:
            assert y is not None
            mesh = ax.pcolormesh(xs, ys, 100 * rates, shading="nearest", cmap="viridis_r")
            fig.colorbar(mesh, ax=ax, label=f"dev {metric} (%)")
            ax.plot(
                [weights.get(x, 0.0)],
                [weights.get(y, 0.0)],
                marker="*",
                color="red",
                ms=14,
                ls="",
                label=f"tuned ({weights.get(x, 0.0):.3g}, {weights.get(y, 0.0):.3g})",
            )
            ax.set_xlabel(f"weight of {x}")
            ax.set_ylabel(f"weight of {y}" + (" (word bonus)" if y == "words" else ""))
            ax.legend(loc="upper right")
        others = {k: v for k, v in weights.items() if k not in (x, y)}
        ax.set_title(title or f"dev {metric}; " + ", ".join(f"{k}={v:.3g}" for k, v in others.items()))
        buf = io.BytesIO()
        fmt = Path(path).suffix.lstrip(".") or "png"
        fig.tight_layout()
        fig.savefig(buf, format=fmt)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
