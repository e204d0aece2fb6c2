"""The cpp GEMM beyond the generated conformance: shapes that hit every edge
of the packed kernel (1, primes, non-multiples of MR/NR/KC/MC, K crossing the
KC block), transposed and non-contiguous views, batched products, float64,
every SIMD level, 1 and 2 threads, the epilogue (bias, activations, saved
pre-activation), and outputs poisoned first, compared element by element
with a float64 NumPy product within a tolerance that grows with K."""
import contextlib

import numpy as np
import pytest

from pydl import _array, ops

_cpp = pytest.importorskip("pydl._cpp")

LEVELS = ("avx512", "avx2", "scalar")
EPS = {np.float32: 6e-8, np.float64: 1.1e-16}


@contextlib.contextmanager
def simd(level):
    before = _cpp.simd_level()
    _cpp.set_simd_level(level)
    try:
        yield
    finally:
        _cpp.set_simd_level(before)


@contextlib.contextmanager
def threads(n):
    before = _cpp.get_num_threads()
    _cpp.set_num_threads(n)
    try:
        yield
    finally:
        _cpp.set_num_threads(before)


def close(out, a, b, k):
    """|out - a@b| <= c * eps * sqrt(K) * (|a| @ |b|) elementwise (float64 reference)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = np.matmul(a64, b64)
    scale = np.matmul(np.abs(a64), np.abs(b64)) + 1e-300
    tol = 8 * EPS[out.dtype.type] * np.sqrt(max(k, 1)) * scale
    assert out.shape == ref.shape and out.dtype == a.dtype
    bad = ~(np.abs(out - ref) <= tol)
    assert not bad.any(), f"{bad.sum()} elements off, worst {np.nanmax(np.abs(out - ref) / scale)}"


def operand(rng, shape, dtype, layout):
    """A (.., r, c) operand in the given memory layout: C, transposed (F) or a strided slice."""
    if layout == "T":
        return np.swapaxes(rng.standard_normal(shape[:-2] + shape[:-3:-1]).astype(dtype), -1, -2)
    if layout == "slice":
        big = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        return big[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


SHAPES = [(1, 1, 1), (1, 37, 5), (2, 3, 700), (4, 129, 33), (5, 1, 9), (13, 31, 29),
          (14, 32, 256), (15, 33, 257), (29, 65, 300), (97, 47, 515), (181, 100, 61), (200, 3, 1)]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_shapes_layouts(level, dtype):
    rng = np.random.default_rng(1)
    with simd(level), _array.poisoned():
        for m, n, k in SHAPES:
            for la, lb in (("C", "C"), ("T", "C"), ("C", "T"), ("slice", "T"), ("T", "slice")):
                a = operand(rng, (m, k), dtype, la)
                b = operand(rng, (k, n), dtype, lb)
                close(ops.matmul(a, b, backend="cpp"), a, b, k)


@pytest.mark.parametrize("nt", [1, 2])
def test_threads_and_blocks(nt):
    # large enough to split over threads, several KC and MC blocks and N blocks
    rng = np.random.default_rng(2)
    with threads(nt), _array.poisoned():
        for m, n, k in [(301, 4099, 517), (700, 70, 1030), (3, 5000, 300), (33, 9000, 17),
                        (70, 20, 1000), (71, 60, 900)]:  # unpacked, tiles shared by threads, K > KC
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            close(ops.matmul(a, b, backend="cpp"), a, b, k)


@pytest.mark.parametrize("variant", ["naive", "packed", "direct", "unpacked", "packed-avx2", "packed-scalar"])
def test_variants(variant):
    rng = np.random.default_rng(3)
    with _array.poisoned():
        for m, n, k in [(1, 40, 30), (3, 17, 300), (37, 41, 43)]:
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = operand(rng, (k, n), np.float32, "T")
            close(ops.matmul(a, b, backend=f"cpp:{variant}"), a, b, k)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unpacked_path(level, dtype):
    # B row-major (read in place, never packed): full and masked column tiles, partial row
    # tiles, K crossing the KC block, a row stride wider than N, A transposed or strided
    rng = np.random.default_rng(11)
    with simd(level), _array.poisoned():
        for m, n, k in [(1, 1, 1), (33, 17, 65), (14, 32, 256), (15, 33, 257), (29, 65, 600),
                        (64, 256, 784), (5, 100, 9), (97, 47, 515)]:
            for la in ("C", "T", "slice"):
                a = operand(rng, (m, k), dtype, la)
                b = rng.standard_normal((k, n + 3)).astype(dtype)[:, 2:n + 2]
                close(ops.matmul(a, b, backend="cpp:unpacked"), a, b, k)
        # the epilogue on this path: accumulating products (a batch sharing db)
        a = rng.standard_normal((3, 40, 9)).astype(dtype)
        b = rng.standard_normal((9, 31)).astype(dtype)
        g = rng.standard_normal((3, 40, 31)).astype(dtype)
        _, db = ops.matmul_backward(g, a, b, backend="cpp:unpacked")
        ref = sum(a[i].T.astype(np.float64) @ g[i].astype(np.float64) for i in range(3))
        np.testing.assert_allclose(db, ref, rtol=64 * EPS[dtype] * 8, atol=64 * EPS[dtype] * 80)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_allocated_by_the_kernel(dtype):
    # outside poisoned() the adapter lets the kernel allocate its output (gemm_matmul_new)
    rng = np.random.default_rng(12)
    for sa, sb in [((33, 65), (65, 17)), ((1, 1), (1, 1)), ((4, 5, 6), (6, 7)), ((5, 6), (4, 6, 3)),
                   ((2, 3, 9), (2, 9, 4)), ((0, 5), (5, 3))]:
        a = rng.standard_normal(sa).astype(dtype)
        b = rng.standard_normal(sb).astype(dtype)
        out = ops.matmul(a, b, backend="cpp")
        assert out.flags.c_contiguous and out.dtype == dtype
        close(out, a, b, sa[-1])
    with pytest.raises(ValueError, match="2-D or 3-D"):
        _cpp.gemm_matmul_new_f32(np.ones(3, np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="inner dimension"):
        _cpp.gemm_matmul_new_f32(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(TypeError):
        _cpp.gemm_matmul_new_f32(np.ones((2, 3)), np.ones((3, 2), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_and_backward(dtype):
    rng = np.random.default_rng(4)
    with _array.poisoned():
        for sa, sb in [((5, 17, 33), (5, 33, 19)), ((3, 40, 9), (9, 31)), ((29, 6), (4, 6, 45)),
                       ((64, 8, 8), (64, 8, 8))]:
            a = rng.standard_normal(sa).astype(dtype)
            b = rng.standard_normal(sb).astype(dtype)
            out = ops.matmul(a, b, backend="cpp")
            close(out, a, b, sa[-1])
            g = rng.standard_normal(out.shape).astype(dtype)
            da, db = ops.matmul_backward(g, a, b, backend="cpp")
            bt = np.swapaxes(b, -1, -2)
            ref_da = np.matmul(g.astype(np.float64), bt.astype(np.float64))
            ref_db = np.matmul(np.swapaxes(a, -1, -2).astype(np.float64), g.astype(np.float64))
            if a.ndim < ref_da.ndim:
                ref_da = ref_da.sum(0)
            if b.ndim < ref_db.ndim:
                ref_db = ref_db.sum(0)
            tol = 64 * EPS[dtype] * 8
            np.testing.assert_allclose(da, ref_da, rtol=tol, atol=tol * 10)
            np.testing.assert_allclose(db, ref_db, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "tanh", "sigmoid"])
def test_linear_epilogue(level, activation):
    rng = np.random.default_rng(5)
    ref_act = {None: lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
               "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
               "gelu": lambda z: 0.5 * z * (1 + np.vectorize(__import__("math").erf)(z / np.sqrt(2)))}
    with simd(level), _array.poisoned():
        for rows, n_in, n_out in [(1, 300, 45), (3, 20, 7), (29, 270, 33), (50, 16, 100)]:
            for dtype in (np.float32, np.float64):
                x = rng.standard_normal((rows, n_in)).astype(dtype)
                w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
                b = rng.standard_normal(n_out).astype(dtype)
                out, saved = ops.linear.with_saved(x, w, b, activation, backend="cpp")
                z = x.astype(np.float64) @ w.T.astype(np.float64) + b
                tol = 1e-5 if dtype == np.float32 else 1e-12
                np.testing.assert_allclose(out, ref_act[activation](z), rtol=tol, atol=tol)
                if activation == "gelu":
                    np.testing.assert_allclose(saved["preact"], z, rtol=tol, atol=tol)
                else:  # the output itself (relu, tanh, sigmoid: their derivatives are written in it)
                    if activation is None:
                        assert saved["preact"] is None
                    else:
                        assert np.shares_memory(saved["preact"], out) and saved["preact"].shape == out.shape


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edge_row_tiles(level, dtype):
    # every row count up to two micro-tiles and a bit (AVX2 6 rows, AVX-512 14): the edge tile takes
    # the shortest register shape that covers it (2/4 of 6, 4/8 of 14) on the packed path, the
    # unpacked one (B in place, copied slices with a 4.4 KB row stride, A in place) and linear's
    # transposed B with its epilogue; K crosses the KC block, N ends in a partial column tile
    rng = np.random.default_rng(12)
    k, n = 300, 40
    with simd(level), _array.poisoned():
        for m in range(1, 31):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            wide = rng.standard_normal((k, 1100)).astype(dtype)[:, 3:3 + n]
            for variant, bb in (("packed", b), ("unpacked", b), ("unpacked", wide)):
                close(ops.matmul(a, bb, backend=f"cpp:{variant}"), a, bb, k)
            a3, b3 = a[:, :3], b[:3, :20]  # A read in place (two column tiles or fewer)
            close(ops.matmul(a3, b3, backend="cpp:unpacked"), a3, b3, 3)
            w = rng.standard_normal((n, k)).astype(dtype)
            bias = rng.standard_normal(n).astype(dtype)
            out = ops.linear(a, w, bias, "relu", backend="cpp")
            ref = np.maximum(a.astype(np.float64) @ w.T.astype(np.float64) + bias, 0)
            tol = 1e-4 if dtype == np.float32 else 1e-11
            np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())
