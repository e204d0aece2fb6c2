"""The numba and cython GEMMs (matmul, linear, forward and backward) element by element
against float64 NumPy: shapes of 1, primes, non-multiples of every block size, K
crossing the K blocks, the few-rows path, transposed and non-contiguous inputs,
batched forms, float32 and float64, NaN-poisoned outputs, 1 and 2 threads.

Bound: an output sums K products, so in any order, with or without FMA, its error is
at most ~K eps (|A| @ |B|) (plus the activation's own error, a few eps relative)."""
import numpy as np
import pytest

import pydl
from pydl import _array, ops
from pydl.backends import available
from pydl.backends.reference import gemm as ref

BACKENDS = [b for b in ("numba", "cython") if available()[b]["available"]]
DTYPES = (np.float32, np.float64)
pytestmark = pytest.mark.skipif(not BACKENDS, reason="neither numba nor cython is available")


def _gemm_into(backend):
    if backend == "numba":
        from pydl.backends.numba.gemm import gemm_into
    else:
        from pydl.backends.cython.gemm import gemm_into
    return gemm_into


def _close(out, want, bound, dtype, rel=0.0):
    """|out - want| <= K-sum bound (+ rel |want|), element-wise; want and bound float64."""
    eps = np.finfo(dtype).eps
    assert out.dtype == dtype and out.shape == want.shape
    assert not np.isnan(out).any(), "an output element was not written (NaN poison left)"
    err = np.abs(out.astype(np.float64) - want)
    lim = 2 * eps * bound + rel * np.abs(want) + 4 * np.finfo(dtype).tiny
    bad = err > lim
    assert not bad.any(), f"{bad.sum()} elements off, worst {np.max(err - lim):.3g} over the bound"


