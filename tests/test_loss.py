"""The cpp loss kernels beyond the registry's conformance cases: rows and element counts that
cross the vector widths and the threading threshold, spatial targets, strided inputs, every
SIMD level of the build, 1 and 2 threads, and agreement with torch (outputs and gradients).
"""
import numpy as np
import pytest

from pydl import registry
from pydl.testing import assert_close, run_backward, run_forward

if "cpp" not in registry.SPECS["cross_entropy"].implementations():
    pytest.skip("the cpp backend is not built", allow_module_level=True)


def _probs(rng, shape, dtype, axis=1):
    e = np.exp(rng.standard_normal(shape))
    return (e / e.sum(axis=axis, keepdims=True)).astype(dtype)


def _cases(rng, dtype):
    f = lambda *s, scale=2.0: (rng.standard_normal(s) * scale).astype(dtype)  # noqa: E731
    u = lambda *s: rng.uniform(0.02, 0.98, s).astype(dtype)  # noqa: E731
    idx = lambda n, C: rng.integers(0, C, n)  # noqa: E731
    t_ign = idx(130, 1003)
    t_ign[::7] = -100
    w = rng.uniform(0.2, 2, 1003).astype(dtype)
    logp = f(90, 37)
    logp -= np.log(np.exp(logp.astype(np.float64)).sum(1, keepdims=True)).astype(dtype)
    return [
        ("cross_entropy", dict(input=f(130, 1003), target=t_ign, weight=w, reduction="mean")),
        ("cross_entropy", dict(input=f(70, 17), target=idx(70, 17), reduction="none", label_smoothing=0.1)),
        ("cross_entropy", dict(input=f(64, 515), target=idx(64, 515), weight=w[:515], reduction="sum",
                               label_smoothing=0.2)),
        ("cross_entropy", dict(input=f(40, 33), target=_probs(rng, (40, 33), dtype), weight=w[:33],
                               reduction="mean", label_smoothing=0.05)),
        ("cross_entropy", dict(input=f(3, 7, 11, 5), target=rng.integers(0, 7, (3, 11, 5)), reduction="mean")),
        ("cross_entropy", dict(input=f(3, 6, 9), target=_probs(rng, (3, 6, 9), dtype), reduction="none")),
        ("nll_loss", dict(input=logp, target=idx(90, 37), weight=w[:37], reduction="mean")),
        ("nll_loss", dict(input=f(4, 5, 6), target=rng.integers(0, 5, (4, 6)), reduction="none")),
        ("mse_loss", dict(input=f(300, 257), target=f(300, 257), reduction="mean")),
        ("mse_loss", dict(input=f(33, 5), target=f(33, 5), reduction="none")),
        ("l1_loss", dict(input=f(300, 257), target=f(300, 257), reduction="sum")),
        ("binary_cross_entropy", dict(input=u(300, 257), target=u(300, 257), weight=u(257), reduction="mean")),
        ("binary_cross_entropy_with_logits", dict(input=f(300, 257), target=u(300, 257), weight=None,
                                                  reduction="mean", pos_weight=u(257) * 3)),
        ("binary_cross_entropy_with_logits", dict(input=f(31, 9), target=u(31, 9), reduction="none")),
        ("kl_div", dict(input=np.log(_probs(rng, (200, 301), dtype, 1)), target=_probs(rng, (200, 301), dtype, 1),
                        reduction="batchmean")),
        ("kl_div", dict(input=f(50, 30), target=f(50, 30, scale=0.5), reduction="sum", log_target=True)),
        ("gaussian_nll_loss", dict(input=f(300, 129), target=f(300, 129), var=u(300, 129) + 0.1, reduction="mean")),
        ("gaussian_nll_loss", dict(input=f(30, 9), target=f(30, 9), var=u(30, 1), reduction="none", full=True)),
    ]


