"""Issue 2's accuracy targets on MNIST / Fashion-MNIST: minutes of CPU each, so marked slow (pytest -m slow)."""

import pytest

from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.train import fit

from .conftest import dataset_dir

pytestmark = pytest.mark.slow


def _run(tmp_path, dataset, epochs=20, **model):
    cfg = RunConfig(
        ModelConfig(model="lenet5", **model),
        TrainConfig(
            dataset=dataset,
            data_dir=str(dataset_dir(dataset)),
            epochs=epochs,
            batch_size=256,
            lr=0.01,
            optimizer="adam",
            schedule="cosine",
            label_smoothing=0.0,
        ),
    )  # as measured
    return fit(cfg, tmp_path, plot=False)


def test_binary_lenet5_mnist_reaches_98_5(tmp_path):
    """At the paper's widths (6/16 channels, 120/84 units) binary LeNet-5 underfits: 98.42 % test with
    98.43 % train accuracy after 20 epochs (the paper's best binarized LeNet-5: 98.17 %). Twice as wide
    (--width 2: 12/32 channels, 240/168 units, a 35 kB .bnn file) it reaches 99.18 %."""
    assert _run(tmp_path, "mnist", act="heaviside/rect", weights="binary", width=2.0)["test_accuracy"] >= 0.985


def test_binary_lenet5_mnist_at_the_papers_width_beats_the_paper(tmp_path):
    assert _run(tmp_path, "mnist", act="heaviside/rect", weights="binary")["test_accuracy"] >= 0.9817


def test_float_lenet5_relu_mnist_reaches_98_8(tmp_path):
    assert _run(tmp_path, "mnist", act="relu/tied", weights="float", batchnorm=False)["test_accuracy"] >= 0.988


def test_heaviside_tied_fails_to_learn(tmp_path):
    """No gradient passes the steps, only the readout learns on fixed random bits: it plateaus far below 50 %
    (measured: 35.4 % after epoch 1, 36.2 % after epoch 5)."""
    final = _run(tmp_path, "mnist", epochs=5, act="heaviside/tied", weights="float", batchnorm=False)
    assert final["test_accuracy"] < 0.5
