"""Times pydl's GEMM variants against NumPy (and PyTorch when importable), side by side.

    PYTHONPATH=. python dev/gemm/bench.py [--threads N] [--reps R] [--dtype float32|float64]
                                           [--shapes quick|square|dl|linear|all] [--variants a,b]

Variants are the cpp kernel paths: ``avx512`` / ``avx2`` / ``scalar`` (the packed
path at that SIMD level), ``naive`` (the simple reference driver), ``direct``
(no packing, small M only). For every shape, every contender runs in turn
inside one loop (interleaved, so machine noise hits them alike; each after an
untimed warm-up burst, so the previous library's spinning threads are gone)
and the best of ``reps`` is kept. Prints GFLOP/s and the ratio to NumPy. Set the thread
count before NumPy loads: this script sets OPENBLAS_NUM_THREADS/OMP_NUM_THREADS
from --threads itself.
"""
import argparse
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=5)
p.add_argument("--dtype", default="float32")
p.add_argument("--shapes", default="all")
p.add_argument("--variants", default="avx512,avx2")
p.add_argument("--sizes", default="512,1024,2048,4096", help="square sizes")
p.add_argument("--kc", type=int, default=0)
p.add_argument("--mc", type=int, default=0)
p.add_argument("--nc", type=int, default=0)
args = p.parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402

from pydl import _cpp  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(args.threads)
except ImportError:
    torch = None

_cpp.set_num_threads(args.threads)
_cpp.gemm_tuning(args.kc, args.mc, args.nc)
SQUARE = [(n, n, n) for n in map(int, args.sizes.split(","))]
DL = [(64, 256, 784), (256, 512, 4608), (2048, 3072, 768), (1, 4096, 4096), (33, 17, 65)]
LINEAR = [(64, 256, 784), (256, 512, 4608), (2048, 3072, 768), (1, 4096, 4096)]  # rows, out, in
QUICK = [(1024, 1024, 1024), (64, 256, 784), (33, 17, 65)]
dt = np.dtype(args.dtype)
sfx = "f32" if dt == np.float32 else "f64"
rng = np.random.default_rng(0)


def best(fns, reps, flops):
    """Best time per call of each contender over ``reps`` rounds. Each round
    runs a contender for ~5 ms untimed, then ~20 ms timed: thread pools of the
    previous contender (OpenBLAS, OpenMP, torch) spin for a while after their
    call and would otherwise steal the cores from the next one's first calls."""
    t = {k: float("inf") for k in fns}
    inner = {}
    for k, f in fns.items():
        one = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            f()
            one = min(one, time.perf_counter() - t0)
        inner[k] = max(1, int(0.02 / max(one, 1e-7)))
    for _ in range(reps):
        for k, f in fns.items():
            for _ in range(max(1, inner[k] // 4)):
                f()
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                f()
            t[k] = min(t[k], (time.perf_counter() - t0) / inner[k])
    return {k: flops / v / 1e9 for k, v in t.items()}


def row(label, g):
    base = g["numpy"]
    cells = "  ".join(f"{k} {v:7.1f} ({v / base:4.2f}x)" for k, v in g.items())
    print(f"{label:>22}  {cells}", flush=True)


def matmul_rows(shapes):
    for m, n, k in shapes:
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
        out = np.empty((m, n), dt)
        fns = {"numpy": lambda: np.matmul(a, b, out=out)}
        for v in args.variants.split(","):
            simd, algo = (v, "") if v in ("avx512", "avx2", "scalar") else ("", v)
            fns[v] = lambda simd=simd, algo=algo: getattr(_cpp, "gemm_matmul_" + sfx)(a, b, out, simd, algo)
        if torch is not None:
            ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
            fns["torch"] = lambda: torch.matmul(ta, tb, out=to)
        row(f"{m}x{k} @ {k}x{n}", best(fns, args.reps, 2.0 * m * n * k))


def linear_rows(shapes):
    for r, o, i in shapes:
        x = rng.standard_normal((r, i)).astype(dt)
        w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(dt)
        b = rng.standard_normal(o).astype(dt)
        out = np.empty((r, o), dt)
        fns = {"numpy": lambda: np.maximum(x @ w.T + b, 0)}
        for v in args.variants.split(","):
            simd, algo = (v, "") if v in ("avx512", "avx2", "scalar") else ("", v)
            fns[v] = lambda simd=simd, algo=algo: getattr(_cpp, "gemm_linear_" + sfx)(
                x, w, b, "relu", out, None, simd, algo)
        if torch is not None:
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            fns["torch"] = lambda: torch.relu(torch.nn.functional.linear(tx, tw, tb))
        row(f"linear+relu {r}x{i}->{o}", best(fns, args.reps, 2.0 * r * o * i))


print(f"# {dt.name}, {args.threads} thread(s), best of {args.reps}; GFLOP/s (ratio to numpy)")
sel = args.shapes
if sel in ("quick",):
    matmul_rows(QUICK)
if sel in ("square", "all"):
    matmul_rows(SQUARE)
if sel in ("dl", "all"):
    matmul_rows(DL)
if sel in ("linear", "all"):
    linear_rows(LINEAR)
sys.exit(0)
