"""``bnn bench``: the runtime against onnxruntime on the same .bnn, and against the float network it replaces.

Four engines, timed interleaved in one process with the same thread count:

* ``runtime``: ``bnn_runtime`` (Numba popcount kernels), ``predict``;
* ``onnxruntime_exported``: onnxruntime on the ONNX graph ``bnn export`` writes (``bnn_to_onnx``: the
  fast exact graph of ``onnx_exact_float`` where its sums fit float32, else the integer one);
* ``onnxruntime_integer``: onnxruntime on the integer ONNX graph of the same .bnn (``bnn_to_onnx_integer``);
* ``onnxruntime_fp32``: onnxruntime on the float network of the same topology -- ReLU, the same
  widths, max pooling, no BatchNorm -- built by ``bnn_train`` from the model's training
  configuration (random weights: speed does not depend on them) and exported by ``float_to_onnx``.

Batch 256 gives throughput (images/s, the median of the rounds), batch 1 latency (median and
90th percentile over every call). Rounds alternate the engines, in reverse order every other round,
so that background load and the place after another engine fall on all of them alike. The
exported graph against the fp32 network -- two graphs of nearly the same work, whose difference is
smaller than the swings of a shared machine between rounds -- is also timed batch against batch
(``paired_ratio``): the ratio reported is the median of the pairs. A microbenchmark measures this
machine's AND+popcount rate, and a per-layer profile of the runtime (one thread) says which share of
it the binary layers reach.
This is a benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import numpy as np

from bnn_runtime.format import BnnFile
from bnn_runtime.kernels import and_popcount_peak, and_popcount_peak512
from bnn_runtime.model import load
from bnn_runtime.profile import layer_times

# Pause before each engine's turn: the thread pools of the engine timed before (onnxruntime's
# spin after every run) must have gone idle, or they take cores from the next one (docs/PERFORMANCE.md).
SETTLE_SECONDS = 0.2


def _mirror_float_network(bnn: BnnFile):
    """The float twin built from the .bnn layer list itself (when the file carries no training config)."""
    from torch import nn

    from bnn_train.activations import Activation

    layers, flat = [], False
    for i, layer in enumerate(bnn.layers):
        last = i == len(bnn.layers) - 1
        if layer["kind"] == "conv":
            c = layer["in_shape"][0]
            layers.append(
                nn.Conv2d(
                    c,
                    layer["out_features"],
                    tuple(layer["kernel"]),
                    padding=tuple(layer["padding"]),
                    stride=tuple(layer.get("stride", (1, 1))),
                )
            )
        else:
            if not flat:
                layers.append(nn.Flatten())
                flat = True
            layers.append(nn.Linear(layer["fan_in"], layer["out_features"]))
        if layer.get("pool"):
            layers.append(
                nn.MaxPool2d(tuple(layer["pool"]["size"]), tuple(layer["pool"].get("stride", layer["pool"]["size"])))
            )
        if not last:
            layers.append(Activation("relu/tied"))
    return nn.Sequential(*layers).eval(), False


def float_baseline(bnn: BnnFile):
    """(float nn.Sequential of the same topology, single_unit) -- from the provenance config when there is one."""
    from bnn_train.config import RunConfig
    from bnn_train.errors import ConfigError
    from bnn_train.models import build_model, is_single_unit

    config = bnn.manifest.get("provenance", {}).get("config")
    if isinstance(config, dict):
        try:
            cfg = RunConfig.from_dict(config).model
            cfg = replace(cfg, weights="float", act="relu/tied", batchnorm=False, pool="max")
            if tuple(cfg.in_shape) == tuple(bnn.input_shape):
                return build_model(cfg).eval(), is_single_unit(cfg)
        except (ConfigError, ValueError):
            pass
    return _mirror_float_network(bnn)


def _throughput(fn, x: np.ndarray, min_seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn(x)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n * len(x) / elapsed


def _latencies(fn, x1: np.ndarray, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(x1)
        out.append(time.perf_counter() - t)
    return out


def popcount_rate(seconds: float = 0.3) -> float:
    """AND+popcount word operations per second of one thread in a tight loop that does nothing else: the
    faster of two loops, LLVM's own vectorisation (256-bit on this project's Xeon) and explicit 512-bit
    vectors (the width of the runtime's kernels), timed alternately: the machine's peak for the kernels'
    operation mix, whichever vector width the CPU has."""
    return max(popcount_rates(seconds).values())


def popcount_rates(seconds: float = 0.3) -> dict:
    """{loop: best word operations per second} of and_popcount_peak ("llvm") and and_popcount_peak512 ("512-bit")."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=4096, dtype=np.uint64)  # 32 KiB: stays in the L1/L2 cache
    w = rng.integers(0, 2**63, size=4, dtype=np.uint64)
    loops = {"llvm": and_popcount_peak, "512-bit": and_popcount_peak512}
    best = dict.fromkeys(loops, 0.0)
    for fn in loops.values():
        fn(a, w, 1)
    reps = 16
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, fn in loops.items():
            t = time.perf_counter()
            fn(a, w, reps)
            best[name] = max(best[name], reps * 4 * len(a) / (time.perf_counter() - t))
    return best


def machine() -> dict:
    load1, load5, _ = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "load_average_1min": load1, "load_average_5min": load5}


