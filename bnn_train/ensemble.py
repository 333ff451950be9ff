"""K runs of one network as one batched network: ``Ensemble`` holds K members side by side.

Members differ only in their numbers (seed: initialisation, data order, jamming noise); they
share the architecture, so their layers run as one grouped operation each:

* activations are laid out member-major along dim 1: (B, K*C, H, W) after a convolution,
  (B, K*F) after a dense layer, so ``Flatten`` keeps each member's features contiguous and
  BatchNorm over K*C channels is each member's own BatchNorm;
* a convolution is one grouped convolution (groups = K) of the members' stacked kernels, on
  channels-last activations (oneDNN's NCHW grouped convolution is several times slower on the CPU);
  a dense layer is one batched matmul of weights stacked to (K, out, in);
* pooling, scales and the forward activations act per channel or element, as they are; the
  quadratic-mean pool and the step activations in the fused forms of ``ensemble_ops``, an activation
  followed by that pool as one layer (``activation_pool``: numba kernels on the CPU) — the same numbers;
* a random backward function (jamming) draws each member's slice from that member's own
  random state, in the same order and shapes as its one-at-a-time run: the same noise.

Each batched module knows how to split its tensors into the members' (``member_state``) and to
write a member's back (``load_member``), so every member still has an ordinary run directory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activation_pool import activation_quad_mean_pool, pools_evenly, pools_in_one, runs_here
from .activations import RANDOM_BACKWARDS, Activation
from .ensemble_ops import fusable, quad_mean_pool, step_activation, step_pools, step_quad_mean_pool
from .errors import ConfigError
from .layers import BINARY_LAYERS, QuadMeanPool2d, Scale, binarize

STACKED, CONCATENATED, SHARED = "stacked", "concatenated", "shared"


class _GroupedConv(nn.Module):
    """K convolutions as one grouped convolution: weight (K*out, in, kh, kw), bias (K*out)."""

    layout = CONCATENATED

    def __init__(self, members: list[nn.Conv2d]):
        super().__init__()
        m = members[0]
        if m.padding_mode != "zeros" or m.groups != 1:
            raise ConfigError(f"an ensemble cannot batch {m}")
        self.k, self.binary = len(members), isinstance(m, BINARY_LAYERS)
        self.stride, self.padding, self.dilation = m.stride, m.padding, m.dilation
        self.weight = nn.Parameter(torch.cat([x.weight.detach() for x in members]).clone())
        self.bias = nn.Parameter(torch.cat([x.bias.detach() for x in members]).clone()) if m.bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        w = binarize(self.weight) if self.binary else self.weight
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, groups=self.k)


class _BatchedLinear(nn.Module):
    """K dense layers as one batched matmul: weight (K, out, in), bias (K, out); (B, K*in) -> (B, K*out)."""

    layout = STACKED

    def __init__(self, members: list[nn.Linear]):
        super().__init__()
        self.k, self.binary = len(members), isinstance(members[0], BINARY_LAYERS)
        self.weight = nn.Parameter(torch.stack([x.weight.detach() for x in members]).clone())
        has_bias = members[0].bias is not None
        self.bias = nn.Parameter(torch.stack([x.bias.detach() for x in members]).clone()) if has_bias else None

    def forward(self, x: Tensor) -> Tensor:
        w = binarize(self.weight) if self.binary else self.weight
        xs = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)  # (K, B, in)
        y = torch.bmm(xs, w.transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias[:, None, :]
        return y.transpose(0, 1).reshape(x.shape[0], -1)


def _grouped_batchnorm(members: list[nn.modules.batchnorm._BatchNorm]) -> nn.Module:
    """K BatchNorms over C channels each as one over K*C channels (per-channel statistics: the same thing)."""
    m = members[0]
    bn = type(m)(
        m.num_features * len(members),
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
    )
    state = {}
    for name, t in m.state_dict().items():
        parts = [x.state_dict()[name] for x in members]
        state[name] = parts[0].clone() if t.ndim == 0 else torch.cat(parts)
    bn.load_state_dict(state)
    bn.layout = CONCATENATED
    return bn


class _MemberNoise(torch.autograd.Function):
    """The untied activation, with each member's slice of a random backward drawn from its own random state."""

    @staticmethod
    def forward(ctx, z: Tensor, act: EnsembleActivation) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.act = act
        return act.inner.forward_fn.fn(z, act.inner.params)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        a = ctx.act.inner
        parts = []
        for k, zk in enumerate(z.chunk(ctx.act.k, dim=1)):
            with ctx.act.rng.member(k):
                parts.append(a.backward_fn(zk, a.params, a.forward_fn))
        return grad * torch.cat(parts, dim=1), None


