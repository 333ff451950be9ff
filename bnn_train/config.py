"""Settings of a run as dataclasses: ``ModelConfig`` rebuilds the network, ``TrainConfig`` the training.

Both are saved (as plain JSON-able dicts) in ``config.json`` and in every checkpoint, so a run
directory is enough to rebuild, resume or export the model.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace

from .arch import check_arch
from .choices import DATASETS, DEVICES, INITS, LOSS_REDUCTIONS, MODELS, OPTIMIZERS, POOLS, SCHEDULES, WEIGHTS
from .datasets import DATASETS as DATASET_FACTS
from .errors import ConfigError

MAX_EPOCHS = 10**6  # a run's epochs (its checkpoint and metrics are checked against it: runcheck.py)

DEFAULT_DATASET = "digits"  # works offline; ModelConfig's input defaults are its facts
DATASET_HELP = (
    "ones, digits (offline), mnist, fashion-mnist, cifar10 (downloaded, or from --data-dir); "
    "folder:PATH = one sub-folder of images per class (PATH/train and PATH/test, or a seeded 80/20 split); "
    "npz:PATH = uint8 x_train, x_test and integer y_train, y_test."
)
ARCH_HELP = (
    "Your own network, in the notation of the BNN literature: tokens joined by '-'. "
    "[Nx]KCk[sS][pP] = N convolutions of K channels, k x k kernel, stride S (default 1), zero padding P "
    "(default k//2); MPk[sS] = max pooling, window k, stride S (default k); [Nx]KFC = N dense layers of K units. "
    "The classifier is appended; BatchNorm (--batchnorm) and --act follow every hidden layer. "
    "E.g. 32C3-MP2-64C3-MP2-256FC. Checked against the input size and for export before any data is loaded."
)


def setting(default=MISSING, help: str = "", choices: tuple[str, ...] | None = None, default_factory=MISSING):
    """A dataclass field that carries its option's help text and, for a fixed choice, the valid values.

    The CLI derives its options (default, help, choices) from these fields, and ``validate``
    checks every field that has choices: each default, help text and choice list is written here once.
    """
    metadata = {"help": help} | ({"choices": choices} if choices is not None else {})
    return field(default=default, default_factory=default_factory, metadata=metadata)


def option_name(name: str) -> str:
    """The command-line option of a setting: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def field_of(cls, name: str) -> Field:
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def _choices(settings) -> None:
    for f in fields(settings):
        choices = f.metadata.get("choices")
        if choices is not None and getattr(settings, f.name) not in choices:
            raise ConfigError(
                f"unknown {option_name(f.name)} {getattr(settings, f.name)!r}; choose one of: {', '.join(choices)}"
            )


# Real-valued settings (rates, widths, temperatures) live in float32 tensors: a value far outside this range
# overflows there (Adam's step with --lr 3.4e37 raised from inside torch) or divides by a denormal.
REAL_SETTING_RANGE = (1e-12, 1e6)


