"""The ``--arch`` grammar of the BNN literature (BinaryNet): a network description as a string.

Tokens are joined by ``-``:

* ``[Nx]KCk[sS][pP]`` -- N convolutions (default 1) with K output channels, k x k kernel,
  stride S (default 1), zero padding P (default k // 2, "same" for odd k and stride 1);
* ``MPk[sS]`` -- max pooling over k x k windows, stride S (default k; ``MP3s2`` overlaps);
* ``[Nx]KFC`` -- N dense layers of K units.

The classifier (one output per class) is appended by the model builder; BatchNorm and the
activation follow every hidden layer. Example: ``2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC``.

``parse_arch`` turns a spec into layer records (``ArchError`` naming the token and showing the
grammar otherwise); ``arch_shapes`` follows an input shape through them and names the first
token that does not fit. Neither needs torch: the CLI checks a spec before any data is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bnn_runtime.limits import MAX_LAYERS

from .errors import ConfigError

GRAMMAR = (
    "tokens joined by '-': [Nx]KCk[sS][pP] = N convs, K channels, k x k kernel, stride S (1), "
    "padding P (k//2); MPk[sS] = max pool k x k, stride S (k); [Nx]KFC = N dense layers of K units; "
    "e.g. 2x64C3-MP2-128C3s2-256FC"
)

_CONV = re.compile(r"(?:(\d+)x)?(\d+)C(\d+)(?:s(\d+))?(?:p(\d+))?", re.IGNORECASE)
_POOL = re.compile(r"MP(\d+)(?:s(\d+))?", re.IGNORECASE)
_DENSE = re.compile(r"(?:(\d+)x)?(\d+)FC", re.IGNORECASE)


class ArchError(ConfigError):
    """An --arch spec that does not parse, or does not fit the input: names the token."""


@dataclass(frozen=True)
class Conv:
    token: str
    channels: int
    kernel: int
    stride: int
    padding: int


@dataclass(frozen=True)
class Pool:
    token: str
    size: int
    stride: int


@dataclass(frozen=True)
class Dense:
    token: str
    units: int


Layer = Conv | Pool | Dense


def _bad(token: str, why: str) -> ArchError:
    return ArchError(f"--arch token {token!r}: {why}; grammar: {GRAMMAR}")


def _positive(token: str, what: str, value: str | None, default: int, minimum: int = 1) -> int:
    n = default if value is None else int(value)
    if n < minimum:
        raise _bad(token, f"{what} must be >= {minimum}, got {n}")
    return n


def _repeat(token: str, value: str | None) -> int:
    """A token's repeat count, at most the layers a .bnn file may hold (checked before the list is built)."""
    count = _positive(token, "the repeat count", value, 1)
    if count > MAX_LAYERS:
        raise _bad(token, f"the repeat count must be <= {MAX_LAYERS} (the layers a .bnn file may hold), got {count}")
    return count


def _parse_token(token: str) -> list[Layer]:
    if m := _CONV.fullmatch(token):
        count = _repeat(token, m[1])
        k = _positive(token, "the kernel size", m[3], 1)
        conv = Conv(
            token,
            _positive(token, "the channel count", m[2], 1),
            k,
            _positive(token, "the stride", m[4], 1),
            _positive(token, "the padding", m[5], k // 2, minimum=0),
        )
        return [conv] * count
    if m := _POOL.fullmatch(token):
        size = _positive(token, "the pool window", m[1], 1)
        return [Pool(token, size, _positive(token, "the pool stride", m[2], size))]
    if m := _DENSE.fullmatch(token):
        count = _repeat(token, m[1])
        return [Dense(token, _positive(token, "the unit count", m[2], 1))] * count
    raise _bad(token, "not a convolution, pooling or dense token")


def parse_arch(spec: str) -> tuple[Layer, ...]:
    """The hidden layers of ``spec`` in order (repeats expanded); ArchError on a bad token or order."""
    if not isinstance(spec, str) or not spec.strip():
        raise ArchError(f"--arch is empty; grammar: {GRAMMAR}")
    layers: list[Layer] = []
    for token in spec.strip().split("-"):
        token = token.strip()
        if not token:
            raise ArchError(f"--arch {spec!r} has an empty token (two '-' in a row?); grammar: {GRAMMAR}")
        for layer in _parse_token(token):
            prev = layers[-1] if layers else None
            if isinstance(layer, Pool) and not isinstance(prev, Conv):
                raise _bad(token, "max pooling must follow a convolution")
            if isinstance(layer, Conv) and isinstance(prev, Dense):
                raise _bad(token, "a convolution cannot follow a dense layer")
            layers.append(layer)
        weighted = sum(not isinstance(x, Pool) for x in layers) + 1  # and the classifier; pooling joins its conv
        if weighted > MAX_LAYERS:
            raise ArchError(f"--arch has {weighted} layers with the classifier; a .bnn file holds at most {MAX_LAYERS}")
    return tuple(layers)


def _out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def arch_shapes(layers: tuple[Layer, ...], in_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The output shape of every layer for input ``in_shape``; ArchError naming the first that does not fit."""
    shape = tuple(in_shape)
    shapes = []
    for layer in layers:
        if isinstance(layer, Conv):
            if len(shape) != 3:
                raise _bad(layer.token, f"a convolution needs image input (C, H, W), the dataset gives {shape}")
            _, h, w = shape
            oh, ow = (_out(n, layer.kernel, layer.stride, layer.padding) for n in (h, w))
            if oh < 1 or ow < 1:
                raise ArchError(
                    f"--arch token {layer.token!r}: a {layer.kernel}x{layer.kernel} kernel with padding "
                    f"{layer.padding} does not fit its {h}x{w} input"
                )
            shape = (layer.channels, oh, ow)
        elif isinstance(layer, Pool):
            c, h, w = shape
            oh, ow = (_out(n, layer.size, layer.stride, 0) for n in (h, w))
            if oh < 1 or ow < 1:
                raise ArchError(
                    f"--arch token {layer.token!r}: a {layer.size}x{layer.size} pool does not fit its {h}x{w} input"
                )
            shape = (c, oh, ow)
        else:
            shape = (layer.units,)
        shapes.append(shape)
    return shapes


def check_arch(spec: str, in_shape: tuple[int, ...]) -> tuple[Layer, ...]:
    """Parse ``spec`` and check it against ``in_shape``: the layers, or ArchError."""
    layers = parse_arch(spec)
    arch_shapes(layers, in_shape)
    return layers
