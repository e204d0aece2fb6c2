"""C++ adapters for the pool family (kernels/cpp/pool.cpp).

The window geometry is turned into per-dimension tables here
(``pydl.ops.pool.window_table``), so every kernel sees padding, ceil_mode,
dilation and adaptive windows the same way: output ``o`` reads
``start[o] + t*step``, ``t < count[o]``.

The tables depend only on the geometry, so they are built once per geometry
(a small LRU cache of read-only arrays): rebuilding them took ~10 NumPy calls
per pass, which is most of a call on the small planes of the conformance
cases (dev/pool/README.md, third pass).
"""
import functools

import numpy as np

from ... import _array, _cpp
from ...ops.conv import output_hw
from ...ops.pool import adaptive_tables, avg_tables, window_table
from ...registry import register
from .._shared import SUFFIX as _SUFFIX, contiguous as _contiguous


def _frozen(tables):
    """the nested tuples of tables with every array read-only (they are shared between calls)"""
    if isinstance(tables, np.ndarray):
        tables.flags.writeable = False
        return tables
    return tuple(_frozen(t) for t in tables)


@functools.lru_cache(maxsize=256)
def _max_tables(hw, kernel_size, stride, padding, dilation, ceil_mode):
    h, w = hw
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    return _frozen((window_table(h, oh, kernel_size[0], stride[0], padding[0], dilation[0]),
                    window_table(w, ow, kernel_size[1], stride[1], padding[1], dilation[1])))


@functools.lru_cache(maxsize=256)
def _avg_tables(hw, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, dtype):
    return _frozen(avg_tables((0, 0) + hw, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override, dtype))


@functools.lru_cache(maxsize=256)
def _adaptive_tables(hw, output_size, dtype):
    return _frozen(adaptive_tables((0, 0) + hw, output_size, dtype))


def _bind(module):
    """Look the entry points up once: {dtype: module.<name>_<f32|f64>} for the four kernels
    (dev/pool/ab.py binds an older build's module in turn with this one)."""
    global _MAX, _MAX_BWD, _AVG, _AVG_BWD
    _MAX, _MAX_BWD, _AVG, _AVG_BWD = ({dt: getattr(module, f"{name}_{sfx}") for dt, sfx in _SUFFIX.items()}
                                      for name in ("pool_max", "pool_max_backward", "pool_avg",
                                                   "pool_avg_backward"))


_bind(_cpp)


@register("max_pool2d", "cpp")
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    x = _contiguous(x)
    (hs, hc), (ws, wc) = _max_tables(x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    out = _array.empty(x.shape[:2] + (len(hs), len(ws)), x.dtype)
    idx = _array.empty(out.shape, np.int64)
    _MAX[x.dtype](x, out, idx, hs, hc, ws, wc, kernel_size, stride, padding, dilation)
    return out, {"indices": idx}


@register("max_pool2d_backward", "cpp")
def max_pool2d_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode, saved=None):
    if saved is None:
        saved = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)[1]
    grad = _contiguous(grad)
    gx = _array.empty(x.shape, x.dtype)
    _MAX_BWD[x.dtype](grad, _contiguous(saved["indices"]), gx)
    return (gx,)


@register("avg_pool2d", "cpp")
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = _contiguous(x)
    (hs, hc), (ws, wc), hdiv, wdiv = _avg_tables(x.shape[2:], kernel_size, stride, padding, ceil_mode,
                                                 count_include_pad, divisor_override, x.dtype)
    out = _array.empty(x.shape[:2] + (len(hs), len(ws)), x.dtype)
    _AVG[x.dtype](x, out, hs, hc, ws, wc, hdiv, wdiv, kernel_size, stride, padding)
    return out


@register("avg_pool2d_backward", "cpp")
def avg_pool2d_backward(grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, saved=None):
    grad = _contiguous(grad)
    (hs, hc), (ws, wc), hdiv, wdiv = _avg_tables(x.shape[2:], kernel_size, stride, padding, ceil_mode,
                                                 count_include_pad, divisor_override, grad.dtype)
    gx = _array.empty(x.shape, grad.dtype)
    _AVG_BWD[grad.dtype](grad, gx, hs, hc, ws, wc, hdiv, wdiv, kernel_size, stride, padding)
    return (gx,)


# adaptive windows are not uniform: stride (0, 0) tells the kernel to use the tables alone
_NONUNIFORM = ((0, 0), (0, 0), (0, 0))


@register("adaptive_avg_pool2d", "cpp")
def adaptive_avg_pool2d(x, output_size):
    x = _contiguous(x)
    (hs, hc), (ws, wc), hdiv, wdiv = _adaptive_tables(x.shape[2:], output_size, x.dtype)
    out = _array.empty(x.shape[:2] + tuple(output_size), x.dtype)
    _AVG[x.dtype](x, out, hs, hc, ws, wc, hdiv, wdiv, *_NONUNIFORM)
    return out


@register("adaptive_avg_pool2d_backward", "cpp")
def adaptive_avg_pool2d_backward(grad, x, output_size, saved=None):
    grad = _contiguous(grad)
    (hs, hc), (ws, wc), hdiv, wdiv = _adaptive_tables(x.shape[2:], output_size, grad.dtype)
    gx = _array.empty(x.shape, grad.dtype)
    _AVG_BWD[grad.dtype](grad, gx, hs, hc, ws, wc, hdiv, wdiv, *_NONUNIFORM)
    return (gx,)
