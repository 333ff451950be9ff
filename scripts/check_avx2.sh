#!/usr/bin/env bash
# The runtime compiled for an AVX2-only x86 (Haswell: no AVX-512, no VNNI), on this machine:
# numba targets that CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES) with a fresh, empty kernel cache.
#
#   nice -n 10 scripts/check_avx2.sh            # exactness tests + a check that no kernel uses AVX-512
#   BENCH=1 nice -n 10 scripts/check_avx2.sh    # ... and `bnn bench` on the golden LeNet-5 (needs torch)
#
# 1. runs the runtime's torch-free exactness tests (golden x86 scores, random layouts, kernels,
#    logits) -- compiled for Haswell, the AVX-512/VNNI paths are never chosen;
# 2. compiles every golden model and reads the machine code of every numba kernel in bnn_runtime:
#    it must use no zmm register (AVX-512) -- what a CPU without AVX-512 could not run.
# Minutes (it compiles every kernel afresh): not part of the default test run.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
export NUMBA_CPU_NAME=haswell
export NUMBA_CPU_FEATURES="+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+lzcnt,+mmx,\
+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt,-avx512f,-avx512bw,\
-avx512cd,-avx512dq,-avx512vl,-avx512vnni,-avx512vpopcntdq,-avx512bitalg,-avx512vbmi,-avx512vbmi2,-avxvnni,\
-amx-tile,-amx-int8,-amx-bf16"
NUMBA_CACHE_DIR=$(mktemp -d)
export NUMBA_CACHE_DIR
trap 'rm -rf "$NUMBA_CACHE_DIR"' EXIT
cd "$REPO"

echo "check_avx2: numba targets $NUMBA_CPU_NAME, fresh cache $NUMBA_CACHE_DIR" >&2
"$PY" -m pytest -q -p no:cacheprovider tests/test_runtime_portable.py tests/test_runtime_kernels.py \
    tests/test_logits.py tests/test_runtime_native.py ${PYTEST_ARGS:-}

# a cache of its own: code loaded from a cache cannot be inspected, and callees of cached code are not compiled
NUMBA_CACHE_DIR="$NUMBA_CACHE_DIR/inspect" "$PY" - <<'EOF'
"""Compile every golden model, then count AVX-512 (zmm) registers in the machine code of every kernel."""
import importlib
import pkgutil
from pathlib import Path

import numpy as np
from numba.core.registry import CPUDispatcher

import bnn_runtime
from bnn_runtime import compiled
from bnn_runtime.format import read_bnn
from bnn_runtime.model import BnnModel

for path in sorted(Path("tests/golden").glob("*.bnn")):
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as f:
        x, scores = f["x"], f["scores"]
    for threads in (1, 2):
        assert np.array_equal(BnnModel(read_bnn(path), threads=threads).scores(x), scores), path
kernels, zmm, ymm = 0, 0, 0
dispatchers = list(compiled._drivers.values())  # the drivers: one per kind set of the golden models
for info in pkgutil.iter_modules(bnn_runtime.__path__):
    module = importlib.import_module(f"bnn_runtime.{info.name}")
    dispatchers += [obj for obj in vars(module).values() if isinstance(obj, CPUDispatcher)]
for obj in dispatchers:
    for sig, asm in obj.inspect_asm().items():
        kernels += 1
        zmm += asm.count("%zmm")
        ymm += asm.count("%ymm")
print(f"check_avx2: {kernels} compiled kernel signatures: {ymm} uses of ymm (AVX2) registers, {zmm} of zmm (AVX-512)")
assert kernels > 0 and zmm == 0, "AVX-512 instructions in code compiled for an AVX2-only CPU"
EOF

if [ "${BENCH:-0}" = 1 ]; then
    "$REPO/.venv/bin/bnn" bench tests/golden/lenet5_mnist.bnn --rounds 3 ${BENCH_ARGS:-}
fi
echo "check_avx2: exact on an AVX2-only target, no AVX-512 instruction in any kernel" >&2
