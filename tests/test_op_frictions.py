"""Op-level frictions the layer API met: a loss's upstream gradient given as a number or
in the other float dtype, class indices of any integer dtype, embedding's scatter-add,
and conv2d_backward skipping the gradients nobody needs (``needs``) on every CPU backend.
"""
import numpy as np
import pytest

import pydl
from pydl import _array, backends, ops, registry, testing

backends.load()
SPECS = registry.SPECS
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


# -- the upstream gradient of a 0-d output ---------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalar_loss_grad_may_be_a_number_or_either_float(dtype):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal((4, 3)).astype(dtype)
    want = ops.mse_loss_backward(np.ones((), dtype), x, t)
    other = np.float64 if dtype == np.float32 else np.float32
    for g in (1.0, 1, np.float64(1.0), np.ones((), other), np.ones((), dtype)):
        got = ops.mse_loss_backward(g, x, t)
        for o, w in zip(got, want):
            assert o.dtype == dtype and type(o) is np.ndarray, (g, o.dtype)
            np.testing.assert_array_equal(o, w)
    two = ops.mse_loss_backward(2, x, t)[0]
    np.testing.assert_allclose(two, 2 * want[0], rtol=1e-6)


def test_scalar_loss_grad_through_call_backward():
    """The path autograd takes: OpSpec.call_backward with the normalized arguments."""
    spec = SPECS["cross_entropy"]
    rng = np.random.default_rng(1)
    a = spec.bind((rng.standard_normal((5, 4)).astype(np.float32), rng.integers(0, 4, 5)), {})
    dx, dt = spec.call_backward(np.float64(0.5), a)
    assert dt is None  # class indices have no gradient
    ref, _ = spec.call_backward(np.full((), 0.5, np.float32), a)
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, ref)


def test_grad_checks_stay_strict_elsewhere():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="grad"):  # a bool is not a gradient
        ops.mse_loss_backward(True, x, x)
    with pytest.raises(TypeError, match="grad"):  # nor an int array
        ops.mse_loss_backward(np.ones((), np.int64), x, x)
    with pytest.raises(TypeError, match="grad"):  # nor float16
        ops.mse_loss_backward(np.ones((), np.float16), x, x)
    with pytest.raises(ValueError, match="grad"):  # a 0-d gradient for a (4, 3) output
        ops.mse_loss_backward(np.ones((), np.float32), x, x, reduction="none")
    with pytest.raises(TypeError, match="grad"):  # a number for a (4, 3) output
        ops.mse_loss_backward(1.0, x, x, reduction="none")
    with pytest.raises(TypeError, match="grad"):  # a non-scalar output keeps the strict dtype
        ops.mse_loss_backward(np.ones((4, 3), np.float64), x, x, reduction="none")
    with pytest.raises(TypeError, match="grad"):
        ops.relu_backward(np.ones(3, np.float64), np.ones(3, np.float32))


# -- class indices of any integer dtype ----------------------------------------------------


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_class_indices_any_integer_dtype(op):
    f, fb = getattr(ops, op), getattr(ops, op + "_backward")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5, 2)).astype(np.float32)
    t = rng.integers(0, 5, (6, 2))
    t[0, 0] = 3
    w = rng.uniform(0.5, 2, 5).astype(np.float32)
    want, want_dx = f(x, t, w, ignore_index=3), fb(1.0, x, t, w, ignore_index=3)[0]
    for dt in INT_DTYPES:
        np.testing.assert_array_equal(f(x, t.astype(dt), w, ignore_index=3), want, err_msg=str(dt))
        np.testing.assert_array_equal(fb(1.0, x, t.astype(dt), w, ignore_index=3)[0], want_dx)
    for bad, exc in ((t.astype(bool), TypeError), (t.astype(np.float16), TypeError),
                     (np.full((6, 2), 5, np.uint8), ValueError), (np.full((6, 2), -1, np.int8), ValueError)):
        with pytest.raises(exc, match="target"):
            f(x, bad)


