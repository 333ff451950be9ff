"""An activation and the quadratic-mean pool as one CPU layer (numba kernels) compute bit for bit what the two
torch layers compute, forward and backward."""

import pytest
import torch

from bnn_train.activation_pool import activation_quad_mean_pool, pools_in_one, runs_here
from bnn_train.activations import Activation, ActParams
from bnn_train.layers import QuadMeanPool2d

BACKWARDS = ["const", "rect", "ste", "tied", "triang", "d_logistic"]


def _inputs(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen) * 3
    flat = z.view(-1)
    flat[::7] = 0.0  # exact zeros, window edges and a triangle's foot: where the rules decide
    flat[1::19] = -0.0  # relu's and the gradient's sign of zero
    flat[3::11] = 0.15
    flat[5::13] = -1.0
    flat[2::17] = 1.5
    z[0, 0, :3, :3] = -2.0  # a window off for heaviside and relu: the pool's clamp
    z[0, 1, :3, :3] = 0.0  # ... and for relu and linear
    z[1, 0, 0, 0], z[1, 1, 0, 0], z[1, 2, 0, 0] = float("nan"), float("inf"), -float("inf")
    g = torch.randn(shape, generator=gen)
    g[2] *= 1e-38  # gradients whose products are subnormal: the order of roundings shows
    return z, g


def _grads(fn, z, g):
    z = z.detach().clone().requires_grad_(True)
    y = fn(z)
    y.backward(g)
    return y.detach(), z.grad


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (the sign of zero included); a NaN matches any NaN (their sign bits follow no rule)."""
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    return torch.equal(a.contiguous().view(torch.int32)[~nan], b.contiguous().view(torch.int32)[~nan])


@pytest.mark.parametrize("forward", ["heaviside", "relu", "linear"])
@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize(("z_last", "grad_last"), [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("k", [2, 3])
def test_one_layer_is_the_two_torch_layers_bit_for_bit(forward, backward, z_last, grad_last, k):
    # widths whose 1/w, w/2 and 2/w are not powers of 2: a rounding done in another order shows.
    # (True, False): a channels-last z and an NCHW gradient, what LeNet-5's second pool gets from Flatten
    act = Activation(f"{forward}/{backward}", ActParams(rect_width=0.3, triang_width=3.0))
    assert pools_in_one(act)
    z, g = _inputs((3, 5, 4 * k, 4 * k), seed=k * 100 + BACKWARDS.index(backward))
    g = g[:, :, :4, :4].contiguous()
    cl = torch.channels_last
    z, g = (z.contiguous(memory_format=cl) if z_last else z), (g.contiguous(memory_format=cl) if grad_last else g)
    assert runs_here(z, k)
    y0, g0 = _grads(lambda t: QuadMeanPool2d(k)(act(t)), z, g)
    y1, g1 = _grads(lambda t: activation_quad_mean_pool(t, act, k), z, g)
    assert _same_bits(y0, y1)
    assert _same_bits(g0, g1)
    assert y1.is_contiguous(memory_format=cl) == z_last
    assert g1.is_contiguous(memory_format=cl) == z_last


def test_a_second_derivative_is_refused():
    act = Activation("relu/tied")
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = activation_quad_mean_pool(z, act, 2)
    (gz,) = torch.autograd.grad(y.sum(), z, create_graph=True)
    with pytest.raises(RuntimeError):
        gz.sum().backward()


def test_what_the_kernels_do_not_take():
    assert not pools_in_one(Activation("logistic/tied"))  # torch's sigmoid is vectorised its own way
    assert not pools_in_one(Activation("relu/full_jam"))  # random noise per member
    ramped = Activation("heaviside/rect")
    ramped.soft_width = 0.5
    assert not pools_in_one(ramped)
    z = torch.zeros(2, 3, 8, 8)
    assert not runs_here(z[:, :, :7], 2)  # a row left over
    assert not runs_here(z.double(), 2)
    assert runs_here(z, 2)
