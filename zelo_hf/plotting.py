"""Plots of the pipeline's score distributions and before/after metrics (matplotlib, Agg backend: no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .utils import require


def _pyplot():
    require("matplotlib", "eval", "Plotting")
    import matplotlib

    matplotlib.use("Agg")  # files only; works on headless machines and under accelerate launch
    import matplotlib.pyplot as plt

    return plt


def plot_score_distributions(
    panels: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    title: str | None = None,
    bins: int = 40,
) -> Path:
    """One histogram per named score array (e.g. Elo scores, calibrated scores, reranker scores), saved as PNG.

    Empty arrays are drawn as an empty panel with a note rather than dropped, so the figure layout is stable.
    """
    if not panels:
        raise ValueError("`panels` is empty: pass at least one {name: scores} entry.")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items()):
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
            ax.axvline(float(np.mean(values)), color="tab:red", linewidth=1, label=f"mean {np.mean(values):.2f}")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name} (n={values.size})", fontsize=10)
        ax.set_xlabel("score")
    axes[0][0].set_ylabel("count")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def plot_metrics(rows: Sequence[Mapping[str, float | str]], metrics: Sequence[str], path: str | Path) -> Path:
    """Grouped bars of ``metrics`` for each row (a system: ``row["model"]``), saved as PNG."""
    if not rows:
        raise ValueError("`rows` is empty: pass at least one result row with a 'model' key.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(metrics), 3.4))
    width = 0.8 / len(rows)
    x = np.arange(len(metrics))
    for i, row in enumerate(rows):
        values = [float(row.get(m, np.nan)) for m in metrics]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=str(row["model"]))
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, list(metrics))
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