def test_nll_loss_is_cross_entropy_of_log_softmax():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 4, 3))
    t = rng.integers(0, 4, (7, 3)).astype(np.int32)
    w = rng.uniform(0.5, 2, 4)
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(ops.nll_loss(ops.log_softmax(x, 1), t, w, reduction=reduction),
                                   ops.cross_entropy(x, t, w, reduction=reduction), rtol=1e-12, atol=1e-14)
    assert np.isnan(ops.nll_loss(x, np.full((7, 3), -100)))  # every target ignored: the mean is NaN
    assert ops.nll_loss(x, np.full((7, 3), -100), reduction="sum") == 0


def test_l1_loss_gradient_at_ties_is_zero():
    x = np.array([1.0, 2.0, -3.0], np.float32)
    t = np.array([1.0, 0.0, -3.0], np.float32)
    dx, dt = ops.l1_loss_backward(1.0, x, t, reduction="sum")
    np.testing.assert_array_equal(dx, [0, 1, 0])
    np.testing.assert_array_equal(dt, [0, -1, 0])


# -- embedding ---------------------------------------------------------------------------------


def test_embedding_reference_against_finite_differences(monkeypatch):
    """The conformance suite skips finite differences for embedding (the padding row's
    gradient is 0 by definition): the cases without padding_idx get them here."""
    spec = SPECS["embedding"]
    monkeypatch.setattr(spec, "fd_skip", ())
    rng = np.random.default_rng(5)
    cases = [c for c in spec.cases(rng, np.dtype(np.float64)) if c.args["padding_idx"] is None]
    assert len(cases) >= 5
    for case in cases:
        testing.finite_difference_check(spec, case.args, rng)


@pytest.mark.parametrize("num,passes_exceeded", [(500, False), (3, True)])
def test_embedding_backward_sums_repeated_rows(num, passes_exceeded):
    rng = np.random.default_rng(6)
    w = rng.standard_normal((num, 8))
    idx = rng.integers(0, num, (30, 7))
    g = rng.standard_normal((30, 7, 8))
    want = np.zeros_like(w)
    np.add.at(want, idx.ravel(), g.reshape(-1, 8))
    assert (np.bincount(idx.ravel()).max() > 8) == passes_exceeded  # the np.add.at tail runs too
    (dw,) = ops.embedding_backward(g, idx, w)
    np.testing.assert_allclose(dw, want, rtol=1e-13, atol=1e-13)
    (dw,) = ops.embedding_backward(g, idx.astype(np.uint16), w, padding_idx=-1)
    want[-1] = 0
    np.testing.assert_allclose(dw, want, rtol=1e-13, atol=1e-13)


def test_embedding_indices_checked():
    w = np.ones((4, 2), np.float32)
    np.testing.assert_array_equal(ops.embedding(np.array([[3, 0]], np.uint8), w).shape, (1, 2, 2))
    assert ops.embedding(np.array(2), w).shape == (2,)
    with pytest.raises(ValueError, match=r"input: expected indices of weight's 4 rows in \[0, 4\), got 4"):
        ops.embedding(np.array([1, 4]), w)
    with pytest.raises(ValueError, match="input"):
        ops.embedding(np.array([-1], np.int64), w)
    with pytest.raises(TypeError, match="input"):
        ops.embedding(np.array([True]), w)


# -- conv2d_backward(needs=...) -------------------------------------------------------------

