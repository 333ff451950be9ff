#!/usr/bin/env bash
# GPU check, < 8 minutes on one GPU. Usage: scripts/gpu_check.sh DATASETS_DIR [OUT_DIR]
#   DATASETS_DIR holds mnist/ (the four IDX files). Prints the figures the closing note of issue 12 asks for:
#   1. binary LeNet-5 trained on MNIST on cuda, exported, checked against the CPU runtime (bnn export's checks);
#   2. bnn reproduce table14 --runs 20 --epochs 10 on cuda (ensembles of 20), stopped after a time budget
#      (it resumes: run the same command again to finish), with images/s and wall time;
#   3. the CPU-vs-GPU equality tests (tests/test_gpu.py).
set -euo pipefail
DATA=${1:?usage: scripts/gpu_check.sh DATASETS_DIR [OUT_DIR]}
OUT=${2:-gpu-check}
BNN=${BNN:-.venv/bin/bnn}
PY=${PY:-.venv/bin/python}
REPRO_BUDGET=${REPRO_BUDGET:-240}   # seconds for step 2
mkdir -p "$OUT"
nvidia-smi -L || true
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

echo "== 1. binary LeNet-5, MNIST, cuda, 3 epochs; export and check against the CPU runtime"
t0=$(date +%s)
$BNN train --model lenet5 --dataset mnist --data-dir "$DATA/mnist" --act heaviside/rect --weights binary --batchnorm \
     --epochs 3 --batch-size 256 --lr 0.01 --optimizer adam --device cuda --out "$OUT/lenet5-cuda" -q
echo "train wall: $(( $(date +%s) - t0 )) s"
$BNN export "$OUT/lenet5-cuda" --data-dir "$DATA/mnist"
$BNN infer "$OUT/lenet5-cuda/model.bnn" --dataset mnist --data-dir "$DATA/mnist"

echo "== 2. bnn reproduce table14 --runs 20 --epochs 10 on cuda (budget ${REPRO_BUDGET} s; resumable)"
t0=$(date +%s)
timeout "$REPRO_BUDGET" $BNN reproduce table14 --runs 20 --epochs 10 --device cuda --ensemble 20 \
     --data-dir "$DATA" --out "$OUT/table14" -q --no-plots || echo "(stopped by the budget; rerun to continue)"
wall=$(( $(date +%s) - t0 ))
$PY - "$OUT/table14" "$wall" <<'PYEOF'
import csv, sys, pathlib
out, wall = pathlib.Path(sys.argv[1]), float(sys.argv[2])
rows = list(csv.DictReader(open(out / "results.csv"))) if (out / "results.csv").exists() else []
images = sum(int(r["epochs"]) * 60000 for r in rows)
print(f"table14: {len(rows)} of 480 runs finished in {wall:.0f} s wall: {images / wall:,.0f} images/s over all members"
      f" ({len(rows) * 3600 / wall:.0f} runs/hour); the whole table would take {480 * wall / max(len(rows), 1) / 60:.1f} min")
PYEOF

echo "== 3. CPU vs GPU: the same short runs on both"
$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py -s
