"""The training recipe's targets (docs/ACCURACY.md): `make demo`'s Digits run and MNIST with bnn train's defaults.

Minutes of CPU each, so marked slow (pytest -m slow).
"""

import pytest

from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.rundir import read_metrics_lines
from bnn_train.train import fit

pytestmark = pytest.mark.slow


def test_the_demo_ends_above_95_percent_without_swinging(tmp_path):
    """`make demo`: binary LeNet-5, width 2, 40 epochs, batch 64 on Digits; measured 97.13 ± 0.85 % over
    seeds 0-2 (no label smoothing, the default since issue 13's second session) with at most 1.67 points
    between the last three epochs."""
    cfg = RunConfig(
        ModelConfig(model="lenet5", act="heaviside/ste", width=2.0),
        TrainConfig(dataset="digits", epochs=40, batch_size=64),
    )
    final = fit(cfg, tmp_path, plot=False)
    last = [r["test_accuracy"] for r in read_metrics_lines(tmp_path)[-3:]]
    assert final["test_accuracy"] >= 0.95
    assert max(last) - min(last) <= 0.02


def test_mnist_with_the_defaults_alone(tmp_path):
    """`bnn train --model lenet5 --dataset mnist --data-dir DATA` (30 epochs): measured 98.23 / 98.41 / 98.60 %
    over seeds 0-2 (docs/ACCURACY.md); the issue's 98.8 % is not reached, this guards what is."""
    from .conftest import dataset_dir

    cfg = RunConfig(ModelConfig(model="lenet5"), TrainConfig(dataset="mnist", data_dir=str(dataset_dir("mnist"))))
    assert fit(cfg, tmp_path, plot=False)["test_accuracy"] >= 0.981  # seed 0: 98.23 %
