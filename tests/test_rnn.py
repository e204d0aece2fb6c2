"""RNN/LSTM/GRU edge cases beyond the registry's conformance cases (which are at most
T=6, H=5): long sequences, B=1, hidden sizes that are not a multiple of any vector width
and large enough for the threaded per-unit split, float64, relu, missing states and
biases, ``needs`` subsets, every cpp SIMD level, 1 and 2 threads, the native entry
points' own argument checks.

Each native backend is checked against the float64 NumPy reference within the spec's
tolerances; outputs are poisoned first (pydl.testing.run_forward/run_backward), and the
backward runs both from the forward's ``saved`` and recomputing.
"""
import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.testing import assert_close, copy_args, run_backward, run_forward, upstream_grads

OPS = ("rnn", "lstm", "gru")
CELLS = ("rnn_cell", "lstm_cell", "gru_cell")
BACKENDS = [b for b in ("cpp", "numba") if b in registry.SPECS["lstm"].implementations()]
G = {"rnn": 1, "lstm": 4, "gru": 3}
STATES = {"rnn": ("h0",), "lstm": ("h0", "c0"), "gru": ("h0",)}


def _args(op, T, B, I, H, dtype, seed, states=True, bias=(True, True), relu=False):
    rng = np.random.default_rng(seed)
    kind = op.replace("_cell", "")
    g = G[kind]
    s = 1 / np.sqrt(I + H)
    f = lambda *shape, sc=1.0: (rng.standard_normal(shape) * sc).astype(dtype)  # noqa: E731
    a = dict(w_ih=f(g * H, I, sc=s), w_hh=f(g * H, H, sc=s),
             b_ih=f(g * H, sc=0.5) if bias[0] else None, b_hh=f(g * H, sc=0.5) if bias[1] else None)
    if op.endswith("_cell"):
        a["x"] = f(B, I)
        for k in ("h", "c")[: 2 if kind == "lstm" else 1]:
            a[k] = f(B, H) if states else None
    else:
        a["x"] = f(T, B, I)
        for k in STATES[kind]:
            a[k] = f(B, H) if states else None
    if kind == "rnn":
        a["nonlinearity"] = "relu" if relu else "tanh"
    return a


def _tuple(o):
    return o if isinstance(o, tuple) else (o,)


