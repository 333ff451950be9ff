"""What a .bnn file may ask of a reader: sizes, nesting, scratch memory and work per image (docs/FORMAT.md).

The container is documented and its checksum is no secret, so any file may be forged. The reader
therefore bounds everything a manifest can make it do before it trusts it: the manifest's JSON
(integer literals, nesting), every size field, and -- from the layer geometry alone, in Python's
unbounded integers, before any array is allocated -- the scratch memory and the work one image
needs and the largest |sum| each layer can produce. Every refusal is a ``BnnFormatError`` that
names the field and the limit.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BnnFormatError

MAX_FILE_BYTES = 2**31  # a .bnn file larger than this is refused before it is read
MAX_MANIFEST_BYTES = 16 * 2**20  # inflated manifest
MAX_JSON_DEPTH = 64  # nesting of objects and lists in the manifest
MAX_INT_DIGITS = 19  # an integer literal in the manifest has at most this many digits (|n| < 10**19)
MAX_SIZE = 2**24  # any one size field (a shape entry, a kernel side, a padding, out_features, fan_in)
MAX_LAYERS = 1024
MAX_CLASSES = 2**16
MAX_SCRATCH_BYTES = 2**28  # working memory of one image (see scratch_bytes)
MAX_WORK = 2**32  # multiply-accumulates of one image (see layer_cost)
# Scratch per image may be at most this many times (file bytes + input bytes per image): 8 bytes (an int64 sum)
# times 512 output channels at every input pixel. Why this multiple: docs/FORMAT.md "Limits".
SCRATCH_PER_BYTE = 8 * 512
INT32_MAX = 2**31 - 1  # every sum and threshold of the format is an int32


def _refuse_constant(name: str):
    raise BnnFormatError(f"manifest holds {name}, which is not JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BnnFormatError(f"manifest holds an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (the parser's own limit is Python's stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                break
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def load_manifest_json(text: bytes) -> Any:
    """The manifest's JSON, with bounded integer literals and nesting; BnnFormatError for anything else."""
    try:
        value = json.loads(text.decode("utf-8"), parse_int=_bounded_int, parse_constant=_refuse_constant)
    except UnicodeDecodeError as e:
        raise BnnFormatError(f"manifest is not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BnnFormatError(f"manifest is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise BnnFormatError(f"manifest nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # e.g. an integer conversion the interpreter refuses
        raise BnnFormatError(f"manifest is not valid JSON ({e})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BnnFormatError(f"manifest nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def check_size(value: int, field: str, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    if not minimum <= value <= maximum:
        raise BnnFormatError(f"{field} is {value}, outside [{minimum}, {maximum}]")
    return value


def sum_bound(in_encoding: str, fan_in: int) -> int:
    """The largest |sum| a layer can produce: 255 per uint8 input, 1 per bit, times the fan-in."""
    return (255 if in_encoding == "uint8" else 1) * fan_in


def check_sum_bound(where: str, in_encoding: str, fan_in: int) -> None:
    """The format's sums are int32: refuse a layer whose exact sum could leave that range."""
    bound = sum_bound(in_encoding, fan_in)
    if bound > INT32_MAX:
        raise BnnFormatError(
            f"{where}: its sums can reach {bound} ({in_encoding} input, fan_in {fan_in}), beyond int32 ({INT32_MAX})"
        )


def layer_cost(
    in_shape: tuple[int, ...],
    in_encoding: str,
    out: int,
    fan_in: int,
    conv_out: tuple[int, int] | None,
    padding: tuple[int, int] = (0, 0),
) -> tuple[int, int]:
    """(scratch bytes, multiply-accumulates) of one layer for one image, exact Python integers.

    Scratch counts what the NumPy reference (the heavier of the two executors) holds as int64:
    the zero-padded input, the pre-pooling sums, and one patch row of words per output position.
    """
    positions = conv_out[0] * conv_out[1] if conv_out else 1
    if conv_out:
        c, h, w = in_shape
        inputs = c * (h + 2 * padding[0]) * (w + 2 * padding[1])
    else:
        inputs = fan_in
    words = -(-fan_in // 64)
    scratch = 8 * (inputs + out * positions + positions * words)
    return scratch, out * positions * fan_in


def scratch_allowance(file_bytes: int, input_bytes: int) -> int:
    """The most scratch memory per image a file of ``file_bytes`` on inputs of ``input_bytes`` may ask for:
    ``SCRATCH_PER_BYTE`` times their sum, and never more than ``MAX_SCRATCH_BYTES``."""
    return min(MAX_SCRATCH_BYTES, SCRATCH_PER_BYTE * (file_bytes + input_bytes))


def check_budget(costs: list[tuple[str, int, int]], file_bytes: int, input_bytes: int) -> None:
    """Refuse a model whose per-image scratch memory or work (summed over its layers) exceeds the caps: the
    absolute ones, and for scratch the one in proportion to the file's size (``scratch_allowance``)."""
    scratch = sum(s for _, s, _ in costs)
    work = sum(w for _, _, w in costs)
    worst = max(costs, key=lambda c: c[1])[0]
    if scratch > MAX_SCRATCH_BYTES:
        raise BnnFormatError(
            f"layers need {scratch} bytes of scratch memory per image (at most {MAX_SCRATCH_BYTES}; most in {worst})"
        )
    allowed = scratch_allowance(file_bytes, input_bytes)
    if scratch > allowed:
        raise BnnFormatError(
            f"layers need {scratch} bytes of scratch memory per image, out of proportion to a file of {file_bytes} "
            f"bytes on {input_bytes}-byte inputs (at most SCRATCH_PER_BYTE {SCRATCH_PER_BYTE} x "
            f"({file_bytes} + {input_bytes}) = {allowed}; most in {worst})"
        )
    if work > MAX_WORK:
        worst = max(costs, key=lambda c: c[2])[0]
        raise BnnFormatError(f"layers need {work} multiply-accumulates per image (at most {MAX_WORK}; most in {worst})")
