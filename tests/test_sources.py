"""Your own data: CIFAR-10 batches, ImageFolder trees and npz arrays the tests write, and their bad forms."""

import pickle

import numpy as np
import pytest
from PIL import Image

from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.data import load_dataset
from bnn_train.errors import ConfigError, DatasetError
from bnn_train.train import fit

from .conftest import assert_user_error, run_cli


def _cifar_batches(root, n=6, binary=False):
    rng = np.random.default_rng(0)
    d = root / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    d.mkdir(parents=True)
    truth = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        truth[name] = (x.reshape(n, 3, 32, 32), y)
        if binary:
            (d / f"{name}.bin").write_bytes(np.concatenate([y[:, None].astype(np.uint8), x], axis=1).tobytes())
        else:
            with open(d / name, "wb") as f:
                pickle.dump({"data": x, "labels": list(int(v) for v in y)}, f, protocol=2)
    return truth


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10_batches_from_data_dir(tmp_path, binary):
    truth = _cifar_batches(tmp_path, binary=binary)
    cfg = TrainConfig(dataset="cifar10", data_dir=str(tmp_path))
    assert cfg.dataset_shape() == ((3, 32, 32), 10)
    d = load_dataset(cfg)
    assert d.in_shape == (3, 32, 32) and d.num_classes == 10 and len(d.y_train) == 30 and d.max_value == 255
    assert np.array_equal(d.x_train.numpy()[:6], truth["data_batch_1"][0])
    assert np.array_equal(d.y_test.numpy(), truth["test_batch"][1])
    assert d.classes[0] == "airplane"


def test_cifar10_refuses_pickles_of_anything_but_arrays(tmp_path):
    _cifar_batches(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": ConfigError("boom")}, f)
    with pytest.raises(DatasetError, match="test_batch.*not allowed"):
        load_dataset(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DatasetError, match="not in --data-dir"):
        load_dataset(TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "nothing")))


