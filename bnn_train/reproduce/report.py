"""The Markdown report: per grid point and configuration, our mean (std) next to the paper's and the difference.

Means and standard deviations are over runs (population std, ddof = 0); a diverged run counts
with the test accuracy it ended with. The difference is ours - paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .experiments import Cell, CellKey, Experiment
from .paper import paper_table


@dataclass(frozen=True)
class CellStats:
    cell: Cell
    n: int
    mean: float | None
    std: float | None
    diverged: int
    paper_mean: float | None
    paper_std: float | None
    paper_label: str

    @property
    def diff(self) -> float | None:
        if self.mean is None or self.paper_mean is None:
            return None
        return self.mean - self.paper_mean


def _opt(value) -> int | None:
    return None if value in ("", None) else int(value)


def row_key(row: dict) -> CellKey:
    """The cell of a results.csv row."""
    return CellKey(
        config=row["config"],
        batch_size=int(row["batch_size"]),
        lr=float(row["lr"]),
        dim=_opt(row["dim"]),
        hidden=_opt(row["hidden"]),
    )


def _acc(row: dict) -> float:
    v = row["test_accuracy"]
    return float("nan") if v in ("", None) else float(v)


def cell_stats(exp: Experiment, cells: list[Cell], rows: list[dict]) -> list[CellStats]:
    paper = paper_table(exp.table)
    by_cell: dict[tuple, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(row_key(r), []).append(r)
    out = []
    for c in cells:
        rs = by_cell.get(c.key, [])
        accs = np.array([_acc(r) for r in rs], dtype=float)
        accs = np.where(np.isfinite(accs), accs, 0.0)  # a run with no accuracy at all counts as 0
        p = paper.get(c.key)
        out.append(
            CellStats(
                c,
                len(rs),
                float(accs.mean()) if len(rs) else None,
                float(accs.std()) if len(rs) else None,
                sum(int(float(r["diverged"] or 0)) for r in rs),
                p.mean if p else None,
                p.std if p else None,
                p.label if p else c.config,
            )
        )
    return out


def _ms(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{mean:.4f} ({std:.3f})"


def _d(x: float | None) -> str:
    return "—" if x is None else f"{x:+.4f}"


def summary(stats: list[CellStats]) -> dict:
    """Mean difference, mean |difference| and the share of cells within 0.02 of the paper, per configuration."""
    out = {}
    for s in stats:
        out.setdefault(s.cell.config, []).append(s)
    res = {}
    for config, ss in out.items():
        diffs = [s.diff for s in ss if s.diff is not None]
        res[config] = {
            "label": ss[0].paper_label,
            "cells": len(ss),
            "cells_run": len(diffs),
            "ours_mean": _mean([s.mean for s in ss if s.mean is not None]),
            "paper_mean": _mean([s.paper_mean for s in ss if s.diff is not None]),
            "mean_diff": _mean(diffs),
            "mean_abs_diff": _mean([abs(d) for d in diffs]),
            "within_0.02": sum(abs(d) <= 0.02 for d in diffs),
            "diverged_runs": sum(s.diverged for s in ss),
        }
    return res


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def markdown(
    exp: Experiment, stats: list[CellStats], epochs: int, seed: int, devices: list[str], command: str | None = None
) -> str:
    """The report: settings, a summary per configuration, then the full table (paper layout, one row per point)."""
    ns = [s.n for s in stats]
    configs = list(dict.fromkeys(s.cell.config for s in stats))
    labels = {s.cell.config: s.paper_label for s in stats}
    lines = [
        f"## Table {exp.table}: {exp.title}",
        "",
        f"{exp.model} on {exp.dataset}; {len(stats)} cells; runs per cell {min(ns, default=0)}"
        + (f"–{max(ns)}" if ns and max(ns) != min(ns) else "")
        + f" (paper: 20); {epochs} epochs; run i uses seed {seed} + i; device {', '.join(devices) or '—'}.",
    ]
    if exp.model == "lenet5" and exp.pool != "qmean":
        lines += [
            "",
            f"Pooling: {exp.pool} on the pre-activations, then the activation (`--pool {exp.pool}`), "
            "not the paper's quadratic mean.",
        ]
    if command:
        lines += ["", f"`{command}`"]
    if exp.note:
        lines += ["", f"Note: {exp.note}."]
    lines += [
        "",
        "| configuration | cells run | ours: mean acc | paper: mean acc | mean Δ | mean \\|Δ\\| "
        "| \\|Δ\\| ≤ 0.02 | diverged runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config, s in summary(stats).items():
        f = lambda x: "—" if x is None else f"{x:.4f}"  # noqa: E731
        lines.append(
            f"| {s['label']} (`{config}`) | {s['cells_run']}/{s['cells']} | {f(s['ours_mean'])} | "
            f"{f(s['paper_mean'])} | {_d(s['mean_diff'])} | {f(s['mean_abs_diff'])} | "
            f"{s['within_0.02']}/{s['cells_run']} | {s['diverged_runs']} |"
        )
    axis = exp.extra_axis
    head = ([axis] if axis else []) + ["BS", "LR"]
    for c in configs:
        head += [f"{labels[c]} ours", "paper", "Δ"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    points: dict[tuple, dict[str, CellStats]] = {}
    for s in stats:
        points.setdefault(s.cell.point, {})[s.cell.config] = s
    for (dim, hidden, bs, lr), by_config in points.items():
        cols = ([str(dim if dim is not None else hidden)] if axis else []) + [str(bs), f"{lr:g}"]
        for c in configs:
            s = by_config.get(c)
            if s is None:
                cols += ["", "", ""]
                continue
            cols += [
                _ms(s.mean, s.std) + (f" ⚠{s.diverged}" if s.diverged else ""),
                _ms(s.paper_mean, s.paper_std),
                _d(s.diff),
            ]
        lines.append("| " + " | ".join(cols) + " |")
    lines += [
        "",
        "ours: mean (std) test accuracy over our runs; paper: as printed; Δ = ours − paper; "
        "⚠k: k runs diverged (non-finite weights).",
    ]
    return "\n".join(lines) + "\n"