def _positive(option: str, value: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
        if not ok:
            raise ConfigError(f"{option} must be a positive integer, got {value}")
        return
    low, high = REAL_SETTING_RANGE
    if not (ok and low <= value <= high):
        raise ConfigError(f"{option} must be a positive number from {low:g} to {high:,.0f}, got {value}")


@dataclass(frozen=True)
class ActParams:
    """Shape parameters of the backward functions (docs/ACTIVATIONS.md gives the reasons for the defaults)."""

    rect_width: float = setting(1.0, "rect: height 1/w on |z| <= w/2 (unit area).")
    triang_width: float = setting(8.0, "triang: base width w, peak 2/w (unit area; w = 8 matches d_logistic).")
    jam_width: float = setting(10.0, "rect_jam: noise on |z| <= w/2 (paper Fig. 8c: |x| <= 5).")
    jam_mean: float | None = setting(
        None, "Mean of the jamming noise [default: mean of f' over the noise window, as in §4.8]."
    )
    st_k: float = setting(6.0, "sigmoid_tanh: k in sigmoid(k tanh(beta z)).")
    st_beta: float = setting(1.0, "sigmoid_tanh: beta.")

    def validate(self) -> None:
        for name in ("rect_width", "triang_width", "jam_width", "st_k", "st_beta"):
            _positive(option_name(name), getattr(self, name))
        if self.jam_mean is not None:
            _positive("--jam-mean", self.jam_mean)


_DEFAULT_FACTS = DATASET_FACTS[DEFAULT_DATASET]


@dataclass(frozen=True)
class ModelConfig:
    """What network to build. ``in_shape``, ``num_classes`` and ``input_scale`` come from the dataset."""

    model: str = setting("lenet5", "suc, mlp or lenet5 (paper §4.1); arch: the network of --arch.", MODELS)
    arch: str = setting("", ARCH_HELP)  # the --arch spec of model "arch" (bnn_train/arch.py)
    # the hardtanh STE lets |z| <= 1 through, twice rect's window: +1.5 points on Digits (docs/ACCURACY.md)
    act: str = setting(
        "heaviside/ste", "FORWARD/BACKWARD, e.g. heaviside/ste, heaviside/rect, logistic/tied, relu/full_jam."
    )
    weights: str = setting(
        "binary", "binary: sign(w) forward, clipped straight-through backward (BinaryConnect).", WEIGHTS
    )
    batchnorm: bool = setting(True, "BatchNorm after every linear/conv layer.")
    hidden: tuple[int, ...] = setting((256, 128), "MLP hidden widths, comma-separated.")
    width: float = setting(1.0, "LeNet-5 channel/unit multiplier.")
    pool: str = setting(
        "auto", "LeNet-5 pooling; auto = max (OR of bits) for heaviside/sign, else quadratic mean.", POOLS
    )
    init: str = setting("default", "Weight initialisation.", INITS)
    act_params: ActParams = setting(default_factory=ActParams, help="Shape parameters of the backward functions.")
    in_shape: tuple[int, ...] = setting(_DEFAULT_FACTS.in_shape(0), "Input shape (from the dataset).")
    num_classes: int = setting(_DEFAULT_FACTS.num_classes, "Number of classes (from the dataset).")
    input_scale: float = setting(_DEFAULT_FACTS.input_scale, "Raw input -> [0, 1] scale (from the dataset).")

    @property
    def forward_name(self) -> str:
        from .activations import parse_act  # torch: not needed to build the settings or the CLI

        return parse_act(self.act)[0]

    @property
    def pool_kind(self) -> str:
        """max for bit-valued forwards (max of bits is OR), the paper's quadratic mean otherwise."""
        if self.pool != "auto":
            return self.pool
        return "max" if self.forward_name in ("heaviside", "sign") else "qmean"

    def validate(self) -> None:
        from .activations import parse_act

        _choices(self)
        parse_act(self.act)
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
                f"suc is a single-unit binary classifier; this dataset has {self.num_classes} classes "
                "(use --dataset ones)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimiser, schedule, budget, seed and device."""

    dataset: str = setting(DEFAULT_DATASET, DATASET_HELP)  # checked by _dataset_choice: it also takes folder:, npz:
    data_dir: str | None = setting(
        None, "Folder with the four IDX files of mnist/fashion-mnist, or CIFAR-10's batches."
    )
    dim: int = setting(10, "ones: input dimension.")
    n_samples: int = setting(10000, "ones: samples generated (80/20 split).")
    epochs: int = setting(30, "Epochs to train (with --resume: the new total).")
    batch_size: int = setting(256, "Mini-batch size.")  # the recipe's MNIST numbers are measured at 256
    lr: float = setting(0.01, "Learning rate.")
    optimizer: str = setting("adam", "sgd or adam.", OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum.")
    # cosine ends a fixed budget at a small learning rate (docs/PERFORMANCE.md has the gain)
    schedule: str = setting(
        "cosine",
        "Learning-rate schedule: cosine decays it to 0 over --epochs (per epoch), none keeps it constant.",
        SCHEDULES,
    )
    grad_clip: float | None = setting(None, "Clip the gradient norm to this value.")
    augment_shift: int = setting(
        0, "Shift each training image by up to this many pixels, zero fill; 0 = off (docs/ACCURACY.md)."
    )
    # 0: smoothing costs the underfitting binary LeNet-5 on MNIST accuracy (docs/ACCURACY.md)
    label_smoothing: float = setting(
        0.0, "Label smoothing of the training loss (1 - e on the label, e spread over all classes; docs/ACCURACY.md)."
    )
    soft_step: float = setting(
        0.0,
        "Progressive binarisation: for this share of the epochs, heaviside/sign activations train as a ramp "
        "narrowing from |z| <= 1 to the step (bnn_train/softstep.py); 0 = off.",
    )
    distill: str = setting(
        "",
        "Knowledge distillation: the run directory of a trained teacher on the same dataset (e.g. the float twin, "
        "--weights float --act relu/tied); '' = none (docs/ACCURACY.md).",
    )
    distill_alpha: float = setting(0.9, "--distill: weight of the teacher's soft labels (the rest: the labels).")
    distill_temperature: float = setting(4.0, "--distill: softmax temperature of the soft labels.")
    loss_reduction: str = setting(
        "mean", "sum: the gradient of the batch's summed loss (the step size grows with the batch).", LOSS_REDUCTIONS
    )
    seed: int = setting(0, "Seed of initialisation, shuffling and noise.")
    device: str = setting("auto", "auto = cuda when available.", DEVICES)
    eval_batch_size: int = setting(1000, "Batch size of evaluation.")
    input_size: str = setting("", "folder: datasets: convert every image to HxW (or CxHxW, C = 1 or 3), e.g. 32x32.")
    val_split: float = setting(
        0.0,
        "Hold out this share of the training set for validation: metrics per epoch on it, best.pt kept by it, "
        "the test set evaluated at the end. 0: none (the paper's tables).",
    )

    def dataset_shape(self) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes) of the dataset, known without loading it (for folder:PATH
        and npz:PATH from the folder listing and the file headers, bnn_train/sources.py)."""
        from . import sources

        if self.dataset.startswith("folder:"):
            return sources.folder_shape(sources.source_path(self.dataset), self.input_size)
        if self.dataset.startswith("npz:"):
            return sources.npz_shape(sources.source_path(self.dataset))
        facts = DATASET_FACTS[self.dataset]
        return facts.in_shape(self.dim), facts.num_classes

    def validate(self) -> None:
        _choices(self)
        _dataset_choice(self)
        _positive("--lr", self.lr)
        _positive("--batch-size", self.batch_size, integer=True)
        _positive("--epochs", self.epochs, integer=True)
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(f"--epochs {self.epochs} is above the limit of {MAX_EPOCHS}")
        _positive("--dim", self.dim, integer=True)
        _positive("--n-samples", self.n_samples, integer=True)
        _positive("--eval-batch-size", self.eval_batch_size, integer=True)
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):  # torch.manual_seed takes 64-bit seeds
            raise ConfigError(f"--seed must be an integer from 0 to {2**63 - 1}, got {self.seed}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.grad_clip is not None:
            _positive("--grad-clip", self.grad_clip)
        if not (isinstance(self.val_split, (int, float)) and math.isfinite(self.val_split) and 0 <= self.val_split < 1):
            raise ConfigError(f"--val-split must be in [0, 1) (a share of the training set), got {self.val_split}")
        if not (isinstance(self.augment_shift, int) and 0 <= self.augment_shift <= 8):
            raise ConfigError(f"--augment-shift must be an integer from 0 to 8 pixels, got {self.augment_shift}")
        if not (math.isfinite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (
            isinstance(self.soft_step, (int, float)) and math.isfinite(self.soft_step) and 0 <= self.soft_step <= 1
        ):
            raise ConfigError(f"--soft-step must be a share of the epochs in [0, 1], got {self.soft_step}")
        if not (math.isfinite(self.distill_alpha) and 0 <= self.distill_alpha <= 1):
            raise ConfigError(f"--distill-alpha must be in [0, 1], got {self.distill_alpha}")
        _positive("--distill-temperature", self.distill_temperature)


def _dataset_choice(t: TrainConfig) -> None:
    """A named dataset, or folder:PATH / npz:PATH (bnn_train/sources.py); --input-size for folders only."""
    own = t.dataset.startswith(("folder:", "npz:")) and len(t.dataset.split(":", 1)[1]) > 0
    if not own and t.dataset not in DATASETS:
        raise ConfigError(
            f"unknown --dataset {t.dataset!r}; choose one of: {', '.join(DATASETS)}, folder:PATH, npz:PATH"
        )
    if t.input_size:
        if not t.dataset.startswith("folder:"):
            raise ConfigError(f"--input-size converts the images of a folder:PATH dataset, not {t.dataset}; drop it")
        from .sources import parse_input_size

        parse_input_size(t.input_size)


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
        if self.model.batchnorm and self.train.batch_size == 1:  # torch refuses to normalise a batch of one
            raise ConfigError(
                "--batch-size 1 cannot train BatchNorm (it needs 2 or more samples per batch); "
                "use a larger --batch-size or --no-batchnorm"
            )

    def ignored_settings(self) -> dict[str, str]:
        """The settings this run does not use, each with why (the CLI refuses them when they are typed)."""
        m, t = self.model, self.train
        files = [name for name, facts in DATASET_FACTS.items() if facts.from_files]
        rules = {
            "hidden": (m.model == "mlp", f"applies to --model mlp only, not {m.model}"),
            "width": (m.model == "lenet5", f"applies to --model lenet5 only, not {m.model}"),
            "pool": (m.model == "lenet5", f"applies to --model lenet5 only, not {m.model}"),
            "dim": (t.dataset == "ones", f"applies to --dataset ones only, not {t.dataset}"),
            "n_samples": (t.dataset == "ones", f"applies to --dataset ones only, not {t.dataset}"),
            "data_dir": (t.dataset in files, f"applies to --dataset {', '.join(files)} only, not {t.dataset}"),
            "momentum": (t.optimizer == "sgd", f"applies to --optimizer sgd only, not {t.optimizer}"),
            "distill_alpha": (bool(t.distill), "applies with --distill only"),
            "distill_temperature": (bool(t.distill), "applies with --distill only"),
        }
        return {name: why for name, (used, why) in rules.items() if not used}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"]["hidden"] = list(self.model.hidden)
        d["model"]["in_shape"] = list(self.model.in_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        try:
            m = dict(d["model"])
            m["act_params"] = ActParams(**_known(ActParams, m.get("act_params", {})))
            m["hidden"] = tuple(int(h) for h in m.get("hidden", ()))
            m["in_shape"] = tuple(int(s) for s in m.get("in_shape", ()))
            return cls(
                model=ModelConfig(**_known(ModelConfig, m)), train=TrainConfig(**_known(TrainConfig, d["train"]))
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a bnn run configuration ({e})") from None

    def with_dataset(self, in_shape: tuple[int, ...], num_classes: int, input_scale: float) -> RunConfig:
        model = replace(self.model, in_shape=tuple(in_shape), num_classes=num_classes, input_scale=input_scale)
        return replace(self, model=model)


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    return d