class MemberRandomStates:
    """One random state per member; ``member(k)`` runs a block with torch's generator set to member k's."""

    def __init__(self, k: int, device: torch.device):
        self.k, self.device = k, device
        self.states: list[tuple[Tensor, Tensor | None]] = []

    def _get(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set(self, state) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    def seed(self, seeds: list[int]) -> None:
        """Each member's state as ``torch.manual_seed(seeds[k])`` leaves it (what its own run does per epoch)."""
        saved = self._get()
        self.states = []
        for s in seeds:
            torch.manual_seed(s)
            self.states.append(self._get())
        self._set(saved)

    def member(self, k: int):
        rng = self

        class _Swap:
            def __enter__(self):
                self.saved = rng._get()
                rng._set(rng.states[k])

            def __exit__(self, *exc):
                rng.states[k] = rng._get()
                rng._set(self.saved)

        return _Swap()


class EnsembleActivation(nn.Module):
    """An ``Activation`` applied to K members' channels; only a random backward needs per-member handling."""

    def __init__(self, inner: Activation, k: int, rng: MemberRandomStates):
        super().__init__()
        self.inner, self.k, self.rng = inner, k, rng
        self.layout = SHARED

    def forward(self, z: Tensor) -> Tensor:
        if self.inner.backward_name in RANDOM_BACKWARDS:
            return _MemberNoise.apply(z, self)
        if fusable(self.inner):
            return step_activation(z, self.inner)
        return self.inner(z)


class _FusedQuadMeanPool(QuadMeanPool2d):
    """``QuadMeanPool2d`` with the fused backward of bnn_train/ensemble_ops.py (the same numbers)."""

    layout = SHARED

    def forward(self, x: Tensor) -> Tensor:
        return quad_mean_pool(x, self.kernel_size)


class _ActivationThenPool(nn.Module):
    """An activation and the quadratic-mean pool after it as one layer, the same numbers: on the CPU the numba
    kernels of ``activation_quad_mean_pool``, elsewhere for a Heaviside step ``step_quad_mean_pool``, else (or
    for sizes that are no multiple of the window) the two layers. The pool's own slot holds an ``nn.Identity``."""

    layout = SHARED

    def __init__(self, act: EnsembleActivation, pool: _FusedQuadMeanPool):
        super().__init__()
        self.act, self.pool = act, pool

    def forward(self, z: Tensor) -> Tensor:
        k, act = self.pool.kernel_size, self.act.inner
        if runs_here(z, k):
            return activation_quad_mean_pool(z, act, k)
        if step_pools(act) and pools_evenly(z, k):
            return step_quad_mean_pool(z, act, k)
        return self.pool(self.act(z))


def _fuse_activations_and_pools(layers: dict[str, nn.Module]) -> None:
    names = list(layers)
    for name, after in zip(names, names[1:], strict=False):
        act, pool = layers[name], layers[after]
        if isinstance(act, EnsembleActivation) and isinstance(pool, _FusedQuadMeanPool) and pools_in_one(act.inner):
            layers[name], layers[after] = _ActivationThenPool(act, pool), nn.Identity()


_PER_CHANNEL = (nn.MaxPool2d, QuadMeanPool2d, Scale, nn.Flatten)


class Ensemble(nn.Module):
    """K members of one architecture (flat ``nn.Sequential`` stacks from ``build_model``) as one network.

    ``forward(x)`` takes (B, K, *in_shape) — member k's batch in x[:, k] — or (B, *in_shape),
    the same inputs for every member; it returns (B, K, outputs).
    """

    def __init__(self, members: list[nn.Sequential], in_shape: tuple[int, ...], device: torch.device):
        super().__init__()
        self.k, self.in_shape = len(members), tuple(in_shape)
        self.rng = MemberRandomStates(self.k, device)
        layers = {}
        for name, first in members[0].named_children():
            group = [dict(m.named_children())[name] for m in members]
            if isinstance(first, nn.Conv2d):
                layers[name] = _GroupedConv(group)
            elif isinstance(first, nn.Linear):
                layers[name] = _BatchedLinear(group)
            elif isinstance(first, nn.modules.batchnorm._BatchNorm):
                layers[name] = _grouped_batchnorm(group)
            elif isinstance(first, Activation):
                layers[name] = EnsembleActivation(first, self.k, self.rng)
            elif isinstance(first, _PER_CHANNEL):
                for other in group[1:]:
                    pairs = zip(first.state_dict().values(), other.state_dict().values(), strict=False)
                    if not all(torch.equal(a, b) for a, b in pairs):
                        raise ConfigError(f"ensemble members differ in their fixed layer {name}")
                first.layout = SHARED
                layers[name] = _FusedQuadMeanPool(first.kernel_size) if type(first) is QuadMeanPool2d else first
            else:
                raise ConfigError(f"an ensemble cannot batch layer {name} ({type(first).__name__})")
        _fuse_activations_and_pools(layers)
        self.net = nn.Sequential(*[layers[n] for n in layers])
        self.names = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        if x.dim() == len(self.in_shape) + 1:  # the same inputs for every member
            x = x.unsqueeze(1).expand(b, self.k, *self.in_shape)
        x = x.reshape(b, self.k * self.in_shape[0], *self.in_shape[1:])
        if x.dim() == 4:  # grouped convolutions are several times faster channels-last on the CPU (oneDNN)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).reshape(b, self.k, -1)

    # ------------------------------------------------------------------ members' tensors

    def _tensors(self):
        """(member-model key, ensemble module, ensemble tensor) for every parameter and buffer."""
        for name, module in zip(self.names, self.net, strict=False):
            for pname, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                yield f"{name}.{pname}", module, t

    def split(self, module: nn.Module, t: Tensor) -> list[Tensor]:
        layout = getattr(module, "layout", SHARED)
        if t.dim() == 0 or layout == SHARED:
            return [t] * self.k
        return list(t.unbind(0)) if layout == STACKED else list(t.chunk(self.k, 0))

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict, as its own ``build_model`` network names it."""
        return {key: self.split(m, t)[k].detach().clone() for key, m, t in self._tensors()}

    @torch.no_grad()
    def load_member(self, k: int, state: dict[str, Tensor]) -> None:
        for key, m, t in self._tensors():
            self.split(m, t)[k].copy_(state[key]) if t.dim() else t.copy_(state[key])

    def param_modules(self) -> list[nn.Module]:
        """The module of every parameter, in ``self.parameters()`` order (to split optimiser state)."""
        return [m for m in self.net for _ in m.parameters(recurse=False)]

    def member_finite(self) -> list[bool]:
        ok = [True] * self.k
        for m, p in zip(self.param_modules(), self.parameters(), strict=False):
            for k, part in enumerate(self.split(m, p)):
                ok[k] = ok[k] and bool(torch.isfinite(part).all())
        return ok

    @torch.no_grad()
    def clip_latent_weights(self) -> None:
        for m in self.net:
            if getattr(m, "binary", False):
                m.weight.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def clip_grad_norms(self, max_norm: float) -> None:
        """Each member's gradient scaled to norm <= max_norm on its own (as ``clip_grad_norm_`` in its run)."""
        pairs = [
            (m, p.grad) for m, p in zip(self.param_modules(), self.parameters(), strict=False) if p.grad is not None
        ]
        sq = torch.zeros(self.k, device=pairs[0][1].device)
        for m, g in pairs:
            sq += torch.stack([part.float().pow(2).sum() for part in self.split(m, g)])
        coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for m, g in pairs:
            for k, part in enumerate(self.split(m, g)):
                part.mul_(coef[k])
