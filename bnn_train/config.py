"""Settings of a run as dataclasses: ``ModelConfig`` rebuilds the network, ``TrainConfig`` the training.

Both are saved (as plain JSON-able dicts) in ``config.json`` and in every checkpoint, so a run
directory is enough to rebuild, resume or export the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .activations import ActParams, parse_act
from .arch import check_arch
from .choices import DATASETS, DEVICES, INITS, LOSS_REDUCTIONS, MODELS, OPTIMIZERS, POOLS, SCHEDULES, WEIGHTS
from .errors import ConfigError


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {option} {value!r}; choose one of: {', '.join(choices)}")


def _positive(option: str, value: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{option} must be {kind}, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """What network to build. ``in_shape``, ``num_classes`` and ``input_scale`` come from the dataset."""

    model: str = "lenet5"
    arch: str = ""  # the --arch spec of model "arch" (bnn_train/arch.py)
    act: str = "heaviside/rect"
    weights: str = "binary"
    batchnorm: bool = True
    hidden: tuple[int, ...] = (256, 128)
    width: float = 1.0
    pool: str = "auto"
    init: str = "default"
    act_params: ActParams = field(default_factory=ActParams)
    in_shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10
    input_scale: float = 1.0 / 16

    @property
    def forward_name(self) -> str:
        return parse_act(self.act)[0]

    @property
    def pool_kind(self) -> str:
        """max for bit-valued forwards (max of bits is OR), the paper's quadratic mean otherwise."""
        if self.pool != "auto":
            return self.pool
        return "max" if self.forward_name in ("heaviside", "sign") else "qmean"

    def validate(self) -> None:
        _choice("--model", self.model, MODELS)
        parse_act(self.act)
        _choice("--weights", self.weights, WEIGHTS)
        _choice("--pool", self.pool, POOLS)
        _choice("--init", self.init, INITS)
        self.act_params.validate()
        if self.model == "mlp":
            if not self.hidden:
                raise ConfigError("--hidden needs at least one width, e.g. --hidden 64,32")
            for h in self.hidden:
                _positive("--hidden widths", h, integer=True)
        _positive("--width", self.width)
        if self.model != "arch" and self.arch:
            raise ConfigError(f"--arch builds its own network; drop --model {self.model} (a preset) or --arch")
        if self.model == "arch":
            check_arch(self.arch, self.in_shape)
        if self.model == "lenet5" and len(self.in_shape) != 3:
            raise ConfigError(f"lenet5 needs image input (C, H, W); this dataset gives shape {tuple(self.in_shape)}")
        if self.model == "suc" and self.num_classes != 2:
            raise ConfigError(
                f"suc is a single-unit binary classifier; this dataset has {self.num_classes} classes (use --dataset ones)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimiser, schedule, budget, seed and device."""

    dataset: str = "digits"
    data_dir: str | None = None
    dim: int = 10  # ones: input dimension
    n_samples: int = 10000  # ones: samples generated (80/20 split)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "cosine"  # ends a fixed budget at a small lr: binary LeNet-5/MNIST 20 epochs 97.9 % vs 95.4 % constant
    grad_clip: float | None = None
    loss_reduction: str = "mean"  # "sum": the gradient of the batch's summed loss (step size grows with the batch)
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 1000
    val_split: float = 0.0  # share of the training set held out for validation (0: none, the paper's tables)

    def dataset_shape(self) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes) of the dataset, known without loading it."""
        if self.dataset == "ones":
            return (self.dim,), 2
        return ((1, 8, 8) if self.dataset == "digits" else (1, 28, 28)), 10

    def validate(self) -> None:
        _choice("--dataset", self.dataset, DATASETS)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--schedule", self.schedule, SCHEDULES)
        _choice("--loss-reduction", self.loss_reduction, LOSS_REDUCTIONS)
        _choice("--device", self.device, DEVICES)
        _positive("--lr", self.lr)
        _positive("--batch-size", self.batch_size, integer=True)
        _positive("--epochs", self.epochs, integer=True)
        _positive("--dim", self.dim, integer=True)
        _positive("--n-samples", self.n_samples, integer=True)
        _positive("--eval-batch-size", self.eval_batch_size, integer=True)
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.grad_clip is not None:
            _positive("--grad-clip", self.grad_clip)
        if not (isinstance(self.val_split, (int, float)) and math.isfinite(self.val_split) and 0 <= self.val_split < 1):
            raise ConfigError(f"--val-split must be in [0, 1) (a share of the training set), got {self.val_split}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Every option, before any data is loaded: the model is checked against its dataset's
        input shape and class count (``TrainConfig.dataset_shape``)."""
        self.train.validate()
        in_shape, num_classes = self.train.dataset_shape()
        replace(self.model, in_shape=in_shape, num_classes=num_classes).validate()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"]["hidden"] = list(self.model.hidden)
        d["model"]["in_shape"] = list(self.model.in_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        try:
            m = dict(d["model"])
            m["act_params"] = ActParams(**_known(ActParams, m.get("act_params", {})))
            m["hidden"] = tuple(int(h) for h in m.get("hidden", ()))
            m["in_shape"] = tuple(int(s) for s in m.get("in_shape", ()))
            return cls(ModelConfig(**_known(ModelConfig, m)), TrainConfig(**_known(TrainConfig, d["train"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a bnn run configuration ({e})") from None

    def with_dataset(self, in_shape: tuple[int, ...], num_classes: int, input_scale: float) -> "RunConfig":
        model = replace(self.model, in_shape=tuple(in_shape), num_classes=num_classes, input_scale=input_scale)
        return replace(self, model=model)


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    return d
