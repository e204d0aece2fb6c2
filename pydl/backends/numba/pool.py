"""Numba kernels and adapters for the pool family: max_pool2d, avg_pool2d,
adaptive_avg_pool2d, forward and backward. float32 and float64.

Same algorithm as kernels/cpp/pool.cpp: the window geometry arrives as
per-dimension tables (``pydl.ops.pool.window_table``: output o reads
``start[o] + t*step`` for ``t < count[o]``), and every window is separable, so
each plane (one ``prange`` task) takes two passes over small scratch buffers:
max: a horizontal (value, column) max per input row, then a vertical max over
each output row's rows (row-major tap order kept: first max, last NaN); avg:
a vertical sum of each output row's rows, then the horizontal taps; avg
backward gathers (q = grad/divisor, then t[oh, w] = sum of q over the windows
holding column w, then gx[h, :] = sum of t over the windows holding row h),
so each gx element is written once. Max backward zeroes a plane and adds each
gradient at its saved index.

Loops run tap by tap with the output position innermost (``for t: for o:``),
so the inner loop is a (strided) load, a compare and a select over the
output width, which LLVM vectorizes; LLVM does not vectorize loops inside a
``prange`` body here, so the row passes are njit functions of their own.
"""
import numpy as np
from numba import njit, prange

from ... import _array
from ...ops.conv import output_hw
from ...ops.pool import adaptive_tables, avg_tables, inverse_table, window_table
from ...registry import register
from .._shared import contiguous
from . import sync_threads

_JIT = dict(parallel=True, cache=True, nogil=True)
_ROW = dict(cache=True, nogil=True)


@njit(**_ROW)
def _max_row(row, start, count, step, most, hv, hc):
    """hv[o], hc[o]: max of row over output column o's taps and its column (-1: no tap)."""
    neg = row.dtype.type(-np.inf)
    for o in range(start.shape[0]):
        if count[o] > 0:
            hv[o] = row[start[o]]
            hc[o] = start[o]
        else:
            hv[o] = neg
            hc[o] = -1
    for t in range(1, most):
        for o in range(start.shape[0]):
            if t < count[o]:
                w = start[o] + t * step
                v = row[w]
                b = hv[o]
                take = (v > b) | (v != v)        # strictly greater keeps the first max; NaN: the last
                hv[o] = v if take else b         # selects, not branches (random data mispredicts)
                hc[o] = w if take else hc[o]
    return


@njit(**_ROW)
def _max_col(hv, hc, h0, c, step, width, out, idx):
    """out, idx of one output row from the horizontal maxima of its c rows h0 + t*step."""
    n = out.shape[0]
    if c == 0:
        for o in range(n):
            out[o] = -np.inf
            idx[o] = -1
        return
    for o in range(n):
        out[o] = hv[h0, o]
        idx[o] = h0 * width + hc[h0, o] if hc[h0, o] >= 0 else -1
    for t in range(1, c):
        h = h0 + t * step
        for o in range(n):
            v = hv[h, o]
            b = out[o]
            take = (v > b) | (v != v)
            out[o] = v if take else b
            idx[o] = (h * width + hc[h, o] if hc[h, o] >= 0 else -1) if take else idx[o]
    return


@njit(**_JIT)
def _max_forward(x, out, idx, hs, hc, dh, ws, wc, dw):
    planes, height, width = x.shape
    wmost = max(wc.max(), 1) if wc.shape[0] else 1
    for p in prange(planes):
        hv = np.empty((height, ws.shape[0]), x.dtype)
        hcol = np.empty((height, ws.shape[0]), np.int64)
        for h in range(height):
            _max_row(x[p, h], ws, wc, dw, wmost, hv[h], hcol[h])
        for oh in range(hs.shape[0]):
            _max_col(hv, hcol, hs[oh], hc[oh], dh, width, out[p, oh], idx[p, oh])


@njit(**_JIT)
def _max_backward(grad, idx, gx):
    planes = gx.shape[0]
    for p in prange(planes):
        d = gx[p]
        d[:] = 0
        g = grad[p]
        ix = idx[p]
        for i in range(g.shape[0]):
            if ix[i] >= 0:
                d[ix[i]] += g[i]


@njit(**_ROW)
def _row_sum(x, h0, c, acc):
    """acc = sum of rows h0 .. h0 + c - 1 of x (contiguous)."""
    acc[:] = x[h0]
    for t in range(1, c):
        r = x[h0 + t]
        for w in range(acc.shape[0]):
            acc[w] += r[w]
    return


@njit(**_ROW)
def _taps_sum(rs, start, count, most, out):
    """out[o] = sum of rs[start[o] + t], t < count[o]."""
    for o in range(start.shape[0]):
        out[o] = rs[start[o]]
    for t in range(1, most):
        for o in range(start.shape[0]):
            if t < count[o]:
                out[o] += rs[start[o] + t]
    return


