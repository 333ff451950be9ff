"""The forged-file fuzzer (tests/fuzz_forged_bnn.py), run in a subprocess under a 2 GiB address-space cap."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fuzz(examples: int) -> str:
    cmd = [sys.executable, "-m", "tests.fuzz_forged_bnn", "--examples", str(examples), "--mem-mib", "2048"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_forged_files_are_refused_or_run_correctly_under_a_memory_cap():
    out = _fuzz(120)
    assert "refused" in out and "matched the reference" in out


@pytest.mark.slow
def test_forged_files_many():
    _fuzz(3000)
