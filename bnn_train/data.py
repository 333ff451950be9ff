"""Datasets as whole uint8 tensors: the synthetic ``ones`` task, scikit-learn's Digits, MNIST, Fashion-MNIST.

The datasets are small enough to hold in memory (on the GPU when training there), so a batch
is an index into one tensor rather than a DataLoader pass. Inputs stay raw (uint8 pixel
values); the model's ``InputScale`` divides by ``max_value``.

MNIST and Fashion-MNIST come through torchvision: from ``--data-dir`` when given (the four
IDX files, gzipped or not, flat or in torchvision's ``<Name>/raw`` layout), else from the
cache (``$BNN_DATA_DIR`` or ``~/.cache/bnn/datasets``), downloading there when online.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .datasets import DATASETS
from .errors import DatasetError

ONES_SHARE = Fraction(7, 10)  # the ones task: is the share of 1s above this? (paper §4.2)
DATA_SEED = 0  # the split and the synthetic data never depend on the run's --seed


@dataclass
class Data:
    name: str
    x_train: Tensor  # uint8, (N, C, H, W) for images, (N, D) for vectors
    y_train: Tensor  # int64
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    max_value: int
    source: str
    x_val: Tensor | None = None  # the validation part of the training set (TrainConfig.val_split), if any
    y_val: Tensor | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_scale(self) -> float:
        return 1.0 / self.max_value

    def to(self, device: torch.device) -> Data:
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        if self.x_val is not None:
            move.update(x_val=self.x_val.to(device), y_val=self.y_val.to(device))
        return Data(name=self.name, classes=self.classes, max_value=self.max_value, source=self.source, **move)

    def info(self) -> dict:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "in_shape": list(self.in_shape),
            "max_value": self.max_value,
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
            "n_val": 0 if self.y_val is None else len(self.y_val),
            "source": self.source,
        }


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """Stratified 80/20 split with a fixed seed (the paper's split, §4.3)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=DATA_SEED, stratify=y)


def _data(name: str, x_tr, x_te, y_tr, y_te, classes, source: str) -> Data:
    """A dataset from arrays or tensors, checked against what ``datasets.DATASETS`` says it is."""

    def t(a, dtype):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    facts = DATASETS[name]
    data = Data(
        name=name,
        x_train=t(x_tr, torch.uint8),
        y_train=t(y_tr, torch.int64),
        x_test=t(x_te, torch.uint8),
        y_test=t(y_te, torch.int64),
        classes=list(classes),
        max_value=facts.max_value,
        source=source,
    )
    if facts.image_shape is not None and data.in_shape != facts.image_shape:
        raise DatasetError(f"{name} from {source} has images of shape {data.in_shape}, expected {facts.image_shape}")
    if data.num_classes != facts.num_classes:  # pragma: no cover - the loaders name the classes
        raise DatasetError(f"{name} has {data.num_classes} classes, expected {facts.num_classes}")
    return data


def load_ones(dim: int, n_samples: int) -> Data:
    """Is the share of 1s in a binary vector above ``ONES_SHARE`` (70 %)? (paper §4.2)

    The number of ones k is drawn uniformly from {0, ..., dim} and placed at random positions,
    so every share is equally likely and the classes are about 30/70; the label is
    k / dim > ONES_SHARE. Linearly separable (w = 1, b = -0.7 dim).
    """
    rng = np.random.default_rng([DATA_SEED, dim, n_samples])
    k = rng.integers(0, dim + 1, size=n_samples)
    ranks = rng.random((n_samples, dim)).argsort(axis=1).argsort(axis=1)
    x = (ranks < k[:, None]).astype(np.uint8)
    y = (ONES_SHARE.denominator * k > ONES_SHARE.numerator * dim).astype(np.int64)  # k/dim > share, in integers
    n_train = int(round(0.8 * n_samples))
    share = f"{float(ONES_SHARE):g}"
    return _data(
        "ones",
        x[:n_train],
        x[n_train:],
        y[:n_train],
        y[n_train:],
        [f"share<={share}", f"share>{share}"],
        f"synthetic (dim={dim}, n={n_samples}, seed={DATA_SEED})",
    )


def load_digits() -> Data:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16): works offline."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    x = d.images.astype(np.uint8)[:, None, :, :]
    x_tr, x_te, y_tr, y_te = _split(x, d.target)
    return _data("digits", x_tr, x_te, y_tr, y_te, [str(c) for c in range(10)], "scikit-learn load_digits")


# --------------------------------------------------------------------------- IDX datasets

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def default_data_root() -> Path:
    return Path(os.environ.get("BNN_DATA_DIR") or Path.home() / ".cache" / "bnn" / "datasets")


