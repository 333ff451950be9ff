"""Binary layers, initialisations and the three models: shapes, bits, and the pooling identity."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bnn_train.activations import Activation
from bnn_train.config import ModelConfig
from bnn_train.errors import ConfigError
from bnn_train.init import DIAG_NOISE_ALPHA, diag_noise_
from bnn_train.layers import BinaryConv2d, BinaryLinear, QuadMeanPool2d, Scale, binarize, clip_latent_weights
from bnn_train.models import build_model, lenet5_padding


def test_binarize_maps_zero_to_plus_one():
    w = torch.tensor([-2.0, -0.1, -0.0, 0.0, 0.1, 3.0])
    assert binarize(w).tolist() == [-1, -1, 1, 1, 1, 1]


def test_binarize_gradient_is_clipped_straight_through():
    w = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.01], requires_grad=True)
    binarize(w).backward(torch.arange(1.0, 8.0))
    assert w.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]


def test_binary_linear_equals_linear_fed_sign_w():
    torch.manual_seed(0)
    layer = BinaryLinear(37, 11)
    ref = nn.Linear(37, 11)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        ref.weight.copy_(torch.where(layer.weight >= 0, 1.0, -1.0))
    x = torch.randn(5, 37)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)


def test_binary_conv_equals_conv_fed_sign_w():
    torch.manual_seed(0)
    layer = BinaryConv2d(3, 7, 5, padding=2)
    ref = nn.Conv2d(3, 7, 5, padding=2)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        ref.weight.copy_(torch.where(layer.weight >= 0, 1.0, -1.0))
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)


def test_binary_layer_gradients_reach_latent_weights_and_inputs():
    torch.manual_seed(0)
    layer = BinaryLinear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    layer(x).sum().backward()
    sign = torch.where(layer.weight >= 0, 1.0, -1.0)
    torch.testing.assert_close(x.grad, sign.sum(0).expand(2, 4))
    torch.testing.assert_close(layer.weight.grad, x.detach().sum(0).expand(3, 4))


def test_clip_latent_weights_only_touches_binary_layers():
    model = nn.Sequential(BinaryLinear(3, 3), nn.Linear(3, 3))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(5.0)
    clip_latent_weights(model)
    assert model[0].weight.max().item() == 1.0
    assert model[1].weight.max().item() == 5.0


def test_quadratic_mean_pool():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert QuadMeanPool2d(2)(x).item() == pytest.approx(math.sqrt(30 / 4))
    z = torch.zeros(1, 1, 2, 2, requires_grad=True)
    QuadMeanPool2d(2)(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_scale_must_be_positive():
    with pytest.raises(ValueError):
        Scale(0.0)


# ----------------------------------------------------------------- init


def test_diag_noise_linear_shapes():
    torch.manual_seed(0)
    for out_f, in_f in ((300, 500), (500, 300)):
        w = diag_noise_(torch.empty(out_f, in_f))
        d = torch.zeros(out_f, in_f)
        d[torch.arange(out_f), torch.arange(out_f) % in_f] = 1
        noise = w - d
        assert noise.std().item() == pytest.approx(DIAG_NOISE_ALPHA / math.sqrt(in_f), rel=0.02)
        assert abs(noise.mean().item()) < 1e-3


def test_diag_noise_conv_is_dirac_plus_noise():
    torch.manual_seed(0)
    w = diag_noise_(torch.empty(16, 6, 5, 5))
    centre = w[torch.arange(16), torch.arange(16) % 6, 2, 2]
    assert (centre > 0.8).all()
    w[torch.arange(16), torch.arange(16) % 6, 2, 2] -= 1
    assert w.std().item() == pytest.approx(DIAG_NOISE_ALPHA / math.sqrt(150), rel=0.1)


@pytest.mark.parametrize("init", ["default", "xavier", "he", "orthogonal", "diag_noise"])
def test_every_init_builds_and_keeps_binary_weights_in_range(init):
    model = build_model(ModelConfig(model="lenet5", init=init, in_shape=(1, 28, 28), input_scale=1 / 255))
    for m in model.modules():
        if isinstance(m, (BinaryLinear, BinaryConv2d)):
            assert m.weight.abs().max() <= 1
            if init != "default":
                assert (m.bias == 0).all()


# ----------------------------------------------------------------- models


def _cfg(**kw):
    return ModelConfig(**{"in_shape": (1, 28, 28), "input_scale": 1 / 255, **kw})


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 12, 20)])
@pytest.mark.parametrize("width", [1.0, 0.5, 2.0])
def test_lenet5_shapes(shape, width):
    model = build_model(_cfg(model="lenet5", in_shape=shape, width=width))
    out = model(torch.rand(3, *shape) * 255)
    assert out.shape == (3, 10)


def test_lenet5_is_paper_faithful_on_mnist():
    model = build_model(_cfg(model="lenet5", weights="float", batchnorm=False, act="relu/tied"))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 6, (5, 5), (2, 2)),
        (6, 16, (5, 5), (0, 0)),
    ]
    assert [(f.in_features, f.out_features) for f in fcs] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, QuadMeanPool2d) for m in model) == 2  # float networks: quadratic-mean pooling
    assert lenet5_padding(28) == 2 and lenet5_padding(8) == 6


def test_mlp_and_suc_shapes():
    mlp = build_model(_cfg(model="mlp", hidden=(65, 7)))
    assert mlp(torch.rand(4, 1, 28, 28)).shape == (4, 10)
    suc = build_model(ModelConfig(model="suc", in_shape=(10,), num_classes=2, input_scale=1.0, act="logistic/const"))
    y = suc(torch.rand(4, 10))
    assert y.shape == (4, 1) and ((y > 0) & (y < 1)).all()


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
@pytest.mark.parametrize("fwd, values", [("heaviside", {0.0, 1.0}), ("sign", {-1.0, 1.0})])
def test_binary_networks_produce_bits_in_every_hidden_layer(model, fwd, values):
    torch.manual_seed(0)
    net = build_model(_cfg(model=model, act=f"{fwd}/ste", hidden=(33, 20)))
    net.train()
    net(torch.rand(8, 1, 28, 28) * 255)  # populate BatchNorm statistics
    net.eval()
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(o))
        for m in net
        if isinstance(m, (Activation, nn.MaxPool2d))
    ]
    net(torch.randint(0, 256, (8, 1, 28, 28)).float())
    for h in hooks:
        h.remove()
    acts = [
        o
        for o, m in zip(seen, [m for m in net if isinstance(m, (Activation, nn.MaxPool2d))], strict=False)
        if isinstance(m, Activation)
    ]
    assert len(acts) == (2 if model == "mlp" else 4)
    for a in acts:
        assert set(a.unique().tolist()) <= values


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from(["heaviside", "sign", "relu", "logistic", "tanh", "linear", "sigmoid_tanh"]),
)
def test_maxpool_commutes_with_every_forward(seed, fwd):
    """The models max-pool pre-activations: f(max z) == max f(z) because every forward is non-decreasing.

    f(max z) is read from f(z) at the argmax: evaluating f on a differently shaped tensor may round
    differently in the last bit (torch's vectorised and scalar sigmoid, measured), which says
    nothing about the pooling."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    z[z.abs() < 0.3] = 0.0  # ties and exact zeros
    act = Activation(f"{fwd}/tied")
    fz = act(z)
    pooled, argmax = F.max_pool2d(z, 2, return_indices=True)
    f_of_max = fz.flatten(2).gather(2, argmax.flatten(2)).view_as(pooled)
    torch.testing.assert_close(f_of_max, F.max_pool2d(fz, 2), rtol=0, atol=0)
    torch.testing.assert_close(act(pooled), f_of_max, rtol=1e-15, atol=0)  # the same values, up to that rounding


def test_binary_without_batchnorm_scales_by_fan_in():
    net = build_model(_cfg(model="mlp", hidden=(64,), batchnorm=False))
    scales = [float(m.c) for m in net if type(m) is Scale]
    assert scales == pytest.approx([1 / math.sqrt(784), 1 / math.sqrt(64)])


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(model="lenet5", in_shape=(10,)), "image input"),
        (dict(model="suc", num_classes=10), "single-unit"),
        (dict(model="mlp", hidden=()), "--hidden"),
        (dict(model="mlp", hidden=(0,)), "--hidden"),
        (dict(width=0.0), "--width"),
        (dict(model="cnn"), "choose one of: suc, mlp, lenet5"),
        (dict(weights="ternary"), "choose one of: float, binary"),
        (dict(init="zeros"), "diag_noise"),
        (dict(pool="avg"), "qmean"),
    ],
)
def test_invalid_model_configs(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        build_model(_cfg(**kw))


def test_batchnorm_before_max_pool_is_centred_on_the_pooled_values():
    from bnn_train.models import expected_max_of_normals

    assert expected_max_of_normals(4) == pytest.approx(1.0294, abs=1e-4)
    assert expected_max_of_normals(1) == pytest.approx(0.0, abs=1e-9)
    bits = build_model(ModelConfig(model="lenet5", act="heaviside/rect", weights="binary"))
    assert torch.all(bits.norm1.bias == bits.norm2.bias[0])
    assert bits.norm1.bias[0].item() == pytest.approx(-1.0294, abs=1e-4)
    torch.manual_seed(0)
    z = bits.norm2(torch.randn(512, 16, 10, 10) * 3 + 1)  # a training-mode batch: standardised, then shifted
    pooled = torch.nn.functional.max_pool2d(z, 2)
    assert abs((pooled > 0).float().mean().item() - 0.5) < 0.05
    smooth = build_model(ModelConfig(model="lenet5", act="relu/tied", batchnorm=True))
    assert torch.all(smooth.norm1.bias == 0)
