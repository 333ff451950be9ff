"""User-facing errors of the exporter: one readable line each."""

from bnn_runtime.errors import BnnError


class ExportError(BnnError):
    """The run cannot be exported as asked (missing or foreign run, failed check, unwritable output)."""


class UnsupportedLayerError(ExportError):
    """A layer neither exporter can write (a dilated or grouped convolution, say): no .bnn and no ONNX."""


class NotBinaryError(ExportError):
    """The model has float weights or a non-bit activation: no .bnn, but ONNX of the float network works."""
