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
    backend tiles them (none may allocate them), and the result matches PyTorch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 512, 512)).astype(np.float32)
    w = (rng.standard_normal((2, 64, 13, 13)) / np.sqrt(64 * 169)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    assert 64 * 13 * 13 * 512 * 512 > 2 ** 31
    spec = registry.SPECS["conv2d"]
    out = spec.forward(x, w, b, padding=6, backend=backend)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double(), padding=6).numpy()
    a = spec.bind((), dict(x=x, weight=w, bias=b, padding=6))
    assert_close(f"conv2d on {backend}", out, ref, *spec.tolerance("float32", a))
    g = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = spec.backward(g, x, w, b, padding=6, backend=backend)
    tx, tw, tb = (torch.from_numpy(v).double().requires_grad_() for v in (x, w, b))
    torch.nn.functional.conv2d(tx, tw, tb, padding=6).backward(torch.from_numpy(g).double())
    for name, got, want in (("dx", dx, tx.grad), ("dw", dw, tw.grad), ("db", db, tb.grad)):
        assert_close(f"conv2d on {backend} {name}", got, want.numpy(), *spec.tolerance("float32", a, grad=True))


def test_matmul_inner_dimension_past_2_31():
    """(1, K) @ (K, 1) with K = 2**31 + 7 from zero-stride views (no memory): the cpp GEMM
    reads through strides and sums every term (float64: the sum is exact)."""
    K = 2 ** 31 + 7
    a = np.broadcast_to(np.float64(1.0), (1, K))
    b = np.broadcast_to(np.float64(0.5), (K, 1))
    out = registry.SPECS["matmul"].forward(a, b, backend="cpp")
    assert out.shape == (1, 1) and out[0, 0] == 0.5 * K
