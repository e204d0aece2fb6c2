"""Launch each pydl CUDA kernel of interest a few times, for a profiler to read (no checks, no timing).

    ncu --clock-control none --launch-skip 2 --launch-count 1 -k regex:gemm_simt \\
        python dev/cuda/profile_kernels.py gemm_simt

Groups: gemm_simt (fp32 4096^3, A (M,K) B (K,N)), gemm_bf16 (4096^3 bf16, bf16 out),
im2col (ResNet 3x3 c64 56x56 N64), max_pool (N64 C64 112x112 k3 s2 p1, forward and backward),
elementwise (relu on 64M floats). Each runs 3 times: the profiler skips the first two.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cupy  # noqa: E402
import numpy as np  # noqa: E402

import pydl  # noqa: E402
import pydl.registry  # noqa: E402
from pydl.backends.cuda import gemm as G  # noqa: E402


def randn(*shape):
    return cupy.asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))


def main(groups):
    for _ in range(3):
        if "gemm_simt" in groups:
            n = 4096
            a, b, c = randn(n, n), randn(n, n), cupy.empty((n, n), np.float32)
            G.gemm(a, b, c, n, n, n, lda=n, ldb=n, ldc=n, tensor_cores=False)
        if "gemm_bf16" in groups:
            n = 4096
            a16 = G.to_bf16(randn(n, n), n, n, ld_in=n)[0]
            b16 = G.to_bf16(randn(n, n), n, n, trans=True, ld_in=n)[0]
            G.gemm_bf16(a16, b16, cupy.empty((n, n), np.uint16), n, n, n, lda=n, ldb=n, ldc=n)
        if "im2col" in groups:
            pydl.ops.im2col(randn(64, 64, 56, 56), kernel_size=3, padding=1, backend="cuda")
        if "max_pool" in groups:
            x = randn(64, 64, 112, 112)
            kw = dict(kernel_size=3, stride=2, padding=1)
            y, saved = pydl.registry.SPECS["max_pool2d"].with_saved(x, **kw, backend="cuda")
            pydl.ops.max_pool2d_backward(cupy.ones_like(y), x, **kw, saved=saved, backend="cuda")
        if "elementwise" in groups:
            pydl.ops.relu(randn(64 << 20), backend="cuda")
    cupy.cuda.Device().synchronize()


if __name__ == "__main__":
    main(set(sys.argv[1:]) or {"gemm_simt", "gemm_bf16", "im2col", "max_pool", "elementwise"})
