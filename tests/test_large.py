"""Tensors past 2**31 elements (issue 14, item 4), behind ``make large`` (``PYDL_LARGE=1``):
not in the default suite, which stays under 4 GB. The elementwise test needs ~17.2 GB free
(an 8.6 GB float32 input and its output); it is skipped, saying so, where the memory is not
there. Each checks values at and past index 2**31 (where 32-bit index arithmetic would wrap)
against what the op must give, without a second full-size reference.
"""
import os

import numpy as np
import pytest

from pydl import backends, registry
from pydl.testing import assert_close

pytestmark = pytest.mark.skipif(os.environ.get("PYDL_LARGE") != "1",
                                reason="large-tensor checks run with PYDL_LARGE=1 (make large)")
backends.load()
N_BIG = 2 ** 31 + 4099  # float32 elements: 8.6 GB


def _available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("backend", ["cpp", "cython", "numba"])
def test_relu_past_2_31_elements(backend):
    need = 2 * N_BIG * 4 + (1 << 30)
    if _available_bytes() < need:
        pytest.skip(f"needs {need / 2 ** 30:.1f} GiB free, {_available_bytes() / 2 ** 30:.1f} available")
    x = np.full(N_BIG, -1.0, np.float32)
    probes = np.array([0, 1, 2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 31 + 17, N_BIG - 2, N_BIG - 1])
    x[probes] = np.arange(1, probes.size + 1, dtype=np.float32)
    out = registry.SPECS["relu"].forward(x, backend=backend)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.array_equal(out[probes], x[probes])
    assert np.count_nonzero(out) == probes.size  # every other element written as 0
    assert out[2 ** 31 + 5] == 0 and out[N_BIG // 2] == 0
    del out
    g = np.full(N_BIG, 2.0, np.float32)
    (dx,) = registry.SPECS["relu"].backward(g, x, backend=backend)
    assert np.array_equal(dx[probes], np.full(probes.size, 2.0, np.float32))
    assert np.count_nonzero(dx) == probes.size


@pytest.mark.parametrize("backend", ["cpp", "cython", "numba"])
def test_conv_whose_columns_exceed_2_31_elements(backend):
    """C*R*S x OH*OW = 10816 x 262144 = 2.8e9 column elements (11 GB as float32): every
    backend tiles them (none may allocate them). The reference is computed at sampled
    positions in float64 (PyTorch's CPU conv unfolds them: 23 GB in float64, OOM-killed here)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 512, 512)).astype(np.float32)
    w = (rng.standard_normal((2, 64, 13, 13)) / np.sqrt(64 * 169)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    assert 64 * 13 * 13 * 512 * 512 > 2 ** 31
    spec = registry.SPECS["conv2d"]
    a = spec.bind((), dict(x=x, weight=w, bias=b, padding=6))
    rtol, atol = spec.tolerance("float32", a)
    out = spec.forward(x, w, b, padding=6, backend=backend)
    assert out.shape == (1, 2, 512, 512)
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (6, 6), (6, 6)))
    w64 = w.astype(np.float64)
    pts = [(k, i, j) for k in (0, 1) for i in (0, 1, 255, 510, 511) for j in (0, 3, 256, 511)]
    for k, i, j in pts:
        want = float(np.sum(xp[:, i:i + 13, j:j + 13] * w64[k]) + b[k])
        assert abs(out[0, k, i, j] - want) <= atol + rtol * abs(want), (backend, k, i, j, out[0, k, i, j], want)
    g = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = spec.backward(g, x, w, b, padding=6, backend=backend)
    rtol, atol = spec.tolerance("float32", a, grad=True)
    g64 = g[0].astype(np.float64)
    assert np.allclose(db, g64.sum(axis=(1, 2)), rtol=rtol, atol=atol)
    for k, c, r, t in ((0, 0, 0, 0), (1, 63, 12, 12), (0, 31, 6, 3), (1, 5, 12, 0)):
        want = float(np.sum(g64[k] * xp[c, r:r + 512, t:t + 512]))
        assert abs(dw[k, c, r, t] - want) <= atol + rtol * abs(want), (backend, "dw", k, c, r, t)
    gp = np.pad(g64, ((0, 0), (6, 6), (6, 6)))
    for c, h, v in ((0, 0, 0), (63, 511, 511), (17, 256, 3)):
        want = float(np.sum(gp[:, h:h + 13, v:v + 13] * w64[:, c, ::-1, ::-1]))
        assert abs(dx[0, c, h, v] - want) <= atol + rtol * abs(want), (backend, "dx", c, h, v)


def test_matmul_inner_dimension_past_2_31():
    """(1, K) @ (K, 1) with K = 2**31 + 7 from zero-stride views (no memory): the cpp GEMM
    reads through strides and sums every term (float64: the sum is exact)."""
    K = 2 ** 31 + 7
    a = np.broadcast_to(np.float64(1.0), (1, K))
    b = np.broadcast_to(np.float64(0.5), (K, 1))
    out = registry.SPECS["matmul"].forward(a, b, backend="cpp")
    assert out.shape == (1, 1) and out[0, 0] == 0.5 * K
