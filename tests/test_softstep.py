"""Progressive binarisation (``--soft-step``): the ramp's schedule, its forward, and that evaluation stays exact."""

import pytest
import torch

from bnn_train.activations import Activation
from bnn_train.config import ModelConfig, RunConfig, TrainConfig
from bnn_train.errors import ConfigError
from bnn_train.softstep import set_soft_width, soft_width
from bnn_train.train import fit


def test_the_width_shrinks_linearly_from_one_to_zero_over_the_share_of_epochs():
    assert soft_width(0.0, 10, 0, 0, 100) == 0.0
    assert soft_width(0.5, 10, 0, 0, 100) == 1.0
    assert soft_width(0.5, 10, 2, 50, 100) == pytest.approx(0.5)
    assert soft_width(0.5, 10, 5, 0, 100) == 0.0
    assert soft_width(0.5, 10, 9, 99, 100) == 0.0


def test_the_ramp_trains_in_training_mode_only_and_keeps_the_steps_backward():
    act = Activation("heaviside/ste")
    z = torch.tensor([-2.0, -0.5, 0.0, 0.25, 0.5, 3.0], requires_grad=True)
    set_soft_width(act, 0.5)
    act.train()
    y = act(z)
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    y.sum().backward()
    assert torch.equal(z.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]))  # ste: |z| <= 1
    act.eval()
    assert torch.equal(act(z.detach()), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    set_soft_width(act, 0.0)
    act.train()
    assert torch.equal(act(z.detach()), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))


def test_sign_ramps_between_minus_one_and_one():
    act = Activation("sign/ste")
    set_soft_width(act, 1.0)
    assert torch.allclose(act(torch.tensor([-2.0, -0.5, 0.5])), torch.tensor([-1.0, -0.5, 0.5]))


def test_a_float_forward_is_never_ramped():
    act = Activation("relu/tied")
    set_soft_width(act, 1.0)
    z = torch.tensor([-1.0, 0.3, 2.0])
    assert torch.equal(act(z), torch.relu(z))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_the_share_is_checked(bad):
    with pytest.raises(ConfigError, match="--soft-step"):
        TrainConfig(soft_step=bad).validate()


def test_a_soft_step_run_ends_with_exact_steps_and_a_different_model(tmp_path):
    from dataclasses import replace

    from bnn_train import rundir

    cfg = RunConfig(ModelConfig(model="lenet5", width=0.5), TrainConfig(epochs=2, batch_size=128))
    fit(cfg, tmp_path / "hard", plot=False)
    fit(replace(cfg, train=replace(cfg.train, soft_step=0.5)), tmp_path / "soft", plot=False)
    model, _, _ = rundir.load_run(tmp_path / "soft")
    assert all(m.soft_width == 0 for m in model.modules() if isinstance(m, Activation))
    a = torch.load(tmp_path / "hard" / rundir.CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "soft" / rundir.CHECKPOINT, weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