def _kbound(A, B):
    """K eps-units bound: K * (|A| @ |B|) in float64 (batched fine)."""
    return A.shape[-1] * (np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64)))


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# (M, K, N): 1s, primes, the few-rows path (M <= 4), non-multiples of MR (4 / 6), NR (16 /
# 32), the panels, and K crossing the K blocks (numba 256; cython 256 float32, 128 float64)
SHAPES = [(1, 1, 1), (1, 7, 1), (3, 600, 37), (4, 5, 300), (5, 7, 3), (7, 13, 33),
          (33, 65, 17), (37, 129, 61), (97, 300, 40), (130, 517, 70), (66, 70, 530)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_shapes_and_layouts(backend, dtype):
    rng = np.random.default_rng(1)
    gemm_into = _gemm_into(backend)
    for m, k, n in SHAPES:
        a, b = _rand(rng, (m, k), dtype), _rand(rng, (k, n), dtype)
        want, bound = a.astype(np.float64) @ b, _kbound(a, b)
        variants = {
            "plain": (a, b, False, False),
            "ta tb (C-ordered transposes)": (np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), True, True),
            "F-ordered": (np.asfortranarray(a), np.asfortranarray(b), False, False),
            "strided": (np.repeat(a, 2, axis=1)[:, ::2], np.repeat(b, 3, axis=0)[::3], False, False),
        }
        for name, (x, y, ta, tb) in variants.items():
            out = np.full((m, n), np.nan, dtype)
            gemm_into(x, y, out, ta=ta, tb=tb)
            _close(out, want, bound, dtype)
        if backend == "numba":  # the first variant's kernel, kept as matmul "numba:jloop"
            out = np.full((m, n), np.nan, dtype)
            gemm_into(np.asfortranarray(a), b, out, kernel="jloop")
            _close(out, want, bound, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_1_and_2(backend):
    # above the one-thread cutoff (2 M N K >= 2^22 flops): the packed path and the few-rows path
    rng = np.random.default_rng(2)
    keep = pydl.get_num_threads()
    try:
        for (m, k, n) in [(130, 300, 90), (3, 2048, 1000)]:
            a, b = _rand(rng, (m, k), np.float32), _rand(rng, (k, n), np.float32)
            outs = []
            for t in (1, 2):
                pydl.set_num_threads(t)
                with _array.poisoned():
                    outs.append(ops.matmul(a, b, backend=backend))
                _close(outs[-1], a.astype(np.float64) @ b, _kbound(a, b), np.float32)
            # every tile is summed by one thread in one order: the thread count changes nothing
            assert np.array_equal(outs[0], outs[1])
    finally:
        pydl.set_num_threads(keep)


BATCHED = [((3, 4, 6), (3, 6, 5)), ((2, 37, 130), (2, 130, 19)), ((2, 5, 3), (3, 7)),
           ((4, 3), (2, 3, 6)), ((6, 40), (2, 40, 33)), ((2, 33, 300), (300, 9)),
           ((3, 70, 130), (3, 130, 90))]  # the last one above the one-thread cutoff


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_batched_forward_backward(backend, dtype):
    rng = np.random.default_rng(3)
    for sa, sb in BATCHED:
        a, b = _rand(rng, sa, dtype), _rand(rng, sb, dtype)
        if a.ndim == 3:  # a non-contiguous batched input: a (B, M, K) view of (B, K, M)
            a = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 1, 2)), 1, 2)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with _array.poisoned():
            out = ops.matmul(a, b, backend=backend)
            g = _rand(rng, out.shape, dtype)
            da, db = ops.matmul_backward(g, a, b, backend=backend)
        _close(out, a64 @ b64, _kbound(a, b), dtype)
        rda, rdb = ref.matmul_backward(g.astype(np.float64), a64, b64)
        bt = np.swapaxes(b64, -1, -2)
        at = np.swapaxes(a64, -1, -2)
        bda = _kbound(g, bt)
        bdb = _kbound(at, g)
        # a shared operand's gradient is a sum over the batch: its bound sums too
        bda = bda.sum(axis=0) if bda.ndim > a.ndim else bda
        if bdb.ndim > b.ndim:
            bdb = bdb.sum(axis=0)
        _close(da, rda, bda * (g.shape[0] if a.ndim < g.ndim else 1), dtype)
        _close(db, rdb, bdb * (g.shape[0] if b.ndim < g.ndim else 1), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_activations_forward_backward(backend, dtype):
    rng = np.random.default_rng(4)
    rel = 4e-6 if dtype == np.float32 else 1e-14  # the activation's own error
    cases = [((5, 3, 70), 37, True), ((2, 300), 33, False), ((130, 257), 21, True),
             ((9,), 4, True), ((66, 20), 530, True), ((260, 257), 40, True)]  # last: parallel
    for xs, n_out, has_bias in cases:
        for act in (None, "relu", "gelu", "tanh", "sigmoid"):
            x = _rand(rng, xs, dtype)
            w = (_rand(rng, (n_out, xs[-1]), dtype) / np.sqrt(xs[-1])).astype(dtype)
            bias = _rand(rng, (n_out,), dtype) if has_bias else None
            x64, w64 = x.astype(np.float64), w.astype(np.float64)
            b64 = None if bias is None else bias.astype(np.float64)
            with _array.poisoned():
                y = ops.linear(x, w, bias, act, backend=backend)
                g = _rand(rng, y.shape, dtype)
                dx, dw, db = ops.linear_backward(g, x, w, bias, act, backend=backend)
            bz = _kbound(x, w.T) + (0 if bias is None else np.abs(b64))
            # activations here are 1-Lipschitz (gelu: < 1.13): z's bound carries over
            _close(y, ref.linear(x64, w64, b64, act)[0], 1.2 * bz, dtype, rel)
            rdx, rdw, rdb = ref.linear_backward(g.astype(np.float64), x64, w64, b64, act)
            # dz = g * act'(z): |act''| <= 1 here, so z's error moves dz by at most |g| bz
            bdz = np.abs(g.astype(np.float64)) * bz
            g2 = np.abs(g.astype(np.float64)).reshape(-1, n_out)
            x2 = np.abs(x64).reshape(-1, xs[-1])
            bdx = (_kbound(g2, np.abs(w64)) + bdz.reshape(-1, n_out) @ np.abs(w64)).reshape(x.shape)
            bdw = g2.shape[0] * (g2.T @ x2) + bdz.reshape(-1, n_out).T @ x2
            _close(dx, rdx, 1.2 * bdx, dtype, rel)
            _close(dw, rdw, 1.2 * bdw, dtype, rel)
            if bias is None:
                assert db is None
            else:
                _close(db, rdb, 1.2 * (g2.shape[0] * g2.sum(axis=0) + bdz.reshape(-1, n_out).sum(axis=0)),
                       dtype, rel)


@pytest.mark.parametrize("backend", BACKENDS)
def test_skinny_and_empty(backend):
    rng = np.random.default_rng(5)
    gemm_into = _gemm_into(backend)
    for m, k, n in [(1, 4096, 300), (2, 1000, 257), (33, 65, 17)]:
        a, b = _rand(rng, (m, k), np.float32), _rand(rng, (k, n), np.float32)
        for tb in (False, True):
            y = np.ascontiguousarray(b.T) if tb else b
            out = np.full((m, n), np.nan, np.float32)
            gemm_into(a, y, out, tb=tb)
            _close(out, a.astype(np.float64) @ b, _kbound(a, b), np.float32)
    # K = 0: the product is zeros, the epilogue still runs (bias, then the activation)
    bias = _rand(rng, (5,), np.float32)
    out = np.full((3, 5), np.nan, np.float32)
    gemm_into(np.zeros((3, 0), np.float32), np.zeros((0, 5), np.float32), out, bias=bias,
              activation="relu")
    assert np.array_equal(out, np.broadcast_to(np.maximum(bias, 0), (3, 5)))
