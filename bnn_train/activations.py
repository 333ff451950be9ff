"""Forward activations and the untied backward functions that replace their derivatives.

The paper's idea (Troiano et al. 2025, §3-4): a layer's forward activation ``f`` and the
function ``g'`` used in place of ``f'`` in the backward pass are chosen independently.
A pair is named ``FORWARD/BACKWARD`` like the paper does (``heaviside/rect``,
``logistic/tied``, ``relu/full_jam``).

Both sides are registries of small named functions of the pre-activation ``z``:

* ``FORWARDS[name]`` gives ``f(z)`` and its true derivative ``f'(z)`` (what ``tied`` uses).
* ``BACKWARDS[name]`` gives ``g'(z)``; its docstring states the formula and the source.

Unknown names raise :class:`~bnn_train.errors.ConfigError` listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bnn_runtime.bits import sign_is_positive

from .config import ActParams as ActParams  # the settings live in config (no torch); imported from here too
from .errors import ConfigError

# --------------------------------------------------------------------------- forwards


@dataclass(frozen=True)
class Forward:
    name: str
    fn: Callable[[Tensor, ActParams], Tensor]
    derivative: Callable[[Tensor, ActParams], Tensor]
    low: float  # value the output takes for very negative z (the "0" class target of a SUC)
    high: float  # value for very positive z
    bits: str | None  # "01" or "pm1" when every output is a bit, else None
    doc: str

    @property
    def decision_threshold(self) -> float:
        """A single-unit classifier says class 1 where its output is >= this: midway between low and high."""
        return (self.low + self.high) / 2


FORWARDS: dict[str, Forward] = {}


def _register_forward(name: str, low: float, high: float, bits: str | None = None):
    def wrap(pair: tuple[Callable, Callable]) -> tuple[Callable, Callable]:
        fn, derivative = pair
        FORWARDS[name] = Forward(
            name=name, fn=fn, derivative=derivative, low=low, high=high, bits=bits, doc=fn.__doc__ or ""
        )
        return pair

    return wrap


def _sigmoid_tanh(z: Tensor, p: ActParams) -> Tensor:
    """h(z) = sigmoid(k * tanh(beta * z)): a smooth step (HTAF-like, Park et al. 2026)."""
    return torch.sigmoid(p.st_k * torch.tanh(p.st_beta * z))


def _d_sigmoid_tanh(z: Tensor, p: ActParams) -> Tensor:
    t = torch.tanh(p.st_beta * z)
    s = torch.sigmoid(p.st_k * t)
    return p.st_k * p.st_beta * s * (1 - s) * (1 - t * t)


def _heaviside(z: Tensor, p: ActParams) -> Tensor:
    """H(z) = 1 if z >= 0 else 0."""
    return sign_is_positive(z).to(z.dtype)


def _sign(z: Tensor, p: ActParams) -> Tensor:
    """sign(z) = +1 if z >= 0 else -1."""
    return torch.where(sign_is_positive(z), 1.0, -1.0).to(z.dtype)


def _zero(z: Tensor, p: ActParams) -> Tensor:
    return torch.zeros_like(z)


def _logistic(z: Tensor, p: ActParams) -> Tensor:
    """sigma(z) = 1 / (1 + exp(-z))."""
    return torch.sigmoid(z)


def _d_logistic(z: Tensor, p: ActParams) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _relu(z: Tensor, p: ActParams) -> Tensor:
    """relu(z) = max(z, 0); derivative 1 if z > 0 else 0 (the paper's "H")."""
    return torch.relu(z)


def _d_relu(z: Tensor, p: ActParams) -> Tensor:
    return (z > 0).to(z.dtype)


def _linear(z: Tensor, p: ActParams) -> Tensor:
    """identity: f(z) = z, f'(z) = 1."""
    return z


def _one(z: Tensor, p: ActParams) -> Tensor:
    return torch.ones_like(z)


def _tanh(z: Tensor, p: ActParams) -> Tensor:
    """tanh(z); derivative 1 - tanh(z)^2."""
    return torch.tanh(z)


def _d_tanh(z: Tensor, p: ActParams) -> Tensor:
    t = torch.tanh(z)
    return 1 - t * t


_register_forward("heaviside", 0.0, 1.0, bits="01")((_heaviside, _zero))
_register_forward("sign", -1.0, 1.0, bits="pm1")((_sign, _zero))
_register_forward("logistic", 0.0, 1.0)((_logistic, _d_logistic))
_register_forward("relu", 0.0, 1.0)((_relu, _d_relu))
_register_forward("linear", 0.0, 1.0)((_linear, _one))
_register_forward("tanh", -1.0, 1.0)((_tanh, _d_tanh))
_register_forward("sigmoid_tanh", 0.0, 1.0)((_sigmoid_tanh, _d_sigmoid_tanh))


# --------------------------------------------------------------------------- backwards

# A backward function: (z, params, forward) -> g'(z), same shape and dtype as z.
BackwardFn = Callable[[Tensor, ActParams, Forward], Tensor]
BACKWARDS: dict[str, BackwardFn] = {}

# Windows over which the paper draws its jamming noise (Fig. 8): FJ on [-10, 10],
# PJ on [0, 10], RJ on [-w/2, w/2]. The noise mean is rescaled to the mean of the
# forward's true derivative over that window (§4.8), see jam_mean().
_FJ_WINDOW = (-10.0, 10.0)
_PJ_WINDOW = (0.0, 10.0)


def backward(name: str):
    """Register ``fn`` as the backward function ``name``."""

    def wrap(fn: BackwardFn) -> BackwardFn:
        BACKWARDS[name] = fn
        return fn

    return wrap


@backward("tied")
def tied(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = f'(z), the forward's own derivative: ordinary backpropagation (the paper's f/f').

    For heaviside and sign f' is 0 almost everywhere, so no gradient passes: such a run
    cannot train its hidden layers.
    """
    return f.derivative(z, p)


@backward("const")
def const(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = 1: the paper's "1" / "I" (Fig. 6a; Tables 2-4, 13, 14)."""
    return torch.ones_like(z)


@backward("d_logistic")
def d_logistic(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = sigma(z) (1 - sigma(z)), the logistic derivative used untied (paper "d(Log)", Tables 5, 13, 14)."""
    return _d_logistic(z, p)


@backward("rect")
def rect(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = 1/w if |z| <= w/2 else 0: a unit-area rectangle (paper Fig. 6c), w = ``rect_width``.

    The paper does not print its width; w = 1 (height 1 on |z| <= 1/2) is the standard
    rectangular surrogate (Wu et al. 2018).
    """
    w = p.rect_width
    return (z.abs() <= w / 2).to(z.dtype) / w


@backward("triang")
def triang(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = (2/w) max(0, 1 - 2|z|/w): a unit-area triangle (paper Fig. 6d), w = ``triang_width``.

    Default w = 8 (peak 1/4, zero beyond |z| = 4): the same peak and area as the logistic
    derivative, which is what the paper's Triang and d(Log) columns (Tables 5, 14) track.
    """
    w = p.triang_width
    return torch.clamp(1 - 2 * z.abs() / w, min=0) * (2 / w)


@backward("ste")
def ste(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = 1 if |z| <= 1 else 0: the hardtanh-clipped straight-through estimator
    (Bengio et al. 2013, Hubara et al. 2016)."""
    return (z.abs() <= 1).to(z.dtype)


def jam_mean(f: Forward, window: tuple[float, float], p: ActParams) -> float:
    """Mean of the jamming noise: ``p.jam_mean`` if set, else the mean of f' over ``window``.

    §4.8: "all noise functions are normalized such that their mean aligns with the average
    gradient magnitude observed in traditional gradient configurations". The mean of f'
    over [a, b] is (f(b) - f(a)) / (b - a); for the step it is the mean of a Dirac pulse,
    1 / (b - a), the limit of the logistic's.
    """
    if p.jam_mean is not None:
        return p.jam_mean
    a, b = window
    ends = f.fn(torch.tensor([a, b], dtype=torch.float64), p)
    return float(ends[1] - ends[0]) / (b - a)


def _jam(z: Tensor, mean: float, mask: Tensor | None) -> Tensor:
    noise = torch.rand_like(z) * (2 * mean)  # U[0, 2m]: mean m
    return noise if mask is None else noise * mask.to(z.dtype)


@backward("full_jam")
def full_jam(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) ~ U[0, 2m] for every z (paper §4.8 "Full-Jamming", Fig. 8a), m = jam_mean over [-10, 10]."""
    return _jam(z, jam_mean(f, _FJ_WINDOW, p), None)


@backward("pos_jam")
def pos_jam(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) ~ U[0, 2m] if z >= 0 else 0 (paper §4.8 "Positive-Jamming", Fig. 8b), m = jam_mean over [0, 10]."""
    return _jam(z, jam_mean(f, _PJ_WINDOW, p), z >= 0)


@backward("rect_jam")
def rect_jam(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) ~ U[0, 2m] if |z| <= w/2 else 0 (paper §4.8 "Rectangular-Jamming", Fig. 8c), w = ``jam_width`` = 10,
    m = jam_mean over the window."""
    h = p.jam_width / 2
    return _jam(z, jam_mean(f, (-h, h), p), z.abs() <= h)


# The backward functions that draw from torch's random generator (an ensemble gives each member its own).
RANDOM_BACKWARDS = frozenset({"full_jam", "pos_jam", "rect_jam"})


@backward("sigmoid_tanh")
def sigmoid_tanh(z: Tensor, p: ActParams, f: Forward) -> Tensor:
    """g'(z) = k beta s (1 - s) sech^2(beta z), s = sigmoid(k tanh(beta z)): derivative of the smooth step h.

    A form matching the description of HTAF (Park et al. 2026); not claimed to be its exact function.
    """
    return _d_sigmoid_tanh(z, p)


# --------------------------------------------------------------------------- module


def parse_act(spec: str) -> tuple[str, str]:
    """Split ``"heaviside/rect"`` into known forward and backward names, or raise ConfigError."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--act must be FORWARD/BACKWARD (e.g. heaviside/rect), got {spec!r}")
    fwd, bwd = (s.strip().lower() for s in parts)
    if fwd not in FORWARDS:
        raise ConfigError(f"unknown forward {fwd!r} in --act {spec}; choose one of: {', '.join(FORWARDS)}")
    if bwd not in BACKWARDS:
        raise ConfigError(f"unknown backward {bwd!r} in --act {spec}; choose one of: {', '.join(BACKWARDS)}")
    return fwd, bwd


class _Untied(torch.autograd.Function):
    """y = f(z) forward; dL/dz = dL/dy * g'(z) backward."""

    @staticmethod
    def forward(ctx, z: Tensor, act: Activation) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.act = act
        return act.forward_fn.fn(z, act.params)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        act = ctx.act
        return grad * act.backward_fn(z, act.params, act.forward_fn), None


class Activation(nn.Module):
    """An untied activation ``FORWARD/BACKWARD``: f in the forward pass, g' in the backward pass."""

    def __init__(self, spec: str, params: ActParams | None = None):
        super().__init__()
        fwd, bwd = parse_act(spec)
        self.spec = f"{fwd}/{bwd}"
        self.forward_fn = FORWARDS[fwd]
        self.backward_name = bwd
        self.backward_fn = BACKWARDS[bwd]
        self.params = params or ActParams()
        self.soft_width = 0.0  # > 0: a bit-valued forward trains as a ramp of this half-width (bnn_train/softstep.py)

    def forward(self, z: Tensor) -> Tensor:
        y = _Untied.apply(z, self)
        if self.training and self.soft_width > 0 and self.forward_fn.bits is not None:
            lo, hi = self.forward_fn.low, self.forward_fn.high
            ramp = lo + (hi - lo) * (0.5 + z / (2 * self.soft_width)).clamp(0.0, 1.0)
            y = y + (ramp - y).detach()  # the ramp's value, the backward g' of the step
        return y

    def extra_repr(self) -> str:
        return self.spec
