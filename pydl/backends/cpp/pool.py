"""C++ adapters for the pool family (kernels/cpp/pool.cpp).

The window geometry is turned into per-dimension tables here
(``pydl.ops.pool.window_table``), so every kernel sees padding, ceil_mode,
dilation and adaptive windows the same way: output ``o`` reads
``start[o] + t*step``, ``t < count[o]``.
"""
import numpy as np

from ... import _array, _cpp
from ...ops.conv import output_hw
from ...ops.pool import adaptive_tables, avg_tables, window_table
from ...registry import register
from .._shared import SUFFIX as _SUFFIX, contiguous as _contiguous


def _max_tables(x, kernel_size, stride, padding, dilation, ceil_mode):
    h, w = x.shape[2:]
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    return (window_table(h, oh, kernel_size[0], stride[0], padding[0], dilation[0]),
            window_table(w, ow, kernel_size[1], stride[1], padding[1], dilation[1]))


@register("max_pool2d", "cpp")
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    x = _contiguous(x)
    (hs, hc), (ws, wc) = _max_tables(x, kernel_size, stride, padding, dilation, ceil_mode)
    out = _array.empty(x.shape[:2] + (len(hs), len(ws)), x.dtype)
    idx = _array.empty(out.shape, np.int64)
    getattr(_cpp, f"pool_max_{_SUFFIX[x.dtype]}")(x, out, idx, hs, hc, ws, wc, kernel_size, stride,
                                                   padding, dilation)
    return out, {"indices": idx}


@register("max_pool2d_backward", "cpp")
def max_pool2d_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode, saved=None):
    if saved is None:
        saved = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)[1]
    grad = _contiguous(grad)
    gx = _array.empty(x.shape, x.dtype)
    getattr(_cpp, f"pool_max_backward_{_SUFFIX[x.dtype]}")(grad, _contiguous(saved["indices"]), gx)
    return (gx,)


@register("avg_pool2d", "cpp")
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = _contiguous(x)
    (hs, hc), (ws, wc), hdiv, wdiv = avg_tables(x.shape, kernel_size, stride, padding, ceil_mode,
                                                count_include_pad, divisor_override, x.dtype)
    out = _array.empty(x.shape[:2] + (len(hs), len(ws)), x.dtype)
    getattr(_cpp, f"pool_avg_{_SUFFIX[x.dtype]}")(x, out, hs, hc, ws, wc, hdiv, wdiv, kernel_size,
                                                   stride, padding)
    return out


@register("avg_pool2d_backward", "cpp")
def avg_pool2d_backward(grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, saved=None):
    grad = _contiguous(grad)
    (hs, hc), (ws, wc), hdiv, wdiv = avg_tables(x.shape, kernel_size, stride, padding, ceil_mode,
                                                count_include_pad, divisor_override, grad.dtype)
    gx = _array.empty(x.shape, grad.dtype)
    getattr(_cpp, f"pool_avg_backward_{_SUFFIX[grad.dtype]}")(grad, gx, hs, hc, ws, wc, hdiv, wdiv,
                                                              kernel_size, stride, padding)
    return (gx,)


# adaptive windows are not uniform: stride (0, 0) tells the kernel to use the tables alone
_NONUNIFORM = ((0, 0), (0, 0), (0, 0))


@register("adaptive_avg_pool2d", "cpp")
def adaptive_avg_pool2d(x, output_size):
    x = _contiguous(x)
    (hs, hc), (ws, wc), hdiv, wdiv = adaptive_tables(x.shape, output_size, x.dtype)
    out = _array.empty(x.shape[:2] + tuple(output_size), x.dtype)
    getattr(_cpp, f"pool_avg_{_SUFFIX[x.dtype]}")(x, out, hs, hc, ws, wc, hdiv, wdiv, *_NONUNIFORM)
    return out


@register("adaptive_avg_pool2d_backward", "cpp")
def adaptive_avg_pool2d_backward(grad, x, output_size, saved=None):
    grad = _contiguous(grad)
    (hs, hc), (ws, wc), hdiv, wdiv = adaptive_tables(x.shape, output_size, grad.dtype)
    gx = _array.empty(x.shape, grad.dtype)
    getattr(_cpp, f"pool_avg_backward_{_SUFFIX[grad.dtype]}")(grad, gx, hs, hc, ws, wc, hdiv, wdiv,
                                                              *_NONUNIFORM)
    return (gx,)
