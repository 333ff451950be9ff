"""Every forward and backward function against a NumPy formula, at chosen points including 0 and window edges."""

import math

import numpy as np
import pytest
import torch

from bnn_train.activations import BACKWARDS, FORWARDS, Activation, ActParams, jam_mean, parse_act
from bnn_train.errors import ConfigError

P = ActParams()


def sig(z):
    return 1 / (1 + np.exp(-z))


def htaf(z, k=P.st_k, b=P.st_beta):
    return sig(k * np.tanh(b * z))


def d_htaf(z, k=P.st_k, b=P.st_beta):
    s = htaf(z, k, b)
    return k * b * s * (1 - s) / np.cosh(b * z) ** 2


NP_FORWARD = {
    "heaviside": (lambda z: (z >= 0).astype(float), lambda z: 0 * z),
    "sign": (lambda z: np.where(z >= 0, 1.0, -1.0), lambda z: 0 * z),
    "logistic": (sig, lambda z: sig(z) * (1 - sig(z))),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid_tanh": (htaf, d_htaf),
}

# The deterministic backward functions: g'(z, forward) in NumPy.
NP_BACKWARD = {
    "const": lambda z, f: np.ones_like(z),
    "d_logistic": lambda z, f: sig(z) * (1 - sig(z)),
    "rect": lambda z, f: (np.abs(z) <= P.rect_width / 2) / P.rect_width,
    "triang": lambda z, f: np.maximum(0, 1 - 2 * np.abs(z) / P.triang_width) * 2 / P.triang_width,
    "ste": lambda z, f: (np.abs(z) <= 1).astype(float),
    "sigmoid_tanh": lambda z, f: d_htaf(z),
    "tied": lambda z, f: NP_FORWARD[f][1](z),
}

# 0, both sides of every window edge (rect 1/2, ste 1, triang 4, rect_jam 5), and the tails.
POINTS = np.array(
    [
        -20,
        -5.0001,
        -5,
        -4,
        -3.9,
        -1.0001,
        -1,
        -0.5001,
        -0.5,
        -0.25,
        0,
        0.25,
        0.5,
        0.5001,
        1,
        1.0001,
        3.9,
        4,
        4.0001,
        5,
        5.0001,
        20,
    ],
    dtype=np.float64,
)


