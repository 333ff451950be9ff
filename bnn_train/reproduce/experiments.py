"""The paper's experiments (Tables 2-14 of §4-5) as data: grid axes plus the settings the tables share.

A table's grid is the product of its axes -- [dim | hidden] x batch size x learning rate x
configuration -- exactly as the paper states them; its printed numbers come from
``paper.py`` and ``tests/test_reproduce.py`` checks that the two agree cell for cell.

What the paper leaves open is decided here once, for every table (docs/REPRODUCTION.md
gives the reasons):

* optimiser: plain SGD, no momentum, mean-reduced loss (cross-entropy for MLP / LeNet-5,
  bnn_train's squared error on the output activation for the SUC);
* weights: float everywhere, also in Tables 13/14 ("BNN" there means a Heaviside forward);
* BatchNorm only for a ``+bn`` configuration; ``+gc`` clips the global gradient norm at 1;
* LeNet-5 pools with the quadratic mean (§4.1) in every table, the Heaviside ones included
  (``bnn reproduce --pool max`` is the other reading: max-pool the pre-activations, then the step;
  docs/REPRODUCTION.md, "Step/I: the gap, settled");
* the MLP is "two-layer": one hidden layer of ``hidden`` units;
* torch's default initialisation; bnn_train's datasets and splits;
* none of bnn train's accuracy recipe (``PLAIN_TRAINING``: no augmentation, no label smoothing, no teacher).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from ..errors import ReproduceError

if TYPE_CHECKING:  # bnn_train.config imports torch: not needed for --list or a bad request
    from ..config import RunConfig

POOL_READINGS = ("qmean", "max")  # LeNet-5 pooling of a reproduction: the paper's §4.1, or max before the step
GRAD_CLIP_NORM = 1.0  # the "+gc" of Table 11 (the paper gives no value)
PAPER_RUNS = 20  # §4.3: "each experiment was independently executed 20 times"
DEFAULT_ENSEMBLE = 8  # runs of a cell trained together by default, CPU and GPU (docs/REPRODUCTION.md)


def split_config(config: str) -> tuple[str, frozenset[str]]:
    """``"relu/tied+bn"`` -> (``"relu/tied"``, {``"bn"``})."""
    act, *extras = config.split("+")
    return act, frozenset(extras)


class CellKey(NamedTuple):
    """A cell's coordinates within its table: the one key that our runs, the paper's numbers and the plots share."""

    config: str
    batch_size: int
    lr: float
    dim: int | None
    hidden: int | None

    @property
    def point(self) -> tuple:
        """The grid point without the configuration: (dim, hidden, batch_size, lr)."""
        return (self.dim, self.hidden, self.batch_size, self.lr)


@dataclass(frozen=True)
class Cell:
    """One cell of a table: a configuration at one grid point."""

    config: str
    batch_size: int
    lr: float
    dim: int | None = None
    hidden: int | None = None

    @property
    def key(self) -> CellKey:
        return CellKey(config=self.config, batch_size=self.batch_size, lr=self.lr, dim=self.dim, hidden=self.hidden)

    @property
    def extra(self) -> int | None:
        """The value on the table's extra axis (Experiment.extra_axis): dim or hidden units, else None."""
        return self.dim if self.dim is not None else self.hidden

    @property
    def point(self) -> tuple:
        """The grid point without the configuration (``CellKey.point``)."""
        return self.key.point

    @property
    def name(self) -> str:
        """A file-name-safe id, e.g. ``dim=2_bs=32_lr=0.01_logistic-tied``."""
        parts = [f"dim={self.dim}"] if self.dim is not None else []
        parts += [f"hidden={self.hidden}"] if self.hidden is not None else []
        parts += [f"bs={self.batch_size}", f"lr={self.lr:g}", self.config.replace("/", "-")]
        return "_".join(parts)


