#!/usr/bin/env bash
# Run the runtime's exactness tests on aarch64 (arm64) under qemu-user emulation, and compare the
# scores of the golden models (tests/golden/, computed on x86) bit for bit.
#
#   sudo nice -n 10 scripts/check_aarch64.sh          # as root: binfmt_misc, debootstrap, chroot
#
# What it does (each step is skipped when its result is already there):
#   1. installs Debian's qemu-user-static, binfmt-support and debootstrap if missing (apt-get);
#   2. mounts binfmt_misc and enables qemu-aarch64 (so arm64 programs run, also inside a chroot);
#   3. builds an arm64 Debian root with debootstrap in $BNN_ARM64_ROOT (default /var/tmp/bnn-arm64)
#      with python3 and python3-venv;
#   4. downloads the arm64 wheels of numpy, numba, pytest and hypothesis (and what they need) from the
#      package index with the host's pip (the versions of .venv when it exists, so both sides run the
#      same releases), and installs them offline into a venv inside the root;
#   5. copies bnn_runtime/ and the torch-free tests into the root and runs, as aarch64:
#      tests/test_runtime_portable.py (golden x86 scores, random layouts vs the reference),
#      tests/test_runtime_kernels.py, tests/test_logits.py, tests/test_input_spec.py,
#      tests/test_runtime_native.py (the driver's machine code loaded without numba: MCJIT on aarch64).
# It takes minutes to tens of minutes (every instruction is emulated, numba compiles in emulation):
# not part of the default test run. Environment: BNN_ARM64_ROOT, BNN_ARM64_SUITE (default bookworm),
# PYTEST_ARGS (extra pytest arguments, e.g. "-k golden").
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${BNN_ARM64_ROOT:-/var/tmp/bnn-arm64}
SUITE=${BNN_ARM64_SUITE:-bookworm}
VENV=/opt/bnn-venv
SRC=/opt/bnn-src
TESTS=(tests/test_runtime_portable.py tests/test_runtime_kernels.py tests/test_logits.py tests/test_input_spec.py
    tests/test_runtime_native.py)
say() { echo "check_aarch64: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (binfmt_misc, debootstrap, chroot)"; exit 1; }

# 1. tools
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
        || ! command -v update-binfmts >/dev/null; then
    say "installing qemu-user-static binfmt-support debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
fi

# 2. binfmt_misc: the F flag makes the kernel open qemu now, so it also runs inside the chroot
mountpoint -q /proc/sys/fs/binfmt_misc || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || { say "qemu-aarch64 binfmt is not enabled"; exit 1; }

# 3. the arm64 root (built in a side folder and renamed: an interrupted run leaves no half root)
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    say "debootstrap arm64 $SUITE into $ROOT (minutes)"
    rm -rf "$ROOT.partial"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOT.partial" >&2
    rm -rf "$ROOT"
    mv "$ROOT.partial" "$ROOT"
fi
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
for fs in proc dev; do
    mountpoint -q "$ROOT/$fs" || mount --bind "/$fs" "$ROOT/$fs"
done
trap 'umount "$ROOT/proc" "$ROOT/dev" 2>/dev/null || true' EXIT

# 4. the venv: the same numpy and numba releases as the x86 .venv when there is one
pins=(numpy numba pytest hypothesis)
if [ -x "$REPO/.venv/bin/python" ]; then
    mapfile -t pins < <("$REPO/.venv/bin/python" -c '
from importlib.metadata import version
for p in ("numpy", "numba", "pytest", "hypothesis"):
    print(f"{p}=={version(p)}")')
fi
if ! in_root "$VENV/bin/python" -c "import numba, pytest, hypothesis" 2>/dev/null; then
    say "downloading the arm64 wheels of ${pins[*]}; installing them into $VENV"
    PIP=${PIP:-$REPO/.venv/bin/pip}
    command -v "$PIP" >/dev/null || PIP=pip3
    pyver=$(in_root python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    rm -rf "$ROOT/opt/wheels"
    "$PIP" download -q --only-binary=:all: --implementation cp --python-version "$pyver" \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        -d "$ROOT/opt/wheels" "${pins[@]}" >&2
    in_root python3 -m venv "$VENV"
    in_root "$VENV/bin/pip" install -q --disable-pip-version-check --no-index --find-links /opt/wheels "${pins[@]}" >&2
fi

# 5. the runtime and its torch-free tests, run as aarch64
rm -rf "$ROOT$SRC"
mkdir -p "$ROOT$SRC/tests"
cp -r "$REPO/bnn_runtime" "$ROOT$SRC/"
cp -r "$REPO/tests/golden" "$REPO/tests/__init__.py" "$REPO/tests/random_bnn.py" "${TESTS[@]/#/$REPO/}" \
    "$ROOT$SRC/tests/"
find "$ROOT$SRC" -name __pycache__ -prune -exec rm -rf {} +
say "running ${TESTS[*]} on $(in_root uname -m)"
in_root /bin/sh -c "cd $SRC && NUMBA_CACHE_DIR=/tmp/numba-cache $VENV/bin/python -c '
import platform, numba, numpy
print(\"machine\", platform.machine(), \"python\", platform.python_version(), \"numpy\", numpy.__version__,
      \"numba\", numba.__version__, \"llvm cpu\", numba.config.CPU_NAME or __import__(\"llvmlite.binding\").binding.get_host_cpu_name())
' && NUMBA_CACHE_DIR=/tmp/numba-cache BNN_WAIT_FOR_KERNELS=1 $VENV/bin/python -m pytest -q -p no:cacheprovider --noconftest \
    ${PYTEST_ARGS:-} ${TESTS[*]}"
say "aarch64: the runtime's scores equal the x86 golden scores and the reference, bit for bit"
