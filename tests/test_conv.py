"""conv family beyond the generated conformance: a random sweep of shapes and
hyper-parameters per backend (forward and every backward output vs the
float64 NumPy reference, outputs NaN-poisoned), every cpp path forced at
least once (named variants), the cpp heuristic's choices, both thread
schedules (over images and over GEMM threads), the AVX2 and scalar SIMD
levels, and the im2col workspace bound."""
import functools

import numpy as np
import pytest

import pydl
from pydl import _array, backends, registry
from pydl.testing import assert_close

from conv_check import TOL, check

_check = functools.partial(check, dx_depth=False)  # this file's tolerance, as it always was

backends.load()
SPEC = registry.SPECS["conv2d"]
CPU = [b for b in ("cpp", "cython", "numba") if backends.unavailable_reason(b) is None]
CPP_PATHS = ["gemm1x1", "im2col", "implicit", "direct", "smallk", "winograd"]
needs_cpp = pytest.mark.skipif("cpp" not in CPU, reason="cpp backend not built")


def _random_case(rng):
    """One random geometry: groups, stride, padding, dilation, non-square, odd sizes."""
    while True:
        g = int(rng.choice([1, 1, 2, 3]))
        depthwise = rng.random() < 0.25
        c = g * int(rng.integers(1, 4)) if not depthwise else int(rng.integers(1, 6))
        g = c if depthwise else g
        k = g * int(rng.integers(1, 4)) if not depthwise else c * int(rng.choice([1, 1, 2]))
        r, s = (1, 1) if rng.random() < 0.15 else (int(rng.integers(1, 6)), int(rng.integers(1, 5)))
        st = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
        p = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        n = int(rng.choice([1, 2, 3, 5]))
        h, w = int(rng.integers(1, 13)), int(rng.integers(1, 11))
        if all(sz + 2 * pp - dd * (kk - 1) - 1 >= 0 for sz, pp, dd, kk in zip((h, w), p, d, (r, s))):
            return n, c, h, w, k, r, s, g, st, p, d