#: (x shape, weight shape, stride, padding, groups): the first layers needs= is for, and the
#: kernels' paths (smallk, im2col, 1x1, direct/depthwise, grouped, strided); batches of 1 and 5
#: (numba's per-image drivers need a batch of at least the thread count)
CONV_CASES = [
    ((5, 1, 12, 12), (6, 1, 5, 5), 1, 0, 1),
    ((5, 3, 9, 9), (8, 3, 3, 3), 2, 1, 1),
    ((5, 8, 6, 6), (4, 8, 1, 1), 1, 0, 1),
    ((5, 4, 7, 7), (4, 1, 3, 3), 1, 1, 4),
    ((5, 6, 7, 8), (6, 3, 3, 3), 1, 1, 2),
    ((1, 40, 8, 8), (8, 40, 3, 3), 1, 1, 1),
    ((5, 40, 8, 8), (40, 40, 3, 3), 1, 1, 1),
    ((0, 3, 5, 5), (4, 3, 3, 3), 1, 1, 1),
]


def _conv_backends():
    out = []
    for b in ("numpy", "numba", "cython", "cpp"):
        if b not in registry.IMPLS.get("conv2d_backward", {}):
            continue
        out.append(b)
        out += [f"{b}:{v}" for v in registry.variants("conv2d_backward", b)]
    return out


@pytest.mark.parametrize("backend", _conv_backends())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_backward_needs(backend, dtype):
    spec = SPECS["conv2d"]
    rng = np.random.default_rng(7)
    rtol, atol = spec.grad_tolerance(np.dtype(dtype).name)
    for xs, ws, stride, padding, groups in CONV_CASES:
        x = rng.standard_normal(xs).astype(dtype)
        w = (rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        a = spec.bind((x, w, b), dict(stride=stride, padding=padding, groups=groups))
        g = rng.standard_normal(spec.out_shape(a)).astype(dtype)
        full = spec.call_backward(g, a, backend=backend)
        for needs in ((False, True, True), (True, False, False), (False, True, False), (False, False, False)):
            with _array.poisoned():
                got = spec.call_backward(g, a, backend=backend, needs=needs)
            for name, need, o, f in zip(("dx", "dweight", "dbias"), needs, got, full):
                what = f"{backend} {xs} {ws} needs={needs}: {name}"
                if not need:
                    assert o is None, what + " should be None"
                else:
                    assert o.dtype == dtype and o.shape == f.shape, what
                    testing.assert_close(what, o, f, rtol, atol)


def test_conv2d_public_backward_computes_all():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 1, 8, 8)), rng.standard_normal((3, 1, 3, 3))
    dx, dw, db = ops.conv2d_backward(rng.standard_normal((2, 3, 6, 6)), x, w, np.zeros(3))
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (3,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", [b for b in registry.CPU_ORDER if b in registry.IMPLS.get("linear_backward", {})])
@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, True, False)])
def test_linear_backward_needs(backend, dtype, needs):
    """A backend that takes ``needs`` returns None for the unwanted gradients and the same
    wanted ones; one that does not returns them all."""
    spec = registry.SPECS["linear"]
    rng = np.random.default_rng(7)
    for act in (None, "relu", "tanh"):
        x = rng.standard_normal((2, 3, 9)).astype(dtype)
        w = rng.standard_normal((5, 9)).astype(dtype)
        b = rng.standard_normal(5).astype(dtype)
        a = spec.bind((x, w, b, act), {})
        out, saved = spec.call(a, backend)
        g = rng.standard_normal(out.shape).astype(dtype)
        full = spec.call_backward(g, a, saved, backend)
        with _array.poisoned():
            part = spec.call_backward(g, a, saved, backend, needs=needs)
        takes = getattr(registry.IMPLS["linear_backward"][backend], "_pydl_takes_needs", False)
        for f, p, n in zip(full, part, needs):
            if n or not takes:
                np.testing.assert_allclose(p, f, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
            else:
                assert p is None


# -- empty dimensions (issue 17's crashes) ---------------------------------------------------

#: (a, b): an empty inner dim (cython/numba matmul_backward raised from reshape(-1, 0)), an
#: empty batch (cpp matmul raised "out: wrong shape" forward and backward), empty M and N
EMPTY_MATMULS = [((5, 5, 0), (0, 5)), ((0, 5, 4), (4, 3)), ((0, 5, 4), (0, 4, 3)), ((3, 0, 4), (4, 3)),
                 ((3, 5, 4), (4, 0)), ((5, 0), (0, 10)), ((0, 0), (5, 0, 0)), ((2, 0, 3), (2, 3, 2))]


@pytest.mark.parametrize("backend", [b for b in registry.CPU_ORDER if b in registry.IMPLS["matmul_backward"]])
@pytest.mark.parametrize("shapes", EMPTY_MATMULS, ids=str)
def test_matmul_empty_dims(backend, shapes):
    rng = np.random.default_rng(9)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    want = np.matmul(a.astype(np.float64), b)
    out = ops.matmul(a, b, backend=backend)
    assert out.shape == want.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, want)  # all zeros or no elements
    g = rng.standard_normal(want.shape).astype(np.float32)
    da, db = ops.matmul_backward(g, a, b, backend=backend)
    assert da.shape == a.shape and db.shape == b.shape
    want_da, want_db = np.matmul(g, np.swapaxes(b, -1, -2)), np.matmul(np.swapaxes(a, -1, -2), g)
    # a 2-D operand under a batched one is shared: its gradient sums over the batch
    np.testing.assert_allclose(da, want_da.sum(axis=0) if da.ndim < want_da.ndim else want_da, atol=1e-6)
    np.testing.assert_allclose(db, want_db.sum(axis=0) if db.ndim < want_db.ndim else want_db, atol=1e-6)


