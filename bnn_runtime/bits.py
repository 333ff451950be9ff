"""The bit layout, defined once: every other module packs and unpacks through these functions.

* A vector of n bits is stored in ``ceil(n / 64)`` little-endian ``uint64`` words.
* Element k lives in word ``k // 64`` at bit ``k % 64`` counted from the least significant bit
  (``np.packbits(..., bitorder="little")`` on a little-endian word).
* Padding bits (k >= n) are 0, so they never reach a popcount of ``a & w``; for ``a ^ w`` both
  operands have 0 there and the XOR is 0 too.
* Encodings: weights and ``pm1`` activations store +1 as bit 1 and -1 as bit 0; ``01``
  (Heaviside) activations store their value.

Dot products of a bit vector ``a`` with +-1 weights ``w`` (n = number of real elements):

* ``{0,1} . {+-1}``: ``2 * popcount(a & w) - popcount(a)``
* ``{+-1} . {+-1}``: ``n - 2 * popcount(a ^ w)``
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64
WORD_DTYPE = np.dtype("<u8")


def n_words(n: int) -> int:
    """Words needed for n bits."""
    return (n + WORD_BITS - 1) // WORD_BITS


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a {0,1} array (any integer or bool dtype) into uint64 words."""
    bits = np.asarray(bits)
    n = bits.shape[-1]
    if bits.dtype != np.bool_:
        if bits.size and (bits.min() < 0 or bits.max() > 1):
            raise ValueError("pack_bits expects values in {0, 1}")
    padded = np.zeros(bits.shape[:-1] + (n_words(n) * WORD_BITS,), dtype=np.uint8)
    padded[..., :n] = bits
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(WORD_DTYPE).astype(np.uint64, copy=False)


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of pack_bits: uint64 words (..., n_words(n)) -> uint8 {0,1} array (..., n)."""
    words = np.ascontiguousarray(words, dtype=WORD_DTYPE)
    if words.shape[-1] != n_words(n):
        raise ValueError(f"{words.shape[-1]} words cannot hold exactly {n} bits")
    as_bytes = words.view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, count=n, bitorder="little")


def sign_is_positive(x):
    """True where sign(x) = +1, that is x >= 0: sign(0) = +1 (and H(0) = 1) for every binary weight and
    activation, in training, in both exporters and here. Works on NumPy arrays and torch tensors alike."""
    return x >= 0


def pack_signs(values: np.ndarray) -> np.ndarray:
    """Pack +-1 values (last axis) with +1 -> bit 1, -1 -> bit 0."""
    values = np.asarray(values)
    if values.size and not np.isin(values, (-1, 1)).all():
        raise ValueError("pack_signs expects values in {-1, +1}")
    return pack_bits(values > 0)


def unpack_signs(words: np.ndarray, n: int) -> np.ndarray:
    """Inverse of pack_signs: int8 array of +-1."""
    return unpack_bits(words, n).astype(np.int8) * 2 - 1


def padding_is_zero(words: np.ndarray, n: int) -> bool:
    """True when every bit at position >= n of the last axis is 0 (the layout's invariant)."""
    words = np.asarray(words, dtype=np.uint64)
    rem = n % WORD_BITS
    if rem == 0 or words.shape[-1] == 0:
        return True
    mask = np.uint64((1 << rem) - 1)
    return bool(((words[..., -1] & ~mask) == 0).all())
