"""cython adapters for the conv family: im2col, col2im, conv2d forward and backward.

Kernels: ``conv_im2col`` / ``conv_col2im`` of kernels/cython/conv.pyx (prange over
the N*C planes). conv2d = those + GEMM (pydl/backends/_conv_im2col.py), the
cython GEMM (gemm.gemm_into).
"""
from ... import _cython
from .. import _conv_im2col
from .gemm import gemm_into


def _im2col_k(x, cols, geo):
    if x.size:
        _cython.conv_im2col(x, cols, geo)


def _col2im_k(cols, x, geo):
    if x.size:
        _cython.conv_col2im(cols, x, geo)


_conv_im2col.register_backend("cython", _im2col_k, _col2im_k, _conv_im2col.matmul_with(gemm_into))
