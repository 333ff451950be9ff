"""Datasets: the synthetic ones task, Digits, and MNIST-style IDX files (plain, gzipped, corrupt, missing)."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from bnn_train.config import TrainConfig
from bnn_train.data import load_dataset, load_digits, load_idx_dataset, load_ones
from bnn_train.errors import DatasetError

DATASETS_DIR = os.environ.get("BNN_DATASETS")
needs_mnist = pytest.mark.skipif(
    not (DATASETS_DIR and Path(DATASETS_DIR, "mnist").is_dir()), reason="set BNN_DATASETS to a folder holding mnist/"
)


@pytest.mark.parametrize("dim", [2, 10, 100])
def test_ones_labels_are_share_above_70_percent(dim):
    d = load_ones(dim, 2000)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        share = x.double().mean(1).numpy()
        assert ((share > 0.7) == y.numpy().astype(bool)).all()
        assert set(np.unique(x.numpy())) <= {0, 1}
    assert len(d.y_train) == 1600 and len(d.y_test) == 400
    assert d.in_shape == (dim,) and d.num_classes == 2 and d.max_value == 1
    counts = d.x_train.sum(1).numpy()
    assert counts.min() == 0 and counts.max() == dim  # every share occurs
    assert 0.15 < d.y_train.float().mean() < 0.45


def test_ones_is_deterministic_and_linearly_separable():
    a, b = load_ones(10, 500), load_ones(10, 500)
    assert np.array_equal(a.x_train.numpy(), b.x_train.numpy())
    x = a.x_train.numpy().astype(float)
    assert np.array_equal((x.sum(1) - 7.5 > 0).astype(int), a.y_train.numpy())  # w = 1, b = -0.75 dim


def test_digits_split():
    d = load_digits()
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.max_value == 16 and int(d.x_train.max()) == 16
    counts = np.bincount(d.y_test.numpy(), minlength=10)
    assert counts.min() >= 35  # stratified


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _fake_mnist(folder: Path, gz: bool, n_train=50, n_test=20) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 256, (n_test, 28, 28))
    _write_idx(folder / "train-images-idx3-ubyte", x_tr, gz)
    _write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train), gz)
    _write_idx(folder / "t10k-images-idx3-ubyte", x_te, gz)
    _write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), gz)
    return x_tr, x_te


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
def test_idx_files_are_found_in_every_layout(tmp_path, gz, layout):
    x_tr, x_te = _fake_mnist(tmp_path / layout, gz)
    d = load_idx_dataset("mnist", str(tmp_path))
    assert d.x_train.shape == (50, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    assert np.array_equal(d.x_train[:, 0].numpy(), x_tr) and np.array_equal(d.x_test[:, 0].numpy(), x_te)
    assert d.max_value == 255 and d.classes == [str(i) for i in range(10)]


def test_fashion_mnist_class_names(tmp_path):
    _fake_mnist(tmp_path, gz=True)
    d = load_idx_dataset("fashion-mnist", str(tmp_path))
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"


def test_missing_files_in_data_dir_say_what_is_expected(tmp_path):
    with pytest.raises(DatasetError, match=r"not in --data-dir .*train-images-idx3-ubyte\[\.gz\]"):
        load_idx_dataset("mnist", str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing written into the user's folder
    with pytest.raises(DatasetError, match="does not exist"):
        load_idx_dataset("mnist", str(tmp_path / "nope"))


def test_offline_without_data_dir_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BNN_DATA_DIR", str(tmp_path / "cache"))
    import torchvision

    def offline(*a, **k):
        raise RuntimeError(
            "Error downloading x:\nTried https://example/, got:\n<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(
        DatasetError, match=r"could not be downloaded \(urlopen error .*\); pass --data-dir DIR .* or go online"
    ):
        load_dataset(TrainConfig(dataset="mnist"))


def test_corrupt_idx_file_is_a_dataset_error(tmp_path):
    _fake_mnist(tmp_path, gz=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: not a valid IDX file"):
        load_idx_dataset("mnist", str(tmp_path))


def test_truncated_idx_file_is_a_dataset_error(tmp_path):
    _fake_mnist(tmp_path, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="t10k-images"):
        load_idx_dataset("mnist", str(tmp_path))


def test_mismatched_label_count_is_a_dataset_error(tmp_path):
    _fake_mnist(tmp_path, gz=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(49), gz=False)
    with pytest.raises(DatasetError, match="counts differ"):
        load_idx_dataset("mnist", str(tmp_path))


@needs_mnist
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_idx_datasets(name):
    d = load_idx_dataset(name, str(Path(DATASETS_DIR) / name))
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(d.y_test.numpy()).tolist() == (
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009] if name == "mnist" else [1000] * 10
    )
