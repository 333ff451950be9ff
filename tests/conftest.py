"""Shared test helpers: invoking the CLI and checking the shape of a user error."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from bnn_cli.main import app

DATASETS_DIR = os.environ.get("BNN_DATASETS")

# A batch that comes while the kernels compile is answered by the NumPy reference (compiled.forward_now): the
# tests, and the processes they start, wait for the kernels instead, so that they check the kernels.
# tests/test_runtime_first_start.py checks the answers given while they compile.
os.environ.setdefault("BNN_WAIT_FOR_KERNELS", "1")

# Property tests check values, never time: no per-example deadline, and no "generation too slow"
# refusal when the machine is busy (a shared CI runner must not turn load into a red run).
# Locally the examples are new on every run (exploration); CI (BNN_HYPOTHESIS_PROFILE=ci, set by .ci/run) draws
# the same examples every time, so a red CI run is one a developer can rerun -- the random hunt happens here.
settings.register_profile("bnn", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("bnn"), derandomize=True, database=None)
settings.load_profile(os.environ.get("BNN_HYPOTHESIS_PROFILE", "bnn"))


@pytest.fixture(scope="session", autouse=True)
def one_driver_for_every_kind():
    """The tests share the runtime's driver for every layer kind (as after ``bnn warmup``): one compile, not
    one per random layout; test_runtime_portable runs the golden models on their own kernels."""
    from bnn_runtime import compiled

    compiled.forward()


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """`--threads N` sets torch's process-wide thread count: put it back after each test, so that one CLI test's
    value never decides how (or whether) the next test's training runs."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments: str, code: int | None = None) -> None:
    """Exit code != 0, exactly one line on stderr starting with 'error:', containing every fragment, no traceback."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def dataset_dir(name: str) -> Path:
    if not (DATASETS_DIR and Path(DATASETS_DIR, name).is_dir()):
        pytest.skip(f"set BNN_DATASETS to a folder holding {name}/")
    return Path(DATASETS_DIR, name)
