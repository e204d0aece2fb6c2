"""conv2d as im2col + GEMM, shared by the cython and numba backends.

Each backend passes its own kernels: ``im2col(x, cols, geometry)`` and
``col2im(cols, x, geometry)`` (the window hyper-parameters as one tuple, x and
cols C-contiguous, outputs fully written by the kernel), and ``gemm(a, b)``
(2-D or batched ``a @ b`` in the input dtype).

Per group g and image, out_g (K/G x L) = W_g (K/G x C/G*R*S) @ cols_g. Images
go in chunks whose column matrix stays under ``WORKSPACE_BYTES``, so memory
is bounded whatever the batch; 1x1 / stride 1 / padding 0 convolutions use x
itself as the column matrix. Backward, per chunk: dW_g += dy_g @ cols_g^T as
one GEMM over the chunk's images (L*images deep), dcols_g = W_g^T @ dy_g,
then col2im into dx; db = sum of dy.
"""
import numpy as np

from .. import _array
from ..ops.conv import output_hw

#: column-matrix bytes per chunk of images (the backward holds two such buffers)
WORKSPACE_BYTES = 32 << 20


def _geometry(x, weight, stride, padding, dilation):
    r, s = weight.shape[2:]
    oh, ow = output_hw("weight", x.shape[2:], (r, s), stride, padding, dilation)
    return (r, s, *stride, *padding, *dilation), oh, ow


def _is_1x1(weight, stride, padding):
    return weight.shape[2:] == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def _chunks(n, rows, length, itemsize):
    step = max(1, WORKSPACE_BYTES // max(1, rows * length * itemsize))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _cols(im2col, x, weight, geo, stride, padding, l_out):
    n, c = x.shape[:2]
    if _is_1x1(weight, stride, padding):
        return x.reshape(n, c, l_out)
    cols = np.empty((n, c * weight.shape[2] * weight.shape[3], l_out), x.dtype)
    im2col(x, cols, geo)
    return cols


def forward(im2col, gemm, x, weight, bias, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    k = weight.shape[0]
    geo, oh, ow = _geometry(x, weight, stride, padding, dilation)
    L, G = oh * ow, groups
    kg, crs = k // G, weight[0].size
    out = _array.empty((n, k, oh, ow), x.dtype)
    wg = weight.reshape(G, kg, crs)
    out3 = out.reshape(n, G, kg, L)
    for n0, n1 in _chunks(n, G * crs, L, x.itemsize):
        cols = _cols(im2col, x[n0:n1], weight, geo, stride, padding, L).reshape(n1 - n0, G, crs, L)
        for g in range(G):
            out3[n0:n1, g] = gemm(wg[g], cols[:, g])
    if bias is not None:
        out += bias[:, None, None]
    return out


def backward(im2col, col2im, gemm, grad, x, weight, bias, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    k = weight.shape[0]
    geo, oh, ow = _geometry(x, weight, stride, padding, dilation)
    L, G = oh * ow, groups
    kg, crs = k // G, weight[0].size
    dx = _array.empty(x.shape, x.dtype)
    dw = np.zeros((G, kg, crs), weight.dtype)
    wg = weight.reshape(G, kg, crs)
    one = _is_1x1(weight, stride, padding)
    for n0, n1 in _chunks(n, G * crs, L, x.itemsize):
        nb = n1 - n0
        cols = _cols(im2col, x[n0:n1], weight, geo, stride, padding, L).reshape(nb, G, crs, L)
        gy = grad[n0:n1].reshape(nb, G, kg, L)
        dcols = dx[n0:n1].reshape(nb, G, crs, L) if one else np.empty((nb, G, crs, L), x.dtype)
        for g in range(G):
            a = np.ascontiguousarray(gy[:, g].transpose(1, 0, 2)).reshape(kg, nb * L)
            b = np.ascontiguousarray(cols[:, g].transpose(0, 2, 1)).reshape(nb * L, crs)
            dw[g] += gemm(a, b)
            dcols[:, g] = gemm(np.ascontiguousarray(wg[g].T), np.ascontiguousarray(gy[:, g]))
        if not one:
            col2im(dcols.reshape(nb, G * crs, L), dx[n0:n1], geo)
    db = None if bias is None else grad.sum(axis=(0, 2, 3), dtype=grad.dtype)
    return dx, dw.reshape(weight.shape), db
