"""Native vs portable C++ module, side by side in one process.

    PYTHONPATH=. python dev/build/compare_builds.py /path/to/_cpp.cpython-*.so [rounds]
    PYDL_SIMD=avx2 PYTHONPATH=. python dev/build/compare_builds.py ...   # the AVX2 module vs native at avx2

Loads the portable module pydl._cpp picks and a second, native-built module
from the given path; alternates the two, call by call, on sgemm 2048 and
ResNet 3x3 c64 conv2d (N for quick runs: 8), so a busy shared machine slows
both alike; prints the median of each and the ratio. Inputs are seeded and
fresh; each output is checked against the other build's.
"""
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import pydl
from pydl import _cpp
from pydl.backends.cpp import conv as cpp_conv
from pydl.backends.cpp import gemm as cpp_gemm


def load(path):
    name = Path(path).name.split(".")[0]  # _cpp or _cpp_native: the name its PyInit_ carries
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def use(mod):
    cpp_gemm._cpp = cpp_conv._cpp = mod


def main():
    native = load(sys.argv[1])
    if os.environ.get("PYDL_SIMD"):  # the portable side loaded that level's module; lower the native one alike
        native.set_simd_level(os.environ["PYDL_SIMD"])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    rng = np.random.default_rng(0)
    n = 2048
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    N, C, H, W, K, R, s, p, g = 8, 64, 56, 56, 64, 3, 1, 1, 1
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((K, C, R, R), dtype=np.float32) * 0.1
    oh = (H + 2 * p - R) // s + 1
    cases = {
        "sgemm 2048": (lambda: pydl.ops.matmul(a, b, backend="cpp"), 2 * n**3),
        f"conv2d resnet_3x3_c64 N{N}": (lambda: pydl.ops.conv2d(x, w, None, s, p, backend="cpp"),
                                         2 * N * K * oh * oh * C * R * R),
    }
    builds = {f"portable ({_cpp.__name__}, {_cpp.simd_level()})": _cpp,
              f"native (-march={native.build_info()['arch']}, {native.simd_level()})": native}
    print(f"threads {pydl.get_num_threads()}, {rounds} interleaved rounds, median GFLOP/s")
    for label, (fn, flops) in cases.items():
        outs, times = {}, {k: [] for k in builds}
        for k, mod in builds.items():  # warm-up and cross-check
            use(mod)
            outs[k] = fn()
        o = list(outs.values())
        rel = np.linalg.norm(o[0] - o[1]) / np.linalg.norm(o[1])
        for _ in range(rounds):
            for k, mod in builds.items():
                use(mod)
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        gf = {k: flops / t / 1e9 for k, t in med.items()}
        kp, kn = list(builds)
        print(f"{label:28s} " + "  ".join(f"{k}: {v:7.1f}" for k, v in gf.items())
              + f"  portable/native {gf[kp] / gf[kn]:.3f}  (outputs differ by {rel:.1e})")
    use(_cpp)


if __name__ == "__main__":
    main()
