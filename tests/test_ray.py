"""bnn reproduce --ray: the runs as tasks on a local Ray cluster (2 workers) give the rows of an in-process run."""

import csv
import os

import pytest

from .conftest import assert_user_error, run_cli

COMMON = ["reproduce", "table13", "--epochs", "1", "--runs", "2", "--only", "dim=2,bs=64,lr=0.1", "-q", "--no-plots"]


def _rows(out):
    return {r["run_key"]: r for r in csv.DictReader(open(out / "results.csv"))}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as e:  # its raylet has 30 s to start: more than an overloaded machine may give it
        pytest.skip(f"a local Ray did not start here: {e}")
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("ensemble", ["1", "2"])
def test_ray_local_writes_the_same_results_and_resumes(tmp_path, local_ray, ensemble):
    here, there = tmp_path / "here", tmp_path / "ray"
    assert run_cli(*COMMON, "--ensemble", ensemble, "--out", here).exit_code == 0
    r = run_cli(*COMMON, "--ensemble", ensemble, "--ray", "local", "--out", there)
    assert r.exit_code == 0, r.output
    a, b = _rows(here), _rows(there)
    assert a.keys() == b.keys() and len(a) == 4
    for key in a:
        assert a[key]["test_accuracy"] == b[key]["test_accuracy"], key
    assert (there / "report.md").exists()
    r = run_cli(*COMMON[:5], "3", *COMMON[6:], "--ensemble", ensemble, "--ray", "local", "--out", there)
    assert r.exit_code == 0, r.output
    assert "4 of 6 runs already finished" in r.stderr and len(_rows(there)) == 6


def test_unreachable_ray_address_is_one_line(tmp_path):
    pytest.importorskip("ray")
    r = run_cli(*COMMON, "--ray", "127.0.0.1:9", "--out", tmp_path / "x")
    assert_user_error(r, "cannot reach the Ray cluster at 127.0.0.1:9", code=1)
    assert not (tmp_path / "x").exists()
    assert_user_error(run_cli(*COMMON, "--ray", "nowhere", "--out", tmp_path / "y"), "HOST:PORT", code=1)


def test_a_worker_that_dies_is_retried_then_reported_and_the_others_finish(tmp_path, local_ray):
    """A unit whose worker process dies every time is run 1 + MAX_RETRIES times, then reported as failed (so it
    gets no row and the same command trains it again); the other unit's result still arrives."""
    from bnn_train.reproduce import ray_backend

    attempts = tmp_path / "attempts"

    def train(exp, unit, out, epochs, device, data_dir, threads):
        if unit == "dies":
            with open(attempts, "a") as f:
                f.write("x")
            os._exit(1)  # as a worker killed by the kernel's OOM killer or a lost node
        return [{"unit": unit}], 1.0

    done, failed = [], []
    ray_backend.run_units(
        local_ray,
        ["dies", "lives"],
        None,
        tmp_path,
        1,
        "cpu",
        None,
        None,
        on_done=lambda unit, finals, seconds: done.append((unit, finals)),
        on_failed=lambda unit, why: failed.append((unit, why)),
        train=train,
    )
    assert done == [("lives", [{"unit": "lives"}])]
    assert [u for u, _ in failed] == ["dies"] and failed[0][1]
    assert attempts.read_text() == "x" * (1 + ray_backend.MAX_RETRIES)
