"""Elementwise A/B of two builds in one process: this checkout's module (pydl._cpp_<level>)
against a second build of the same level loaded from a file, alternated call by call, median of
REPS (default 200), 1M float32 (warm), two threads.

    PYTHONPATH=. python dev/elementwise/ab.py OTHER.so LEVEL

B/A speed > 1: the other build is faster (session 14: gelu's one-fit normal CDF, 1.29x AVX-512,
1.34x AVX2; relu, elu, sigmoid 0.95-1.02x).
"""
import os
import sys
import time

import numpy as np

import pydl  # noqa: F401  (loads the package the A module belongs to)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"))
from two_builds import pair  # noqa: E402

other, lv = sys.argv[1], sys.argv[2]
A, B = pair(other, lv)
rng = np.random.default_rng(0)
x = rng.standard_normal((1024, 1024)).astype(np.float32)
g = rng.standard_normal(x.shape).astype(np.float32)
outs = {"A": np.empty_like(x), "B": np.empty_like(x)}
cases = {
    "relu f": lambda m, o: m.elementwise_relu_f32(x, o),
    "relu b": lambda m, o: m.elementwise_relu_backward_f32(g, x, o),
    "elu f": lambda m, o: m.elementwise_elu_f32(x, o, 1.0),
    "elu b": lambda m, o: m.elementwise_elu_backward_f32(g, x, o, 1.0),
    "sigmoid f": lambda m, o: m.elementwise_sigmoid_f32(x, o),
    "gelu f": lambda m, o: m.elementwise_gelu_f32(x, o, "none"),
    "gelu b": lambda m, o: m.elementwise_gelu_backward_f32(g, x, o, "none"),
}
for k, f in cases.items():
    ts = {"A": [], "B": []}
    for _ in range(int(os.environ.get("REPS", "200"))):
        for nm, m in (("A", A), ("B", B)):
            t = time.perf_counter()
            f(m, outs[nm])
            ts[nm].append(time.perf_counter() - t)
    ma, mb = np.median(ts["A"]), np.median(ts["B"])
    print(f"{lv} {k:10s} A {ma * 1e6:6.1f} us  B {mb * 1e6:6.1f} us  B/A speed {ma / mb:.2f}", flush=True)
