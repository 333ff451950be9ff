"""The paper's published numbers: one ``PaperCell`` per printed ``mean (std)`` of Tables 2-14.

The numbers are data, transcribed in ``bnn_train/paper/tables.csv`` (see ``NOTES.md`` there for
the reading of garbled tables); this module only parses and indexes them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .experiments import CellKey

PAPER_CSV = Path(__file__).resolve().parent.parent / "paper" / "tables.csv"


class PaperTableError(ValueError):
    """The bundled tables.csv is malformed: a bug in the package, not a user error, so it is no BnnError and
    keeps its traceback."""


COLUMNS = ("table", "model", "dataset", "dim", "hidden", "batch_size", "lr", "config", "paper_label", "mean", "std")


@dataclass(frozen=True)
class PaperCell:
    table: int
    model: str
    dataset: str
    dim: int | None
    hidden: int | None
    batch_size: int
    lr: float
    config: str  # FORWARD/BACKWARD with an optional +bn / +gc suffix
    label: str  # the column header as the paper prints it
    mean: float
    std: float

    @property
    def key(self) -> CellKey:
        return CellKey(config=self.config, batch_size=self.batch_size, lr=self.lr, dim=self.dim, hidden=self.hidden)


def _opt_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def parse_rows(rows: list[dict], source: str = "tables.csv") -> list[PaperCell]:
    """Parse CSV rows (dicts keyed by ``COLUMNS``); a malformed row is a PaperTableError naming its line."""
    cells = []
    for line, r in enumerate(rows, start=2):
        try:
            cells.append(
                PaperCell(
                    table=int(r["table"]),
                    model=r["model"],
                    dataset=r["dataset"],
                    dim=_opt_int(r["dim"]),
                    hidden=_opt_int(r["hidden"]),
                    batch_size=int(r["batch_size"]),
                    lr=float(r["lr"]),
                    config=r["config"],
                    label=r["paper_label"],
                    mean=float(r["mean"]),
                    std=float(r["std"]),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PaperTableError(f"{source} line {line} is malformed ({e})") from None
    return cells


@lru_cache(maxsize=1)
def load_paper(path: str | Path = PAPER_CSV) -> tuple[PaperCell, ...]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise PaperTableError(f"{path} has columns {reader.fieldnames}; expected {', '.join(COLUMNS)}")
        return tuple(parse_rows(list(reader), Path(path).name))


def paper_table(table: int) -> dict[tuple, PaperCell]:
    """The cells of one table, keyed by ``PaperCell.key``."""
    return {c.key: c for c in load_paper() if c.table == table}
