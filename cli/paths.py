"""Output paths checked before any work starts: a run directory that is a file, a path below a file,
a folder without write permission -- each named in one line."""

from __future__ import annotations

import os
from pathlib import Path

from .common import CliError
from .terminal import plain


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_parents(option: str, path: Path) -> None:
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise CliError(f"{option} {plain(path)}: {plain(parent)} is a file, not a folder")
    base = _nearest_existing(path.parent)
    if base.is_dir() and not os.access(base, os.W_OK | os.X_OK):
        raise CliError(f"{option} {plain(path)}: no permission to write in {plain(base)}")


def check_output_dir(option: str, path: Path) -> None:
    """``path`` can be (or already is) a folder this process may write in."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{option} {plain(path)} is a file, not a folder")
    _check_parents(option, path)
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise CliError(f"{option} {plain(path)}: no permission to write in it")


def check_output_file(option: str, path: Path) -> None:
    """``path`` can be written as a file (an existing regular file is replaced, atomically)."""
    if path.is_dir():
        raise CliError(f"{option} {plain(path)} is a folder, not a file")
    if path.exists() and not path.is_file():  # the atomic rename would put a file in place of a device
        raise CliError(f"{option} {plain(path)} is not a regular file (a device, pipe or socket); choose a file path")
    _check_parents(option, path)
