"""The runtime of a git revision against this tree's, side by side in one process (a benchmark, not a test).

    python scripts/runtime_ab.py REV MODEL.bnn [--batch 256] [--reps 60]

Unpacks ``bnn_runtime`` of REV (``git archive``) into a temporary directory as the package ``bnn_runtime_rev``
and compiles both runtimes' kernels into a fresh cache directory (numba's cache index would take the revision's
kernels for those of a same-source copy under another package name), checks that both give the
same scores, then times ``predict`` at batch ``--batch`` for 1 and 2 threads, the two runtimes alternating
batch after batch with a short pause, and prints the best and median µs per image of each and their ratios,
and the per-layer profile (``profile.layer_times``, 1 thread) of each. On a shared machine read the ratios.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def import_revision(rev: str, into: Path):
    """bnn_runtime as of rev, importable as bnn_runtime_rev (its modules import each other relatively)."""
    blob = subprocess.run(["git", "archive", rev, "bnn_runtime"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "bnn_runtime").rename(into / "bnn_runtime_rev")
    sys.path.insert(0, str(into))
    return importlib.import_module("bnn_runtime_rev")


def load(pkg: str, path: Path, threads: int):
    fmt, model = importlib.import_module(f"{pkg}.format"), importlib.import_module(f"{pkg}.model")
    return model.BnnModel(fmt.read_bnn(path), threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("model", type=Path)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BNN_CACHE_DIR"] = str(Path(tmp) / "cache")  # before either runtime is imported
        import_revision(args.rev, Path(tmp))
        names = {"rev": "bnn_runtime_rev", "tree": "bnn_runtime"}
        shape = load("bnn_runtime", args.model, 1).input_shape
        x = np.random.default_rng(0).integers(0, 256, (args.batch, *shape), dtype=np.uint8)
        for threads in (1, 2):
            models = {k: load(pkg, args.model, threads) for k, pkg in names.items()}
            if not np.array_equal(models["rev"].scores(x), models["tree"].scores(x)):
                sys.exit("runtime_ab: the two runtimes disagree")
            times = {k: [] for k in models}
            for _ in range(args.reps):
                for k, m in models.items():
                    t = time.perf_counter()
                    m.predict(x)
                    times[k].append((time.perf_counter() - t) / args.batch * 1e6)
                    time.sleep(0.01)
            best = {k: min(v) for k, v in times.items()}
            med = {k: float(np.median(v)) for k, v in times.items()}
            print(
                f"threads {threads}: {args.rev} best {best['rev']:.2f} median {med['rev']:.2f} | tree best "
                f"{best['tree']:.2f} median {med['tree']:.2f} us/image | tree faster {best['rev'] / best['tree']:.2f}x "
                f"(best), {med['rev'] / med['tree']:.2f}x (median)"
            )
        for k, pkg in names.items():
            profile = importlib.import_module(f"{pkg}.profile")
            rows = profile.layer_times(load(pkg, args.model, 1), x)
            layers = ", ".join(f"{r['layer']} {r['seconds_per_image'] * 1e6:.2f}" for r in rows)
            print(f"{k:4s} per layer, us/image: {layers}")


if __name__ == "__main__":
    main()
