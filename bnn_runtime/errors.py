"""Typed errors of the runtime: one readable line each, raised before any kernel runs."""


class BnnFormatError(ValueError):
    """A .bnn file that is missing, truncated, corrupt, of another version, or inconsistent."""


class InputError(ValueError):
    """An input batch the model cannot take: wrong dtype, shape, channel count, NaN, empty."""
