"""Plots written next to the numbers: training curves of a run (loss and accuracy per epoch).

matplotlib is imported lazily with the non-interactive Agg backend; files are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from .rundir import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss (left) and train/held-out accuracy (right) against the epoch; held out = validation if the run has it, else test."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    held = "val" if any("val_accuracy" in r for r in history) else "test"
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [r["loss"] for r in history], marker="o", ms=3, label="train")
    ax_loss.plot(epochs, [r.get(f"{held}_loss") for r in history], marker="o", ms=3, label=held)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], marker="o", ms=3, label="train")
    ax_acc.plot(epochs, [r.get(f"{held}_accuracy") for r in history], marker="o", ms=3, label=held)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.0)
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
