"""Plots of a reproduction: accuracy heatmaps (batch size x learning rate, ours | paper) per configuration,
and training curves like the paper's Figure 7 (train accuracy and loss per epoch, one line per
configuration, mean over runs) per grid point. matplotlib with Agg, atomic writes (bnn_train.plots).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..plots import Curve, Panel, plot_curves, pyplot, save_figure
from .experiments import CellKey, Experiment
from .report import CellStats


def _slug(text: str) -> str:
    return text.replace("/", "-").replace("+", "_")


def plot_heatmaps(exp: Experiment, stats: list[CellStats], out: Path) -> list[Path]:
    """One PNG per configuration: for each dim/hidden value a row of two heatmaps, ours and the paper's."""
    plt = pyplot()
    axis = exp.extra_axis
    paths = []
    for config in dict.fromkeys(s.cell.config for s in stats):
        ss = [s for s in stats if s.cell.config == config]
        extras = list(dict.fromkeys(s.cell.extra for s in ss))
        bss = sorted({s.cell.batch_size for s in ss})
        lrs = sorted({s.cell.lr for s in ss})
        fig, axes = plt.subplots(
            len(extras),
            2,
            squeeze=False,
            layout="constrained",
            figsize=(2.2 + 2.2 * len(lrs), 0.8 + (0.6 + 0.7 * len(bss)) * len(extras)),
        )
        for i, extra in enumerate(extras):
            for j, which in enumerate(("ours", "paper")):
                grid = np.full((len(bss), len(lrs)), np.nan)
                for s in ss:
                    if s.cell.extra != extra:
                        continue
                    v = s.mean if which == "ours" else s.paper_mean
                    if v is not None:
                        grid[bss.index(s.cell.batch_size), lrs.index(s.cell.lr)] = v
                ax = axes[i][j]
                ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
                for (r, c), v in np.ndenumerate(grid):
                    ax.text(
                        c,
                        r,
                        "—" if np.isnan(v) else f"{v:.3f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if np.isnan(v) or v < 0.6 else "black",
                    )
                ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
                ax.set_yticks(range(len(bss)), [str(b) for b in bss])
                ax.set_xlabel("learning rate")
                ax.set_ylabel("batch size")
                ax.set_title(which + (f" ({axis} {extra})" if axis else ""), fontsize=9)
        fig.suptitle(f"Table {exp.table}: {ss[0].paper_label} ({config}) test accuracy")
        path = out / f"heatmap-{_slug(config)}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def _histories(run_dirs: list[Path]) -> list[list[dict]]:
    from ..rundir import read_metrics_lines

    return [h for h in map(read_metrics_lines, run_dirs) if h]


def _mean_curve(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and std over runs of ``key`` (runs that stopped early, e.g. diverged, drop out)."""
    length = max(len(h) for h in histories)
    vals = np.full((len(histories), length), np.nan)
    for i, h in enumerate(histories):
        for j, r in enumerate(h):
            v = r.get(key)
            vals[i, j] = np.nan if v is None else float(v)
    with warnings.catch_warnings():  # an epoch no run reached or every run diverged in: NaN, left out of the plot
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.arange(1, length + 1), np.nanmean(vals, axis=0), np.nanstd(vals, axis=0)


def plot_table_curves(
    exp: Experiment, run_dirs: dict[CellKey, list[Path]], labels: dict[str, str], out: Path
) -> list[Path]:
    """Figure 7 style, one PNG per grid point: train accuracy and train loss per epoch, one line per configuration.

    ``run_dirs`` maps a cell's key to the run directories of its runs.
    """
    points: dict[tuple, dict[str, list[Path]]] = {}
    for key, dirs in run_dirs.items():
        points.setdefault(key.point, {})[key.config] = dirs
    paths = []
    for (dim, hidden, bs, lr), by_config in points.items():
        acc, loss = [], []
        for config, dirs in by_config.items():
            hs = _histories(dirs)
            if not hs:
                continue
            label = f"{labels.get(config, config)} (n={len(hs)})"
            for curves, key in ((acc, "train_accuracy"), (loss, "loss")):
                x, m, s = _mean_curve(hs, key)
                curves.append(Curve(label=label, x=x, y=m, spread=s))
        if not acc:
            continue
        where = (f"dim {dim}, " if dim is not None else "") + (f"hidden {hidden}, " if hidden is not None else "")
        name = (f"dim={dim}_" if dim is not None else "") + (f"hidden={hidden}_" if hidden is not None else "")
        path = out / "curves" / f"{name}bs={bs}_lr={lr:g}.png"
        plot_curves(
            [
                Panel(ylabel="train accuracy", curves=acc, ylim=(0, 1.0)),
                Panel(ylabel="train loss", curves=loss, legend=False),
            ],
            path,
            title=f"Table {exp.table}: {where}batch size {bs}, learning rate {lr:g} (mean ± std over runs)",
        )
        paths.append(path)
    return paths
