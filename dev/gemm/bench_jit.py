"""numpy vs the numba / cython GEMMs (gemm_into), interleaved in one process, median of reps.

usage (from the repository root; one backend per process: two OpenMP users in one process
disturb each other's timings):
  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python dev/gemm/bench_jit.py 512,1024,2048 float32 numba,numba:jloop
  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python dev/gemm/bench_jit.py 1x4096x4096,33x65x17 float32 cython
SIZES: N (N^3) or MxKxN; backends: numba, numba:<kernel> (tile, jloop), cython."""
import sys, time, pathlib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # this checkout's pydl
import pydl  # noqa: E402
dt = np.dtype(sys.argv[2] if len(sys.argv) > 2 else "float32")
bes = (sys.argv[3] if len(sys.argv) > 3 else "numba,cython").split(",")
import importlib
import functools
def _get(be):
    name, _, kern = be.partition(":")
    f = importlib.import_module(f"pydl.backends.{name}.gemm").gemm_into
    return functools.partial(f, kernel=kern) if kern else f
F = {be: _get(be) for be in bes}
rng = np.random.default_rng(0)
print(f"threads {pydl.get_num_threads()}")
for s in sys.argv[1].split(","):
    m, k, n = (int(v) for v in s.split("x")) if "x" in s else (int(s),) * 3
    a = rng.standard_normal((m, k)).astype(dt); b = rng.standard_normal((k, n)).astype(dt)
    o = np.empty((m, n), dt)
    for be in bes: F[be](a, b, o)
    f = 2 * m * n * k
    reps = max(5, min(50, int(4e9 / f)))
    T = {be: [] for be in ["numpy"] + bes}
    for r in range(reps):
        t = time.perf_counter(); a @ b; T["numpy"].append(time.perf_counter() - t)
        for be in bes:
            t = time.perf_counter(); F[be](a, b, o); T[be].append(time.perf_counter() - t)
    g = {be: f / np.median(v) / 1e9 for be, v in T.items()}
    print(f"{dt.name} {m}x{k}x{n}: numpy {g['numpy']:6.1f} GFLOP/s | " + " | ".join(f"{be} {g[be]:6.1f} ({g[be]/g['numpy']:.2f}x)" for be in bes))
