"""Atomic file writes: a reader sees the old file or the new one, never a part of either.

An OSError (no space left, no permission) becomes a ``FileWriteError`` naming the path; the
temporary file is removed and the previous file is left as it was.
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
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
