"""Time a process's first predictions: import + load, batch 1, then a batch of 256 (random pixels).

Run it twice with an empty kernel cache to see the first start and the warm start::

    export BNN_CACHE_DIR=$(mktemp -d)
    /usr/bin/time -f "%e s wall %U s user" python examples/first_start.py lenet5.bnn   # compiles
    /usr/bin/time -f "%e s wall %U s user" python examples/first_start.py lenet5.bnn   # loads the cache
"""

import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402

import bnn_runtime  # noqa: E402

model = bnn_runtime.load(sys.argv[1])
x = np.random.default_rng(0).integers(0, 256, (256, *model.input_shape), dtype=np.uint8)
t1 = time.perf_counter()
model.predict(x[:1])
t2 = time.perf_counter()
model.predict(x)
t3 = time.perf_counter()
print(f"import+load {t1 - t0:.2f} s, batch 1 {t2 - t1:.2f} s, batch 256 {t3 - t2:.3f} s, total {t3 - t0:.2f} s")
