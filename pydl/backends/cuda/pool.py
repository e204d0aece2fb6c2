"""cuda adapters for the pool family: max_pool2d, avg_pool2d, adaptive_avg_pool2d
forward and backward (kernels/cuda/pool.cu: one pass each, backward in
gather form, no atomics)."""
import numpy as np

from ... import _array
from ...ops.conv import output_hw
from ...registry import register
from ._loader import blocks_for, cupy_or_raise, declare, launch, magic

_KERNELS = ("max_pool2d_fwd", "max_pool2d_bwd", "avg_pool2d_fwd", "avg_pool2d_bwd",
            "adaptive_avg_pool2d_fwd", "adaptive_avg_pool2d_bwd")
declare("pool", [f"{k}<{t}>" for k in _KERNELS for t in ("float", "double")])
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _i32(*v):
    return tuple(np.int32(x) for x in v)


def _geometry(x, oh, ow):
    n, c, h, w = x.shape
    return (np.int64(n * c), *_i32(h, w, oh, ow))


# -- max_pool2d ----------------------------------------------------------------------

@register("max_pool2d", "cuda")
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    cupy = cupy_or_raise()
    x = cupy.ascontiguousarray(x)
    oh, ow = output_hw("kernel_size", x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    out = _array.empty(x.shape[:2] + (oh, ow), x.dtype, like=x)
    idx = _array.empty(out.shape, np.int64, like=x)
    if out.size:
        launch("pool", f"max_pool2d_fwd<{_CTYPE[x.dtype]}>", (blocks_for(out.size),), (256,),
               (x, out, idx, *_geometry(x, oh, ow), *_i32(*kernel_size, *stride, *padding, *dilation),
                *magic(ow, oh)))
    return out, {"indices": idx}


@register("max_pool2d_backward", "cuda")
def max_pool2d_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode, saved=None):
    cupy = cupy_or_raise()
    if saved is None:
        saved = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)[1]
    g = cupy.ascontiguousarray(grad)
    idx = cupy.ascontiguousarray(saved["indices"])
    dx = _array.empty(x.shape, grad.dtype, like=grad)
    if dx.size:
        oh, ow = g.shape[2:]
        launch("pool", f"max_pool2d_bwd<{_CTYPE[g.dtype]}>", (blocks_for(dx.size),), (256,),
               (g, idx, dx, *_geometry(x, oh, ow), *_i32(*kernel_size, *stride, *padding, *dilation),
                *magic(x.shape[3], x.shape[2])))
    return (dx,)


# -- avg_pool2d ----------------------------------------------------------------------

def _avg_tail(kernel_size, stride, padding, count_include_pad, divisor_override):
    return (*_i32(*kernel_size, *stride, *padding, int(bool(count_include_pad))),
            np.int64(0 if divisor_override is None else divisor_override))


@register("avg_pool2d", "cuda")
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    cupy = cupy_or_raise()
    x = cupy.ascontiguousarray(x)
    oh, ow = output_hw("kernel_size", x.shape[2:], kernel_size, stride, padding, (1, 1), ceil_mode)
    out = _array.empty(x.shape[:2] + (oh, ow), x.dtype, like=x)
    if out.size:
        launch("pool", f"avg_pool2d_fwd<{_CTYPE[x.dtype]}>", (blocks_for(out.size),), (256,),
               (x, out, *_geometry(x, oh, ow),
                *_avg_tail(kernel_size, stride, padding, count_include_pad, divisor_override), *magic(ow, oh)))
    return out


@register("avg_pool2d_backward", "cuda")
def avg_pool2d_backward(grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, saved=None):
    cupy = cupy_or_raise()
    g = cupy.ascontiguousarray(grad)
    dx = _array.empty(x.shape, grad.dtype, like=grad)
    if dx.size:
        oh, ow = g.shape[2:]
        launch("pool", f"avg_pool2d_bwd<{_CTYPE[g.dtype]}>", (blocks_for(dx.size),), (256,),
               (g, dx, *_geometry(x, oh, ow),
                *_avg_tail(kernel_size, stride, padding, count_include_pad, divisor_override),
                *magic(x.shape[3], x.shape[2])))
    return (dx,)


# -- adaptive_avg_pool2d ---------------------------------------------------------------

@register("adaptive_avg_pool2d", "cuda")
def adaptive_avg_pool2d(x, output_size):
    cupy = cupy_or_raise()
    x = cupy.ascontiguousarray(x)
    out = _array.empty(x.shape[:2] + tuple(output_size), x.dtype, like=x)
    if out.size:
        launch("pool", f"adaptive_avg_pool2d_fwd<{_CTYPE[x.dtype]}>", (blocks_for(out.size),), (256,),
               (x, out, *_geometry(x, *output_size), *magic(*output_size[::-1])))
    return out


@register("adaptive_avg_pool2d_backward", "cuda")
def adaptive_avg_pool2d_backward(grad, x, output_size, saved=None):
    cupy = cupy_or_raise()
    g = cupy.ascontiguousarray(grad)
    dx = _array.empty(x.shape, grad.dtype, like=grad)
    if dx.size:
        launch("pool", f"adaptive_avg_pool2d_bwd<{_CTYPE[g.dtype]}>", (blocks_for(dx.size),), (256,),
               (g, dx, *_geometry(x, *output_size), *magic(x.shape[3], x.shape[2])))
    return (dx,)
