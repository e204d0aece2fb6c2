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
then col2im into dx; db = sum of dy; ``needs`` (dx, dW, db: three bools, the
registry's) skips the gradients nobody wants. These chunked drivers are the fallback:
cython and numba pass their own whole-conv drivers to ``register_backend``
(per image, row tiles of columns, a serial GEMM into out; dev/conv/jit.md) and
numba uses these only with fewer images than threads.
"""
import numpy as np

from .. import _array
from ..ops.conv import output_hw

#: column-matrix bytes per chunk of images (the backward holds two such buffers)
WORKSPACE_BYTES = 32 << 20
#: conv2d_backward's ``needs`` when nobody says: every gradient
ALL = (True, True, True)


def _geometry(x, weight, stride, padding, dilation):
    r, s = weight.shape[2:]
    oh, ow = output_hw("weight", x.shape[2:], (r, s), stride, padding, dilation)
    return (r, s, *stride, *padding, *dilation), oh, ow


def _is_1x1(weight, stride, padding):
    return weight.shape[2:] == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def image_fits(x, weight, stride, padding, l_out):
    """True if one image's column matrix (C*R*S x L) fits :data:`WORKSPACE_BYTES` (or the
    convolution is 1x1, whose columns are x itself). The chunked drivers here hold at least
    one image's columns (two in the backward): a backend with tiled drivers uses those for
    anything larger (a 13x13 kernel over 64 channels of 512x512: 11 GB of columns)."""
    crs = x.shape[1] * weight.shape[2] * weight.shape[3]
    return _is_1x1(weight, stride, padding) or crs * l_out * x.itemsize <= WORKSPACE_BYTES


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


def backward(im2col, col2im, gemm, grad, x, weight, bias, stride, padding, dilation, groups, needs=ALL):
    need_dx, need_dw, need_db = needs
    n, c = x.shape[:2]
    k = weight.shape[0]
    geo, oh, ow = _geometry(x, weight, stride, padding, dilation)
    L, G = oh * ow, groups
    kg, crs = k // G, weight[0].size
    dx = _array.empty(x.shape, x.dtype) if need_dx else None
    dw = np.zeros((G, kg, crs), weight.dtype) if need_dw else None
    wg = weight.reshape(G, kg, crs)
    one = _is_1x1(weight, stride, padding)
    for n0, n1 in _chunks(n, G * crs, L, x.itemsize) if need_dx or need_dw else ():
        nb = n1 - n0
        gy = grad[n0:n1].reshape(nb, G, kg, L)
        if need_dw:
            cols = _cols(im2col, x[n0:n1], weight, geo, stride, padding, L).reshape(nb, G, crs, L)
        if need_dx:
            dcols = dx[n0:n1].reshape(nb, G, crs, L) if one else np.empty((nb, G, crs, L), x.dtype)
        for g in range(G):
            if need_dw:
                a = np.ascontiguousarray(gy[:, g].transpose(1, 0, 2)).reshape(kg, nb * L)
                b = np.ascontiguousarray(cols[:, g].transpose(0, 2, 1)).reshape(nb * L, crs)
                dw[g] += gemm(a, b)
            if need_dx:
                dcols[:, g] = gemm(np.ascontiguousarray(wg[g].T), np.ascontiguousarray(gy[:, g]))
        if need_dx and not one:
            col2im(dcols.reshape(nb, G * crs, L), dx[n0:n1], geo)
    db = None if bias is None or not need_db else grad.sum(axis=(0, 2, 3), dtype=grad.dtype)
    return dx, None if dw is None else dw.reshape(weight.shape), db


def matmul_with(gemm_into):
    """``gemm(a, b)`` (a 2-D operand shared by a batched other one, as matmul) on a
    backend's ``gemm_into(a, b, out)``: the one place such a conv picks its GEMM."""
    def gemm(a, b):
        batch = a.shape[:-2] if a.ndim == 3 else b.shape[:-2]
        return gemm_into(a, b, np.empty(tuple(batch) + (a.shape[-2], b.shape[-1]), a.dtype))

    return gemm


def register_backend(backend, im2col_k, col2im_k, gemm, conv_forward=None, conv_backward=None):
    """Register im2col, col2im and conv2d (forward and backward) for ``backend``
    on its kernels ``im2col_k(x, cols, geo)``, ``col2im_k(cols, x, geo)`` and
    ``gemm(a, b)``; the adapters are the same for every such backend. A backend
    with whole-conv drivers passes them as ``conv_forward`` / ``conv_backward``
    (same signatures as :func:`forward` / :func:`backward` less the kernels, the
    backward's ``needs`` always given); they replace the chunked drivers here."""
    fwd = conv_forward or (lambda *a: forward(im2col_k, gemm, *a))
    bwd = conv_backward or (lambda *a: backward(im2col_k, col2im_k, gemm, *a))
    from .. import registry
    from ._shared import contiguous

    def geo(kernel_size, stride, padding, dilation):
        return (*kernel_size, *stride, *padding, *dilation)

    @registry.register("im2col", backend)
    def im2col(x, kernel_size, stride, padding, dilation):
        x = contiguous(x)
        n, c, h, w = x.shape
        oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation)
        cols = _array.empty((n, c * kernel_size[0] * kernel_size[1], oh * ow), x.dtype)
        im2col_k(x, cols, geo(kernel_size, stride, padding, dilation))
        return cols

    @registry.register("col2im", backend)
    def col2im(cols, output_size, kernel_size, stride, padding, dilation):
        cols = contiguous(cols)
        x = _array.empty((cols.shape[0], cols.shape[1] // (kernel_size[0] * kernel_size[1]), *output_size),
                         cols.dtype)
        col2im_k(cols, x, geo(kernel_size, stride, padding, dilation))
        return x

    @registry.register("im2col_backward", backend)
    def im2col_backward(grad, x, kernel_size, stride, padding, dilation, saved=None):
        return (col2im(grad, x.shape[2:], kernel_size, stride, padding, dilation),)

    @registry.register("col2im_backward", backend)
    def col2im_backward(grad, cols, output_size, kernel_size, stride, padding, dilation, saved=None):
        return (im2col(grad, kernel_size, stride, padding, dilation),)

    @registry.register("conv2d", backend)
    def conv2d(x, weight, bias, stride, padding, dilation, groups):
        return fwd(contiguous(x), contiguous(weight), bias, stride, padding, dilation, groups)

    @registry.register("conv2d_backward", backend)
    def conv2d_backward(grad, x, weight, bias, stride, padding, dilation, groups, saved=None, needs=None):
        return bwd(contiguous(grad), contiguous(x), contiguous(weight), bias, stride, padding, dilation, groups,
                   ALL if needs is None else tuple(needs))