def _find_idx(name: str, folder: Path) -> dict[str, Path] | None:
    """Locate the four IDX files (plain or .gz) in folder, folder/<name> or folder/<TvName>/raw."""
    candidates = [folder, folder / name, folder / _IDX_CLASSES[name] / "raw"]
    for d in candidates:
        found = {}
        for f in _IDX_FILES:
            for path in (d / f, d / (f + ".gz")):
                if path.is_file():
                    found[f] = path
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _read_idx(paths: dict[str, Path]) -> tuple[Tensor, ...]:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    out = []
    with tempfile.TemporaryDirectory(prefix="bnn-idx-") as tmp:
        for f in _IDX_FILES:
            path = paths[f]
            try:
                if path.suffix == ".gz":
                    plain = Path(tmp) / f
                    with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    path_read = plain
                else:
                    path_read = path
                reader = read_image_file if "images" in f else read_label_file
                out.append(reader(str(path_read)))
            except (OSError, EOFError, AssertionError, TypeError, ValueError, RuntimeError) as e:
                raise DatasetError(f"cannot read {paths[f]}: not a valid IDX file ({e or type(e).__name__})") from None
    x_tr, y_tr, x_te, y_te = out
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"IDX files in {paths[_IDX_FILES[0]].parent} disagree: image and label counts differ")
    return x_tr, y_tr, x_te, y_te


def _download(name: str, root: Path) -> dict[str, Path]:
    import torchvision

    cls = getattr(torchvision.datasets, _IDX_CLASSES[name])
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reasons = [ln for ln in lines if ln.startswith("<")] or lines[-1:] or [type(e).__name__]
        raise DatasetError(reasons[-1].strip("<>")) from None
    found = _find_idx(name, root)
    if found is None:  # pragma: no cover - torchvision wrote something unexpected
        raise DatasetError(f"download of {name} into {root} left no IDX files")
    return found


def load_idx_dataset(name: str, data_dir: str | None) -> Data:
    """MNIST or Fashion-MNIST with the official 60,000 / 10,000 split."""
    import torchvision

    folder = Path(data_dir).expanduser() if data_dir else default_data_root()
    paths = _find_idx(name, folder)
    files = ", ".join(f + "[.gz]" for f in _IDX_FILES)
    if paths is None and data_dir:  # a folder the user named is read, never written to
        if not folder.is_dir():
            raise DatasetError(f"--data-dir {folder} does not exist")
        raise DatasetError(f"{name} is not in --data-dir {folder}: expected {files} there or in {folder / name}")
    if paths is None:
        try:
            paths = _download(name, folder)
        except DatasetError as e:
            raise DatasetError(
                f"{name} is not in the cache {folder} and could not be downloaded ({e}); "
                f"pass --data-dir DIR holding {files}, or go online"
            ) from None
    x_tr, y_tr, x_te, y_te = _read_idx(paths)
    classes = getattr(torchvision.datasets, _IDX_CLASSES[name]).classes
    if name == "mnist":
        classes = [str(c) for c in range(10)]
    return _data(name, x_tr[:, None], x_te[:, None], y_tr, y_te, classes, str(paths[_IDX_FILES[0]].parent))


def _own_data(cfg: TrainConfig) -> Data:
    """cifar10, folder:PATH or npz:PATH (bnn_train/sources.py) as a Data."""
    from . import sources

    if cfg.dataset == "cifar10":
        arrays = sources.load_cifar10(cfg.data_dir, default_data_root() / "cifar10")
    elif cfg.dataset.startswith("folder:"):
        arrays = sources.load_folder(sources.source_path(cfg.dataset), cfg.input_size, _split)
    else:
        arrays = sources.load_npz(sources.source_path(cfg.dataset))
    x_tr, y_tr, x_te, y_te, classes, source = arrays
    if cfg.dataset == "cifar10":
        return _data(cfg.dataset, x_tr, x_te, y_tr, y_te, classes, source)

    def t(a, dtype):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return Data(
        name=cfg.dataset,
        x_train=t(x_tr, torch.uint8),
        y_train=t(y_tr, torch.int64),
        x_test=t(x_te, torch.uint8),
        y_test=t(y_te, torch.int64),
        classes=list(classes),
        max_value=255,
        source=source,
    )


def load_dataset(cfg: TrainConfig) -> Data:
    """The dataset named by ``cfg.dataset``; raises DatasetError with a way out if it is unavailable."""
    if cfg.dataset == "cifar10" or cfg.dataset.startswith(("folder:", "npz:")):
        return _own_data(cfg)
    if cfg.dataset == "ones":
        return load_ones(cfg.dim, cfg.n_samples)
    if cfg.dataset == "digits":
        return load_digits()
    return load_idx_dataset(cfg.dataset, cfg.data_dir)


def split_validation(data: Data, fraction: float) -> Data:
    """Hold out ``fraction`` of the training set as validation data, chosen by a fixed seed (never the run's).

    The same fraction of the same dataset always holds out the same images, so runs with
    different seeds are validated on the same images and a resumed run on the ones it started with.
    """
    if fraction <= 0:
        return data
    n = len(data.y_train)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise DatasetError(f"--val-split {fraction} leaves no training data out of {n} samples")
    order = torch.from_numpy(np.random.default_rng([DATA_SEED, n]).permutation(n))
    train, val = order[: n - n_val].sort().values, order[n - n_val :].sort().values
    return Data(
        data.name,
        data.x_train[train],
        data.y_train[train],
        data.x_test,
        data.y_test,
        data.classes,
        data.max_value,
        data.source,
        x_val=data.x_train[val],
        y_val=data.y_train[val],
    )


def load_test_arrays(cfg: TrainConfig, limit: int | None = None) -> tuple[Data, np.ndarray, np.ndarray]:
    """(dataset, test inputs, test labels) as NumPy arrays, the first ``limit`` of them if given."""
    data = load_dataset(cfg)
    x, y = data.x_test.numpy(), data.y_test.numpy()
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return data, x, y
