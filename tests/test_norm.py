"""The cpp norm kernels beyond the registry's conformance cases: shapes that cross the vector
widths and the threading threshold, strided inputs, float32 with a large mean, the running
statistics, and agreement with torch (outputs and gradients) at those shapes.

Every SIMD level of the build runs the conformance cases in tests/test_cpp_simd_levels.py; here
the larger shapes run at each level too (``simd_level``), at 1 and 2 threads (``threads``).
"""
import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.testing import assert_close, run_backward, run_forward

pytest.importorskip("pydl._cpp")
if "cpp" not in registry.SPECS["layer_norm"].implementations():
    pytest.skip("the cpp backend is not built", allow_module_level=True)


def _affine(rng, C, dtype):
    return dict(weight=(1 + 0.3 * rng.standard_normal(C)).astype(dtype), bias=rng.standard_normal(C).astype(dtype))


def _cases(rng, dtype):
    """(op, args): rows of 1..100 vectors, groups longer than a block, 1-2 threads' worth."""
    x = lambda *s: (rng.standard_normal(s) * 2 + 0.5).astype(dtype)  # noqa: E731
    rm = lambda C: rng.standard_normal(C).astype(dtype)  # noqa: E731
    rv = lambda C: rng.uniform(0.5, 2, C).astype(dtype)  # noqa: E731
    return [
        ("layer_norm", dict(x=x(67, 771), normalized_shape=(771,), **_affine(rng, 771, dtype))),
        ("layer_norm", dict(x=x(5, 3, 17), normalized_shape=(3, 17))),
        ("batch_norm", dict(x=x(6, 5, 19, 23), running_mean=rm(5), running_var=rv(5), training=True,
                            **_affine(rng, 5, dtype))),
        ("batch_norm", dict(x=x(9, 7, 300), running_mean=rm(7), running_var=rv(7), training=False,
                            **_affine(rng, 7, dtype))),
        ("batch_norm", dict(x=x(200, 33), training=True, momentum=0.3, **_affine(rng, 33, dtype))),
        ("group_norm", dict(x=x(3, 12, 23, 9), num_groups=4, **_affine(rng, 12, dtype))),
        ("group_norm", dict(x=x(2, 6, 5000), num_groups=1)),
        ("group_norm", dict(x=x(40, 8), num_groups=2, **_affine(rng, 8, dtype))),
        ("instance_norm", dict(x=x(4, 6, 37, 11), running_mean=rm(6), running_var=rv(6), **_affine(rng, 6, dtype))),
        ("instance_norm", dict(x=x(3, 5, 101), running_mean=rm(5), running_var=rv(5), use_input_stats=False)),
        ("local_response_norm", dict(x=x(3, 9, 13, 11), size=5, alpha=0.3, beta=0.75, k=1.5)),
    ]


