"""Every user error type reaches the terminal as one ``error:`` line, exit 1, no traceback; a bug keeps its traceback.

The CLI recognises user errors by one base class, ``bnn_runtime.errors.BnnError``. Two checks:
each concrete error type is raised for real by a mistyped command (and the test records the type
that reached the CLI), and every subclass of ``BnnError`` in any package, present or future, goes
through the same path.
"""

import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import bnn_cli.main
from bnn_runtime.errors import BnnError

from .conftest import assert_user_error, run_cli
from .random_bnn import random_bnn


def _all_error_types() -> set[type]:
    for package in ("bnn_runtime", "bnn_train", "bnn_export", "bnn_cli"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
            importlib.import_module(info.name)
    found, todo = set(), [BnnError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


@pytest.fixture
def seen(monkeypatch) -> list[type]:
    """The types of the user errors the CLI caught during the test."""
    types: list[type] = []
    real = bnn_cli.main.is_user_error

    def recording(e: BaseException) -> bool:
        types.append(type(e))
        return real(e)

    monkeypatch.setattr(bnn_cli.main, "is_user_error", recording)
    return types


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid .bnn model of vector input, a corrupt one, and a batch of the wrong width."""
    d = tmp_path_factory.mktemp("errors")
    rng = np.random.default_rng(3)
    while True:  # a model taking vectors, so that a (N, width + 1) batch is the wrong shape
        bnn, data = random_bnn(rng)
        if len(bnn.manifest["input"]["shape"]) == 1:
            break
    (d / "ok.bnn").write_bytes(data)
    (d / "bad.bnn").write_bytes(data[: len(data) // 2])
    width = bnn.manifest["input"]["shape"][0]
    np.save(d / "wide.npy", np.zeros((2, width + 1), np.uint8))
    np.save(d / "ok.npy", np.zeros((2, width), np.uint8))
    (d / "empty").mkdir()
    return d


def _cases(d) -> dict[str, list]:
    """A command that raises each error type (``d``: the ``files`` folder; None to list the names)."""
    d = d or Path()
    return {
        "BnnFormatError": ["infer", d / "bad.bnn", "--npy", d / "ok.npy"],
        "InputError": ["infer", d / "ok.bnn", "--npy", d / "wide.npy"],
        "SettingError": ["infer", d / "ok.bnn", "--npy", d / "ok.npy", "--threads", "100000"],
        "ConfigError": ["train", "--lr", "0", "--out", d / "run"],
        "ArchError": ["train", "--model", "arch", "--arch", "8Q3", "--out", d / "run"],
        "DatasetError": ["train", "--dataset", "mnist", "--data-dir", d / "empty", "--out", d / "run"],
        "CheckpointError": ["export", d / "empty"],
        "ReproduceError": ["reproduce", "table99"],
        "NotBinaryError": ["train", "--model", "arch", "--arch", "8C3-8C3", "--act", "sign/ste", "--out", d / "run"],
        "CliError": ["infer", d / "ok.bnn", "--npy", d / "ok.npy", "--limit", "3"],
    }


# Raised only where the CLI cannot provoke them on purpose (a base class, a layer no model of bnn train has, a
# full disk: tests/test_cli_hostile_options.py fakes one, an unusable kernel cache): checked by the generic test.
NOT_PROVOKED = {"ExportError", "UnsupportedLayerError", "TrainError", "FileWriteError", "CacheError"}


@pytest.mark.parametrize("name", list(_cases(None)))
def test_each_user_error_type_is_one_line(files, seen, name):
    result = run_cli(*_cases(files)[name])
    assert_user_error(result, code=1)
    assert [t.__name__ for t in seen] == [name], result.stderr
    assert not (files / "run").exists()


def test_every_user_error_type_is_covered():
    names = {t.__name__ for t in _all_error_types()}
    covered = set(_cases(None)) | NOT_PROVOKED
    assert names <= covered, f"add a CLI case for {sorted(names - covered)}"


@pytest.mark.parametrize("error", sorted(_all_error_types(), key=lambda t: t.__name__), ids=lambda t: t.__name__)
def test_any_bnn_error_raised_in_a_command_is_one_line(monkeypatch, tmp_path, error):
    from bnn_train.config import RunConfig

    def fail(self):
        raise error("something the user can fix")

    monkeypatch.setattr(RunConfig, "validate", fail)
    assert_user_error(run_cli("train", "--out", tmp_path / "run"), "something the user can fix", code=1)


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    from bnn_train.config import RunConfig
    from bnn_train.reproduce.paper import PaperTableError

    def fail(self):
        raise PaperTableError("tables.csv line 3 is malformed")

    monkeypatch.setattr(RunConfig, "validate", fail)
    result = run_cli("train", "--out", tmp_path / "run")
    assert result.exit_code != 0 and isinstance(result.exception, PaperTableError)
