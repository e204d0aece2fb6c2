"""Autograd: every Tensor operation's value and gradients against torch's, graph rules
(accumulation, retain_graph, no_grad, leaves), registry ops on Tensors (saved reuse,
needs, backend kept for the backward), Function."""
import numpy as np
import pytest

import pydl
from pydl import Tensor
from pydl.nn import functional as F

torch = pytest.importorskip("torch")
pydl.backends.load()


def _rand(rng, *shape, dtype=np.float64, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return a.astype(dtype)


def _pair(arrays):
    """pydl leaves and torch leaves over copies of the same arrays."""
    ours = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return ours, theirs


def _check(fn_pydl, fn_torch, arrays, rtol=1e-10, atol=1e-12, seed=0):
    """Same function in both libraries: the value and every input gradient agree
    (random upstream gradient, so a wrong broadcast or transpose cannot hide)."""
    ours, theirs = _pair(arrays)
    y, yt = fn_pydl(*ours), fn_torch(*theirs)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(seed).standard_normal(yt.shape).astype(arrays[0].dtype)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.grad is not None, f"input {i} got no gradient"
        assert a.grad.dtype == a.data.dtype and a.grad.shape == a.data.shape
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"grad of input {i}")


BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3))])
def test_binary_broadcasting(op, shapes):
    rng = np.random.default_rng(1)
    pos = op in ("pow", "div")
    arrays = [_rand(rng, *shapes[0], positive=pos), _rand(rng, *shapes[1], positive=pos)]
    _check(BINARY[op], BINARY[op], arrays)


def test_scalar_operands_and_reflected():
    rng = np.random.default_rng(2)
    a = _rand(rng, 3, 4, positive=True)
    _check(lambda x: 2.0 - x * 3 + 1 / x - x / 2 + 2 ** x + x ** 2.5 - (-x),
           lambda x: 2.0 - x * 3 + 1 / x - x / 2 + 2 ** x + x ** 2.5 - (-x), [a])


def test_ndarray_on_the_left_defers_to_tensor():
    rng = np.random.default_rng(3)
    a, b = _rand(rng, 3, 4), _rand(rng, 3, 4)
    t = Tensor(b, requires_grad=True)
    y = a * t + a
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(t.grad, a)


UNARY = {
    "exp": (lambda x: x.exp(), lambda x: x.exp(), False),
    "log": (lambda x: x.log(), lambda x: x.log(), True),
    "sqrt": (lambda x: x.sqrt(), lambda x: x.sqrt(), True),
    "abs": (lambda x: x.abs(), lambda x: x.abs(), False),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), False),
    "clamp_min": (lambda x: x.clamp(min=0.1), lambda x: x.clamp(min=0.1), False),
    "neg": (lambda x: -x, lambda x: -x, False),
    "relu": (lambda x: x.relu(), lambda x: x.relu(), False),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), False),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh(), False),
    "softmax": (lambda x: x.softmax(1), lambda x: x.softmax(1), False),
    "log_softmax": (lambda x: x.log_softmax(-1), lambda x: x.log_softmax(-1), False),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    f, ft, pos = UNARY[op]
    rng = np.random.default_rng(4)
    _check(f, ft, [_rand(rng, 3, 5, positive=pos)])


REDUCE = {
    "sum_all": (lambda x: x.sum(), lambda x: x.sum()),
    "sum_dim": (lambda x: x.sum(1), lambda x: x.sum(1)),
    "sum_dims_keep": (lambda x: x.sum((0, 2), keepdim=True), lambda x: x.sum((0, 2), keepdim=True)),
    "mean_all": (lambda x: x.mean(), lambda x: x.mean()),
    "mean_neg_dim": (lambda x: x.mean(-1), lambda x: x.mean(-1)),
    "mean_keep": (lambda x: x.mean(1, keepdim=True), lambda x: x.mean(1, keepdim=True)),
    "max_all": (lambda x: x.max(), lambda x: x.max()),
    "max_dim": (lambda x: x.max(1)[0], lambda x: x.max(1)[0]),
    "max_dim_keep": (lambda x: x.max(2, keepdim=True).values, lambda x: x.max(2, keepdim=True).values),
    "min_dim": (lambda x: x.min(0)[0], lambda x: x.min(0)[0]),
    "var": (lambda x: x.var(1), lambda x: x.var(1)),
    "std_biased": (lambda x: x.std(unbiased=False), lambda x: x.std(unbiased=False)),
}


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reductions(op):
    f, ft = REDUCE[op]
    rng = np.random.default_rng(5)
    _check(f, ft, [_rand(rng, 2, 3, 4)])