def _check(op, backend, args, dtype, needs=None, seed=0):
    spec = registry.SPECS[op]
    rtol, atol = spec.tol[np.dtype(dtype).name]
    grtol, gatol = spec.grad_tol[np.dtype(dtype).name]
    ref = _tuple(spec.forward(**copy_args(args, np.float64), backend="numpy"))
    out, saved = run_forward(spec, args, backend, saved=True)
    for i, (o, r) in enumerate(zip(_tuple(out), ref)):
        assert o.dtype == np.dtype(dtype)
        assert_close(f"{op}/{backend} out {i}", o, r, rtol, atol)
    bound = spec.bind((), copy_args(args))
    grad = upstream_grads(spec, bound, np.random.default_rng(seed + 1), dtype)
    g64 = tuple(None if g is None else g.astype(np.float64) for g in _tuple(grad))
    gref = spec.backward(g64 if spec.outputs > 1 else g64[0], **copy_args(args, np.float64), backend="numpy")
    for sv in (saved, None):
        if needs is None:
            got = run_backward(spec, grad, args, backend, saved=sv)
        else:
            a = spec.bind((), copy_args(args))
            with pydl._array.poisoned():
                got = spec.call_backward(grad, a, sv, backend, needs=needs)
        for k, (name, g, r) in enumerate(zip(spec.differentiable, got, gref)):
            if needs is not None and not needs[k]:
                continue
            assert_close(f"{op}/{backend} d{name} ({'saved' if sv else 'recomputed'})", g, r, grtol, gatol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("shape", [(60, 3, 7, 37), (9, 1, 33, 70), (4, 17, 5, 131), (3, 6, 4, 300), (5, 3, 4, 128)],
                         ids=["long_T", "B1", "H131_threaded", "H300_k_blocks", "H128_padded_rows"])
def test_sequences(backend, op, dtype, shape):
    T, B, I, H = shape
    _check(op, backend, _args(op, T, B, I, H, dtype, seed=sum(shape)), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", CELLS)
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("B", [1, 64])
def test_cells(backend, op, dtype, B):
    _check(op, backend, _args(op, 1, B, 40, 77, dtype, seed=B), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS + CELLS)
def test_no_states_no_bias(backend, op):
    for bias in ((False, False), (True, False), (False, True)):
        _check(op, backend, _args(op, 7, 5, 6, 40, np.float32, seed=3, states=False, bias=bias), np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ("rnn", "rnn_cell"))
def test_relu(backend, op):
    _check(op, backend, _args(op, 20, 4, 9, 50, np.float32, seed=5, relu=True), np.float32)
    _check(op, backend, _args(op, 20, 4, 9, 50, np.float64, seed=6, relu=True), np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS + CELLS)
def test_needs_subsets(backend, op):
    spec = registry.SPECS[op]
    n = len(spec.differentiable)
    args = _args(op, 6, 3, 5, 20, np.float64, seed=9)
    for needs in ([True] + [False] * (n - 1), [False] * (n - 1) + [True], [False, True] * (n // 2) + [True] * (n % 2),
                  [False] * n):
        _check(op, backend, args, np.float64, needs=tuple(needs))


def _simd_levels():
    if "cpp" not in BACKENDS:
        return []
    from pydl import _cpp

    order = ["scalar", "avx2", "avx512"]
    return order[: order.index(_cpp.compiled_simd()) + 1]


@pytest.mark.parametrize("level", _simd_levels())
@pytest.mark.parametrize("op", OPS + ("lstm_cell",))
def test_cpp_simd_levels(level, op):
    from pydl import _cpp

    before = _cpp.simd_level()
    _cpp.set_simd_level(level)
    try:
        _check(op, "cpp", _args(op, 12, 5, 19, 83, np.float32, seed=11), np.float32)
        _check(op, "cpp", _args(op, 5, 2, 3, 21, np.float64, seed=12), np.float64)
    finally:
        _cpp.set_simd_level(before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads(backend, threads):
    for op in OPS:
        _check(op, backend, _args(op, 8, 16, 32, 96, np.float32, seed=13), np.float32)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="cpp backend not built")
def test_cpp_workspace_kept_between_calls():
    """The cpp kernels carve their big buffers from a per-thread workspace kept between calls and
    never zero-filled: a small call after a big one runs on the big one's leftovers (and a
    padded layout after an unpadded one), a big one after it grows the workspace again, and two
    Python threads (the kernels release the GIL) each get their own."""
    import threading

    shapes = [(9, 12, 40, 128), (3, 2, 5, 7), (6, 5, 16, 96), (2, 3, 4, 128)]
    for i, shape in enumerate(shapes):
        _check("lstm", "cpp", _args("lstm", *shape, np.float32, seed=40 + i), np.float32)
        _check("gru", "cpp", _args("gru", *shape, np.float32, seed=50 + i), np.float32)
    errors = []

    def worker(seed):
        try:
            for i, shape in enumerate(shapes[::-1]):
                _check("lstm", "cpp", _args("lstm", *shape, np.float32, seed=seed + i), np.float32)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(60 + 10 * k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.skipif("cpp" not in BACKENDS, reason="cpp backend not built")
def test_cpp_entry_points_throw():
    """The native checks raise ValueError (never abort) on shapes the adapter would not pass."""
    from pydl import _cpp

    f = np.zeros
    x, w_ih, w_hh = f((3, 2, 4), np.float32), f((12, 4), np.float32), f((12, 3), np.float32)
    hs = f((4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="kind"):
        _cpp.rnn_forward_f32(7, False, x, w_ih, w_hh, None, None, None, None, hs, None, None)
    with pytest.raises(ValueError, match="w_ih"):
        _cpp.rnn_forward_f32(1, False, x, f((12, 5), np.float32), w_hh, None, None, None, None, hs,
                             f((4, 2, 3), np.float32), None)
    with pytest.raises(ValueError, match="cs"):
        _cpp.rnn_forward_f32(1, False, x, w_ih, w_hh, None, None, None, None, hs, None, None)
    with pytest.raises(ValueError, match="hs"):
        _cpp.rnn_forward_f32(1, False, x, w_ih, w_hh, None, None, None, None, f((3, 2, 3), np.float32),
                             f((4, 2, 3), np.float32), None)
    with pytest.raises(ValueError, match="gates"):
        _cpp.rnn_backward_f32(1, False, x, w_ih, w_hh, hs, f((4, 2, 3), np.float32), None, None, None, None,
                              None, None, None, None, None, None, None)
    with pytest.raises(TypeError):
        _cpp.rnn_forward_f32(1, False, x.astype(np.float64), w_ih, w_hh, None, None, None, None, hs, None, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torch_modules(backend):
    """nn.LSTM / nn.GRU / nn.RNN with the same weights, gradients included (float64)."""
    torch = pytest.importorskip("torch")
    for op in OPS:
        spec = registry.SPECS[op]
        a = _args(op, 10, 3, 6, 24, np.float64, seed=21)
        out, saved = spec.with_saved(**copy_args(a), backend=backend)
        ta = {k: (torch.tensor(v, requires_grad=True) if isinstance(v, np.ndarray) else v) for k, v in a.items()}
        ref = spec.torch(torch, None, ta)
        for o, r in zip(out, ref):
            np.testing.assert_allclose(o, r.detach().numpy(), rtol=1e-10, atol=1e-11)
        ws = [np.random.default_rng(i).standard_normal(o.shape) for i, o in enumerate(out)]
        sum(((r * torch.tensor(w)).sum() for r, w in zip(ref, ws)), torch.zeros((), dtype=torch.float64)).backward()
        grads = spec.backward(tuple(ws), **copy_args(a), saved=saved, backend=backend)
        for name, g in zip(spec.differentiable, grads):
            np.testing.assert_allclose(g, ta[name].grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=f"{op} d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["rnn_cell", "lstm_cell", "gru_cell"])
def test_cell_zero_state_propagates_nan_in_w_hh(op, backend):
    """h=None is a zero state, and 0 * NaN is NaN: a non-finite recurrent weight reaches the
    output as in the reference and torch (the cpp cell once skipped the zero state's GEMM)."""
    G = {"rnn_cell": 1, "lstm_cell": 4, "gru_cell": 3}[op]
    rng = np.random.default_rng(5)
    B, I, H = 3, 5, 4
    x = rng.standard_normal((B, I)).astype(np.float32)
    w_ih = rng.standard_normal((G * H, I)).astype(np.float32)
    w_hh = rng.standard_normal((G * H, H)).astype(np.float32)
    w_hh[1, 2] = np.nan  # row 1: the first gate block's unit 1
    states = dict(h=None, c=None) if op == "lstm_cell" else dict(h=None)
    fn = getattr(pydl.ops, op)
    want = fn(x, w_ih=w_ih, w_hh=w_hh, **states, backend="numpy")
    got = fn(x, w_ih=w_ih, w_hh=w_hh, **states, backend=backend)
    for w, g in zip(_tuple(want), _tuple(got)):
        assert np.isnan(w).any()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g[~np.isnan(w)], w[~np.isnan(w)], rtol=1e-5, atol=1e-5)
