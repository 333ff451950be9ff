"""Typed errors: ``BnnError`` is the base of every user-facing error of every package.

It lives here, in the runtime, because the runtime may import nothing but numpy and numba: every
other package can import it from here. The CLI catches ``BnnError`` alone and prints ``str(err)``
as one line on stderr (exit 1); anything else is a bug and keeps its traceback.
"""


class BnnError(Exception):
    """Base of all user-facing errors: one readable line, no traceback."""


class BnnFormatError(BnnError, ValueError):
    """A .bnn file that is missing, truncated, corrupt, of another version, or inconsistent."""


class InputError(BnnError, ValueError):
    """An input batch the model cannot take: wrong dtype, shape, channel count, NaN, empty."""


class SettingError(BnnError, ValueError):
    """An invalid setting of the runtime itself: a thread count or tile size out of range."""


class FileWriteError(BnnError, OSError):
    """A file that cannot be written (no space left, no permission, a read-only disk): the path and the reason;
    the previous file, if any, is left as it was."""


def dims(*sizes: int) -> str:
    """Sizes in messages, one convention everywhere: height×width (``28×28``), or C×H×W for a whole input."""
    return "×".join(str(int(s)) for s in sizes)