def test_max_indices_match_torch():
    rng = np.random.default_rng(6)
    a = _rand(rng, 3, 5)
    v, i = Tensor(a).max(1)
    vt, it = torch.tensor(a).max(1)
    np.testing.assert_array_equal(i.data, it.numpy())
    np.testing.assert_allclose(v.data, vt.numpy())
    np.testing.assert_array_equal(Tensor(a).argmax(1).data, torch.tensor(a).argmax(1).numpy())


SHAPE = {
    "reshape": (lambda x: x.reshape(4, 6), lambda x: x.reshape(4, 6)),
    "reshape_tuple_neg": (lambda x: x.reshape((-1, 3)), lambda x: x.reshape((-1, 3))),
    "view": (lambda x: x.view(2, 12), lambda x: x.view(2, 12)),
    "flatten": (lambda x: x.flatten(1), lambda x: x.flatten(1)),
    "transpose": (lambda x: x.transpose(0, 2), lambda x: x.transpose(0, 2)),
    "permute": (lambda x: x.permute(2, 0, 1), lambda x: x.permute(2, 0, 1)),
    "T_of_2d": (lambda x: x.reshape(6, 4).T, lambda x: x.reshape(6, 4).T),
    "unsqueeze_squeeze": (lambda x: x.unsqueeze(1).squeeze(1), lambda x: x.unsqueeze(1).squeeze(1)),
    "expand": (lambda x: x[:, :1].expand(2, 3, 4), lambda x: x[:, :1].expand(2, 3, 4)),
    "index_basic": (lambda x: x[1, ::2, 1:], lambda x: x[1, ::2, 1:]),
    "index_ellipsis_none": (lambda x: x[..., None, 2], lambda x: x[..., None, 2]),
    "index_int_array_repeats": (lambda x: x[:, [0, 2, 0, 0]], lambda x: x[:, [0, 2, 0, 0]]),
    "index_bool": (lambda x: x[x > 0], lambda x: x[x > 0]),
    "flip": (lambda x: x.flip(0), lambda x: x.flip(0)),
    "split": (lambda x: x.split(1, 1)[1] * 2 + x.split([2, 1], 1)[0].sum(1, keepdim=True),
              lambda x: x.split(1, 1)[1] * 2 + x.split([2, 1], 1)[0].sum(1, keepdim=True)),
    "chunk": (lambda x: x.chunk(2, 2)[1], lambda x: x.chunk(2, 2)[1]),
}


@pytest.mark.parametrize("op", sorted(SHAPE))
def test_shape_ops(op):
    f, ft = SHAPE[op]
    rng = np.random.default_rng(7)
    _check(f, ft, [_rand(rng, 2, 3, 4)])


def test_cat_stack_where():
    rng = np.random.default_rng(8)
    arrays = [_rand(rng, 2, 3), _rand(rng, 2, 3), _rand(rng, 2, 3)]
    _check(lambda a, b, c: pydl.cat([a, b, c], dim=1), lambda a, b, c: torch.cat([a, b, c], dim=1), arrays)
    _check(lambda a, b, c: pydl.stack([a, b, c], dim=-1), lambda a, b, c: torch.stack([a, b, c], dim=-1), arrays)
    c = arrays[2]
    _check(lambda a, b: pydl.where(c > 0, a, b), lambda a, b: torch.where(torch.from_numpy(c) > 0, a, b), arrays[:2])


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((3, 4), (2, 4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 2, 3, 4), (4, 2))])
def test_matmul(shapes):
    rng = np.random.default_rng(9)
    arrays = [_rand(rng, *shapes[0]), _rand(rng, *shapes[1])]
    _check(lambda a, b: a @ b, lambda a, b: a @ b, arrays)


def test_gradient_accumulates_for_a_tensor_used_twice_and_across_backwards():
    rng = np.random.default_rng(10)
    a = _rand(rng, 3, 3)
    _check(lambda x: x * x + x @ x + x.exp() * x, lambda x: x * x + x @ x + x.exp() * x, [a])
    t = Tensor(a.copy(), requires_grad=True)
    (t * 2).sum().backward()
    (t * 3).sum().backward()
    np.testing.assert_allclose(t.grad, np.full_like(a, 5.0))


