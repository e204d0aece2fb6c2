"""numba adapters for the conv family: im2col, col2im, conv2d forward and backward.

im2col / col2im: one ``prange`` over the (image, channel) planes; each plane's
R*S column rows are written (read) row by row with the valid output range
[lo, hi) computed once per tap, so the per-row copies and adds are
branch-free loops in small njit helpers of their own (LLVM does not vectorize
loops inside a prange body here). col2im owns each input plane, so the
overlapping-window sums need no atomics. conv2d = these kernels + GEMM
(pydl/backends/_conv_im2col.py), the numba GEMM (gemm.gemm_into).
"""
import numpy as np
from numba import njit, prange

from ...ops.conv import output_hw
from .. import _conv_im2col
from . import sync_threads
from .gemm import gemm_into

_JIT = dict(parallel=True, cache=True, nogil=True)
_HELP = dict(cache=True, nogil=True, fastmath={"contract", "nsz"})


@njit(**_HELP)
def _valid(off, stride, w, ow):
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = 0 if off > w - 1 else (w - 1 - off) // stride + 1
    hi = min(hi, ow)
    return min(lo, hi), hi


@njit(**_HELP)
def _copy_row(dst, d0, src, s0, lo, hi, ow, sw):
    for j in range(lo):
        dst[d0 + j] = 0
    if sw == 1:
        for j in range(lo, hi):
            dst[d0 + j] = src[s0 + j]
    else:
        for j in range(lo, hi):
            dst[d0 + j] = src[s0 + j * sw]
    for j in range(hi, ow):
        dst[d0 + j] = 0


@njit(**_HELP)
def _zero_row(dst, d0, ow):
    for j in range(ow):
        dst[d0 + j] = 0


@njit(**_HELP)
def _add_row(dst, d0, src, s0, lo, hi, sw):
    if sw == 1:
        for j in range(lo, hi):
            dst[d0 + j] += src[s0 + j]
    else:
        for j in range(lo, hi):
            dst[d0 + j * sw] += src[s0 + j]


@njit(**_JIT)
def _im2col(x, cols, planes, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """x flat (planes*h*w), cols flat (planes*kh*kw*oh*ow)."""
    L = oh * ow
    for p in prange(planes):
        for r in range(kh):
            for s in range(kw):
                row = (p * kh * kw + r * kw + s) * L
                off = s * dw - pw
                lo, hi = _valid(off, sw, w, ow)
                for o in range(oh):
                    ih = o * sh - ph + r * dh
                    if ih < 0 or ih >= h:
                        _zero_row(cols, row + o * ow, ow)
                    else:
                        _copy_row(cols, row + o * ow, x, (p * h + ih) * w + off, lo, hi, ow, sw)


@njit(**_JIT)
def _col2im(cols, x, planes, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Overwrites x flat (planes*h*w) with the column sums."""
    L = oh * ow
    for p in prange(planes):
        _zero_row(x, p * h * w, h * w)
        for r in range(kh):
            for s in range(kw):
                row = (p * kh * kw + r * kw + s) * L
                off = s * dw - pw
                lo, hi = _valid(off, sw, w, ow)
                for o in range(oh):
                    ih = o * sh - ph + r * dh
                    if ih >= 0 and ih < h:
                        _add_row(x, (p * h + ih) * w + off, cols, row + o * ow, lo, hi, sw)


def _run(kernel, src, dst, x_shape, geo):
    """kernel over flat views; x_shape (N, C, H, W), geo (R, S, sh, sw, ph, pw, dh, dw)."""
    n, c, h, w = x_shape
    if n == 0:
        return
    sync_threads()
    oh, ow = output_hw("kernel_size", (h, w), geo[0:2], geo[2:4], geo[4:6], geo[6:8])
    kernel(src.reshape(-1), dst.reshape(-1), n * c, h, w, *geo, oh, ow)


def _im2col_k(x, cols, geo):
    _run(_im2col, x, cols, x.shape, geo)


def _col2im_k(cols, x, geo):
    _run(_col2im, cols, x, x.shape, geo)


_conv_im2col.register_backend("numba", _im2col_k, _col2im_k, _conv_im2col.matmul_with(gemm_into))
