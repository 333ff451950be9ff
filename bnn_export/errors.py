"""User-facing errors of the exporter: one readable line each."""


class ExportError(Exception):
    """The run cannot be exported as asked (missing or foreign run, failed check, unwritable output)."""


class NotBinaryError(ExportError):
    """The model has float weights or a non-bit activation: no .bnn, but ONNX of the float network works."""