@pytest.mark.parametrize("backend", [b for b in registry.CPU_ORDER if b in registry.IMPLS["linear_backward"]])
@pytest.mark.parametrize("xs,ws", [((0, 3), (4, 3)), ((2, 0), (4, 0)), ((2, 3), (0, 3)), ((2, 2, 0), (3, 0))], ids=str)
def test_linear_empty_dims(backend, xs, ws):
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    out = ops.linear(x, w, b, backend=backend)
    np.testing.assert_allclose(out, x @ w.T + b, atol=1e-6)
    g = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = ops.linear_backward(g, x, w, b, backend=backend)
    g2, x2 = g.reshape(-1, ws[0]) if g.size else g.reshape(int(np.prod(g.shape[:-1])), ws[0]), \
        x.reshape(int(np.prod(xs[:-1])), xs[-1])
    np.testing.assert_allclose(dx, g @ w, atol=1e-6)
    np.testing.assert_allclose(dw, g2.T @ x2, atol=1e-6)
    np.testing.assert_allclose(db, g2.sum(axis=0), atol=1e-6)


# -- torch.nn.functional's argument forms (issue 17) ------------------------------------------

def _cpu(op):
    avail = pydl.available()
    return [b for b in registry.CPU_ORDER if b in registry.IMPLS.get(op, {}) and avail[b]["available"]]


@pytest.mark.parametrize("op,kw", [("conv2d", {}), ("max_pool2d", dict(kernel_size=2)),
                                   ("avg_pool2d", dict(kernel_size=(2,), stride=(), padding=(1,))),
                                   ("adaptive_avg_pool2d", dict(output_size=(3, None)))])
def test_unbatched_is_the_batched_call_without_a_copy(op, kw):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    args = (x, rng.standard_normal((4, 3, 3, 3)).astype(np.float32)) if op == "conv2d" else (x,)
    a = SPECS[op].bind(args, kw)
    assert a["x"].shape == (1,) + x.shape and np.shares_memory(a["x"], x)  # a view, not a copy
    for b in _cpu(op):
        f, fb = getattr(ops, op), getattr(ops, op + "_backward")
        out, want = f(*args, backend=b, **kw), f(x[None], *args[1:], backend=b, **kw)[0]
        np.testing.assert_array_equal(out, want, err_msg=b)
        g = rng.standard_normal(out.shape).astype(np.float32)
        got, full = fb(g, *args, backend=b, **kw), fb(g[None], x[None], *args[1:], backend=b, **kw)
        np.testing.assert_array_equal(got[0], full[0][0], err_msg=b)
        assert got[0].shape == x.shape