def _time_interleaved(
    engines: dict, x: np.ndarray, rounds: int, min_seconds: float, latency_calls: int, progress=None
) -> dict:
    """Each engine warmed up, then timed round after round, engine after engine (a short pause between
    engines), at batch ``len(x)`` and at batch 1: per engine the median images/s, every round's images/s,
    and the median and 90th percentile batch-1 latency in microseconds."""
    for fn in engines.values():  # compile, load caches, allocate
        fn(x)
        fn(x[:1])
    rates = {name: [] for name in engines}
    lat = {name: [] for name in engines}
    if progress:
        progress(0, rounds)
    order = list(engines)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            fn = engines[name]
            time.sleep(SETTLE_SECONDS)
            rates[name].append(_throughput(fn, x, min_seconds))
            lat[name] += _latencies(fn, x[:1], latency_calls)
        if progress:
            progress(r + 1, rounds)
    results = {}
    for name in engines:
        ms = np.array(lat[name]) * 1e6
        results[name] = {
            "images_per_second": float(np.median(rates[name])),
            "rounds_images_per_second": rates[name],
            "latency_median_us": float(np.median(ms)),
            "latency_p90_us": float(np.percentile(ms, 90)),
        }
    return results


def paired_ratio(fn_a, fn_b, x: np.ndarray, min_seconds: float, min_pairs: int) -> dict:
    """Throughput of a over b, timed batch against batch: a then b, b then a, ..., for at least ``min_seconds``
    and ``min_pairs`` pairs; each pair's ratio is b's batch time over a's. Load that changes between rounds
    falls on both halves of a pair alike. Returns the median, the quartiles and the number of pairs."""
    fn_a(x)
    fn_b(x)
    ratios, start = [], time.perf_counter()
    while len(ratios) < min_pairs or time.perf_counter() - start < min_seconds:
        times = {}
        for name, fn in (("a", fn_a), ("b", fn_b)) if len(ratios) % 2 == 0 else (("b", fn_b), ("a", fn_a)):
            t = time.perf_counter()
            fn(x)
            times[name] = time.perf_counter() - t
        ratios.append(times["b"] / times["a"])
    q25, median, q75 = np.percentile(ratios, [25, 50, 75])
    return {"pairs": len(ratios), "median": float(median), "q25": float(q25), "q75": float(q75)}


def run_bench(
    path,
    threads: int = 2,
    batch: int = 256,
    rounds: int = 5,
    latency_calls: int = 200,
    min_seconds: float = 0.25,
    seed: int = 0,
    progress=None,
) -> dict:
    """Time the three engines on the model at ``path``; returns the result as a JSON-able dict."""
    from .api import onnx_session
    from .onnx_bnn import bnn_to_onnx, bnn_to_onnx_integer
    from .onnx_float import float_to_onnx

    model = load(path, threads=threads).compile()  # (timed: the kernels, not the reference that answers meanwhile)
    bnn = model.file
    float_model, single_unit = float_baseline(bnn)
    sessions = {
        "onnxruntime_exported": onnx_session(bnn_to_onnx(bnn).SerializeToString(), threads),
        "onnxruntime_integer": onnx_session(bnn_to_onnx_integer(bnn).SerializeToString(), threads),
        "onnxruntime_fp32": onnx_session(
            float_to_onnx(float_model, bnn.input_shape, single_unit=single_unit).SerializeToString(), threads
        ),
    }
    engines = {"runtime": model.predict}
    for name, s in sessions.items():
        engines[name] = lambda x, s=s: s.run(None, {"images": x})
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(batch, *bnn.input_shape), dtype=np.uint8)
    load_before = machine()
    results = _time_interleaved(engines, x, rounds, min_seconds, latency_calls, progress)
    rt = results["runtime"]
    ratios = {}
    for base in ("onnxruntime_fp32", "onnxruntime_integer"):
        b = results[base]
        ratios[f"throughput_runtime_over_{base}"] = rt["images_per_second"] / b["images_per_second"]
        ratios[f"latency_runtime_over_{base}"] = rt["latency_median_us"] / b["latency_median_us"]
    exported, fp32 = results["onnxruntime_exported"], results["onnxruntime_fp32"]
    time.sleep(SETTLE_SECONDS)
    paired = paired_ratio(
        engines["onnxruntime_exported"], engines["onnxruntime_fp32"], x, 2 * rounds * min_seconds, rounds
    )
    ratios["throughput_onnxruntime_exported_over_onnxruntime_fp32"] = paired["median"]
    ratios["latency_onnxruntime_exported_over_onnxruntime_fp32"] = (
        exported["latency_median_us"] / fp32["latency_median_us"]
    )
    return {
        "model": str(path),
        "input_shape": list(bnn.input_shape),
        "layers": [f"{layer['kind']} {layer['out_features']}" for layer in bnn.layers],
        "threads": threads,
        "batch": batch,
        "rounds": rounds,
        "latency_calls": rounds * latency_calls,
        "machine": {**load_before, "load_average_1min_after": os.getloadavg()[0]},
        "results": results,
        "ratios": ratios,
        "exported_over_fp32_pairs": paired,
        "popcount": _popcount_share(model, x),
    }


