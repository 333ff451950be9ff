"""``load(path) -> BnnModel``: a .bnn file, re-packed once, run by the Numba kernels.

::

    model = bnn_runtime.load("lenet5.bnn", threads=2)
    labels = model.predict(images)   # uint8 (N, C, H, W) or (N, H, W) as in the manifest; int64
    scores = model.scores(images)    # int32, identical to reference_scores

Every input goes through ``inputs.prepare_input`` (InputError for anything a kernel cannot
take) before a kernel runs. Batches up to ``SERIAL_MAX`` images run in the calling thread;
larger ones are split into tiles of up to ``tile`` images, shared out between ``threads``
threads (smaller tiles when there are too few images for every thread to get one). A network
with enough work per image (split_plan.SPLIT_MIN_WORD_OPS) runs any batch in parallel: tiles down to
one image, and a batch smaller than the thread count image by image, every thread on every layer
(split.py). A model
loaded without ``threads`` takes, per batch, only the cores that other processes leave idle
(idle.py), up to every core.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import compiled, host
from .errors import SettingError
from .format import BnnFile, read_bnn
from .idle import IdleCores
from .inputs import prepare_input
from .layout import SLOT_SPLIT, SPLIT_TILE, USES_SPLIT
from .plan import Plan, build_plan
from .reference import logits_from_scores, predict_from_scores, reference_scores, softmax
from .split_plan import state_size

if TYPE_CHECKING:  # (imported on the first parallel batch: a warm start to batch 1 needs no thread pool)
    from concurrent.futures import ThreadPoolExecutor

# Images per tile (a tile goes through every layer before the next one starts): a larger tile reads
# each weight from cache for more images, a smaller one keeps a tile's activations in L1/L2. So the
# tile follows the size of the weights (measurements: docs/PERFORMANCE.md).
DEFAULT_TILE, LARGE_TILE = 64, 128
LARGE_WEIGHTS = 1 << 20  # bytes of re-packed weights above which LARGE_TILE is the default
SERIAL_MAX = 16  # batches up to this size run in the calling thread (no thread start-up)
TILES_PER_THREAD = 4  # a parallel batch is cut into at least this many tiles per thread (for dynamic sharing)
REFERENCE_CHUNK = 32  # images per call of the NumPy reference while the kernels compile (then they take the rest)
# A batch of more images waits for the compile instead: the reference (~1,000 LeNet-5 images/s alone, half that
# beside the compile, which it slows down in turn) would take about as long as a compile (~10 s) or longer.
REFERENCE_MAX = 1024
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_IDLE = IdleCores()  # the default thread count of a batch (one sampler for the process)


def max_threads() -> int:
    """Threads the runtime may use in this process (numba's NUMBA_NUM_THREADS, default: the CPU count; host.py)."""
    return host.max_threads()


def _check_threads(threads) -> int:
    limit = max_threads()
    if threads is None:
        return limit
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= limit:
        raise SettingError(f"threads must be an integer from 1 to {limit} (NUMBA_NUM_THREADS), got {threads!r}")
    return int(threads)


class BnnModel:
    """A loaded binary network: ``scores``, ``predict``, and what the manifest says about it."""

    def __init__(self, bnn: BnnFile, threads: int | None = None, tile: int | None = None):
        if tile is not None and (not isinstance(tile, int) or tile < 1):
            raise SettingError(f"tile must be a positive integer, got {tile!r}")
        self.file = bnn
        self.plan: Plan = build_plan(bnn)
        self._uses = self.plan.uses  # the layer kinds its driver is compiled for
        self.threads = threads
        if tile is None:
            tile = LARGE_TILE if self.plan.wpool.nbytes > LARGE_WEIGHTS else DEFAULT_TILE
        self.tile = tile
        self.threads_used = 0  # threads of the last batch

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
        self.adaptive = value is None  # up to ``threads``: the cores other processes leave idle

    @property
    def word_ops(self) -> list[int]:
        """AND+popcount word operations per image of every layer (0 for an integer first convolution)."""
        return list(self.plan.word_ops)

    def __repr__(self) -> str:
        kinds = "-".join(f"{layer['kind']}{layer['out_features']}" for layer in self.file.layers)
        return (
            f"BnnModel(input={list(self.input_shape)}, layers={kinds}, classes={len(self.classes)}, "
            f"threads={self.threads})"
        )

    # ------------------------------------------------------------------ running it
    def run(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(scores int32 (N, n_scores), labels int64 (N,)) of a batch."""
        x = prepare_input(x, self.input_shape)
        n = len(x)
        scores = np.empty((n, self.plan.n_scores), np.int32)
        labels = np.empty(n, np.int64)
        done = 0
        forward = compiled.forward_now(self._uses)
        if forward is None and n > REFERENCE_MAX:  # (the reference would take longer than the compile: wait)
            forward = compiled.forward(self._uses)
        while forward is None and done < n:  # the kernels are compiling: the reference, until they are there
            end = min(n, done + REFERENCE_CHUNK)
            scores[done:end] = reference_scores(self.file, x[done:end])
            labels[done:end] = predict_from_scores(self.file, scores[done:end])
            done = end
            forward = compiled.forward_now(self._uses)
        if done < n:
            self._run(forward, x[done:], scores[done:], labels[done:])
        return scores, labels

    def compile(self) -> BnnModel:
        """Wait until the kernels are compiled (or loaded from the cache): batches from now on run them."""
        compiled.forward(self._uses)
        return self

    def _run(self, forward, x: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> None:
        """The batch x through the compiled driver, into scores and labels."""
        n = len(x)
        flat = x.reshape(n, -1)
        p = self.plan
        threads = self.threads
        splits = bool(self._uses & 1 << USES_SPLIT)  # an image's work is worth sharing between threads
        parallel = n > SERIAL_MAX or (splits and n > 0)
        if parallel and threads > 1 and self.adaptive:
            threads = _IDLE(threads)
        if not parallel or threads == 1:
            tile, nthreads = min(self.tile, n), 1
        elif splits and n < threads:  # every thread on every image, layer by layer (split.py)
            tile, nthreads = SPLIT_TILE, threads
        else:
            least = 1 if splits else SERIAL_MAX // 2
            tile = min(self.tile, max(least, -(-n // (TILES_PER_THREAD * threads))))
            nthreads = min(threads, -(-n // tile))
        self.threads_used = nthreads
        if tile == SPLIT_TILE:
            state = np.zeros(state_size(n, n, int(p.sizes[SLOT_SPLIT])), np.int64)
        else:
            state = np.zeros(1 + -(-n // tile), np.int64)
        scratch = p.scratch(1 if tile == SPLIT_TILE else tile, nthreads)  # a split tile is one image
        args = (flat, tile, p.sizes, *p.kernel_args, scores, labels, state)
        if nthreads <= 1:
            forward(*args, scratch[0], True)
            return
        pool = _pool()
        for j in range(1, nthreads):  # helpers: whatever they claim before the calling thread is done
            pool.submit(forward, *args, scratch[j], False)
        forward(*args, scratch[0], True)  # claims tiles (or chunks), then takes over those still open: never waits

    def scores(self, x) -> np.ndarray:
        """Integer scores of the last layer, int32 (N, classes) -- or (N, 1) for a single-unit network."""
        return self.run(x)[0]

    def predict(self, x) -> np.ndarray:
        """Class indices, int64 (N,): argmax of the per-class affine (first maximum), or the final unit's bit."""
        return self.run(x)[1]

    def logits(self, x) -> np.ndarray:
        """float64 (N, classes): the per-class affine of the integer scores; argmax == ``predict``."""
        return logits_from_scores(self.file, self.scores(x))

    def probabilities(self, x) -> np.ndarray:
        """float64 (N, classes): the softmax of ``logits``."""
        return softmax(self.logits(x))

    @property
    def input_spec(self):
        """What the model takes (``pixels.InputSpec``): value range, layout, colour; ``from_pixels`` converts images."""
        return self.file.input_spec


def _pool() -> ThreadPoolExecutor:
    """The process's helper threads (max_threads() - 1 of them), started on the first parallel batch."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=max(max_threads() - 1, 1), thread_name_prefix="bnn-runtime")
        return _POOL


def load(path: str | Path, threads: int | None = None) -> BnnModel:
    """Read, validate and re-pack a .bnn file (BnnFormatError on any problem with it)."""
    return BnnModel(read_bnn(path), threads=threads)
