"""The fused elementwise layers of an ensemble compute bit for bit what the plain layers compute."""

import zlib

import pytest
import torch

from bnn_train.activations import Activation, ActParams
from bnn_train.ensemble_ops import fusable, quad_mean_pool, step_activation, step_pools, step_quad_mean_pool
from bnn_train.layers import QuadMeanPool2d


def _forward_backward(fn, z: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().clone().requires_grad_(True)
    y = fn(z)
    y.backward(g)
    return y.detach(), z.grad


def _inputs(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen) * 2
    z.view(-1)[::7] = 0.0  # exact zeros and window edges: where the rules decide
    z.view(-1)[3::11] = 0.5
    z.view(-1)[5::13] = -1.0
    return z, torch.randn(shape, generator=gen)


def _seed(text: str) -> int:
    return zlib.crc32(text.encode()) % 1000  # not hash(): str hashes change from process to process


def _layout(z: torch.Tensor, g: torch.Tensor, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not channels_last:
        return z, g
    return z.contiguous(memory_format=torch.channels_last), g.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("spec", ["heaviside/rect", "sign/ste", "heaviside/const", "relu/rect", "sign/rect"])
@pytest.mark.parametrize("width", [1.0, 0.3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_step_activation_is_the_activation_exactly(spec, width, channels_last):
    act = Activation(spec, ActParams(rect_width=width))
    assert fusable(act)
    z, g = _layout(*_inputs((4, 6, 5, 5), seed=_seed(f"{spec} {width}")), channels_last)
    y0, g0 = _forward_backward(act, z, g)
    y1, g1 = _forward_backward(lambda t: step_activation(t, act), z, g)
    assert torch.equal(y0, y1) and torch.equal(g0, g1)


def test_random_backwards_and_ramps_are_not_fused():
    assert not fusable(Activation("heaviside/full_jam"))
    assert not fusable(Activation("logistic/tied"))
    ramped = Activation("heaviside/rect")
    ramped.soft_width = 0.5
    assert not fusable(ramped)


@pytest.mark.parametrize("bits", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_quad_mean_pool_is_the_plain_pool_exactly(bits, channels_last):
    z, g = _inputs((3, 4, 8, 8), seed=7)
    if bits:  # a step's outputs: whole windows of 0 reach the clamp
        z = (z > 0.8).float()
    z, g = _layout(z, g[:, :, :4, :4].contiguous(), channels_last)
    y0, g0 = _forward_backward(QuadMeanPool2d(2), z, g)
    y1, g1 = _forward_backward(lambda t: quad_mean_pool(t, 2), z, g)
    assert torch.equal(y0, y1) and torch.equal(g0, g1)


@pytest.mark.parametrize("spec", ["heaviside/rect", "heaviside/ste", "heaviside/const"])
@pytest.mark.parametrize("width", [1.0, 0.3])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("k", "dtype"), [(2, torch.float32), (3, torch.float32), (2, torch.float64)])
def test_step_quad_mean_pool_is_the_two_plain_layers_exactly(spec, width, channels_last, k, dtype):
    """The torch form (what CUDA runs; the CPU ensemble uses bnn_train/activation_pool.py) in float32 and float64."""
    act = Activation(spec, ActParams(rect_width=width))
    assert step_pools(act)
    z, g = _inputs((3, 5, 4 * k, 4 * k), seed=_seed(f"pool {spec} {width}"))
    z[0, 0, :k, :k] = -1.0  # a whole window off: the pool's clamp
    z, g = _layout(z.to(dtype), g[:, :, :4, :4].contiguous().to(dtype), channels_last)
    y0, g0 = _forward_backward(lambda t: QuadMeanPool2d(k)(act(t)), z, g)
    y1, g1 = _forward_backward(lambda t: step_quad_mean_pool(t, act, k), z, g)
    assert torch.equal(y0, y1) and torch.equal(g0, g1)
    assert y1.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert g1.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_only_a_heaviside_step_pools_in_one():
    assert not step_pools(Activation("sign/rect"))  # its -1s do not square to themselves
    assert not step_pools(Activation("heaviside/d_logistic"))
    assert not step_pools(Activation("relu/rect"))
