"""bnn_runtime: load a .bnn file and run it on CPU. Imports only numpy and numba -- never torch or onnx.

The file format (reader, writer, validation) and the bit layout live here, so that an edge
device needs nothing else; ``reference`` is the plain NumPy executor used as the oracle, and
``load`` gives the fast one (Numba popcount kernels, ``model.BnnModel``)::

    import bnn_runtime
    model = bnn_runtime.load("lenet5.bnn", threads=2)
    labels = model.predict(images)  # uint8 (N, H, W) or (N, C, H, W); int64 class indices
"""

import os as _os

# numba's OpenMP workers must still be spinning when the next batch arrives: with libgomp's
# effective default here (it drops to 1,000 spins when it counts more threads than CPUs) they
# slept between calls, and 2 threads ran LeNet-5 batches of 256 only 1.2x faster than one
# (262k vs 417k images/s with 300,000 spins, libgomp's documented default, about 0.1 ms).
# libgomp reads this when numba first launches its threads; a value the user set wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "300000")

from .errors import BnnFormatError, InputError  # noqa: E402
from .format import BnnFile, read_bnn, write_bnn  # noqa: E402
from .model import BnnModel, load  # noqa: E402
from .reference import reference_predict, reference_scores  # noqa: E402

__all__ = ["BnnFormatError", "InputError", "BnnFile", "read_bnn", "write_bnn", "reference_scores", "reference_predict",
           "BnnModel", "load"]
