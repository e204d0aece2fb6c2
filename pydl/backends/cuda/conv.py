"""cuda adapters for the conv family: im2col, col2im, conv2d forward and backward.

im2col / col2im are kernels/cuda/conv.cu (col2im in gather form: no
atomics); conv2d is im2col + one batched GEMM per group (kernels/cuda/gemm.cu,
the bias fused into its epilogue), its backward two batched GEMMs + col2im.
The weight gradient is a batched GEMM per image summed over the batch.
"""
import numpy as np

from ... import _array
from ...ops.conv import output_hw
from ...registry import register
from ._loader import blocks_for, cupy_or_raise, declare, launch, magic
from .gemm import gemm

declare("conv", [f"{k}<{t}>" for k in ("im2col", "col2im") for t in ("float", "double")])
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _window(kernel_size, stride, padding, dilation):
    return tuple(np.int32(v) for v in (*kernel_size, *stride, *padding, *dilation))


def _im2col(x, kernel_size, stride, padding, dilation):
    cupy = cupy_or_raise()
    x = cupy.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation)
    cols = _array.empty((n, c * kernel_size[0] * kernel_size[1], oh * ow), x.dtype, like=x)
    if cols.size:
        launch("conv", f"im2col<{_CTYPE[x.dtype]}>", (blocks_for(cols.size),), (256,),
               (x, cols, np.int64(n * c), np.int32(h), np.int32(w), np.int32(oh), np.int32(ow),
                *_window(kernel_size, stride, padding, dilation), *magic(ow, oh, kernel_size[1], kernel_size[0])))
    return cols


def _col2im(cols, output_size, kernel_size, stride, padding, dilation):
    cupy = cupy_or_raise()
    cols = cupy.ascontiguousarray(cols)
    h, w = output_size
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation)
    n, c = cols.shape[0], cols.shape[1] // (kernel_size[0] * kernel_size[1])
    x = _array.empty((n, c, h, w), cols.dtype, like=cols)
    if x.size:
        launch("conv", f"col2im<{_CTYPE[cols.dtype]}>", (blocks_for(x.size),), (256,),
               (cols, x, np.int64(n * c), np.int32(h), np.int32(w), np.int32(oh), np.int32(ow),
                *_window(kernel_size, stride, padding, dilation), *magic(w, h)))
    return x


def _grouped_gemm(a, b, c, m, nn, kk, *, n, groups, a_n, a_g, b_n, b_g, c_n, c_g, **kw):
    """The GEMMs of every (image, group) pair: element offsets i*x_n + g*x_g for image i and group g.
    One launch per group batched over the images, or (more groups than images: depthwise) one
    per image batched over the groups: 4 launches instead of 128 for a depthwise N4 C128."""
    if groups <= n:
        for g in range(groups):
            gemm(a, b, c, m, nn, kk, batch=n, sa=a_n, sb=b_n, sc=c_n, a_off=g * a_g, b_off=g * b_g,
                 c_off=g * c_g, **kw)
    else:
        for i in range(n):
            gemm(a, b, c, m, nn, kk, batch=groups, sa=a_g, sb=b_g, sc=c_g, a_off=i * a_n, b_off=i * b_n,
                 c_off=i * c_n, **kw)


@register("im2col", "cuda")
def im2col(x, kernel_size, stride, padding, dilation):
    return _im2col(x, kernel_size, stride, padding, dilation)


@register("im2col_backward", "cuda")
def im2col_backward(grad, x, kernel_size, stride, padding, dilation, saved=None):
    return (_col2im(grad, x.shape[2:], kernel_size, stride, padding, dilation),)


@register("col2im", "cuda")
def col2im(cols, output_size, kernel_size, stride, padding, dilation):
    return _col2im(cols, output_size, kernel_size, stride, padding, dilation)


@register("col2im_backward", "cuda")
def col2im_backward(grad, cols, output_size, kernel_size, stride, padding, dilation, saved=None):
    return (_im2col(grad, kernel_size, stride, padding, dilation),)