def _check(op, args, dtype, rng):
    spec = registry.SPECS[op]
    a64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
           for k, v in args.items()}
    ref = run_forward(spec, a64, "numpy")
    out = run_forward(spec, args, "cpp")
    rtol, atol = spec.tol[np.dtype(dtype).name]
    assert_close(f"{op} out", out, ref, rtol * 10, atol * 10)
    g = np.asarray(rng.standard_normal(np.shape(ref))).astype(dtype)
    ref_g = run_backward(spec, g.astype(np.float64), a64, "numpy")
    out_g = run_backward(spec, g, args, "cpp")
    for name, o, r in zip(spec.differentiable, out_g, ref_g):
        assert_close(f"{op} d{name}", o, r, rtol * 10, atol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_shapes_against_reference(simd_level, threads, dtype):
    rng = np.random.default_rng(1)
    for op, args in _cases(rng, dtype):
        _check(op, args, dtype, rng)


def test_strided_inputs():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 64)).astype(np.float32)
    t = rng.standard_normal((40, 64)).astype(np.float32)
    spec = registry.SPECS["mse_loss"]
    a = dict(input=x[:, ::2], target=t.T[::2].T[:, :32], reduction="none")
    b = {k: (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v) for k, v in a.items()}
    np.testing.assert_array_equal(run_forward(spec, a, "cpp"), run_forward(spec, b, "cpp"))
    spec = registry.SPECS["cross_entropy"]
    a = dict(input=x.T, target=rng.integers(0, 40, 64), reduction="sum")
    b = dict(a, input=np.ascontiguousarray(x.T))
    np.testing.assert_array_equal(run_forward(spec, a, "cpp"), run_forward(spec, b, "cpp"))
    np.testing.assert_array_equal(run_backward(spec, np.float32(1.5), a, "cpp")[0],
                                  run_backward(spec, np.float32(1.5), b, "cpp")[0])


def test_cross_entropy_large_logits():
    """Max subtraction: logits of 1e4 neither overflow nor lose the answer."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((50, 100)) + 1e4).astype(np.float32)
    t = rng.integers(0, 100, 50)
    spec = registry.SPECS["cross_entropy"]
    out = run_forward(spec, dict(input=x, target=t, reduction="none"), "cpp")
    ref = run_forward(spec, dict(input=x.astype(np.float64), target=t, reduction="none"), "numpy")
    assert_close("large logits", out, ref, 1e-4, 1e-3)


@pytest.mark.parametrize("op", ["cross_entropy", "mse_loss", "binary_cross_entropy",
                                "binary_cross_entropy_with_logits", "kl_div", "l1_loss"])
def test_against_torch_with_gradients(op):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((257, 1001)) * 2).astype(np.float32)
    u = rng.uniform(0.02, 0.98, x.shape).astype(np.float32)
    t_idx = rng.integers(0, 1001, 257)
    kw, tf = {
        "cross_entropy": (dict(target=t_idx, label_smoothing=0.1),
                          lambda i: F.cross_entropy(i, torch.from_numpy(t_idx), label_smoothing=0.1)),
        "mse_loss": (dict(target=u), lambda i: F.mse_loss(i, torch.from_numpy(u.astype(np.float64)))),
        "l1_loss": (dict(target=u), lambda i: F.l1_loss(i, torch.from_numpy(u.astype(np.float64)))),
        "binary_cross_entropy": (dict(target=u), lambda i: F.binary_cross_entropy(
            i, torch.from_numpy(u.astype(np.float64)))),
        "binary_cross_entropy_with_logits": (dict(target=u), lambda i: F.binary_cross_entropy_with_logits(
            i, torch.from_numpy(u.astype(np.float64)))),
        "kl_div": (dict(target=u, reduction="batchmean"), lambda i: F.kl_div(
            i, torch.from_numpy(u.astype(np.float64)), reduction="batchmean")),
    }[op]
    inp = u if op == "binary_cross_entropy" else x
    spec = registry.SPECS[op]
    out = run_forward(spec, dict(input=inp, **kw), "cpp")
    ti = torch.from_numpy(inp.astype(np.float64)).requires_grad_(True)
    ty = tf(ti)
    assert_close(f"{op} vs torch", out, ty.detach().numpy(), 1e-5, 1e-5)
    g = np.float32(0.7)
    grads = run_backward(spec, g, dict(input=inp, **kw), "cpp")
    ty.backward(torch.tensor(0.7, dtype=torch.float64))
    assert_close(f"{op} dinput vs torch", grads[0], ti.grad.numpy(), 1e-4, 1e-8)
