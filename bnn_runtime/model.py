"""``load(path) -> BnnModel``: a .bnn file, re-packed once, run by the Numba kernels.

::

    model = bnn_runtime.load("lenet5.bnn", threads=2)
    labels = model.predict(images)   # uint8 (N, C, H, W) or (N, H, W) as in the manifest; int64
    scores = model.scores(images)    # int32, identical to reference_scores

Every input goes through ``inputs.prepare_input`` (InputError for anything a kernel cannot
take) before a kernel runs. Batches up to ``SERIAL_MAX`` images run in the calling thread;
larger ones are split into tiles of up to ``tile`` images, shared out between ``threads``
threads (smaller tiles when there are too few images for every thread to get one).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

# How numba's OpenMP workers (libgomp here) wait for the next parallel call. Spinning without
# bound starved the other thread of a 2-thread batch on a machine shared with other work (13x
# slower, measured); sleeping at once (the passive policy alone: libgomp spins 0 times) made 2
# threads only 1.2x faster than one on LeNet-5 batches of 256 (262k vs 417k images/s with the
# spin below). So: the passive policy, and a bounded spin of 300,000 (libgomp's documented
# default, about 0.1 ms), which libgomp takes over the passive policy's 0. Read when numba first
# launches its threads (unless an OpenMP runtime is already running); values the user set win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "300000")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from . import kernels  # noqa: E402
from .errors import BnnFormatError, SettingError  # noqa: E402
from .format import BnnFile, read_bnn  # noqa: E402
from .inputs import prepare_input  # noqa: E402
from .plan import Plan, build_plan  # noqa: E402

# Images per tile (a tile goes through every layer before the next one starts): a larger tile reads
# each weight from cache for more images, a smaller one keeps a tile's activations in L1/L2. Measured
# at batch 256, 2 threads (img/s, tile 16 / 64 / 128): MLP 784-4096-4096-4096-10 (4.8 MB of
# weights) 41.9k / 45.3k / 46.9-48.9k; LeNet-5 (12 kB) 459k / 468k / 448-454k. So the tile follows
# the size of the weights.
DEFAULT_TILE, LARGE_TILE = 64, 128
LARGE_WEIGHTS = 1 << 20  # bytes of re-packed weights above which LARGE_TILE is the default
SERIAL_MAX = 16  # batches up to this size run in the calling thread (no thread start-up)
_PARALLEL_LOCK = threading.Lock()  # numba's workqueue threading layer must not be entered twice at once


def max_threads() -> int:
    """Threads the runtime may use in this process (numba's NUMBA_NUM_THREADS, default: the CPU count)."""
    return numba.config.NUMBA_NUM_THREADS


def _check_threads(threads) -> int:
    limit = max_threads()
    if threads is None:
        return limit
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= limit:
        raise SettingError(f"threads must be an integer from 1 to {limit} (NUMBA_NUM_THREADS), got {threads!r}")
    return int(threads)


def _refuse_strides(bnn: BnnFile) -> None:
    """The kernels compute stride-1 convolutions and non-overlapping pools only (format version 1's
    geometry): refuse a version-2 file that needs more, rather than compute wrong numbers."""
    for layer in bnn.layers:
        pool = layer.get("pool") or {}
        if tuple(layer.get("stride", (1, 1))) != (1, 1) or tuple(pool.get("stride", pool.get("size", ()))) != tuple(
                pool.get("size", ())):
            raise BnnFormatError(f"layer {layer['name']!r}: strided convolution or overlapping pooling is not "
                                 "supported by this runtime yet (bnn_runtime.reference runs it)")


class BnnModel:
    """A loaded binary network: ``scores``, ``predict``, and what the manifest says about it."""

    def __init__(self, bnn: BnnFile, threads: int | None = None, tile: int | None = None):
        if tile is not None and (not isinstance(tile, int) or tile < 1):
            raise SettingError(f"tile must be a positive integer, got {tile!r}")
        self.file = bnn
        _refuse_strides(bnn)
        self.plan: Plan = build_plan(bnn)
        self.threads = threads
        if tile is None:
            tile = LARGE_TILE if self.plan.wpool.nbytes > LARGE_WEIGHTS else DEFAULT_TILE
        self.tile = tile

    # ------------------------------------------------------------------ what the file says
    @property
    def manifest(self) -> dict:
        return self.file.manifest

    @property
    def classes(self) -> list[str]:
        return list(self.file.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.file.input_shape

    @property
    def threads(self) -> int:
        return self._threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        self._threads = _check_threads(value)

    @property
    def word_ops(self) -> list[int]:
        """AND+popcount word operations per image of every layer (0 for an integer first convolution)."""
        return list(self.plan.word_ops)

    def __repr__(self) -> str:
        kinds = "-".join(f"{layer['kind']}{layer['out_features']}" for layer in self.file.layers)
        return f"BnnModel(input={list(self.input_shape)}, layers={kinds}, classes={len(self.classes)}, threads={self.threads})"

    # ------------------------------------------------------------------ running it
    def run(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(scores int32 (N, n_scores), labels int64 (N,)) of a batch."""
        x = prepare_input(x, self.input_shape)
        n = len(x)
        flat = x.reshape(n, -1)
        p = self.plan
        scores = np.empty((n, p.n_scores), np.int32)
        labels = np.empty(n, np.int64)
        tile = min(self.tile, n, max(SERIAL_MAX, -(-n // self.threads)))
        nthreads = min(self.threads, -(-n // tile))
        args = (*p.kernel_args, scores, labels)
        if nthreads <= 1:
            kernels.forward_serial(flat, tile, p.sizes, *args)
            return scores, labels
        with _PARALLEL_LOCK:
            before = numba.get_num_threads()
            numba.set_num_threads(nthreads)
            try:
                kernels.forward_parallel(flat, tile, nthreads, p.sizes, *args)
            finally:
                numba.set_num_threads(before)
        return scores, labels

    def scores(self, x) -> np.ndarray:
        """Integer scores of the last layer, int32 (N, classes) -- or (N, 1) for a single-unit network."""
        return self.run(x)[0]

    def predict(self, x) -> np.ndarray:
        """Class indices, int64 (N,): argmax of the per-class affine (first maximum), or the final unit's bit."""
        return self.run(x)[1]


def load(path: str | Path, threads: int | None = None) -> BnnModel:
    """Read, validate and re-pack a .bnn file (BnnFormatError on any problem with it)."""
    return BnnModel(read_bnn(path), threads=threads)
