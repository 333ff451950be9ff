"""The numbers the planner (plan.py) and the kernels (kernels.py, driver.py) share, each written once.

A network is run from one row of integers per layer (``Plan.params``); the kernels read a row's
columns by these names, dispatch on its kind code, and size their scratch space from the slots
of ``Plan.sizes``. numba freezes these module-level integers into the compiled code; the kernel
cache is keyed on the source of every runtime module (cache.py), so editing them here recompiles.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- layer kinds
KIND_CONV_U8 = 0  # first convolution on uint8 pixels: integer sums over the taps of the rarer sign
KIND_DENSE_U8 = 1  # first dense layer on uint8 values: 8 bit planes
KIND_CONV_BITS = 2  # convolution of bits: im2col rows times weight rows (popcount product)
KIND_DENSE_BITS = 3  # dense layer on bits: weights by columns of 8 outputs
KIND_CONV_LUT = 4  # convolution of bits with at most 8 channels: table lookups
KIND_DENSE_VNNI = 5  # first dense layer on uint8 values with AVX512-VNNI
KIND_CONV_RUNS = 6  # convolution of bits, <= 8 channels, kernel rows of <= 64 bits: patches of kernel-row runs
KIND_NAMES = {
    KIND_CONV_U8: "conv_u8",
    KIND_DENSE_U8: "dense_u8",
    KIND_CONV_BITS: "conv_bits",
    KIND_DENSE_BITS: "dense_bits",
    KIND_CONV_LUT: "conv_lut",
    KIND_DENSE_VNNI: "dense_vnni",
    KIND_CONV_RUNS: "conv_runs",
}
# what a driver is compiled for (driver.build, Plan.uses): bit k for kind k, and this bit for a first
# convolution whose sums need int32 (conv_u8 compiles once per buffer type)
USES_CONV_U8_I32 = len(KIND_NAMES)
USES_SPLIT = USES_CONV_U8_I32 + 1  # and this bit for a model that may share one image between threads (split.py)
USES_ALL = (1 << (USES_SPLIT + 1)) - 1  # every kind: the driver that serves every model (bnn warmup)
SPLIT_TILE = 0  # the tile driver.forward is given to share each image between the threads (split.py)

# --------------------------------------------------------------------------- columns of a row of Plan.params
COL_KIND = 0
COL_LAST = 1  # 1: the layer writes the scores
COL_N_OUT = 2
COL_N_OUT_PAD = 3  # outputs rounded up to the kernel's register block
COL_NW = 4  # words (or 4-byte groups) of one weight row / input row
COL_W_OFF = 5  # offset of the layer's weights in Plan.wpool
COL_C_OFF = 6  # offset of its constants in Plan.cpool
COL_ALPHA = 7  # s = alpha popcount(a & w) + beta popcount(a) + gamma_o
COL_BETA = 8
COL_C = 9  # input channels, height, width (convolutions)
COL_H = 10
COL_W = 11
COL_KH = 12  # kernel
COL_KW = 13
COL_PH = 14  # zero padding
COL_PW = 15
COL_SH = 16  # convolution stride
COL_SW = 17
COL_OH = 18  # convolution output (before pooling)
COL_OW = 19
COL_POOL_H = 20  # pooling window (1 x 1: no pooling)
COL_POOL_W = 21
COL_POOL_SH = 22  # pooling stride
COL_POOL_SW = 23
COL_OUT_H = 24  # pooled output
COL_OUT_W = 25
COL_ACC16 = 26  # conv_u8: sums fit int16
COL_ROWS_PER_IMAGE = 27  # im2col rows / bit planes per image
COL_LUT_G = 28  # conv_lut: pixels per tap group, tap groups, table length (int16)
COL_LUT_TAPS = 29
COL_LUT_SIZE = 30
COL_GRID_H = 31  # conv_u8: rows and pitch of one phase of the padded image (plan.phase_grid)
COL_GRID_W = 32
COL_RUN_SLOT = 33  # conv_runs: bits per kernel row slot (32: two per word, or 64)
COL_TAP_COPY = 34  # conv_u8: elements per column-shifted copy of the padded image (0: no copies; plan.phase_grid)
COL_OUT_WORDS = 35  # words of the layer's output bits (of one image)
COL_CHUNKS = 36  # split.py: chunks of the layer when threads share an image (1: one piece)
COL_CHUNK_LEN = 37  # split.py: pooled positions (convolution) or outputs (dense) per chunk
COL_SPLIT_STATE = 38  # split.py: offset of the layer's claim counter and chunk statuses in an image's block
COL_SPLIT_BITS = 39  # split.py: offset of the layer's shared output bits in an image's block
COL_SPLIT_WORDS = 40  # split.py: words of those bits (the output and a spare word, or what the next layer reads)

COLUMNS = tuple(name for _, name in sorted((v, k[4:].lower()) for k, v in globals().items() if k.startswith("COL_")))
# the column names, in index order (COLUMNS[COL_X] == "x")

# --------------------------------------------------------------------------- scratch slots of Plan.sizes
SLOT_BITS = 0  # words of one image's bit string (the ping-pong activations)
SLOT_ROWS = 1  # im2col rows / bit planes per image
SLOT_ROW_WORDS = 2  # words of one such row
SLOT_I16 = 3  # int16 buffer (conv_u8 with int16 sums, conv_lut window maxima)
SLOT_I32 = 4  # int32 buffer (conv_u8 with int32 sums, conv_lut tap grid)
SLOT_SPLIT = 5  # split.py: entries of one image's block of shared state
N_SLOTS = 6

TAP_LANES = 64  # first_layer.conv_u8 (simd.py): conv output positions per block

# --------------------------------------------------------------------------- one thread's scratch (driver.forward)
VNNI_WORK = 3 * 8 * 16  # int64 results of dense_vnni's largest register block (3 vectors x 8 images x 16 lanes)
SPLIT_CURSOR = 8  # split.next_chunk's (image, layer, ...) of one thread


def scratch_parts(tile, sizes, k):
    """int64 words of the parts of one thread's scratch for tiles of ``tile`` images, ``k`` scores each, in order:
    the two bit strings of the tile (read a spare word past their bits), xsum, the im2col rows / bit planes, their
    bit offsets, the int16 and the int32 buffer, the tile's own scores (int32), the kernels' work (gemm: rows + 8,
    dense_u8: images + 8, dense_vnni: VNNI_WORK), split.next_chunk's cursor (SPLIT_CURSOR). Plain Python: model.py
    sizes the scratch it passes to driver.forward with it, and the driver, compiled, cuts it up (no kernel
    allocates: cache.QuickLoadCache)."""
    nrows = sizes[SLOT_ROWS] * tile
    return (
        2 * tile * sizes[SLOT_BITS],
        tile,
        nrows * sizes[SLOT_ROW_WORDS],
        nrows,
        (sizes[SLOT_I16] + 3) // 4,
        (sizes[SLOT_I32] + 1) // 2,
        (tile * k + 1) // 2,
        max(nrows, tile) + VNNI_WORK,
        SPLIT_CURSOR,
    )
