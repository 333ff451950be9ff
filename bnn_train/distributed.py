"""``bnn train`` under ``torchrun --nproc-per-node N``: DistributedDataParallel, one run directory.

torchrun sets RANK / WORLD_SIZE / MASTER_ADDR in each process's environment. Every process
loads the data and builds the same network (same seed); each step every process takes its
share of the step's batch (rank r: items r, r + N, ...), DDP averages the gradients, so all
processes hold the same weights after every step. BatchNorm normalises with each process's
share of the batch in training; its statistics are then re-estimated on the whole training set
by every process alike. Only rank 0 writes the run directory and reports progress.
Backend: nccl on cuda, gloo on the CPU.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def active() -> bool:
    return world()[1] > 1


def is_main() -> bool:
    return world()[0] == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group (once); on cuda each process takes GPU LOCAL_RANK. Returns the device to use."""
    import torch.distributed as dist

    if not active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model DDP trains (the plain model outside torchrun)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This process's share of a batch's indices."""
    rank, size = world()
    return idx[rank::size] if size > 1 else idx