@dataclass(frozen=True)
class Experiment:
    name: str
    table: int
    title: str
    model: str
    dataset: str
    configs: tuple[str, ...]  # in the paper's column order
    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    epochs: int  # default --epochs
    dims: tuple[int, ...] = ()  # SUC on `ones`: input dimension
    hiddens: tuple[int, ...] = ()  # MLP: width of the one hidden layer
    loss_reduction: str = "mean"  # "sum" for Table 3 (docs/REPRODUCTION.md)
    pool: str = "qmean"  # LeNet-5 pooling, one of POOL_READINGS (bnn reproduce --pool)
    note: str = ""

    @property
    def extra_axis(self) -> str | None:
        return "dim" if self.dims else "hidden" if self.hiddens else None

    def cells(self) -> list[Cell]:
        """Every cell, grid point by grid point (dim/hidden, batch size, lr), configurations innermost."""
        extras = self.dims or self.hiddens or (None,)
        out = []
        for extra, bs, lr in itertools.product(extras, self.batch_sizes, self.lrs):
            for config in self.configs:
                kw = {"dim": extra} if self.dims else {"hidden": extra} if self.hiddens else {}
                out.append(Cell(config=config, batch_size=bs, lr=lr, **kw))
        return out

    def grid_text(self) -> str:
        axes = []
        if self.dims:
            axes.append("dim " + "/".join(map(str, self.dims)))
        if self.hiddens:
            axes.append("hidden " + "/".join(map(str, self.hiddens)))
        axes.append("bs " + "/".join(map(str, self.batch_sizes)))
        axes.append("lr " + "/".join(f"{lr:g}" for lr in self.lrs))
        axes.append(f"{len(self.configs)} configs")
        return " x ".join(axes)

    def run_config(
        self, cell: Cell, epochs: int, seed: int, device: str = "auto", data_dir: str | None = None
    ) -> RunConfig:
        """The bnn_train configuration of one run of ``cell``."""
        from ..config import ActParams, ModelConfig, RunConfig, TrainConfig

        act, extras = split_config(cell.config)
        model = ModelConfig(
            model=self.model,
            act=act,
            weights="float",
            batchnorm="bn" in extras,
            hidden=(cell.hidden,) if cell.hidden is not None else ModelConfig.hidden,
            pool=self.pool,
            init="default",
            act_params=ActParams(),
        )
        train = TrainConfig(
            dataset=self.dataset,
            data_dir=data_dir,
            epochs=epochs,
            batch_size=cell.batch_size,
            lr=cell.lr,
            optimizer="sgd",
            momentum=0.0,
            schedule="none",
            loss_reduction=self.loss_reduction,
            grad_clip=GRAD_CLIP_NORM if "gc" in extras else None,
            seed=seed,
            device=device,
            **PLAIN_TRAINING,
        )
        if cell.dim is not None:
            train = replace(train, dim=cell.dim)
        return RunConfig(model=model, train=train)


# bnn train's accuracy recipe (docs/ACCURACY.md) is not the paper's: its ingredients are switched off
# here by name, so that a change of bnn train's defaults never changes a reproduction.
PLAIN_TRAINING = {
    "augment_shift": 0,
    "label_smoothing": 0.0,
    "soft_step": 0.0,
    "distill": "",
    "distill_alpha": 0.0,  # no teacher, and none would count
    "distill_temperature": 1.0,
}


def _lenet(name, table, title, dataset, configs, bss, lrs, epochs, note=""):
    return Experiment(
        name=name,
        table=table,
        title=title,
        model="lenet5",
        dataset=dataset,
        configs=configs,
        batch_sizes=bss,
        lrs=lrs,
        epochs=epochs,
        note=note,
    )