@njit(**_JIT)
def _avg_forward(x, out, hs, hc, ws, wc, hdiv, wdiv):
    planes, height, width = x.shape
    wmost = wc.max() if wc.shape[0] else 0
    for p in prange(planes):
        rs = np.empty(width, x.dtype)
        for oh in range(hs.shape[0]):
            _row_sum(x[p], hs[oh], hc[oh], rs)
            o = out[p, oh]
            _taps_sum(rs, ws, wc, wmost, o)
            for j in range(o.shape[0]):
                o[j] = o[j] / (hdiv[oh] * wdiv[j])


@njit(**_ROW)
def _gather_taps(q, lo, n, most, t):
    """t[w] = sum of q[lo[w] + j], j < n[w]."""
    for w in range(t.shape[0]):
        t[w] = 0
    for j in range(most):
        for w in range(t.shape[0]):
            if j < n[w]:
                t[w] += q[lo[w] + j]
    return


@njit(**_JIT)
def _avg_backward(grad, gx, hdiv, wdiv, hlo, hn, wlo, wn):
    planes, height, width = gx.shape
    oh_n, ow_n = grad.shape[1], grad.shape[2]
    wmost = wn.max() if wn.shape[0] else 0
    for p in prange(planes):
        q = np.empty(ow_n, gx.dtype)
        t = np.empty((max(oh_n, 1), width), gx.dtype)
        for oh in range(oh_n):
            for o in range(ow_n):
                q[o] = grad[p, oh, o] / (hdiv[oh] * wdiv[o])
            _gather_taps(q, wlo, wn, wmost, t[oh])
        for h in range(height):
            if hn[h] == 0:
                gx[p, h, :] = 0
            else:
                _row_sum(t, hlo[h], hn[h], gx[p, h])


def _planes(a):
    return contiguous(a, (a.shape[0] * a.shape[1],) + a.shape[2:])


@register("max_pool2d", "numba")
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    sync_threads()
    h, w = x.shape[2:]
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    hs, hc = window_table(h, oh, kernel_size[0], stride[0], padding[0], dilation[0])
    ws, wc = window_table(w, ow, kernel_size[1], stride[1], padding[1], dilation[1])
    out = _array.empty(x.shape[:2] + (oh, ow), x.dtype)
    idx = _array.empty(out.shape, np.int64)
    if out.size:
        _max_forward(_planes(x), _planes(out), _planes(idx), hs, hc, dilation[0], ws, wc, dilation[1])
    return out, {"indices": idx}


@register("max_pool2d_backward", "numba")
def max_pool2d_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode, saved=None):
    if saved is None:
        saved = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)[1]
    sync_threads()
    gx = _array.empty(x.shape, x.dtype)
    n, c = x.shape[:2]
    if gx.size:
        _max_backward(contiguous(grad, (n * c, -1)), contiguous(saved["indices"], (n * c, -1)),
                      contiguous(gx, (n * c, -1)))
    return (gx,)


def _avg(x, tables):
    (hs, hc), (ws, wc), hdiv, wdiv = tables
    out = _array.empty(x.shape[:2] + (len(hs), len(ws)), x.dtype)
    if out.size:
        _avg_forward(_planes(x), _planes(out), hs, hc, ws, wc, hdiv, wdiv)
    return out


def _avg_bwd(grad, x_shape, tables):
    (hs, hc), (ws, wc), hdiv, wdiv = tables
    gx = _array.empty(x_shape, grad.dtype)
    if gx.size:
        hlo, hn = inverse_table(hs, hc, x_shape[2])
        wlo, wn = inverse_table(ws, wc, x_shape[3])
        _avg_backward(_planes(grad), _planes(gx), hdiv, wdiv, hlo, hn, wlo, wn)
    return (gx,)


@register("avg_pool2d", "numba")
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    sync_threads()
    return _avg(x, avg_tables(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override, x.dtype))


@register("avg_pool2d_backward", "numba")
def avg_pool2d_backward(grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, saved=None):
    sync_threads()
    return _avg_bwd(grad, x.shape, avg_tables(x.shape, kernel_size, stride, padding, ceil_mode,
                                              count_include_pad, divisor_override, grad.dtype))


@register("adaptive_avg_pool2d", "numba")
def adaptive_avg_pool2d(x, output_size):
    sync_threads()
    return _avg(x, adaptive_tables(x.shape, output_size, x.dtype))


@register("adaptive_avg_pool2d_backward", "numba")
def adaptive_avg_pool2d_backward(grad, x, output_size, saved=None):
    sync_threads()
    return _avg_bwd(grad, x.shape, adaptive_tables(x.shape, output_size, grad.dtype))