def test_shared_intermediate_waits_for_every_consumer():
    """A node feeding a near and a deeper consumer runs its backward after both (a residual
    connection, a multi-layer RNN's state)."""
    rng = np.random.default_rng(16)
    a = _rand(rng, 3)
    _check(lambda x: (x * 2) + (x * 2) * 3, lambda x: (x * 2) + (x * 2) * 3, [a])

    def f(x):
        y = x * 2
        z = y * 3
        return (z + y) * z + y.exp() + (y @ y)

    _check(f, f, [a])


def test_dims_out_of_range_raise():
    t = Tensor(np.ones((2, 6)))
    for bad in (lambda: t.flatten(2), lambda: t.unflatten(3, (2, 3)), lambda: t.unsqueeze(9),
                lambda: t.squeeze(5), lambda: t.transpose(0, 2)):
        with pytest.raises(IndexError, match="out of range"):
            bad()


def test_leaf_gradients_are_owned_not_aliased():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    (a + b).backward(np.arange(3.0))
    a.grad *= 10  # in-place clipping of one gradient must not touch the other
    np.testing.assert_allclose(b.grad, np.arange(3.0))


def test_graph_is_freed_after_backward_unless_retained():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_no_grad_records_nothing_and_detach():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pydl.no_grad():
        y = F.relu(x * 2)
        assert not pydl.is_grad_enabled()
    assert pydl.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    with pydl.inference_mode():
        assert not (x @ x).requires_grad

    @pydl.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        d.sum().backward()


def test_backward_grad_forms():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    for g in (None, 2.0, 2, np.float64(2.0), np.array(2.0), np.array(2.0, np.float32), Tensor(np.array(2.0))):
        x.grad = None
        (x * x).sum().backward(g)
        k = 1.0 if g is None else 2.0
        np.testing.assert_allclose(x.grad, k * 2 * x.data)
        assert x.grad.dtype == np.float32
    with pytest.raises(RuntimeError, match="scalar"):
        (x * x).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * x).backward(np.ones(3, np.float32))


def test_inplace_on_recording_leaf_refused_and_allowed_under_no_grad():
    p = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        p.add_(1.0)
    with pydl.no_grad():
        p.add_(1.0).mul_(2.0)
        p[0] = 7.0
    np.testing.assert_allclose(p.data, [7.0, 4.0, 4.0])


def test_requires_grad_only_for_floats_and_factories():
    with pytest.raises(TypeError, match="float"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="array"):
        Tensor([1.0, 2.0])
    assert pydl.tensor([1.0, 2.0]).dtype == np.float32  # Python floats: float32, as torch
    assert pydl.tensor([1, 2]).dtype == np.int64
    assert pydl.tensor(np.ones(2)).dtype == np.float64
    assert pydl.zeros(2, 3).shape == (2, 3) and pydl.ones((2, 3)).dtype == np.float32
    pydl.manual_seed(0)
    a = pydl.randn(3, 4).data
    pydl.manual_seed(0)
    np.testing.assert_array_equal(a, pydl.randn(3, 4).data)


def test_item_numpy_and_dtype_casts():
    x = Tensor(np.array([[1.5]], np.float32), requires_grad=True)
    assert x.item() == 1.5 and float(x) == 1.5
    assert x.numpy() is x.data and np.asarray(x) is x.data
    y = x.double()
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    with pytest.raises(ValueError, match="one-element"):
        Tensor(np.ones(2)).item()


def test_registry_op_saved_is_reused_and_no_revalidation(monkeypatch):
    """The node's backward gets the forward's saved and normalized arguments: the
    normalizer runs once per forward, never in backward."""
    spec = pydl.registry.SPECS["max_pool2d"]
    calls = {"normalize": 0, "saved": None}
    orig = spec.normalize

    def counting(*a, **k):
        calls["normalize"] += 1
        return orig(*a, **k)

    monkeypatch.setattr(spec, "normalize", counting)
    impl = pydl.registry.IMPLS["max_pool2d_backward"]["numpy"]

    def spy(grad, saved=None, **a):
        calls["saved"] = saved
        return impl(grad, saved=saved, **a)

    monkeypatch.setitem(pydl.registry.IMPLS["max_pool2d_backward"], "numpy", spy)
    rng = np.random.default_rng(11)
    x = Tensor(_rand(rng, 2, 3, 6, 6), requires_grad=True)
    with pydl.use_backend("numpy"):
        y = F.max_pool2d(x, 2)
    y.sum().backward()
    assert calls["normalize"] == 1
    assert calls["saved"] is not None and "indices" in calls["saved"]
    xt = torch.tensor(x.data, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy())


