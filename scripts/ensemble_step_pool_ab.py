"""A/B in one process: one LeNet-5 training step (Table 14, heaviside/rect, batch 256) of one network, of an
ensemble of K with the fused Heaviside step + quadratic-mean pool (the default) and of the same ensemble with
the two layers apart; interleaved rounds, median milliseconds per step and the speedups.

    python scripts/ensemble_step_pool_ab.py --rounds 16
"""

from __future__ import annotations

import argparse
import time

import torch
from profile_ensemble_step import _cell_model, _ensemble_step, _single_step

import bnn_train.ensemble as ensemble
from bnn_train.cpu_memory import keep_freed_memory
from bnn_train.models import build_model


def _members(mcfg, k: int) -> list:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model(mcfg))
    return out


def _ms_per_step(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    keep_freed_memory()
    mcfg, cfg = _cell_model()
    k, b = args.k, args.batch
    fused_members, apart_members = _members(mcfg, k), _members(mcfg, k)
    fused = ensemble.Ensemble(fused_members, mcfg.in_shape, torch.device("cpu"))
    fuse, ensemble._fuse_activations_and_pools = ensemble._fuse_activations_and_pools, lambda layers: None
    apart = ensemble.Ensemble(apart_members, mcfg.in_shape, torch.device("cpu"))
    ensemble._fuse_activations_and_pools = fuse
    torch.manual_seed(0)
    single = build_model(mcfg)
    x1, y1 = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (b,))
    xk, yk = torch.randint(0, 256, (b, k, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (b, k))
    opt = {n: torch.optim.SGD(m.parameters(), lr=0.1) for n, m in (("one", single), ("fused", fused), ("apart", apart))}
    sides = {
        "one": (lambda: _single_step(single, cfg, opt["one"], x1, y1), 2 * k),
        "fused": (lambda: _ensemble_step(fused, cfg, opt["fused"], xk, yk, fused_members[0]), 4),
        "apart": (lambda: _ensemble_step(apart, cfg, opt["apart"], xk, yk, apart_members[0]), 4),
    }
    for step, _ in sides.values():
        _ms_per_step(step, 2)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in sides}
    for _ in range(args.rounds):
        for name, (step, n) in sides.items():
            times[name].append(_ms_per_step(step, n))
            time.sleep(0.3)
    med = {n: sorted(v)[len(v) // 2] for n, v in times.items()}
    print(
        f"median ms per step: one network {med['one']:.1f}, ensemble of {k} fused {med['fused']:.1f}, "
        f"apart {med['apart']:.1f} ({med['fused'] / k:.1f} / {med['apart'] / k:.1f} per member)"
    )
    print(
        f"ensemble vs one at a time: fused {med['one'] * k / med['fused']:.2f}x, "
        f"apart {med['one'] * k / med['apart']:.2f}x; fused vs apart {med['apart'] / med['fused']:.2f}x"
    )


if __name__ == "__main__":
    main()
