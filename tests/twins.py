"""What the layer tests share when they compare a pydl layer with its torch twin: the
backend orders every layer runs under, the dtypes, and one relative comparison."""
import numpy as np
import pytest

import pydl

#: every CPU backend first, the reference for the ops it lacks
ORDERS = ["cpp,numpy", "cython,numpy", "numba,numpy", "numpy"]
DTYPES = [np.float32, np.float64]

_AVAILABLE = pydl.available()


def torch_dtype(torch, dtype):
    return {np.float32: torch.float32, np.float64: torch.float64}[dtype]


def order(name):
    """The backend order ``name``, skipped (with the reason) when its first backend is missing."""
    first = name.split(",")[0]
    if not _AVAILABLE.get(first, {}).get("available"):
        pytest.skip(f"backend {first} is not available here: {_AVAILABLE.get(first, {}).get('reason')}")
    return name


def assert_close(name, got, ref, rtol):
    """|got - ref| <= rtol * (|ref| + max|ref|): relative, at the array's own scale."""
    got = np.asarray(got.numpy() if isinstance(got, pydl.Tensor) else got, np.float64)
    ref = np.asarray(ref.detach().numpy() if hasattr(ref, "detach") else ref, np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, torch's {ref.shape}"
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = np.abs(got - ref)
    bad = ~(err <= rtol * (np.abs(ref) + scale))
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(f"{name}: {int(bad.sum())} of {bad.size} differ (rtol {rtol:g}, scale {scale:.3g}, "
                             f"max err {err.max():.3g}); first at {i}: {got[i]!r} vs torch {ref[i]!r}")
