"""Forward+backward time of LeNet-5's convolutions for K = 8 members at batch 256: how an ensemble could run them.

Per convolution: one plain convolution (times K is what K one-at-a-time runs pay), the grouped convolution NCHW and
channels-last, a loop of K plain convolutions, and unfold + einsum; then a plain convolution channels-last. Best of 3,
milliseconds. For docs/REPRODUCTION.md (*Throughput, measured*).

    nice -n 10 .venv/bin/python scripts/ensemble_conv_bench.py
"""

import time

import torch
import torch.nn.functional as F

K, B = 8, 256
CL = torch.channels_last


def _ms(f, n: int = 3) -> float:
    f()
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    torch.manual_seed(0)
    for cin, cout, size, pad, input_grad in ((1, 6, 28, 2, False), (6, 16, 14, 0, True)):
        _compare(cin, cout, size, pad, input_grad)


def _compare(cin: int, cout: int, size: int, pad: int, input_grad: bool) -> None:
    """One LeNet-5 convolution's forward + backward, K members, each way of batching them."""
    out = size + 2 * pad - 4
    x = torch.randn(B, K * cin, size, size, requires_grad=input_grad)
    w = torch.randn(K * cout, cin, 5, 5, requires_grad=True)
    g = torch.randn(B, K * cout, out, out)
    xcl = x.detach().contiguous(memory_format=CL).requires_grad_(input_grad)
    gcl = g.contiguous(memory_format=CL)
    x1 = x.detach()[:, :cin].clone().requires_grad_(input_grad)
    w1 = w.detach()[:cout].clone().requires_grad_(True)
    g1 = g[:, :cout].contiguous()
    x1cl, g1cl = (
        x1.detach().contiguous(memory_format=CL).requires_grad_(input_grad),
        g1.contiguous(memory_format=CL),
    )

    def unfold():
        cols = F.unfold(x, 5, padding=pad).view(B, K, cin * 25, -1)
        y = torch.einsum("kop,bkpl->bkol", w.view(K, cout, cin * 25), cols).reshape(B, K * cout, out, out)
        y.backward(g)

    ways = {
        "plain": lambda: F.conv2d(x1, w1, padding=pad).backward(g1),
        "grouped NCHW": lambda: F.conv2d(x, w, padding=pad, groups=K).backward(g),
        "grouped channels-last": lambda: F.conv2d(xcl, w, padding=pad, groups=K).backward(gcl),
        "loop of K plain": lambda: torch.cat(
            [F.conv2d(x[:, k * cin : (k + 1) * cin], w[k * cout : (k + 1) * cout], padding=pad) for k in range(K)],
            1,
        ).backward(g),
        "unfold + einsum": unfold,
        "plain channels-last": lambda: F.conv2d(x1cl, w1, padding=pad).backward(g1cl),
    }
    print(f"conv {cin}->{cout} ({size}x{size}), K = {K}, batch {B}:", flush=True)
    for name, f in ways.items():
        print(f"  {name:<24} {_ms(f):8.1f} ms", flush=True)


if __name__ == "__main__":
    main()