def test_backward_runs_on_the_forward_backend(monkeypatch):
    """A step run under use_backend runs its backward there, even outside the block."""
    seen = []
    impl = pydl.registry.IMPLS["relu_backward"]["numpy"]

    def spy(*a, **k):
        seen.append("numpy")
        return impl(*a, **k)

    monkeypatch.setitem(pydl.registry.IMPLS["relu_backward"], "numpy", spy)
    x = Tensor(np.random.default_rng(12).standard_normal(5), requires_grad=True)
    with pydl.use_backend("numpy"):
        y = F.relu(x)
    y.sum().backward()
    assert seen == ["numpy"]


def test_needs_tells_the_backward_which_gradients_are_wanted(monkeypatch):
    got = {}
    impl = pydl.registry.IMPLS["linear_backward"]["numpy"]

    def spy(grad, saved=None, needs=None, **a):
        got["needs"] = needs
        return impl(grad, saved=saved, **a)

    spy._pydl_takes_needs = True
    monkeypatch.setitem(pydl.registry.IMPLS["linear_backward"], "numpy", spy)
    rng = np.random.default_rng(13)
    x, w = Tensor(_rand(rng, 4, 3)), Tensor(_rand(rng, 2, 3), requires_grad=True)
    with pydl.use_backend("numpy"):
        y = F.linear(x, w)
    y.sum().backward()
    assert got["needs"] == (False, True, False)
    assert x.grad is None and w.grad is not None


def test_multi_output_op_with_unused_outputs():
    """lstm returns (out, h_n, c_n); a loss on h_n alone sends None for the others."""
    rng = np.random.default_rng(14)
    T, B, I, H = 3, 2, 4, 5
    arrays = [_rand(rng, T, B, I), _rand(rng, 4 * H, I), _rand(rng, 4 * H, H)]
    ours, theirs = _pair(arrays)
    out, h, c = F.lstm(*ours)
    (h * h).sum().backward()
    lt = torch.nn.LSTM(I, H, bias=False).double()
    with torch.no_grad():
        lt.weight_ih_l0.copy_(theirs[1])
        lt.weight_hh_l0.copy_(theirs[2])
    xt = theirs[0]
    _, (ht, _) = lt(xt)
    (ht * ht).sum().backward()
    np.testing.assert_allclose(h.data, ht[0].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours[0].grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours[1].grad, lt.weight_ih_l0.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_consumer_of_another_dtype_hands_back_the_op_its_own_dtype():
    """float32 op output times a float64 0-d array is float64 (NumPy's rule); its gradient
    reaches the float32 op cast back to float32, and the leaf gradient is float32."""
    x = Tensor(np.array([[-1.0, 2.0, 3.0]], np.float32), requires_grad=True)
    y = F.relu(x) * np.array(2.0)
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [[0.0, 2.0, 2.0]])


def test_function_extension_point():
    class Cube(pydl.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x * x * g

    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    Cube.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 12.0])


def test_op_errors_name_the_op_and_argument():
    with pytest.raises(ValueError, match="conv2d"):
        F.conv2d(Tensor(np.ones((1, 2, 5, 5), np.float32)), Tensor(np.ones((3, 4, 3, 3), np.float32)))
    with pytest.raises(TypeError, match="positional"):
        F.relu(Tensor(np.ones(2)), 1, 2)
    with pytest.raises(TypeError, match="multiple values"):
        F.leaky_relu(Tensor(np.ones(2)), 0.1, negative_slope=0.2)


def test_backend_preference_order_for_a_whole_step():
    """use_backend("cpp,numpy"): C++ kernels where they exist, the reference elsewhere;
    a single name still raises for an op it lacks."""
    rng = np.random.default_rng(15)
    x = Tensor(_rand(rng, 4, 6, dtype=np.float32), requires_grad=True)
    w = Tensor(_rand(rng, 3, 6, dtype=np.float32), requires_grad=True)
    t = np.array([0, 2, 1, 2])
    with pydl.use_backend("cpp,numpy"):
        F.cross_entropy(F.linear(x, w), t).backward()
    assert w.grad is not None
    if "cpp" in pydl.registry.IMPLS["linear"] and "cpp" not in pydl.registry.IMPLS.get("cross_entropy", {}):
        with pytest.raises(NotImplementedError, match="cpp"):
            with pydl.use_backend("cpp"):
                F.cross_entropy(F.linear(x, w), t)
