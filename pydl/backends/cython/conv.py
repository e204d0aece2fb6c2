"""cython adapters for the conv family: im2col, col2im, conv2d forward and backward.

Kernels: ``conv_im2col`` / ``conv_col2im`` of kernels/cython/conv.pyx (prange over
the N*C planes). conv2d = those + GEMM (pydl/backends/_conv_im2col.py), the
GEMM chosen in ``_gemm`` alone.
"""
import numpy as np

from ... import _array, _cython, registry
from ...ops.conv import output_hw
from .. import _conv_im2col
from .._shared import contiguous
from .gemm import gemm_into


def _gemm(a, b):
    """The one place the cython conv picks its GEMM: the cython GEMM (gemm.gemm_into), a 2-D
    operand shared by a batched other one, as matmul."""
    batch = a.shape[:-2] if a.ndim == 3 else b.shape[:-2]
    out = np.empty(tuple(batch) + (a.shape[-2], b.shape[-1]), a.dtype)
    return gemm_into(a, b, out)


def _geo(kernel_size, stride, padding, dilation):
    return (*kernel_size, *stride, *padding, *dilation)


def _im2col_k(x, cols, geo):
    if x.size:
        _cython.conv_im2col(x, cols, geo)


def _col2im_k(cols, x, geo):
    if x.size:
        _cython.conv_col2im(cols, x, geo)


@registry.register("im2col", "cython")
def im2col(x, kernel_size, stride, padding, dilation):
    x = contiguous(x)
    n, c, h, w = x.shape
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation)
    cols = _array.empty((n, c * kernel_size[0] * kernel_size[1], oh * ow), x.dtype)
    _im2col_k(x, cols, _geo(kernel_size, stride, padding, dilation))
    return cols


@registry.register("col2im", "cython")
def col2im(cols, output_size, kernel_size, stride, padding, dilation):
    cols = contiguous(cols)
    x = _array.empty((cols.shape[0], cols.shape[1] // (kernel_size[0] * kernel_size[1]), *output_size),
                     cols.dtype)
    _col2im_k(cols, x, _geo(kernel_size, stride, padding, dilation))
    return x


@registry.register("im2col_backward", "cython")
def im2col_backward(grad, x, kernel_size, stride, padding, dilation, saved=None):
    return (col2im(grad, x.shape[2:], kernel_size, stride, padding, dilation),)


@registry.register("col2im_backward", "cython")
def col2im_backward(grad, cols, output_size, kernel_size, stride, padding, dilation, saved=None):
    return (im2col(grad, kernel_size, stride, padding, dilation),)


@registry.register("conv2d", "cython")
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    return _conv_im2col.forward(_im2col_k, _gemm, contiguous(x), contiguous(weight), bias,
                                stride, padding, dilation, groups)


@registry.register("conv2d_backward", "cython")
def conv2d_backward(grad, x, weight, bias, stride, padding, dilation, groups, saved=None):
    return _conv_im2col.backward(_im2col_k, _col2im_k, _gemm, contiguous(grad), contiguous(x),
                                 contiguous(weight), bias, stride, padding, dilation, groups)
