"""Cython adapters for the pool family (kernels/cython/pool.pyx).

The adapters build the window tables (``pydl.ops.pool.window_table``, the same
as the cpp and numba backends use), make inputs C-contiguous, allocate the
outputs and hand the kernels (planes, H, W) views.
"""
import numpy as np

from ... import _array, _cython
from ...ops.conv import output_hw
from ...ops.pool import adaptive_tables, avg_tables, inverse_table, window_table
from ...registry import register
from .._shared import contiguous


def _planes(a):
    return contiguous(a, (a.shape[0] * a.shape[1],) + a.shape[2:])


@register("max_pool2d", "cython")
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    h, w = x.shape[2:]
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    hs, hc = window_table(h, oh, kernel_size[0], stride[0], padding[0], dilation[0])
    ws, wc = window_table(w, ow, kernel_size[1], stride[1], padding[1], dilation[1])
    out = _array.empty(x.shape[:2] + (oh, ow), x.dtype)
    idx = _array.empty(out.shape, np.int64)
    _cython.pool_max_forward(_planes(x), _planes(out), _planes(idx), hs, hc, dilation[0], ws, wc,
                             dilation[1])
    return out, {"indices": idx}


@register("max_pool2d_backward", "cython")
def max_pool2d_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode, saved=None):
    if saved is None:
        saved = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)[1]
    gx = _array.empty(x.shape, x.dtype)
    planes, ohw = x.shape[0] * x.shape[1], grad.shape[2] * grad.shape[3]
    _cython.pool_max_backward(contiguous(grad, (planes, ohw)), contiguous(saved["indices"], (planes, ohw)),
                              contiguous(gx, (planes, x.shape[2] * x.shape[3])))
    return (gx,)


def _avg(x, tables):
    (hs, hc), (ws, wc), hdiv, wdiv = tables
    out = _array.empty(x.shape[:2] + (len(hs), len(ws)), x.dtype)
    _cython.pool_avg_forward(_planes(x), _planes(out), hs, hc, ws, wc, hdiv, wdiv)
    return out


def _avg_bwd(grad, x_shape, tables):
    (hs, hc), (ws, wc), hdiv, wdiv = tables
    gx = _array.empty(x_shape, grad.dtype)
    hlo, hn = inverse_table(hs, hc, x_shape[2])
    wlo, wn = inverse_table(ws, wc, x_shape[3])
    _cython.pool_avg_backward(_planes(contiguous(grad)), _planes(gx), hdiv, wdiv, hlo, hn, wlo, wn)
    return (gx,)


@register("avg_pool2d", "cython")
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _avg(x, avg_tables(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override, x.dtype))


@register("avg_pool2d_backward", "cython")
def avg_pool2d_backward(grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, saved=None):
    return _avg_bwd(grad, x.shape, avg_tables(x.shape, kernel_size, stride, padding, ceil_mode,
                                              count_include_pad, divisor_override, grad.dtype))


@register("adaptive_avg_pool2d", "cython")
def adaptive_avg_pool2d(x, output_size):
    return _avg(x, adaptive_tables(x.shape, output_size, x.dtype))


@register("adaptive_avg_pool2d_backward", "cython")
def adaptive_avg_pool2d_backward(grad, x, output_size, saved=None):
    return _avg_bwd(grad, x.shape, adaptive_tables(x.shape, output_size, grad.dtype))
