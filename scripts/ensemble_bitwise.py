"""Which batched ops of an ensemble (bnn_train/ensemble.py) are bit-identical to each member's plain op on this CPU?

For docs/REPRODUCTION.md (*Tolerance* of ``--ensemble``): one thread, random inputs of LeNet-5's shapes, K = 3
members; each line says whether member k's slice of the batched result equals the plain op exactly, and the
largest difference.

    .venv/bin/python scripts/ensemble_bitwise.py
"""

import torch
import torch.nn.functional as F
from torch import nn

K = 3


def _line(what: str, a: torch.Tensor, b: torch.Tensor) -> None:
    a, b = a.detach(), b.detach()
    print(f"{what:<40} equal={torch.equal(a, b)!s:<5} max|diff|={float((a - b).abs().max()):.3g}")


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for cin, cout, size, pad in ((1, 6, 28, 2), (6, 16, 14, 0)):  # conv1, conv2: grouped, channels-last
        ws = [torch.randn(cout, cin, 5, 5) for _ in range(K)]
        w = torch.cat(ws).requires_grad_(True)
        x = torch.randn(64, K * cin, size, size).contiguous(memory_format=torch.channels_last)  # as the ensemble
        y = F.conv2d(x, w, padding=pad, groups=K)
        g = torch.randn_like(y)
        y.backward(g)
        for k in range(K):
            wk = ws[k].clone().requires_grad_(True)
            yk = F.conv2d(x[:, k * cin : (k + 1) * cin], wk, padding=pad)
            yk.backward(g[:, k * cout : (k + 1) * cout])
            _line(f"conv {cin}->{cout} forward, member {k}", y[:, k * cout : (k + 1) * cout], yk)
            _line(f"conv {cin}->{cout} weight grad, member {k}", w.grad[k * cout : (k + 1) * cout], wk.grad)
    for n_in, n_out in ((400, 120), (120, 84), (84, 10)):  # dense layers as one batched matmul
        w, b, x = torch.randn(K, n_out, n_in), torch.randn(K, n_out), torch.randn(64, K * n_in)
        xs = x.reshape(64, K, -1).transpose(0, 1)  # as _BatchedLinear: bmm, then the bias
        y = (torch.bmm(xs, w.transpose(1, 2)) + b[:, None, :]).transpose(0, 1).reshape(64, -1)
        for k in range(K):
            _line(
                f"dense {n_in}->{n_out} + bias, member {k}",
                y[:, k * n_out : (k + 1) * n_out],
                F.linear(x[:, k * n_in : (k + 1) * n_in], w[k], b[k]),
            )
    c = 16
    x = torch.randn(64, K * c, 10, 10, requires_grad=True)
    y = nn.BatchNorm2d(K * c)(x)
    g = torch.randn_like(y)
    y.backward(g)
    for k in range(K):
        xk = x.detach()[:, k * c : (k + 1) * c].clone().requires_grad_(True)
        yk = nn.BatchNorm2d(c)(xk)
        yk.backward(g[:, k * c : (k + 1) * c])
        _line(f"BatchNorm forward, member {k}", y[:, k * c : (k + 1) * c], yk)
        _line(f"BatchNorm input grad, member {k}", x.grad[:, k * c : (k + 1) * c], xk.grad)
    out, y = torch.randn(64, K, 10), torch.randint(0, 10, (64, K))
    ce = F.cross_entropy(out.reshape(64 * K, -1), y.reshape(64 * K), reduction="none").reshape(64, K).mean(0)
    for k in range(K):
        _line(f"mean cross-entropy, member {k}", ce[k], F.cross_entropy(out[:, k], y[:, k]))


if __name__ == "__main__":
    main()
