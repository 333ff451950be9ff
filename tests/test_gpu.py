"""The CUDA path: the same training code on cuda as on the CPU. Skipped where torch sees no GPU
(scripts/gpu_check.sh runs it on a GPU machine); the CPU side of every piece is tested elsewhere."""

from dataclasses import replace

import pytest
import torch

from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.ensemble_fit import fit_ensemble
from bnn_train.train import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# Same seeds on two devices: the same data order, initialisation and schedule, but other kernels (and
# another random stream for jamming noise): the accuracies agree within noise, not exactly.
NOISE = 0.03

CFG = RunConfig(
    ModelConfig(model="lenet5", act="heaviside/rect", weights="binary", batchnorm=True),
    TrainConfig(dataset="digits", epochs=3, batch_size=64, lr=0.01, optimizer="adam", seed=0),
)


def test_a_short_run_on_cuda_matches_the_cpu(tmp_path):
    cpu = fit(replace(CFG, train=replace(CFG.train, device="cpu")), tmp_path / "cpu", plot=False)
    gpu = fit(replace(CFG, train=replace(CFG.train, device="cuda")), tmp_path / "cuda", plot=False)
    print(f"cpu {cpu['test_accuracy']:.4f} cuda {gpu['test_accuracy']:.4f}")
    assert gpu["test_accuracy"] > 0.5
    assert abs(cpu["test_accuracy"] - gpu["test_accuracy"]) <= NOISE


def test_an_ensemble_on_cuda_matches_its_members_on_the_cpu(tmp_path):
    cfgs = [replace(CFG, train=replace(CFG.train, device="cuda", seed=s)) for s in range(4)]
    finals = fit_ensemble(cfgs, [tmp_path / f"m{s}" for s in range(4)])
    for c, f in zip(cfgs, finals, strict=False):
        alone = fit(replace(c, train=replace(c.train, device="cpu")), tmp_path / f"cpu{c.train.seed}", plot=False)
        assert abs(f["test_accuracy"] - alone["test_accuracy"]) <= NOISE