@pytest.mark.parametrize("backend", _cpu("max_pool2d"))
def test_max_pool2d_return_indices(backend):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    out, idx = ops.max_pool2d(x, 3, 2, 1, return_indices=True, backend=backend)
    want, saved = SPECS["max_pool2d"].with_saved(x, 3, 2, 1, backend=backend)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, saved["indices"])
    assert idx.dtype == np.int64
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.reshape(2, 3, -1), 2).reshape(out.shape), out)
    g = rng.standard_normal(out.shape).astype(np.float32)
    for grad in (g, (g, None)):  # the output's gradient alone or with None for the indices
        (dx,) = ops.max_pool2d_backward(grad, x, 3, 2, 1, return_indices=True, backend=backend)
        np.testing.assert_array_equal(dx, ops.max_pool2d_backward(g, x, 3, 2, 1, backend=backend)[0])


@pytest.mark.parametrize("backend", _cpu("adaptive_avg_pool2d"))
def test_adaptive_avg_pool2d_no_channels(backend):
    x = np.ones((2, 0, 4, 4), np.float32)
    out = ops.adaptive_avg_pool2d(x, 2, backend=backend)
    assert out.shape == (2, 0, 2, 2)
    (dx,) = ops.adaptive_avg_pool2d_backward(out, x, 2, backend=backend)
    assert dx.shape == x.shape


def test_conv2d_no_channels_refused():
    with pytest.raises(ValueError, match=r"conv2d: x: expected C, H, W >= 1"):
        ops.conv2d(np.ones((2, 0, 5, 5), np.float32), np.ones((4, 0, 3, 3), np.float32))


def test_softmax_dtype_casts_first_and_the_gradient_comes_back_in_x_dtype():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    for op in ("softmax", "log_softmax"):
        f, fb = getattr(ops, op), getattr(ops, op + "_backward")
        out = f(x, 1, dtype=np.float64)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, f(x.astype(np.float64), 1))
        g = rng.standard_normal(out.shape)
        (dx,) = fb(g, x, 1, dtype=np.float64)
        assert dx.dtype == np.float32
        np.testing.assert_allclose(dx, fb(g, x.astype(np.float64), 1)[0], rtol=1e-6)
        assert f(np.full((), 2.0, np.float32), 0).shape == ()
    with pytest.raises(TypeError, match="dtype"):
        ops.softmax(x, 1, dtype=np.int32)


def test_sdpa_float_mask_gets_a_gradient_through_autograd():
    torch = pytest.importorskip("torch")
    import pydl.nn.functional as F

    rng = np.random.default_rng(14)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 2), (4, 6))]
    mine = [pydl.Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    g = rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    (F.scaled_dot_product_attention(*mine) * pydl.Tensor(g)).sum().backward()
    (torch.nn.functional.scaled_dot_product_attention(*theirs) * torch.tensor(g)).sum().backward()
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(np.asarray(m.grad), t.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_sdpa_dropout_is_the_seeded_mask():
    rng = np.random.default_rng(15)
    q, k, v = (rng.standard_normal(s).astype(np.float64) for s in ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)))
    from pydl.ops.elementwise import dropout_mask

    keep = dropout_mask(7, (2, 2, 3, 5), 0.4)
    s = q @ np.swapaxes(k, -1, -2) / 2.0
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = (w * keep / 0.6) @ v
    np.testing.assert_allclose(ops.scaled_dot_product_attention(q, k, v, dropout_p=0.4, seed=7), want, rtol=1e-12)
    np.testing.assert_allclose(ops.scaled_dot_product_attention(q, k, v, dropout_p=0.4, dropout_mask=keep),
                               want, rtol=1e-12)
    with pytest.raises(ValueError, match="seed"):
        ops.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