def _check(op, args, dtype, rng, layout=None):
    spec = registry.SPECS[op]
    a64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    ref = run_forward(spec, a64, "numpy")
    if layout is not None:
        args = dict(args, x=layout(args["x"]))
    rtol, atol = spec.tol[np.dtype(dtype).name]
    out = run_forward(spec, args, "cpp")
    assert_close(f"{op} out", out, ref, rtol * 10, atol * 10)
    g = rng.standard_normal(ref.shape).astype(dtype)
    ref_g = run_backward(spec, g.astype(np.float64), a64, "numpy")
    out_g = run_backward(spec, g, args, "cpp")
    rtol, atol = spec.grad_tolerance(dtype)
    for name, o, r in zip(spec.differentiable, out_g, ref_g):
        # dweight/dbias sum over up to 10^4 terms: float32 error grows with the count
        scale = 1 if name == "x" else max(1.0, np.sqrt(args["x"].size / 100))
        assert_close(f"{op} d{name}", o, r, rtol * 10 * scale, atol * 10 * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_shapes_against_reference(simd_level, threads, dtype):
    rng = np.random.default_rng(1)
    for op, args in _cases(rng, dtype):
        _check(op, args, dtype, rng)


def test_strided_inputs():
    """Transposed and sliced views give what their contiguous copies give."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((40, 3, 8, 16)) * 2).astype(np.float32)
    view = x.transpose(0, 1, 3, 2)[:, :, ::2]  # (40, 3, 8, 8), not contiguous
    for op, kw in [("batch_norm", dict(training=True)), ("group_norm", dict(num_groups=3)),
                   ("instance_norm", {}), ("layer_norm", dict(normalized_shape=(8, 8)))]:
        spec = registry.SPECS[op]
        a = dict(x=view, **kw)
        b = dict(x=np.ascontiguousarray(view), **kw)
        np.testing.assert_array_equal(run_forward(spec, a, "cpp"), run_forward(spec, b, "cpp"))
        g = rng.standard_normal(view.shape).astype(np.float32)
        gv = np.repeat(g, 2, axis=2)[:, :, ::2]  # a strided upstream gradient, equal to g
        for o, r in zip(run_backward(spec, gv, a, "cpp"), run_backward(spec, g, b, "cpp")):
            np.testing.assert_array_equal(o, r)


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm", "group_norm", "instance_norm"])
def test_float32_large_mean(op):
    """Data with a mean of 1e4 and a unit spread: float32 statistics stay accurate (the naive
    E[x^2] - E[x]^2 in float32 would lose every digit of the variance)."""
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((16, 8, 300))).astype(np.float32)
    kw = {"layer_norm": dict(normalized_shape=(8, 300)), "batch_norm": dict(training=True),
          "group_norm": dict(num_groups=2), "instance_norm": {}}[op]
    spec = registry.SPECS[op]
    out = run_forward(spec, dict(x=x, **kw), "cpp")
    ref = run_forward(spec, dict(x=x.astype(np.float64), **kw), "numpy")
    # float32 x holds 1e4 + d with an ulp of 1e-3: the float64 answer for the same inputs
    assert_close(f"{op} large mean", out, ref, 1e-4, 2e-4)


def test_batch_norm_running_stats_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 5, 7, 9)).astype(np.float32) * 3 + 1
    rm, rv = rng.standard_normal(5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    torch.nn.functional.batch_norm(torch.from_numpy(x), trm, trv, training=True, momentum=0.2)
    pydl.ops.batch_norm(x, rm, rv, training=True, momentum=0.2, backend="cpp")
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5, atol=1e-6)
    rm2, rv2 = rm.copy(), rv.copy()
    trm2, trv2 = trm.clone(), trv.clone()
    torch.nn.functional.instance_norm(torch.from_numpy(x), trm2, trv2, use_input_stats=True, momentum=0.3)
    pydl.ops.instance_norm(x, rm2, rv2, momentum=0.3, backend="cpp")
    np.testing.assert_allclose(rm2, trm2.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv2, trv2.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["layer_norm", "batch_norm", "group_norm", "instance_norm", "local_response_norm"])
def test_against_torch_with_gradients(op):
    """float32 cpp against torch's float64 at sizes past the conformance cases."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 16, 21, 13)) * 1.5 + 0.3).astype(np.float32)
    w, b = _affine(rng, 16, np.float32).values()
    kw, tf = {
        "layer_norm": (dict(normalized_shape=(21, 13)), lambda t, tw, tb: F.layer_norm(t, (21, 13))),
        "batch_norm": (dict(weight=w, bias=b, training=True),
                       lambda t, tw, tb: F.batch_norm(t, None, None, tw, tb, training=True)),
        "group_norm": (dict(num_groups=4, weight=w, bias=b), lambda t, tw, tb: F.group_norm(t, 4, tw, tb)),
        "instance_norm": (dict(weight=w, bias=b), lambda t, tw, tb: F.instance_norm(t, weight=tw, bias=tb)),
        "local_response_norm": (dict(size=5, alpha=0.5, beta=0.75, k=1.0),
                                lambda t, tw, tb: F.local_response_norm(t, 5, 0.5, 0.75, 1.0)),
    }[op]
    spec = registry.SPECS[op]
    out = run_forward(spec, dict(x=x, **kw), "cpp")
    t = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    tw = torch.from_numpy(w.astype(np.float64)).requires_grad_(True)
    tb = torch.from_numpy(b.astype(np.float64)).requires_grad_(True)
    ty = tf(t, tw, tb)
    assert_close(f"{op} vs torch", out, ty.detach().numpy(), 1e-4, 1e-4)
    g = rng.standard_normal(x.shape).astype(np.float32)
    grads = run_backward(spec, g, dict(x=x, **kw), "cpp")
    ty.backward(torch.from_numpy(g.astype(np.float64)))
    assert_close(f"{op} dx vs torch", grads[0], t.grad.numpy(), 1e-3, 1e-4)
    if "weight" in kw:
        assert_close(f"{op} dweight vs torch", grads[1], tw.grad.numpy(), 1e-3, 1e-2)
        assert_close(f"{op} dbias vs torch", grads[2], tb.grad.numpy(), 1e-3, 1e-2)
