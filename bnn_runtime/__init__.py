"""bnn_runtime: load a .bnn file and run it on CPU. Imports only numpy and numba -- never torch or onnx.

A warm process (the driver's machine code in the kernel cache: native.py) imports numpy and llvmlite
(numba's own dependency) only, not numba itself.

The file format (reader, writer, validation) and the bit layout live here, so that an edge
device needs nothing else; ``reference`` is the plain NumPy executor used as the oracle, and
``load`` gives the fast one (Numba popcount kernels, ``model.BnnModel``)::

    import bnn_runtime
    model = bnn_runtime.load("lenet5.bnn", threads=2)
    labels = model.predict(images)  # uint8 (N, H, W) or (N, C, H, W); int64 class indices
"""

from .errors import BnnError, BnnFormatError, InputError, SettingError
from .format import BnnFile, read_bnn, write_bnn
from .reference import reference_predict, reference_scores

__all__ = [
    "BnnError",
    "BnnFormatError",
    "InputError",
    "SettingError",
    "BnnFile",
    "read_bnn",
    "write_bnn",
    "reference_scores",
    "reference_predict",
    "BnnModel",
    "load",
]


def __getattr__(name: str):
    """``BnnModel`` and ``load`` import the runtime (and numba, where the kernels are not in the cache as machine
    code) on first use, not with every submodule: the file format and bit helpers serve bnn_train and bnn_export
    without them."""
    if name in ("BnnModel", "load"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
