"""GEMM A/B in one process: NumPy, this checkout's pydl._cpp_<level> and (optionally) another build
of the same level (dev/build/two_builds.py), alternating in batches of 0.2 s; inputs cold (rotated
over copies filling 64 MB); OpenBLAS parked before pydl's batches, pydl's threads left to sleep
before NumPy's; the median call of a batch, the best batch of R rounds (session 16's figures).

    PYTHONPATH=. python dev/gemm/ab.py "MxKxN,..." [OTHER.so]
    LVL=avx2|avx512 (default avx2)  T=threads (default 2; NumPy gets the same)  R=rounds (7)
    LIN=1: linear + ReLU, B given as the (N, K) weight; NumPy does its product, bias and maximum

Prints GFLOP/s and x NumPy for each contender ("new" = this checkout, "old" = OTHER.so).
"""
import importlib
import os
import sys
import time

T = int(os.environ.get("T", "2"))
LVL = os.environ.get("LVL", "avx2")
os.environ["OPENBLAS_NUM_THREADS"] = str(T)
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(here, "..", "build")]

import numpy as np  # noqa: E402

from pydl.backends import _neighbours as nb  # noqa: E402
from two_builds import pair  # noqa: E402

LIN = os.environ.get("LIN") == "1"
R = int(os.environ.get("R", "7"))
if len(sys.argv) > 2:
    mods = dict(zip(("new", "old"), pair(sys.argv[2], LVL, T)))
else:
    mods = {"new": importlib.import_module(f"pydl._cpp_{LVL}")}
    mods["new"].set_simd_level(LVL)
    mods["new"].set_num_threads(T)


def batch(f, copies, secs=0.2):
    """Median seconds of f(i) over a batch of at least secs (and 5 calls), i rotating the copies."""
    for i in range(2):
        f(i % copies)
    ts, t0, i = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < secs or len(ts) < 5:
        t = time.perf_counter()
        f(i % copies)
        ts.append(time.perf_counter() - t)
        i += 1
    ts.sort()
    return ts[len(ts) // 2]


nb._scan()
for shape in sys.argv[1].split(","):
    m, k, n = map(int, shape.split("x"))
    rng = np.random.default_rng(0)
    copies = max(1, int(np.ceil(64e6 / (4 * (m * k + k * n)))))
    A = [rng.standard_normal((m, k), dtype=np.float32) for _ in range(copies)]
    B = [rng.standard_normal((n, k) if LIN else (k, n), dtype=np.float32) for _ in range(copies)]
    bias = rng.standard_normal(n, dtype=np.float32)
    out = np.empty((m, n), np.float32)
    gflop = 2 * m * n * k / 1e9
    times = {}
    for _ in range(R):
        time.sleep(0.005)
        if LIN:
            times.setdefault("numpy", []).append(batch(lambda i: np.maximum(np.add(A[i] @ B[i].T, bias), 0), copies))
        else:
            times.setdefault("numpy", []).append(batch(lambda i: np.matmul(A[i], B[i], out=out), copies))
        for name, mod in mods.items():
            nb.park()
            if LIN:
                f = lambda i, mod=mod: mod.gemm_linear_f32(A[i], B[i], bias, "relu", out, None, "", "")  # noqa: E731
            else:
                f = lambda i, mod=mod: mod.gemm_matmul_f32(A[i], B[i], out, "", "")  # noqa: E731
            times.setdefault(name, []).append(batch(f, copies))
    best = {name: min(v) for name, v in times.items()}
    print(f"{LVL} T{T} {'linear+relu' if LIN else 'matmul'} {shape}: "
          + "  ".join(f"{name} {gflop / v:.1f}" for name, v in best.items()) + " GFLOP/s  | x numpy: "
          + "  ".join(f"{name} {best['numpy'] / v:.3f}" for name, v in best.items() if name != "numpy"), flush=True)