def _png_tree(root, sizes=((12, 10),), per_class=5, mode="L", classes=("cat", "dog", "emu")):
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            shape = (h, w) if mode == "L" else (h, w, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")


def test_folder_with_train_and_test(tmp_path):
    _png_tree(tmp_path / "train", mode="RGB")
    _png_tree(tmp_path / "test", per_class=2, mode="RGB")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    cfg = TrainConfig(dataset=f"folder:{tmp_path}")
    assert cfg.dataset_shape() == ((3, 10, 12), 3)
    d = load_dataset(cfg)
    assert d.in_shape == (3, 10, 12) and d.classes == ["cat", "dog", "emu"]
    assert len(d.y_train) == 15 and len(d.y_test) == 6
    img = np.asarray(Image.open(tmp_path / "test" / "dog" / "1.png"))
    assert np.array_equal(d.x_test.numpy()[3], img.transpose(2, 0, 1))


def test_folder_split_and_resize(tmp_path):
    _png_tree(tmp_path, sizes=((12, 10), (20, 7)), per_class=10)
    with pytest.raises(DatasetError, match=r"is 20x7, other images 12x10: pass --input-size"):
        load_dataset(TrainConfig(dataset=f"folder:{tmp_path}"))
    cfg = TrainConfig(dataset=f"folder:{tmp_path}", input_size="3x8x9")
    assert cfg.dataset_shape() == ((3, 8, 9), 3)
    d = load_dataset(cfg)
    assert d.in_shape == (3, 8, 9) and len(d.y_train) == 24 and len(d.y_test) == 6
    assert sorted(np.bincount(d.y_test.numpy())) == [2, 2, 2]  # stratified


def test_folder_bad_input_names_the_file(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DatasetError, match=r"empty/a: no images"):
        TrainConfig(dataset=f"folder:{tmp_path / 'empty'}").dataset_shape()
    _png_tree(tmp_path / "bad")
    (tmp_path / "bad" / "dog" / "2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"cannot read image .*dog/2.png"):
        load_dataset(TrainConfig(dataset=f"folder:{tmp_path / 'bad'}"))
    with pytest.raises(DatasetError, match="no such folder"):
        TrainConfig(dataset=f"folder:{tmp_path / 'nope'}").dataset_shape()
    with pytest.raises(ConfigError, match="--input-size"):
        TrainConfig(dataset=f"folder:{tmp_path / 'bad'}", input_size="32").validate()


def _npz(path, **over):
    rng = np.random.default_rng(2)
    arrays = {
        "x_train": rng.integers(0, 256, (40, 9, 9), dtype=np.uint8),
        "y_train": rng.integers(0, 4, 40),
        "x_test": rng.integers(0, 256, (12, 9, 9), dtype=np.uint8),
        "y_test": rng.integers(0, 4, 12),
    }
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_layouts(tmp_path):
    a = _npz(tmp_path / "a.npz")
    cfg = TrainConfig(dataset=f"npz:{tmp_path / 'a.npz'}")
    assert cfg.dataset_shape() == ((1, 9, 9), 4)
    d = load_dataset(cfg)
    assert np.array_equal(d.x_train.numpy()[:, 0], a["x_train"]) and np.array_equal(d.y_test.numpy(), a["y_test"])
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)
    _npz(tmp_path / "b.npz", x_train=hwc, x_test=hwc[:12], classes=np.array(["a", "b", "c", "d"]))
    d = load_dataset(TrainConfig(dataset=f"npz:{tmp_path / 'b.npz'}"))
    assert d.in_shape == (3, 6, 5) and d.classes == ["a", "b", "c", "d"]
    assert np.array_equal(d.x_train.numpy(), hwc.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    "over, msg",
    [
        (dict(x_train=np.zeros((40, 9, 9), np.float32)), "x_train must be uint8"),
        (dict(y_test=None), "has no array 'y_test'"),
        (dict(x_test=np.zeros((12, 8, 9), np.uint8)), "differ"),
        (dict(y_train=np.full(40, -1)), "non-negative integer labels"),
        (dict(x_train=np.zeros((40, 2, 9, 9), np.uint8)), "C = 1 or 3"),
    ],
)
def test_npz_bad_input(tmp_path, over, msg):
    _npz(tmp_path / "a.npz", **over)
    with pytest.raises(DatasetError, match=msg):
        load_dataset(TrainConfig(dataset=f"npz:{tmp_path / 'a.npz'}"))


def test_cli_trains_and_exports_an_arch_on_a_folder(tmp_path):
    _png_tree(tmp_path / "imgs", sizes=((14, 14), (16, 12)), per_class=10, mode="RGB")
    run = tmp_path / "run"
    result = run_cli(
        "train",
        "--arch",
        "4C3s2-MP2s1-8FC",
        "--dataset",
        f"folder:{tmp_path / 'imgs'}",
        "--input-size",
        "12x12",
        "--epochs",
        "1",
        "--out",
        run,
        "-q",
    )
    assert result.exit_code == 0, result.output
    result = run_cli("export", run)
    assert result.exit_code == 0, result.output
    from bnn_runtime import read_bnn

    m = read_bnn(run / "model.bnn")
    assert m.input_shape == (3, 12, 12) and m.layers[0]["stride"] == [2, 2] and m.layers[0]["pool"]["stride"] == [1, 1]
    assert m.manifest["provenance"]["config"]["model"]["arch"] == "4C3s2-MP2s1-8FC"


def test_cli_refuses_a_spec_before_loading_data(tmp_path):
    _npz(tmp_path / "a.npz")
    result = run_cli(
        "train", "--arch", "8C5p0-MP2-8C5p0", "--dataset", f"npz:{tmp_path / 'a.npz'}", "--out", tmp_path / "r"
    )
    assert_user_error(result, "'8C5p0'", "does not fit", code=1)
    result = run_cli("train", "--arch", "8C3-8Q", "--dataset", "cifar10", "--data-dir", tmp_path / "none")
    assert_user_error(result, "'8Q'", "grammar", code=1)
    result = run_cli(
        "train",
        "--arch",
        "8C3-MP2-8C3-16FC",
        "--act",
        "sign/ste",
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path / "none",
    )
    assert_user_error(result, "--arch token '8C3'", "padding", code=1)
    assert not (tmp_path / "r").exists()


def test_arch_run_resumes_from_its_directory(tmp_path):
    run = tmp_path / "run"
    cfg = RunConfig(ModelConfig(model="arch", arch="6C3-MP2-10FC"), TrainConfig(epochs=1))
    fit(cfg, run, plot=False)
    result = run_cli("train", "--out", run, "--resume", "--epochs", "2", "-q")
    assert result.exit_code == 0, result.output
    assert "after 2 epochs" in result.stdout