def _args(rng, shape_hp, dtype, bias=True):
    n, c, h, w, k, r, s, g, st, p, d = shape_hp
    return dict(x=rng.standard_normal((n, c, h, w)).astype(dtype),
                weight=rng.standard_normal((k, c // g, r, s)).astype(dtype),
                bias=rng.standard_normal(k).astype(dtype) if bias else None,
                stride=st, padding=p, dilation=d, groups=g)




@pytest.mark.parametrize("backend", CPU + [f"cpp:{p}" for p in CPP_PATHS if "cpp" in CPU])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_sweep(backend, dtype):
    rng = np.random.default_rng(1234 + len(backend) + (dtype == np.float64))
    for i in range(25):
        _check(backend, _args(rng, _random_case(rng), dtype, bias=bool(i % 3)), dtype, rng)


@needs_cpp
@pytest.mark.parametrize("path", CPP_PATHS)
def test_cpp_forced_paths_taken(path):
    from pydl.backends.cpp import conv as cc
    rng = np.random.default_rng(5)
    shapes = [(2, 4, 7, 9, 6, 3, 3, 1, (1, 1), (1, 1), (1, 1)),   # 3x3
              (3, 6, 5, 5, 4, 1, 1, 2, (1, 1), (0, 0), (1, 1)),   # grouped 1x1
              (2, 5, 9, 8, 5, 3, 3, 5, (2, 1), (1, 1), (1, 2))]   # depthwise, strided, dilated
    for sh in shapes:
        a = _args(rng, sh, np.float32)
        _check(f"cpp:{path}", a, np.float32, rng)
        taken = (cc.last_path["forward"], cc.last_path["backward"])
        is1x1 = sh[5] == sh[6] == 1
        want = path if (path != "gemm1x1" or is1x1) else "im2col"
        if path == "winograd" and sh is not shapes[0]:  # only 3x3, stride 1, one group: else automatic
            pydl.ops.conv2d(**a, backend="cpp")
            pydl.ops.conv2d_backward(rng.standard_normal(pydl.ops.conv2d(**a, backend="cpp").shape).astype(np.float32),
                                     **a, backend="cpp")
            assert taken == (cc.last_path["forward"], cc.last_path["backward"]) and "winograd" not in taken
            continue
        assert taken == (want, "im2col" if want == "implicit" else want)


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", ["avx512", "avx2", "scalar"])
def test_cpp_smallk_blocks(dtype, level):
    """smallk beyond the random sweep's sizes: products deeper than one depth block (C*R*S > 256
    taps forward, > 256 pixels for dW), several lane blocks with a narrower tail (Kg = 70, 130),
    groups, stride/padding/dilation, one image on two threads (dW split over taps), stride-2 rows
    through the vector phase split."""
    from pydl import _cpp
    rng = np.random.default_rng(9)
    _cpp.set_simd_level(level)
    try:
        for sh in [(2, 30, 9, 11, 20, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                   (1, 4, 21, 19, 5, 2, 3, 1, (1, 1), (0, 1), (1, 1)),
                   (2, 60, 6, 5, 6, 3, 3, 2, (2, 1), (1, 0), (1, 2)),
                   (1, 3, 5, 6, 70, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                   (3, 2, 7, 4, 130, 1, 2, 1, (1, 2), (0, 1), (2, 1)),
                   # stride 2 along rows long enough for the vector phase split (16 + 8 + a
                   # scalar tail; even and odd padding; no padding)
                   (1, 3, 9, 29, 20, 3, 3, 1, (2, 2), (1, 1), (1, 1)),
                   (2, 2, 7, 40, 10, 3, 3, 1, (1, 2), (0, 2), (1, 1)),
                   (1, 2, 6, 17, 9, 2, 2, 1, (2, 2), (0, 0), (1, 1)),
                   # AVX-512 rows of 8 and 16 pixels with >= 6 vectors of filters: 3-vector
                   # row tiles (a 2-vector tail), shallow and deeper than a depth block
                   (2, 3, 8, 8, 100, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                   (1, 50, 16, 16, 96, 3, 3, 1, (1, 1), (1, 1), (1, 1))]:
            _check("cpp:smallk", _args(rng, sh, dtype, bias=sh[0] != 1), dtype, rng)
    finally:
        _cpp.set_simd_level("avx512")


@needs_cpp
def test_cpp_direct_backward_planes(simd_level):
    """The direct path in registers (forward and dW over padded, phase-split input planes; dx as
    a stride-1 convolution of padded, zero-inserted dy with the flipped filter): rows wider than
    one vector with every tail length, dilation, 5x5 and 7x7 filters (25 and 49 taps: several tap
    chunks), two filters per group, strides 2 and 3 along rows and columns, padding wider than
    the dilated filter (dx's row-loop fallback), both dtypes; then dW with an inf in the input,
    which only the taps that reach it may see (the row tails must not read past a row)."""
    rng = np.random.default_rng(12)
    for sh in [(2, 3, 9, 7, 3, 3, 3, 3, (1, 1), (1, 1), (1, 1)),
               (1, 2, 11, 17, 2, 3, 3, 2, (1, 1), (1, 1), (1, 1)),
               (2, 2, 6, 16, 4, 3, 2, 2, (1, 1), (1, 0), (2, 1)),
               (1, 4, 13, 33, 4, 5, 5, 4, (1, 1), (2, 2), (1, 2)),
               (1, 2, 14, 23, 2, 7, 7, 2, (1, 1), (3, 3), (1, 1)),
               (2, 3, 8, 56, 3, 3, 3, 3, (1, 1), (0, 0), (1, 1)),
               (1, 2, 7, 9, 2, 3, 3, 2, (1, 1), (3, 1), (1, 1)),
               (2, 2, 9, 20, 2, 3, 3, 2, (2, 1), (1, 1), (1, 1)),
               (2, 3, 11, 29, 3, 3, 3, 3, (2, 2), (1, 1), (1, 1)),
               (1, 2, 9, 35, 4, 3, 5, 2, (1, 3), (2, 2), (1, 2)),
               (1, 2, 12, 40, 2, 3, 3, 2, (2, 2), (0, 0), (2, 2)),
               (2, 2, 10, 37, 2, 4, 4, 2, (3, 2), (1, 2), (1, 1))]:
        for dtype in (np.float32, np.float64):
            _check("cpp:direct", _args(rng, sh, dtype, bias=sh[0] != 1), dtype, rng)
    x = rng.standard_normal((1, 2, 6, 21)).astype(np.float32)
    x[0, 1, 2, 0] = np.inf   # column 0: only the taps s = 0 of a 3x3 at padding 0 reach it
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    hp = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=2)
    gy = rng.standard_normal((1, 2, 4, 19)).astype(np.float32)
    ref = pydl.ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                   None, **hp, backend="numpy")[1]
    with _array.poisoned():
        dw = pydl.ops.conv2d_backward(gy, x, w, None, **hp, backend="cpp:direct")[1]
    assert np.isinf(ref[1, 0, :, 0]).all() and np.isfinite(ref[1, 0, :, 1:]).all()
    assert_close("dW with an inf input", dw, ref, 2e-5, 1e-4)


@needs_cpp
@pytest.mark.parametrize("level", ["avx512", "avx2"])
def test_cpp_heuristic(level):
    from pydl import _cpp
    from pydl.backends.cpp import conv as cc
    rng = np.random.default_rng(6)
    _cpp.set_simd_level(level)
    # a shallow product (<= 32 taps) with few filters: forward by im2col where the GEMM's row tile
    # holds the filters better than smallk's lanes (AVX2: 6-row tiles, 8 lanes), backward smallk
    rows = "im2col" if _cpp.simd_level() == "avx2" else "smallk"
    try:
        for sh, want in [((2, 8, 6, 6, 4, 1, 1, 1, (1, 1), (0, 0), (1, 1)), ("gemm1x1", "gemm1x1")),
                         ((2, 8, 6, 6, 8, 3, 3, 8, (1, 1), (1, 1), (1, 1)), ("direct", "direct")),
                         ((2, 8, 6, 6, 4, 3, 3, 1, (1, 1), (1, 1), (1, 1)), ("smallk", "smallk")),
                         ((2, 8, 6, 6, 4, 1, 1, 1, (2, 2), (0, 0), (1, 1)), (rows, "smallk")),
                         ((2, 1, 12, 12, 6, 5, 5, 1, (1, 1), (0, 0), (1, 1)), (rows, "smallk")),
                         ((2, 3, 8, 8, 16, 3, 3, 1, (1, 1), (1, 1), (1, 1)), ("smallk", "smallk")),
                         # Winograd: 3x3, stride 1, enough tiles (392 here) and channels for the plane's
                         # width (a harmonic mean of C and K of 32 on 14x14 at AVX2, 64 at AVX-512);
                         # not on narrow planes with few channels, nor with few tiles
                         ((2, 128, 28, 28, 128, 3, 3, 1, (1, 1), (1, 1), (1, 1)), ("winograd", "winograd")),
                         ((4, 64, 14, 14, 64, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                          ("winograd", "winograd") if level == "avx2" else ("smallk", "smallk")),
                         ((16, 64, 7, 7, 64, 3, 3, 1, (1, 1), (1, 1), (1, 1)), ("smallk", "smallk")),
                         ((1, 64, 8, 8, 64, 3, 3, 1, (1, 1), (1, 1), (1, 1)), ("smallk", "smallk")),
                         ((1, 3, 5, 5, 260, 1, 1, 1, (1, 1), (0, 0), (1, 1)), ("gemm1x1", "gemm1x1")),
                         ((1, 3, 5, 4, 260, 3, 2, 1, (1, 1), (1, 0), (1, 1)), ("smallk", "im2col")),
                         ((1, 2, 5, 4, 1030, 3, 2, 1, (1, 1), (1, 0), (1, 1)), ("im2col", "im2col"))]:
            _check("cpp", _args(rng, sh, np.float32), np.float32, rng)
            assert (cc.last_path["forward"], cc.last_path["backward"]) == want, sh
    finally:
        _cpp.set_simd_level("avx512")


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", ["avx512", "avx2", "scalar"])
def test_cpp_winograd(dtype, level):
    """Winograd F(2x2, 3x3) forward, dx (the transposed convolution) and dW (its own products
    below AVX-512, smallk's at AVX-512) forced:
    padding 0, 1, 2 and mixed, odd planes (the last tile row and column half outside), 1 x W and
    H x 1 planes, rows long enough for the vector even/odd splits (16 and 8 at a time) and their
    tails, channel and filter counts off the GEMM's tiles, one and two threads, chunks of a few
    tiles (many chunks, a short last one, tile rows of several images in one chunk) and the
    default (one chunk for all: the GEMM takes the threads)."""
    from pydl import _cpp
    from pydl.backends.cpp import conv as cc
    rng = np.random.default_rng(13)
    _cpp.set_simd_level(level)
    before = pydl.get_num_threads()
    try:
        for tiles in (0, 5):
            old = _cpp.conv_set_winograd_tiles(tiles)
            try:
                for threads in (1, 2):
                    pydl.set_num_threads(threads)
                    for sh in [(2, 5, 7, 9, 3, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                               (3, 4, 6, 6, 7, 3, 3, 1, (1, 1), (0, 0), (1, 1)),
                               (1, 3, 5, 4, 4, 3, 3, 1, (1, 1), (2, 2), (1, 1)),
                               (2, 6, 9, 8, 5, 3, 3, 1, (1, 1), (2, 0), (1, 1)),
                               (2, 3, 1, 13, 4, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                               (1, 2, 11, 1, 3, 3, 3, 1, (1, 1), (1, 2), (1, 1)),
                               (2, 3, 12, 61, 5, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                               (1, 4, 10, 38, 6, 3, 3, 1, (1, 1), (0, 1), (1, 1)),
                               (2, 70, 6, 7, 30, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                               (1, 20, 5, 6, 130, 3, 3, 1, (1, 1), (1, 1), (1, 1))]:
                        _check("cpp:winograd", _args(rng, sh, dtype, bias=sh[0] != 1), dtype, rng)
                        assert (cc.last_path["forward"], cc.last_path["backward"]) == ("winograd", "winograd")
            finally:
                _cpp.conv_set_winograd_tiles(old)
    finally:
        pydl.set_num_threads(before)
        _cpp.set_simd_level("avx512")


@needs_cpp
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 3])
def test_cpp_thread_schedules(threads, n):
    """n < threads: one image at a time on the GEMM's threads; else images in parallel
    with per-thread dW partials."""
    rng = np.random.default_rng(7)
    before = pydl.get_num_threads()
    pydl.set_num_threads(threads)
    try:
        for path in ["cpp"] + [f"cpp:{p}" for p in CPP_PATHS]:
            for sh in [(n, 4, 8, 7, 6, 3, 2, 2, (1, 2), (1, 0), (1, 1)),
                       (n, 6, 5, 6, 6, 1, 1, 1, (1, 1), (0, 0), (1, 1))]:
                _check(path, _args(rng, sh, np.float32), np.float32, rng)
    finally:
        pydl.set_num_threads(before)


@needs_cpp
@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_cpp_simd_levels(level):
    from pydl import _cpp
    rng = np.random.default_rng(8)
    _cpp.set_simd_level(level)
    try:
        for path in CPP_PATHS:
            for _ in range(4):
                _check(f"cpp:{path}", _args(rng, _random_case(rng), np.float32), np.float32, rng)
    finally:
        _cpp.set_simd_level("avx512")


@needs_cpp
def test_cpp_workspace_bounded():
    from pydl import _cpp
    # ResNet 3x3 C64 56x56: the whole image's column matrix is 7.2 MB; a tile stays within 4 MB
    assert _cpp.conv_workspace_f32(64, 3, 3, 56, 56, 1) <= 4 << 20
    old = _cpp.conv_set_tile_bytes(512 * 1024)
    try:
        assert _cpp.conv_workspace_f32(64, 3, 3, 56, 56, 1) <= 512 * 1024
        rng = np.random.default_rng(11)   # several tiles per image, forward and backward
        _check("cpp:im2col", _args(rng, (2, 64, 12, 20, 3, 3, 3, 1, (1, 1), (1, 1), (1, 1)), np.float32),
               np.float32, rng)
    finally:
        _cpp.conv_set_tile_bytes(old)
    # one output row larger than the budget: a single row, no more
    assert _cpp.conv_workspace_f32(4096, 3, 3, 8, 64, 1) == 4096 * 9 * 64 * 4


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("op", ["im2col", "col2im"])
def test_im2col_col2im_random(backend, op):
    """Random geometries for the data-movement ops, both dtypes, vs the reference."""
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        for _ in range(15):
            n, c, h, w, k, r, s, g, st, p, d = _random_case(rng)
            hp = dict(kernel_size=(r, s), stride=st, padding=p, dilation=d)
            x = rng.standard_normal((n, c, h, w)).astype(dtype)
            if op == "im2col":
                a = dict(x=x, **hp)
            else:
                cols = pydl.ops.im2col(x, **hp, backend="numpy")
                a = dict(cols=rng.standard_normal(cols.shape).astype(dtype), output_size=(h, w), **hp)
            ref = getattr(pydl.ops, op)(**a, backend="numpy")
            with _array.poisoned():
                out = getattr(pydl.ops, op)(**a, backend=backend)
            assert out.dtype == dtype
            exact = op == "im2col"
            assert_close(f"{backend} {op}", out, ref, 0 if exact else TOL[dtype], 0 if exact else TOL[dtype])


def test_adjoint_identity():
    """<im2col(x), y> == <x, col2im(y)> on every backend (col2im sums the overlaps)."""
    rng = np.random.default_rng(10)
    for backend in CPU:
        x = rng.standard_normal((2, 3, 9, 8))
        hp = dict(kernel_size=(3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1))
        cols = pydl.ops.im2col(x, **hp, backend=backend)
        y = rng.standard_normal(cols.shape)
        back = pydl.ops.col2im(y, (9, 8), **hp, backend=backend)
        assert np.isclose(np.vdot(cols, y), np.vdot(x, back), rtol=1e-12)


@needs_cpp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", ["avx512", "avx2", "scalar"])
@pytest.mark.parametrize("block,depth", [(1, 384), (2, 7), (3, 64), (4, 384), (2, 384)])
def test_cpp_smallk_row_tiles(dtype, level, block, depth):
    """The smallk forward's row and flat tiles (and dW's tiles) at every lane block and at depth blocks that split the
    taps unevenly: width strides 1-3 (the phase-split planes), dilation, rows narrower and wider
    than a tile (the tile past a row's end reads into the next row: results dropped), no padding
    (planes copied anyway), Kg not a multiple of the block, groups, one image on two threads; dx
    as a transposed conv (Cg >= 16, stride 1) or by GEMM + col2im (padding past the kernel, Cg < 16)."""
    from pydl import _cpp
    rng = np.random.default_rng(10)
    _cpp.set_simd_level(level)
    old = _cpp.conv_set_smallk_block(block, depth, 5 - block if block > 1 else 1, depth)
    before = pydl.get_num_threads()
    try:
        for threads in (1, 2):
            pydl.set_num_threads(threads)
            for sh in [(2, 5, 9, 31, 37, 3, 3, 1, (1, 3), (1, 2), (1, 1)),
                       (1, 4, 7, 12, 40, 3, 2, 2, (2, 2), (0, 1), (2, 1)),
                       (3, 3, 6, 1, 20, 1, 1, 1, (1, 1), (0, 0), (1, 1)),
                       (2, 12, 5, 17, 70, 2, 3, 1, (1, 1), (0, 0), (1, 2)),
                       (1, 8, 10, 9, 6, 5, 5, 2, (1, 1), (2, 2), (1, 1)),
                       (2, 2, 4, 45, 18, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                       # Cg >= 16 at stride 1: dx by the forward as a transposed conv
                       (2, 20, 6, 9, 12, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                       (2, 40, 5, 7, 24, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                       (1, 66, 6, 9, 10, 3, 2, 2, (1, 1), (2, 0), (2, 1)),
                       (2, 32, 4, 4, 8, 1, 1, 1, (1, 1), (1, 1), (1, 1)),
                       # AVX-512: 16-pixel rows take flat tiles (row tiles would compute 28),
                       # emitted a chunk of tiles at a time; 14-pixel rows keep the row tiles
                       (1, 3, 16, 16, 20, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                       (2, 2, 9, 14, 33, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                       # output planes of 1 and 2 KiB (256 and 512 floats): emitted through the
                       # staging windows (128 pixels), split between threads for one image
                       (2, 2, 32, 32, 40, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
                       (1, 3, 8, 64, 12, 3, 3, 1, (1, 1), (1, 1), (1, 1))]:
                _check("cpp:smallk", _args(rng, sh, dtype, bias=sh[0] != 1), dtype, rng)
    finally:
        pydl.set_num_threads(before)
        _cpp.conv_set_smallk_block(*old)
        _cpp.set_simd_level("avx512")
