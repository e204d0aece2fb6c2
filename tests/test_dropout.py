"""cpp dropout: the keep-mask drawn inside the kernel is dropout_mask's, bit for bit, at every
SIMD level (AVX2 hashes four counters per register) and at sizes that cross the thread chunks; the backward applies the same mask; the given-mask path; NaN."""
import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.ops import dropout_mask

if "cpp" not in registry.SPECS["dropout"].implementations():
    pytest.skip("the cpp backend is not built", allow_module_level=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1 - 2**-24, 3 * 2**-24])
def test_seeded_mask_is_the_reference_mask(threads, simd_level, dtype, p):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (3, 40001)).astype(dtype)
    seed = int(rng.integers(1 << 63)) * 2 + 1  # past int64: the full uint64 seed range
    y = pydl.ops.dropout(x, p=p, seed=seed, backend="cpp")
    keep = dropout_mask(seed, x.shape, p)
    np.testing.assert_array_equal(y != 0, keep)
    scale = dtype(1.0 / (1.0 - p))
    np.testing.assert_array_equal(y, x * (keep.astype(dtype) * scale))
    ref = pydl.ops.dropout(x, p=p, seed=seed, backend="numpy")
    np.testing.assert_array_equal(y, ref)
    g = rng.standard_normal(x.shape).astype(dtype)
    (dx,) = pydl.ops.dropout_backward(g, x, p=p, seed=seed, backend="cpp")
    np.testing.assert_array_equal(dx, g * (keep.astype(dtype) * scale))


def test_given_mask_eval_and_nan(simd_level):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 513)).astype(np.float32)
    x[3, 5] = np.nan
    mask = rng.random(x.shape) > 0.3
    mask[3, 5] = False
    y = pydl.ops.dropout(x, p=0.3, mask=mask, backend="cpp")
    ref = pydl.ops.dropout(x, p=0.3, mask=mask, backend="numpy")
    np.testing.assert_array_equal(y, ref)  # a dropped NaN stays NaN, as x * 0 in the reference
    assert np.isnan(y[3, 5])
    np.testing.assert_array_equal(pydl.ops.dropout(x, p=0.3, training=False, backend="cpp"), x)
    assert not pydl.ops.dropout(x, p=1.0, seed=3, backend="cpp").any() or np.isnan(x).any()
    strided = x.T[::2]
    np.testing.assert_array_equal(pydl.ops.dropout(strided, p=0.4, seed=9, backend="cpp"),
                                  pydl.ops.dropout(np.ascontiguousarray(strided), p=0.4, seed=9, backend="cpp"))