_BS_MNIST = (256, 512, 1024)
_LR_MNIST = (0.005, 0.01, 0.05, 0.1)
_BS_JAM = (32, 64, 128)
_LR_JAM = (0.001, 0.002, 0.005, 0.01, 0.02)
_JAM_NOTE = "§4.8 says Digits, Table 12 says MNIST; we use MNIST (bnn_train/paper/NOTES.md)"

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            name="table2",
            table=2,
            title="Exp. 1: single unit classifier, logistic tied vs constant backward",
            model="suc",
            dataset="ones",
            configs=("logistic/tied", "logistic/const"),
            batch_sizes=(32, 64),
            lrs=(0.01, 0.1),
            epochs=10,
            dims=(2, 10, 100),
        ),
        Experiment(
            name="table3",
            table=3,
            title="Exp. 2: MLP with sigmoid hidden layer, tied vs constant backward",
            model="mlp",
            dataset="digits",
            configs=("logistic/tied", "logistic/const"),
            batch_sizes=(32, 64, 128),
            lrs=(0.01, 0.05, 0.1),
            epochs=20,
            hiddens=(32, 64),
            loss_reduction="sum",
            note="loss summed over the batch; garbled table: rows read as batch size, column groups as hidden units "
            "(bnn_train/paper/NOTES.md)",
        ),
        _lenet(
            "table4",
            4,
            "Exp. 3: LeNet-5, logistic forward",
            "mnist",
            ("logistic/tied", "logistic/const", "logistic/rect"),
            _BS_MNIST,
            _LR_MNIST,
            epochs=10,
        ),
        _lenet(
            "table5",
            5,
            "Exp. 4: LeNet-5, ReLU forward",
            "mnist",
            ("relu/tied", "relu/d_logistic", "relu/const", "relu/triang", "relu/rect"),
            _BS_MNIST,
            _LR_MNIST,
            epochs=10,
        ),
        _lenet(
            "table6",
            6,
            "Exp. 5: LeNet-5, full jamming",
            "mnist",
            ("logistic/full_jam", "relu/full_jam", "linear/full_jam"),
            _BS_JAM,
            _LR_JAM,
            epochs=10,
            note=_JAM_NOTE,
        ),
        _lenet(
            "table7",
            7,
            "Exp. 5: LeNet-5, positive jamming",
            "mnist",
            ("logistic/pos_jam", "relu/pos_jam", "linear/pos_jam"),
            _BS_JAM,
            _LR_JAM,
            epochs=10,
            note=_JAM_NOTE,
        ),
        _lenet(
            "table8",
            8,
            "Exp. 5: LeNet-5, rectangular jamming",
            "mnist",
            ("logistic/rect_jam", "relu/rect_jam", "linear/rect_jam"),
            _BS_JAM,
            _LR_JAM,
            epochs=10,
            note=_JAM_NOTE,
        ),
        _lenet(
            "table9",
            9,
            "Exp. 6: LeNet-5, linear vs ReLU (tied)",
            "fashion-mnist",
            ("linear/tied", "relu/tied"),
            (128, 256, 512),
            _LR_MNIST,
            epochs=10,
        ),
        _lenet(
            "table10",
            10,
            "Exp. 6: LeNet-5, linear forward with jamming",
            "fashion-mnist",
            ("linear/full_jam", "linear/pos_jam", "linear/rect_jam"),
            _BS_JAM,
            (0.1, 0.5, 1.0, 1.2),
            epochs=10,
        ),
        _lenet(
            "table11",
            11,
            "Exp. 6: LeNet-5, ReLU with BatchNorm / gradient clipping",
            "fashion-mnist",
            ("relu/tied", "relu/tied+bn", "relu/tied+gc"),
            (256,),
            _LR_MNIST,
            epochs=10,
        ),
        Experiment(
            name="table13",
            table=13,
            title="BNN: single unit classifier, Heaviside forward",
            model="suc",
            dataset="ones",
            configs=("heaviside/d_logistic", "heaviside/const"),
            batch_sizes=(32, 64),
            lrs=(0.01, 0.1),
            epochs=10,
            dims=(2, 10, 100),
        ),
        _lenet(
            "table14",
            14,
            "BNN: LeNet-5, Heaviside forward",
            "mnist",
            ("heaviside/d_logistic", "heaviside/const", "heaviside/triang", "heaviside/rect"),
            _BS_MNIST,
            (0.01, 0.1),
            epochs=10,
        ),
    )
}


def get_experiment(name: str, pool: str | None = None) -> Experiment:
    """The experiment ``name``, with LeNet-5 pooling ``pool`` (one of POOL_READINGS) in place of its own if given."""
    key = name.strip().lower()
    if key not in EXPERIMENTS:
        raise ReproduceError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[key]
    if pool is None or pool == exp.pool:
        return exp
    if pool not in POOL_READINGS:
        raise ReproduceError(f"--pool must be one of {', '.join(POOL_READINGS)}, got {pool!r}")
    if exp.model != "lenet5":
        raise ReproduceError(f"--pool applies to the LeNet-5 tables only; {exp.name} trains the {exp.model}")
    return replace(exp, pool=pool)


_KEYS = {"bs": "batch_size", "lr": "lr", "dim": "dim", "hidden": "hidden", "config": "config"}


def select_cells(exp: Experiment, only: str | None = None, max_cells: int | None = None) -> list[Cell]:
    """The cells of ``exp`` kept by ``only`` (``"bs=256,lr=0.1,config=relu/tied"``; a key given twice
    keeps either value) and cut to the first ``max_cells``."""
    cells = exp.cells()
    if only:
        wanted: dict[str, set] = {}
        for part in (p.strip() for p in only.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in _KEYS:
                raise ReproduceError(f"--only takes KEY=VALUE pairs with KEY one of {', '.join(_KEYS)}, got {part!r}")
            attr = _KEYS[key]
            valid = sorted({getattr(c, attr) for c in cells}, key=str)
            try:
                parsed = value.strip() if attr == "config" else (float if attr == "lr" else int)(value)
            except ValueError:
                parsed = None
            if parsed not in valid:
                raise ReproduceError(
                    f"--only {part}: {exp.name} has {key} "
                    + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in valid)
                )
            wanted.setdefault(attr, set()).add(parsed)
        cells = [c for c in cells if all(getattr(c, a) in vs for a, vs in wanted.items())]
    if max_cells is not None:
        if max_cells < 1:
            raise ReproduceError(f"--max-cells must be a positive integer, got {max_cells}")
        cells = cells[:max_cells]
    return cells
