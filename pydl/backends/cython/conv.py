"""cython adapters for the conv family: im2col, col2im, conv2d forward and backward.

Kernels (kernels/cython/conv.pyx): ``conv_im2col`` / ``conv_col2im`` (prange over
the N*C planes) for the im2col and col2im ops; conv2d forward and backward are
one nogil call each, ``conv_forward`` / ``conv_backward``: per image and group,
im2col into a per-thread buffer (a width stride: from the image split in column
phases) and the cython GEMM writing straight into out / dW partials / dx, parallel
over images; inside the prange (and on the serial branch) the GEMM is
gm_gemm_serial_pa, the weights packed once per call (dev/conv/jit.md, round 2).
Without dx (``needs``: a network's first layer) the backward skips the W^T GEMM and
the col2im; dW is always computed (returned as None when not wanted).
"""
import numpy as np

from ... import _array, _cython
from .. import _conv_im2col
from .gemm import gemm_into


def _im2col_k(x, cols, geo):
    if x.size:
        _cython.conv_im2col(x, cols, geo)


def _col2im_k(cols, x, geo):
    if x.size:
        _cython.conv_col2im(cols, x, geo)


def _conv_forward(x, weight, bias, stride, padding, dilation, groups):
    geo, oh, ow = _conv_im2col._geometry(x, weight, stride, padding, dilation)
    n, k = x.shape[0], weight.shape[0]
    out = _array.empty((n, k, oh, ow), x.dtype)
    if out.size:
        b = np.ascontiguousarray(bias) if bias is not None else np.zeros(1, x.dtype)
        _cython.conv_forward(x, weight.reshape(k, -1), out.reshape(n, k, oh * ow), b, bias is not None,
                             geo, groups)
    return out


def _conv_backward(grad, x, weight, bias, stride, padding, dilation, groups, needs):
    need_dx, need_dw, need_db = needs
    geo, oh, ow = _conv_im2col._geometry(x, weight, stride, padding, dilation)
    n, k = x.shape[0], weight.shape[0]
    dx = _array.empty(x.shape, x.dtype) if need_dx else None
    dw = _array.empty(weight.shape, weight.dtype)
    if oh * ow == 0 or k == 0:  # no output: every gradient is 0
        if need_dx:
            dx[...] = 0
        dw[...] = 0
    elif need_dx or need_dw:
        _cython.conv_backward(x, weight.reshape(k, -1), grad.reshape(n, k, oh * ow), dx, dw.reshape(k, -1),
                              geo, groups)
    db = None if bias is None or not need_db else grad.sum(axis=(0, 2, 3), dtype=grad.dtype)
    return dx, dw if need_dw else None, db


_conv_im2col.register_backend("cython", _im2col_k, _col2im_k, _conv_im2col.matmul_with(gemm_into),
                              _conv_forward, _conv_backward)
