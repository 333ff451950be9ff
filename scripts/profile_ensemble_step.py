"""Step-level speed of a LeNet-5 cell: N steps of one network against N/K steps of a K-member ensemble
(default: Table 14's Step/Rect at batch 256, lr 0.1; ``--experiment table5 --only bs=256,config=relu/tied``).

Random MNIST-shaped batches (uint8 pixels, 10 classes), the cell's recipe (LeNet-5, float weights,
no BatchNorm, batch 256, SGD lr 0.1); both sides in one process, interleaved round by round, so that a busy machine
slows both alike. ``--profile`` adds torch.profiler's per-op table of a few steps of each side.

    nice -n 10 .venv/bin/python scripts/profile_ensemble_step.py --k 8 --steps 32 --rounds 3 [--profile]
"""

import argparse
import time
from dataclasses import replace

import torch

from bnn_train.config import ModelConfig
from bnn_train.cpu_memory import keep_freed_memory
from bnn_train.ensemble import Ensemble
from bnn_train.ensemble_fit import _losses
from bnn_train.models import build_model
from bnn_train.reproduce.experiments import get_experiment, select_cells
from bnn_train.train import loss_and_predictions


def _cell_model(
    experiment: str = "table14", only: str = "bs=256,lr=0.1,config=heaviside/rect"
) -> tuple[ModelConfig, object]:
    exp = get_experiment(experiment)
    cell = select_cells(exp, only)[0]
    cfg = exp.run_config(cell, 1, 0, "cpu", None)
    model = replace(cfg.model, in_shape=(1, 28, 28), num_classes=10, input_scale=1 / 255)
    return model, replace(cfg, model=model)


def _single_step(model, cfg, opt, x, y):
    loss, _ = loss_and_predictions(model, cfg, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _ensemble_step(fwd, cfg, opt, x, y, model0):
    losses, _ = _losses(fwd(x.float()), cfg, y, model0)
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="table14")
    ap.add_argument("--only", default="bs=256,lr=0.1,config=heaviside/rect", help="the cell (its first match)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32, help="steps of the single network per round (K divides it)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the ensemble's forward (inductor)")
    ap.add_argument("--mallopt", action="store_true", help="glibc: no mmap for big blocks, no trimming")
    args = ap.parse_args()
    if args.mallopt:
        print("keep_freed_memory:", keep_freed_memory())
    if args.threads:
        torch.set_num_threads(args.threads)
    mcfg, cfg = _cell_model(args.experiment, args.only)
    k, b = args.k, args.batch
    torch.manual_seed(0)
    single = build_model(mcfg)
    members = []
    for s in range(k):
        torch.manual_seed(s)
        members.append(build_model(mcfg))
    ens = Ensemble(members, mcfg.in_shape, torch.device("cpu"))
    fwd = ens
    if args.compile:
        fwd = torch.compile(ens)
    opt1 = torch.optim.SGD(single.parameters(), lr=0.1)
    optk = torch.optim.SGD(ens.parameters(), lr=0.1)
    x1, y1 = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (b,))
    xk, yk = torch.randint(0, 256, (b, k, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (b, k))

    def run_single(n):
        for _ in range(n):
            _single_step(single, cfg, opt1, x1, y1)

    def run_ensemble(n):
        for _ in range(n):
            _ensemble_step(fwd, cfg, optk, xk, yk, members[0])

    run_single(2)  # warm-up: allocator, kernels chosen
    t0 = time.perf_counter()
    run_ensemble(1)
    print(f"first ensemble step (compiles when --compile): {time.perf_counter() - t0:.1f} s", flush=True)
    ratios = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        run_single(args.steps)
        t1 = time.perf_counter()
        time.sleep(0.5)
        t2 = time.perf_counter()
        run_ensemble(args.steps // k)
        t3 = time.perf_counter()
        time.sleep(0.5)
        one, ensk = t1 - t0, t3 - t2
        ratios.append(one / ensk)
        print(
            f"round {r}: one-at-a-time {args.steps} steps {one:.2f} s; ensemble {args.steps // k} steps of {k} "
            f"{ensk:.2f} s; speedup {one / ensk:.2f}x",
            flush=True,
        )
    print(f"speedup per round: {', '.join(f'{x:.2f}' for x in ratios)}; median {sorted(ratios)[len(ratios) // 2]:.2f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, fn, n in (("one-at-a-time", run_single, k), ("ensemble", run_ensemble, 4)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(n)
            print(f"\n=== {name}: {n} steps ===")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=40))


if __name__ == "__main__":
    main()
