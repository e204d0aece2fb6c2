"""A GEMV beside NumPy in one process: pydl's x @ B and linear + relu against NumPy's, interleaved,
B (4096 x 4096 float32, 64 MB) rotated among 4 copies so every call reads it from memory; medians
in ms and GB/s. The pydl calls follow NumPy's, so OpenBLAS's threads may still spin when they
start (pydl/backends/_neighbours.py decides: park them, or run on one thread beside them).

    PYTHONPATH=. python dev/build/gemv_neighbours.py
    BYTE_FLOPS=0 PYTHONPATH=. python dev/build/gemv_neighbours.py   # the kernel's size in flops only

Session 14 (Zen 5, AVX-512): pydl's GEMV beside NumPy 2.2-2.4 ms by flops alone, 1.8-2.1 with
the bytes counted (BYTE_FLOPS 8).
"""
import os
import time

import numpy as np

import pydl
from pydl import ops
from pydl.backends import _neighbours

if "BYTE_FLOPS" in os.environ:
    _neighbours.BYTE_FLOPS = float(os.environ["BYTE_FLOPS"])
rng = np.random.default_rng(0)
K = N = 4096
Bs = [rng.standard_normal((K, N)).astype(np.float32) for _ in range(4)]
x = rng.standard_normal((1, K)).astype(np.float32)
bias = rng.standard_normal(N).astype(np.float32)
fs = {"cpp x@B": lambda B: ops.matmul(x, B, backend="cpp"),
      "cpp linear+relu": lambda B: ops.linear(x, B, bias, activation="relu", backend="cpp"),
      "NumPy x@B": lambda B: x @ B,
      "NumPy relu(x@W.T+b)": lambda B: np.maximum(x @ B.T + bias, 0)}
ts = {k: [] for k in fs}
i = 0
for _ in range(25):
    for k, f in fs.items():
        i += 1
        B = Bs[i % len(Bs)]
        t = time.perf_counter()
        f(B)
        ts[k].append(time.perf_counter() - t)
print(pydl.__version__, "BYTE_FLOPS", _neighbours.BYTE_FLOPS)
for k, v in ts.items():
    print(f"{k:22s} {np.median(v) * 1e3:6.2f} ms  {K * N * 4 / np.median(v) / 1e9:5.1f} GB/s")