@register("conv2d", "cuda")
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    cupy = cupy_or_raise()
    n, k = x.shape[0], weight.shape[0]
    oh, ow = output_hw("weight", x.shape[2:], weight.shape[2:], stride, padding, dilation)
    L = oh * ow
    out = _array.empty((n, k, oh, ow), x.dtype, like=x)
    if out.size == 0:
        return out
    cols = _im2col(x, weight.shape[2:], stride, padding, dilation)      # (N, C*R*S, L)
    crs = cols.shape[1]
    kg, crs_g = k // groups, crs // groups
    w = cupy.ascontiguousarray(weight)                                  # (K, C/G*R*S) rows
    b = None if bias is None else cupy.ascontiguousarray(bias)
    if groups <= n:  # out[n, g] = w[g] @ cols[n, g], the bias per output row in the epilogue
        for g in range(groups):
            gemm(w, cols, out, kg, L, crs_g, lda=crs_g, ldb=L, ldc=L, batch=n, sa=0, sb=crs * L, sc=k * L,
                 a_off=g * kg * crs_g, b_off=g * crs_g * L, c_off=g * kg * L,
                 bias=b, bias_off=g * kg, bias_mode=0 if b is None else 2)
    else:  # batched over the groups (the bias pointer has no batch stride: added after)
        _grouped_gemm(w, cols, out, kg, L, crs_g, n=n, groups=groups, a_n=0, a_g=kg * crs_g, b_n=crs * L,
                      b_g=crs_g * L, c_n=k * L, c_g=kg * L, lda=crs_g, ldb=L, ldc=L)
        if b is not None:
            out += b.reshape(1, k, 1, 1)
    return out


@register("conv2d_backward", "cuda")
def conv2d_backward(grad, x, weight, bias, stride, padding, dilation, groups, saved=None, needs=None):
    """``needs`` (dx, dW, db: the registry's) skips the GEMMs (and col2im) of gradients nobody wants."""
    need_dx, need_dw, need_db = needs or (True, True, True)
    cupy = cupy_or_raise()
    n, c = x.shape[:2]
    k = weight.shape[0]
    g_ = cupy.ascontiguousarray(grad)                                   # (N, K, OH, OW)
    L = g_.shape[2] * g_.shape[3]
    w = cupy.ascontiguousarray(weight)
    crs = w.size // k * groups
    kg, crs_g = k // groups, crs // groups
    db = None if bias is None or not need_db else g_.sum(axis=(0, 2, 3))
    if n == 0:
        dx = _array.empty(x.shape, x.dtype, like=x) if need_dx else None
        dw = cupy.zeros(weight.shape, weight.dtype) if need_dw else None
        return dx, dw, db
    cols = _im2col(x, weight.shape[2:], stride, padding, dilation) if need_dw else None  # (N, C*R*S, L)
    dcols = _array.empty((n, crs, L), x.dtype, like=x) if need_dx else None
    dw_n = _array.empty((n, k, crs_g), weight.dtype, like=weight) if need_dw else None  # per-image dW
    if need_dx:
        # dcols[n, g] = w[g]^T @ grad[n, g]        (w[g] stored (K/G, C/G*R*S): transposed read)
        _grouped_gemm(w, g_, dcols, crs_g, L, kg, n=n, groups=groups, a_n=0, a_g=kg * crs_g, b_n=k * L,
                      b_g=kg * L, c_n=crs * L, c_g=crs_g * L, ta=True, lda=crs_g, ldb=L, ldc=L)
    if need_dw:
        # dw[n, g] = grad[n, g] @ cols[n, g]^T     (cols[n, g] stored (C/G*R*S, L): transposed read)
        _grouped_gemm(g_, cols, dw_n, kg, crs_g, L, n=n, groups=groups, a_n=k * L, a_g=kg * L, b_n=crs * L,
                      b_g=crs_g * L, c_n=k * crs_g, c_g=kg * crs_g, tb=True, lda=L, ldb=L, ldc=crs_g)
    dx = _col2im(dcols, x.shape[2:], weight.shape[2:], stride, padding, dilation) if need_dx else None
    dw = dw_n.sum(axis=0).reshape(weight.shape) if need_dw else None
    return dx, dw, db
