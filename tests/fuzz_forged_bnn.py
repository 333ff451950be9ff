"""Fuzz the .bnn reader with forged files (valid checksums) under a memory cap: a typed error or a correct answer.

Run as a script (tests/test_forged_fuzz.py does, in a subprocess) so that ``RLIMIT_AS`` bounds this
process alone: a file that made the reader, the planner or an executor allocate gigabytes fails
here with MemoryError instead of swapping the machine. Two families of files:

* geometry: input -> conv (any kernel, padding, stride, OR pool) -> dense, every number drawn from small,
  edge and enormous integers, with arrays sized to match (small files asking for huge work);
* edits: a random valid model with one field anywhere replaced by an adversarial value (huge or
  negative integers, deep nesting, dtype strings numpy rejects or misreads, NaN, unknown keys).

Every file must either raise ``BnnFormatError`` (reading or planning) or load, and then the
runtime's scores equal the NumPy reference's on random inputs.

    python -m tests.fuzz_forged_bnn --examples 200 --mem-mib 2048
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnn_runtime.errors import BnnFormatError
from bnn_runtime.format import parse
from bnn_runtime.model import BnnModel
from bnn_runtime.reference import reference_scores

from .forged_bnn import conv_then_dense, forge, split
from .random_bnn import random_bnn

EDGE_INTS = [
    2**14,
    2**16 + 1,
    2**24,
    2**24 + 1,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -1,
    -(2**63),
    8421505,
]
adversarial_ints = st.one_of(
    st.integers(0, 6), st.integers(0, 6), st.sampled_from(EDGE_INTS), st.integers(-(2**70), 2**70)
)
dtype_strings = st.sampled_from(
    [
        "O",
        "V8",
        "<U4",
        "S3",
        "M8[ns]",
        "m8",
        "<c16",
        "i4,i4",
        "(2,)i4",
        "<f4",
        ">u8",
        "<i8",
        "|b1",
        "",
        "bogus",
        "<u8",
        "<i4",
        "|i1",
        "<f8",
    ]
)


def _nest(depth: int):
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


adversarial_values = st.one_of(
    adversarial_ints,
    dtype_strings,
    st.integers(1, 400).map(_nest),
    st.floats(),
    st.lists(adversarial_ints, max_size=4),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.dictionaries(st.text(max_size=5), adversarial_ints, max_size=2),
)


def manifest_paths(obj, prefix=()):
    """Every path (a tuple of keys and indices) into a parsed JSON value, the empty path first."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from manifest_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from manifest_paths(v, prefix + (i,))


def check(blob: bytes) -> str:
    """'refused' or 'ran' (the runtime equals the reference); anything else propagates and fails the fuzzer."""
    try:
        model = parse(blob)
    except BnnFormatError as e:
        assert "\n" not in str(e)
        return "refused"
    x = np.random.default_rng(0).integers(0, 256, (3, *model.input_shape), dtype=np.uint8)
    want = reference_scores(model, x)  # the reference runs every file the reader accepts, within the caps
    try:
        runtime = BnnModel(model, threads=1)
    except BnnFormatError as e:  # e.g. strides, which the reference computes and the kernels do not yet
        assert "\n" not in str(e)
        return "refused"
    assert np.array_equal(runtime.scores(x), want)
    return "ran"


@st.composite
def geometry_files(draw) -> bytes:
    """Small, fitting numbers, then 0-2 of them replaced by adversarial or merely large ones."""
    fields = {
        "strh": draw(st.integers(1, 3)),
        "strw": draw(st.integers(1, 3)),
        "c": draw(st.integers(1, 3)),
        "h": draw(st.integers(1, 12)),
        "w": draw(st.integers(1, 12)),
        "kh": draw(st.integers(1, 3)),
        "kw": draw(st.integers(1, 3)),
        "ph": draw(st.integers(0, 2)),
        "pw": draw(st.integers(0, 2)),
        "out": draw(st.integers(1, 8)),
        "sh": draw(st.integers(1, 2)),
        "sw": draw(st.integers(1, 2)),
    }
    fields["kh"], fields["kw"] = min(fields["kh"], fields["h"]), min(fields["kw"], fields["w"])
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2)):
        fields[name] = draw(st.one_of(adversarial_ints, st.integers(7, 3000)))
    f = fields
    pool = (f["sh"], f["sw"]) if draw(st.booleans()) else None
    if draw(st.integers(0, 3)) == 0:  # pool the whole output back to 1x1: a tiny file, any number of positions
        f["ph"], f["pw"] = draw(st.integers(0, 2**14)), draw(st.integers(0, 2**14))
        pool = (f["h"] + 2 * f["ph"] - f["kh"] + 1, f["w"] + 2 * f["pw"] - f["kw"] + 1)
    seed = draw(st.integers(0, 2**32 - 1))
    stride = (f["strh"], f["strw"]) if draw(st.integers(0, 3)) == 0 else None
    return conv_then_dense(
        np.random.default_rng(seed),
        f["c"],
        f["h"],
        f["w"],
        (f["kh"], f["kw"]),
        (f["ph"], f["pw"]),
        pool,
        f["out"],
        max_bits=2**16,
        stride=stride,
    )


@st.composite
def edited_files(draw) -> bytes:
    _, blob = random_bnn(np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    manifest, data = split(blob)
    for _ in range(draw(st.integers(0, 2))):
        paths = [p for p in manifest_paths(manifest) if p]
        path = draw(st.sampled_from(paths))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.integers(0, 5)) == 0:
            parent[draw(st.sampled_from(["stride", "extra", "dilation", "groups"]))] = draw(adversarial_values)
        else:
            parent[path[-1]] = draw(adversarial_values)
    return forge(manifest, data)


def run(examples: int) -> dict[str, int]:
    seen = {"refused": 0, "ran": 0}
    opts = dict(
        max_examples=examples, deadline=None, database=None, derandomize=False, suppress_health_check=list(HealthCheck)
    )

    @settings(**opts)
    @given(st.one_of(geometry_files(), edited_files()))
    def fuzz(blob):
        seen[check(blob)] += 1

    fuzz()
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--mem-mib", type=int, default=2048)
    args = ap.parse_args()
    cap = args.mem_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    seen = run(args.examples)
    print(f"forged files: {seen['refused']} refused, {seen['ran']} ran and matched the reference")


if __name__ == "__main__":
    main()
