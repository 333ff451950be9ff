"""``bnn reproduce --ray local|ADDRESS``: the reproduction's work units as Ray tasks, one per free CPU (or GPU).

The driver plans, writes results.csv and the report exactly as without Ray; a task trains one
unit (a run, or an ensemble of runs of one cell) into its run directories under OUT and returns
their final metrics. OUT must therefore be on storage every worker sees (a local cluster: it is;
a real one: a shared file system). A worker that dies has its task retried (``MAX_RETRIES``);
a unit that still fails is reported and left unrecorded, so running the same command again
trains it, as any interrupted run.

Pointing it at a cluster: start one with ``ray start --head`` on one machine and
``ray start --address HEAD:6379`` on the others (each with this package installed and OUT
mounted at the same path), then ``bnn reproduce TABLE --ray HEAD:6379 --out /shared/OUT``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .experiments import Experiment, ReproduceError

MAX_RETRIES = 2  # task re-runs after a worker died (Ray's own retry of a crashed worker)
CONNECT_TIMEOUT_S = 5.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ReproduceError("--ray needs Ray: pip install 'untied-bnn[ray]'") from None
    return ray


def connect(address: str, num_cpus: int | None = None):
    """Join the cluster at ``address`` (host:port), or start a local one for ``"local"``; returns the ray module."""
    ray = _import_ray()
    if address != "local":
        _check_reachable(address)
    if ray.is_initialized():  # e.g. a caller (a test, a notebook) that started Ray itself
        return ray
    if address == "local":
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as e:  # Ray raises a bare Exception when its raylet does not start in time
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ReproduceError(f"could not start a local Ray ({why})") from None
        return ray
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ReproduceError(f"cannot join the Ray cluster at {address} ({str(e).splitlines()[0]})") from None
    return ray


def _check_reachable(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ReproduceError(f"--ray takes 'local' or HOST:PORT of a Ray head node, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ReproduceError(f"cannot reach the Ray cluster at {address} ({e.strerror or e})") from None


def _train_unit(
    exp: Experiment, unit, out: str, epochs: int, device: str, data_dir: str | None, threads: int | None
) -> tuple[list[dict], float]:
    """In a worker: train one unit with the runner's own code; returns (final metrics per run, seconds per run)."""
    from ..train import set_threads
    from . import runner

    set_threads(min(threads, os.cpu_count() or 1) if threads else None)  # a worker may have fewer CPUs than the driver
    if len(unit) > 1 and device != "cuda":
        from ..cpu_memory import keep_freed_memory

        keep_freed_memory()  # a worker process of its own: as `bnn reproduce` does (bnn_train/cpu_memory.py)
    dirs = [runner._run_dir(Path(out), s) for s in unit]
    listener = runner.Listener()
    if len(unit) == 1:
        final, seconds = runner._train(exp, unit[0], dirs[0], epochs, device, data_dir, listener)
        return [final], seconds
    return runner._train_group(exp, unit, dirs, epochs, device, data_dir, listener)


def run_units(
    ray,
    units: list,
    exp: Experiment,
    out: Path,
    epochs: int,
    device: str,
    data_dir: str | None,
    threads: int | None,
    on_done,
    on_failed,
    train=_train_unit,
) -> None:
    """Submit every unit, call ``on_done(unit, finals, seconds)`` as each finishes (in finishing order),
    ``on_failed(unit, reason)`` for one that failed after its retries. ``train`` runs one unit in a worker."""
    gpus = 1 if device == "cuda" else 0
    task = ray.remote(num_cpus=threads or 1, num_gpus=gpus, max_retries=MAX_RETRIES)(train)
    pending = {task.remote(exp, u, str(out), epochs, device, data_dir, threads): u for u in units}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        unit = pending.pop(ready[0])
        try:
            finals, seconds = ray.get(ready[0])
        except ray.exceptions.RayError as e:
            on_failed(unit, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
            continue
        on_done(unit, finals, seconds)
