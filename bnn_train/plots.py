"""Plots written next to the numbers: one curve plotter (a run's history, a table's mean over runs) and figure saving.

matplotlib is imported lazily with the non-interactive Agg backend; files are written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rundir import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


@dataclass(frozen=True)
class Curve:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    spread: Sequence[float] | None = None  # a band of y +- spread (e.g. the std over runs)


@dataclass(frozen=True)
class Panel:
    ylabel: str
    curves: list[Curve]
    ylim: tuple[float, float] | None = None
    legend: bool = True


def plot_curves(panels: list[Panel], path: Path, title: str = "") -> None:
    """Side-by-side panels of curves against the epoch, one PNG: a run's history or a table's mean over runs."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for c in panel.curves:
            (line,) = ax.plot(c.x, c.y, marker="o", ms=3, label=c.label)
            if c.spread is not None:
                y, s = np.asarray(c.y, dtype=float), np.asarray(c.spread, dtype=float)
                ax.fill_between(c.x, y - s, y + s, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.ylabel)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        if panel.legend:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def run_panels(history: list[dict]) -> list[Panel]:
    """A run's loss (left) and train/held-out accuracy (right) per epoch, from its metrics history; held out is
    the validation part where the run has one (--val-split), else the test set."""
    epochs = [r["epoch"] for r in history]
    held = "val" if any("val_accuracy" in r for r in history) else "test"

    def curves(train_key: str, held_key: str) -> list[Curve]:
        return [
            Curve(label=label, x=epochs, y=[r.get(key) for r in history])
            for label, key in (("train", train_key), (held, held_key))
        ]

    return [
        Panel(ylabel="loss", curves=curves("loss", f"{held}_loss")),
        Panel(ylabel="accuracy", curves=curves("train_accuracy", f"{held}_accuracy"), ylim=(0, 1.0)),
    ]