def _popcount_share(model, x: np.ndarray) -> dict:
    """Per-layer time of the runtime (one thread) and the share of the machine's AND+popcount rate reached."""
    rates = popcount_rates()
    layers = layer_times(model, x)
    for name, rate in popcount_rates().items():  # again after the profile: the best of both (a shared machine)
        rates[name] = max(rates[name], rate)
    peak = max(rates.values())
    ops = sum(r["word_ops_per_image"] for r in layers)
    secs = sum(r["seconds_per_image"] for r in layers if r["word_ops_per_image"])
    for r in layers:
        s = r["seconds_per_image"]
        r["share_of_peak"] = r["word_ops_per_image"] / s / peak if r["word_ops_per_image"] and s > 0 else None
    return {
        "peak_word_ops_per_second": peak,
        "peak_loops_word_ops_per_second": rates,  # the microbenchmark's loops; the peak is the faster
        "layers": layers,
        "binary_layers_share_of_peak": ops / secs / peak if secs > 0 else None,
    }


@contextlib.contextmanager
def busy_processes(n: int):
    """n background processes that spin on one core each, stopped (by their pids) when the block ends."""
    procs = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.2 if n else 0)  # let them get going
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run_load_bench(
    path,
    busy: int,
    batch: int = 256,
    rounds: int = 5,
    latency_calls: int = 200,
    min_seconds: float = 0.25,
    seed: int = 0,
    progress=None,
) -> dict:
    """The runtime at its default thread count and at 1 thread, and onnxruntime fp32 at the default thread count,
    timed interleaved while ``busy`` busy processes run; returns a JSON-able dict. The default against 1 thread
    -- two engines within a few percent of each other when the load leaves one core -- is also timed batch
    against batch (``paired_ratio``), as is the exported graph in ``run_bench``: that ratio is the one
    reported, beside the ratio of the rounds' medians and how many threads the default took per batch."""
    from .api import onnx_session
    from .onnx_float import float_to_onnx

    default = load(path).compile()  # (timed: the kernels, not the reference that answers meanwhile)
    single = load(path, threads=1)
    bnn = default.file
    float_model, single_unit = float_baseline(bnn)
    fp32 = onnx_session(
        float_to_onnx(float_model, bnn.input_shape, single_unit=single_unit).SerializeToString(), default.threads
    )
    threads_used: Counter[int] = Counter()  # per full batch of the default model: how many threads it took

    def default_predict(x):
        labels = default.predict(x)
        if len(x) == batch:
            threads_used[default.threads_used] += 1
        return labels

    engines = {
        "runtime_default_threads": default_predict,
        "runtime_1_thread": single.predict,
        "onnxruntime_fp32": lambda x: fp32.run(None, {"images": x}),
    }
    x = np.random.default_rng(seed).integers(0, 256, size=(batch, *bnn.input_shape), dtype=np.uint8)
    with busy_processes(busy):
        before = machine()
        results = _time_interleaved(engines, x, rounds, min_seconds, latency_calls, progress)
        time.sleep(SETTLE_SECONDS)
        paired = paired_ratio(default_predict, single.predict, x, 2 * rounds * min_seconds, rounds)
        used = default.threads_used
    d, one, f = (results[k]["images_per_second"] for k in engines)
    return {
        "model": str(path),
        "load": busy,
        "default_threads": default.threads,
        "default_threads_used": used,  # in a batch under the load: the cores the busy processes left idle
        "batch": batch,
        "rounds": rounds,
        "machine": {**before, "load_average_1min_after": os.getloadavg()[0]},
        "results": results,
        "ratios": {"default_over_1_thread": paired["median"], "default_over_onnxruntime_fp32": d / f},
        "default_over_1_thread_pairs": paired,
        "default_over_1_thread_rounds": d / one,  # (the medians of the rounds: swings with the machine)
        "default_threads_histogram": {str(k): v for k, v in sorted(threads_used.items())},
    }


__all__ = [
    "run_bench",
    "run_load_bench",
    "busy_processes",
    "float_baseline",
    "paired_ratio",
    "popcount_rate",
    "popcount_rates",
]
