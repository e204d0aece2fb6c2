"""Side-by-side A/B of the cpp pooling kernels: this checkout's cpp, a saved copy of an older cpp
build (--old DIR: a folder holding the old _cpp_<level>*.so files), and the cython backend, in one
process, calls interleaved (old, new, cython, old, new, ...), best of --repeat per contender.
Old and new run under this checkout's adapter (pydl/backends/cpp/pool.py, `_bind`): the A/B is
of the kernels.

    PYTHONPATH=. python dev/pool/ab.py --old /tmp/pool_old --threads 1,2 [--sets conf,small,bench] [--big-repeat 21]
    PYDL_SIMD=avx2 PYTHONPATH=. python dev/pool/ab.py ...       # the AVX2 level (new and old)

Sets: "conf" = the registry's conformance cases of the three pool ops; "bench" = the spec's
BENCH shapes (N32 and N4, C64 112x112; N32 C512 7 -> 1, N32 C64 56 -> 7); "small" = N100 C64
planes of --sizes (default 4..12) under the usual geometries. Each case runs forward alone and
forward + backward (forward with saved indices for max, then the backward), float32 and float64.
Prints one row per (case, dtype, threads, pass): times in ms and the ratios new/old, new/cython
(below 1: the new cpp is faster).
"""
import argparse
import importlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import pydl  # noqa: E402
from pydl import _cpp, registry  # noqa: E402
from pydl.backends.cpp import pool as cpp_pool  # noqa: E402


def small_cases(sizes, n=100, c=64):
    geo = [("max_pool2d", dict(kernel_size=2, stride=2)),
           ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
           ("max_pool2d", dict(kernel_size=3, stride=1, padding=1)),
           ("avg_pool2d", dict(kernel_size=2, stride=2)),
           ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1)),
           ("avg_pool2d", dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
           ("adaptive_avg_pool2d", dict(output_size=2)),
           ("adaptive_avg_pool2d", dict(output_size=1))]
    return [(op, (n, c, s, s), hp) for s in sizes for op, hp in geo]


def bench_cases():
    out = []
    for n in (32, 4):
        out += [("max_pool2d", (n, 64, 112, 112), dict(kernel_size=2, stride=2)),
                ("max_pool2d", (n, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1)),
                ("avg_pool2d", (n, 64, 112, 112), dict(kernel_size=2, stride=2)),
                ("avg_pool2d", (n, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1)),
                ("adaptive_avg_pool2d", (n, 512, 7, 7), dict(output_size=1)),
                ("adaptive_avg_pool2d", (n, 64, 56, 56), dict(output_size=7))]
    return out


def conf_cases():
    out = []
    rng = np.random.default_rng(0)
    for op in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
        for case in registry.SPECS[op].cases(rng, np.float32):
            args = dict(case.args)
            x = args.pop("x")
            out.append((op, tuple(x.shape), args))
    return out


def label(op, xs, hp):
    return f"{op.replace('_pool2d', '')} {'x'.join(map(str, xs))} " + \
        " ".join(f"{k}={v}" for k, v in hp.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default="/tmp/pool_old", help="folder holding oldcpp/_cpp_<level>*.so")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--sets", default="conf,small,bench")
    ap.add_argument("--sizes", default="4,5,6,7,8,9,10,11,12")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--only", default="")
    ap.add_argument("--big-repeat", type=int, default=0,
                    help="repeats of the cases over 20 MB (default: max(3, --repeat // 3))")
    args = ap.parse_args()

    sys.path.insert(0, args.old)
    level_mod = os.path.basename(_cpp.__file__).split(".")[0]       # _cpp_avx512 / _cpp_avx2
    old = importlib.import_module(f"oldcpp.{level_mod}")
    new = _cpp
    old.set_simd_level(new.simd_level())
    print(f"# new {new.__file__} level {new.simd_level()}; old {old.__file__} level {old.simd_level()}")
    print(f"# load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    cases = []
    for s in args.sets.split(","):
        cases += {"conf": conf_cases, "bench": bench_cases,
                  "small": lambda: small_cases([int(v) for v in args.sizes.split(",")])}[s]()
    cases = [c for c in cases if args.only in label(*c)]
    rng = np.random.default_rng(1)
    print(f"{'case':58s} {'dtype':7s} {'thr':3s} {'pass':4s} {'old ms':>9s} {'new ms':>9s} {'cython':>9s}"
          f" {'new/old':>7s} {'new/cy':>7s}")
    for nthreads in [int(t) for t in args.threads.split(",")]:
        pydl.set_num_threads(nthreads)
        old.set_num_threads(nthreads)
        for op, xs, hp in cases:
            fwd = getattr(pydl.ops, op)
            bwd = getattr(pydl.ops, op + "_backward")
            for dt in args.dtypes.split(","):
                x = rng.standard_normal(xs).astype(dt)
                out = fwd(x, **hp, backend="cython")
                g = rng.standard_normal(out.shape).astype(dt)

                def f(b):
                    return fwd(x, **hp, backend=b)

                def fb(b):
                    o, saved = fwd.with_saved(x, **hp, backend=b)
                    return bwd(g, x, **hp, saved=saved, backend=b)

                big = x.nbytes > 20e6
                rep = (args.big_repeat or max(3, args.repeat // 3)) if big else args.repeat
                inner = 1 if x.nbytes > 1e6 else (5 if x.nbytes > 1e4 else 20)
                for name, fn in (("fwd", f), ("f+b", fb)):
                    best = {"old": np.inf, "new": np.inf, "cython": np.inf}
                    for r in range(rep + 1):
                        for who in ("old", "new", "cython"):
                            cpp_pool._bind(old if who == "old" else new)
                            b = "cython" if who == "cython" else "cpp"
                            t = time.perf_counter()
                            for _ in range(inner):
                                fn(b)
                            t = (time.perf_counter() - t) / inner
                            if r:
                                best[who] = min(best[who], t)
                    cpp_pool._bind(new)
                    o, n, c = best["old"] * 1e3, best["new"] * 1e3, best["cython"] * 1e3
                    print(f"{label(op, xs, hp):58s} {dt:7s} {nthreads:3d} {name:4s} {o:9.4f} {n:9.4f} {c:9.4f}"
                          f" {n / o:7.2f} {n / c:7.2f}", flush=True)


if __name__ == "__main__":
    main()
