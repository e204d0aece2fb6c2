"""conv2d of the cython and numba backends: the per-image fused drivers
(kernels/cython/conv.pyx conv_forward / conv_backward, pydl/backends/numba/conv.py
_conv_fwd / _conv_bwd) and their direct forward for few filters per group, at
sizes large enough to take the parallel-over-images branch (the conformance cases
are small: the cython drivers run them serially), with batches below, at and
above the thread count, on 1 and 2 threads, float32 and float64; outputs
NaN-poisoned, compared with the float64 NumPy reference."""
import numpy as np
import pytest

import pydl
from pydl import backends
from pydl.testing import assert_close

from conv_check import check as _check

backends.load()
JIT = [b for b in ("cython", "numba") if backends.unavailable_reason(b) is None]

# id -> (N, C, H, W, K, (R, S), stride, padding, dilation, groups)
SHAPES = {
    "3x3": (3, 8, 13, 11, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "3x3_s2_nopad": (4, 16, 15, 14, 8, (3, 3), (2, 2), (0, 0), (1, 1), 1),
    "5x3_dil_grouped": (3, 12, 12, 13, 20, (5, 3), (1, 2), (2, 1), (2, 1), 2),
    "1x1": (3, 32, 9, 10, 24, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    "1x1_grouped": (2, 32, 9, 10, 24, (1, 1), (1, 1), (0, 0), (1, 1), 4),
    "1x1_s2": (3, 16, 9, 10, 24, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    "depthwise": (5, 24, 17, 19, 24, (3, 3), (1, 1), (1, 1), (1, 1), 24),
    "depthwise_x2_s2": (3, 16, 17, 19, 32, (3, 3), (2, 2), (1, 1), (1, 1), 16),
    "lenet1": (6, 1, 28, 27, 6, (5, 5), (1, 1), (0, 0), (1, 1), 1),
    "one_channel_k8_pad": (3, 1, 20, 21, 8, (3, 5), (1, 3), (2, 1), (1, 1), 1),
    "kg4_grouped": (3, 12, 16, 16, 12, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    "single_image": (1, 8, 16, 16, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # more filters per group than taps and than one row tile's positions: the cython
    # backward's sliver buffer must hold a depth of K/G (W^T @ dy), not only crs or T
    "1x1_k_gt_crs": (3, 4, 6, 7, 40, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    "3x3_k_gt_crs_s2": (2, 2, 9, 8, 40, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    # output rows narrower than a GEMM sliver (32 float32 / 16 float64 positions) with
    # padding on both sides: numba's im2col-to-slivers runs cut at row and sliver edges
    "narrow_rows_pad": (3, 5, 7, 5, 12, (3, 3), (1, 1), (2, 2), (1, 1), 1),
    "wide_rows_s3": (2, 3, 9, 70, 7, (3, 4), (1, 3), (1, 2), (1, 1), 1),
    # width stride with dilation, padding and groups: numba's phase-split input (tap
    # columns j*sw + s*dw - pw in phase (s*dw - pw) mod sw)
    "s2_dil2_pad3_grouped": (3, 4, 11, 17, 6, (3, 3), (2, 2), (1, 3), (2, 2), 2),
    # whole-image tiles with a partial last sliver (L = 81): numba runs two images per GEMM,
    # the odd one out alone
    "pairs_odd_batch": (7, 6, 9, 9, 10, (3, 3), (1, 1), (1, 1), (1, 1), 1),
}


def _args(rng, shape, dtype, bias):
    n, c, h, w, k, rs, st, p, d, g = shape
    return dict(x=rng.standard_normal((n, c, h, w)).astype(dtype),
                weight=rng.standard_normal((k, c // g) + rs).astype(dtype),
                bias=rng.standard_normal(k).astype(dtype) if bias else None,
                stride=st, padding=p, dilation=d, groups=g)




@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = pydl.get_num_threads()
    pydl.set_num_threads(request.param)
    yield request.param
    pydl.set_num_threads(old)


@pytest.mark.parametrize("backend", JIT)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sid", list(SHAPES))
def test_fused_drivers(backend, dtype, sid, threads):
    rng = np.random.default_rng(sum(map(ord, sid)) + (dtype == np.float64))
    _check(backend, _args(rng, SHAPES[sid], dtype, bias=sid != "1x1"), dtype, rng)


@pytest.mark.parametrize("backend", JIT)
def test_large_enough_for_the_parallel_branch(backend):
    """A ResNet-like layer above the serial-flops thresholds, odd batch (threads get
    unequal image counts), float32."""
    rng = np.random.default_rng(7)
    _check(backend, _args(rng, (5, 32, 20, 20, 48, (3, 3), (1, 1), (1, 1), (1, 1), 1), np.float32, True),
           np.float32, rng)


@pytest.mark.parametrize("backend", JIT)
def test_non_contiguous_inputs_and_repeat_calls(backend):
    """Strided x and weight (made contiguous by the adapter), and the same call twice
    (per-thread buffers and dW partials start from zero every call)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 12, 22)).astype(np.float32)[:, :, :, ::2]
    wt = np.asfortranarray(rng.standard_normal((10, 6, 3, 3)).astype(np.float32))
    gy = rng.standard_normal((4, 10, 12, 11)).astype(np.float32)
    hp = dict(stride=1, padding=1, groups=1)
    ref = pydl.ops.conv2d(x.astype(np.float64), wt.astype(np.float64), None, backend="numpy", **hp)
    rdx, rdw, _ = pydl.ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), wt.astype(np.float64),
                                           None, backend="numpy", **hp)
    for _ in range(2):
        out = pydl.ops.conv2d(x, wt, None, backend=backend, **hp)
        dx, dw, db = pydl.ops.conv2d_backward(gy, x, wt, None, backend=backend, **hp)
        assert db is None
        assert_close(f"{backend} out", out, ref, 1e-5, 1e-4)
        assert_close(f"{backend} dx", dx, rdx, 1e-5, 1e-4)
        assert_close(f"{backend} dw", dw, rdw, 1e-5, 1e-3)


@pytest.mark.parametrize("backend", JIT)
def test_empty_batch(backend):
    x = np.zeros((0, 4, 8, 8), np.float32)
    wt = np.ones((6, 4, 3, 3), np.float32)
    out = pydl.ops.conv2d(x, wt, np.ones(6, np.float32), padding=1, backend=backend)
    assert out.shape == (0, 6, 8, 8)
    dx, dw, db = pydl.ops.conv2d_backward(np.zeros((0, 6, 8, 8), np.float32), x, wt, np.ones(6, np.float32),
                                          padding=1, backend=backend)
    assert dx.shape == x.shape and dw.shape == wt.shape and not dw.any() and not db.any()


@pytest.mark.skipif("cython" not in JIT, reason="cython backend not built")
@pytest.mark.parametrize("tile", [1, 3000, 1 << 16])
@pytest.mark.parametrize("sid", ["3x3", "3x3_s2_nopad", "5x3_dil_grouped", "1x1", "1x1_grouped", "1x1_s2",
                                 "1x1_k_gt_crs", "3x3_k_gt_crs_s2"])
def test_cython_row_tiles(tile, sid, threads):
    """conv_forward / conv_backward in tiles of output rows (1 byte: one row per tile;
    windows of neighbouring tiles overlap in the input: col2im adds across tiles)."""
    from pydl import _cython

    old = _cython.conv_set_tile_bytes(tile)
    try:
        rng = np.random.default_rng(11)
        for dtype in (np.float32, np.float64):
            _check("cython", _args(rng, SHAPES[sid], dtype, bias=True), dtype, rng)
    finally:
        _cython.conv_set_tile_bytes(old)


@pytest.mark.skipif("numba" not in JIT, reason="numba backend not built")
@pytest.mark.parametrize("tile", [1, 3000])
@pytest.mark.parametrize("sid", ["3x3", "3x3_s2_nopad", "5x3_dil_grouped", "1x1_s2", "1x1", "1x1_grouped",
                                 "narrow_rows_pad", "3x3_k_gt_crs_s2", "wide_rows_s3", "s2_dil2_pad3_grouped"])
def test_numba_row_tiles(tile, sid):
    """The numba fused drivers in tiles of output rows (numba/conv.py TILE_BYTES): tiles
    whose positions end inside a sliver (zeroed tails), 1x1 in place."""
    from pydl.backends.numba import conv as nconv

    old, nconv.TILE_BYTES = nconv.TILE_BYTES, tile
    try:
        rng = np.random.default_rng(13)
        for dtype in (np.float32, np.float64):
            _check("numba", _args(rng, SHAPES[sid], dtype, bias=True), dtype, rng)
    finally:
        nconv.TILE_BYTES = old
