"""Atomic file writes: a reader sees the old file or the new one, never a part of either.

An OSError (no space left, no permission) becomes a ``FileWriteError`` naming the path; the
temporary file is removed and the previous file is left as it was. Only a regular file is ever
replaced: a rename over a device, a pipe or a socket (``-o /dev/null`` run as root) would put a
file in its place, so such a path is refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import FileWriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def special_file(path: str | Path) -> bool:
    """True for an existing path that is neither a regular file nor a folder (a device, a pipe, a socket):
    reading one may block forever (a pipe without a writer) and replacing one destroys it."""
    p = Path(path)
    try:
        return p.exists() and not p.is_file() and not p.is_dir()
    except OSError:  # a name too long, a loop of links: not a special file, the caller's open() will say what
        return False


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    if special_file(path) or path.is_dir():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)"
        raise FileWriteError(f"cannot write {path}: it is {kind}, and a write would replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise FileWriteError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a quota, a read-only remount: the old file stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise FileWriteError(
            f"cannot write {path}: {e.strerror or e} (the previous file, if any, is unchanged)"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
