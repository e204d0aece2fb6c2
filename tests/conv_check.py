"""The forward + backward check shared by tests/test_conv.py and tests/test_conv_jit.py."""
import numpy as np

import pydl
from pydl import _array
from pydl.testing import assert_close

TOL = {np.float32: 2e-5, np.float64: 1e-12}


def check(backend, a, dtype, rng, dx_depth=True):
    """conv2d and conv2d_backward on ``backend`` (outputs poisoned) vs the float64 reference;
    the absolute tolerance grows with the longest sum: C/g*R*S (out, dW), N*OH*OW (dW, db),
    and K/g*R*S (dx) unless ``dx_depth`` is False (tests/test_conv.py's bound, which its
    cases meet without it)."""
    a64 = {kk: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for kk, v in a.items()}
    ref = pydl.ops.conv2d(**a64, backend="numpy")
    gy = rng.standard_normal(ref.shape)
    refs = pydl.ops.conv2d_backward(gy, **a64, backend="numpy")
    with _array.poisoned():
        out = pydl.ops.conv2d(**a, backend=backend)
        grads = pydl.ops.conv2d_backward(gy.astype(dtype), **a, backend=backend)
    k, cg, r, s = a["weight"].shape
    depth = max(cg * r * s, a["x"].shape[0] * ref.shape[2] * ref.shape[3], 1)
    if dx_depth:
        depth = max(depth, k // a["groups"] * r * s)
    tol = TOL[dtype]
    for name, o, rf in [("out", out, ref)] + list(zip(("dx", "dweight", "dbias"), grads, refs)):
        assert (o is None) == (rf is None), name
        if o is not None:
            assert o.dtype == dtype and o.shape == rf.shape, name
            scale = max(float(np.abs(rf).max(initial=0.0)), 1.0)
            assert_close(f"{backend} {name}", o, rf, tol, tol * np.sqrt(depth) * scale)