def grad_of(spec: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    y = Activation(spec)(zt)
    y.sum().backward()
    return y.detach().numpy(), zt.grad.numpy()


def test_registries_cover_the_paper():
    assert set(FORWARDS) == {"heaviside", "sign", "logistic", "relu", "linear", "tanh", "sigmoid_tanh"}
    assert set(BACKWARDS) == {
        "tied",
        "const",
        "d_logistic",
        "rect",
        "triang",
        "ste",
        "full_jam",
        "pos_jam",
        "rect_jam",
        "sigmoid_tanh",
    }
    for name, fn in BACKWARDS.items():
        assert fn.__doc__ and "g'(z)" in fn.__doc__, f"{name} must state its formula"


@pytest.mark.parametrize("fwd", sorted(NP_FORWARD))
def test_forward_values(fwd):
    y, _ = grad_of(f"{fwd}/const", POINTS)
    np.testing.assert_allclose(y, NP_FORWARD[fwd][0](POINTS), rtol=1e-12, atol=1e-12)


def test_step_values_at_zero_are_exact():
    y, _ = grad_of("heaviside/const", np.array([0.0, -0.0, -1e-300, 1e-300]))
    assert y.tolist() == [1.0, 1.0, 0.0, 1.0]
    y, _ = grad_of("sign/const", np.array([0.0, -1e-300, 1e-300]))
    assert y.tolist() == [1.0, -1.0, 1.0]


@pytest.mark.parametrize("fwd", sorted(NP_FORWARD))
@pytest.mark.parametrize("bwd", sorted(NP_BACKWARD))
def test_backward_equals_formula(fwd, bwd):
    _, g = grad_of(f"{fwd}/{bwd}", POINTS)
    np.testing.assert_allclose(g, NP_BACKWARD[bwd](POINTS, fwd), rtol=1e-12, atol=1e-15)


def test_window_edges_exact():
    _, g = grad_of("heaviside/rect", np.array([-0.5, 0.5, 0.5000001, -0.5000001]))
    assert g.tolist() == [1.0, 1.0, 0.0, 0.0]
    _, g = grad_of("heaviside/ste", np.array([-1.0, 1.0, 1.0000001]))
    assert g.tolist() == [1.0, 1.0, 0.0]
    _, g = grad_of("heaviside/triang", np.array([0.0, 4.0, -4.0, 2.0]))
    assert g.tolist() == [0.25, 0.0, 0.0, 0.125]


@pytest.mark.parametrize("fwd", ["logistic", "relu", "linear", "tanh", "sigmoid_tanh"])
def test_tied_equals_autograd_of_forward(fwd):
    z = torch.tensor(POINTS[POINTS != 0], dtype=torch.float64, requires_grad=True)
    FORWARDS[fwd].fn(z, P).sum().backward()
    _, g = grad_of(f"{fwd}/tied", POINTS[POINTS != 0])
    np.testing.assert_allclose(g, z.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_tied_step_passes_no_gradient():
    for fwd in ("heaviside", "sign"):
        _, g = grad_of(f"{fwd}/tied", POINTS)
        assert (g == 0).all()


def test_surrogates_have_unit_area():
    z = np.linspace(-30, 30, 600001)
    for bwd in ("rect", "triang", "d_logistic"):
        area = np.trapezoid(NP_BACKWARD[bwd](z, "heaviside"), z)
        assert area == pytest.approx(1.0, abs=2e-3), bwd


def test_backward_scales_the_incoming_gradient():
    z = torch.tensor([0.1, -0.2, 3.0], requires_grad=True)
    Activation("relu/triang")(z).backward(torch.tensor([2.0, -3.0, 5.0]))
    expected = np.array([2.0, -3.0, 5.0]) * NP_BACKWARD["triang"](np.array([0.1, -0.2, 3.0]), "relu")
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-6)


# ----------------------------------------------------------------- jamming

JAM_WINDOWS = {"full_jam": (-10, 10), "pos_jam": (0, 10), "rect_jam": (-5, 5)}


@pytest.mark.parametrize("fwd", sorted(NP_FORWARD))
def test_jam_mean_is_mean_of_true_derivative_over_window(fwd):
    for _bwd, (a, b) in JAM_WINDOWS.items():
        f = NP_FORWARD[fwd][0]
        expected = (f(np.float64(b)) - f(np.float64(a))) / (b - a)
        assert jam_mean(FORWARDS[fwd], (a, b), P) == pytest.approx(expected, rel=1e-12)
    assert jam_mean(FORWARDS["relu"], JAM_WINDOWS["full_jam"], P) == pytest.approx(0.5)  # the paper's U[0, 1]
    assert jam_mean(FORWARDS["heaviside"], JAM_WINDOWS["rect_jam"], P) == pytest.approx(0.1)  # a Dirac's mean


@pytest.mark.parametrize("bwd", sorted(JAM_WINDOWS))
@pytest.mark.parametrize("fwd", ["relu", "linear", "logistic", "heaviside"])
def test_jamming_range_support_and_mean(bwd, fwd):
    torch.manual_seed(0)
    a, b = JAM_WINDOWS[bwd]
    m = jam_mean(FORWARDS[fwd], (a, b), P)
    n = 200_000
    inside = np.linspace(a, b, n)  # z inside the noise window
    _, g = grad_of(f"{fwd}/{bwd}", inside)
    assert g.min() >= 0 and g.max() <= 2 * m
    assert g.mean() == pytest.approx(m, rel=0.01)  # U[0, 2m]: standard error ~0.13 % of m
    assert g.std() == pytest.approx(2 * m / math.sqrt(12), rel=0.02)
    outside = np.array([a - 1e-3, a - 7.0, b + 1e-3, b + 7.0]) if bwd != "full_jam" else np.array([])
    if bwd == "pos_jam":
        outside = np.array([-1e-6, -3.0, -50.0])
    if outside.size:
        _, g = grad_of(f"{fwd}/{bwd}", outside)
        assert (g == 0).all()


def test_jamming_is_fresh_noise_each_call_and_seeded():
    z = np.zeros(1000)
    torch.manual_seed(1)
    _, g1 = grad_of("relu/full_jam", z)
    _, g2 = grad_of("relu/full_jam", z)
    torch.manual_seed(1)
    _, g3 = grad_of("relu/full_jam", z)
    assert not np.array_equal(g1, g2)
    assert np.array_equal(g1, g3)


def test_jam_mean_override():
    torch.manual_seed(0)
    z = torch.zeros(100_000, requires_grad=True)
    Activation("relu/full_jam", ActParams(jam_mean=3.0))(z).sum().backward()
    assert float(z.grad.max()) <= 6.0
    assert float(z.grad.mean()) == pytest.approx(3.0, rel=0.01)


# ----------------------------------------------------------------- names and parameters


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("heaviside", "FORWARD/BACKWARD"),
        ("heaviside/rect/x", "FORWARD/BACKWARD"),
        ("step/rect", "unknown forward 'step'"),
        ("heaviside/box", "unknown backward 'box'"),
    ],
)
def test_unknown_names_list_the_known_ones(spec, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        parse_act(spec)
    if "unknown forward" in msg:
        assert "heaviside, sign, logistic" in str(e.value)
    if "unknown backward" in msg:
        assert "tied, const, d_logistic, rect, triang, ste, full_jam, pos_jam, rect_jam, sigmoid_tanh" in str(e.value)


def test_names_are_case_insensitive():
    assert parse_act("Heaviside/RECT") == ("heaviside", "rect")


@pytest.mark.parametrize("field", ["rect_width", "triang_width", "jam_width", "st_k", "st_beta", "jam_mean"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_shape_parameters_must_be_positive(field, bad):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        ActParams(**{field: bad}).validate()


def test_shape_parameters_change_the_backward():
    z = torch.tensor([0.9], requires_grad=True)
    Activation("heaviside/rect", ActParams(rect_width=2.0))(z).backward()
    assert z.grad.item() == 0.5
    z = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    Activation("heaviside/sigmoid_tanh", ActParams(st_k=2.0, st_beta=3.0))(z).backward()
    assert z.grad.item() == pytest.approx(d_htaf(0.5, 2.0, 3.0))
