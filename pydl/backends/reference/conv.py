"""NumPy reference: im2col, col2im, conv2d (im2col + one matmul per group)."""
import numpy as np

from ...ops.conv import output_hw
from ...registry import register


def _taps(kernel_size, stride, dilation, oh, ow):
    """(r, s, rows, cols): the strided slices of the padded input that kernel tap
    (r, s) reads for every output position."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    for r in range(kh):
        for s in range(kw):
            yield (r, s, slice(r * dh, r * dh + sh * (oh - 1) + 1, sh),
                   slice(s * dw, s * dw + sw * (ow - 1) + 1, sw))


@register("im2col", "numpy")
def im2col(x, kernel_size, stride, padding, dilation):
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel_size, padding
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
    for r, s, rows, cs in _taps(kernel_size, stride, dilation, oh, ow):
        cols[:, :, r, s] = xp[:, :, rows, cs]
    return cols.reshape(n, c * kh * kw, oh * ow)


@register("im2col_backward", "numpy")
def im2col_backward(grad, x, kernel_size, stride, padding, dilation, saved=None):
    return (col2im(grad, x.shape[2:], kernel_size, stride, padding, dilation),)


@register("col2im", "numpy")
def col2im(cols, output_size, kernel_size, stride, padding, dilation):
    (h, w), (kh, kw), (ph, pw) = output_size, kernel_size, padding
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation)
    n, c = cols.shape[0], cols.shape[1] // (kh * kw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), cols.dtype)
    for r, s, rows, cs in _taps(kernel_size, stride, dilation, oh, ow):
        xp[:, :, rows, cs] += cols[:, :, r, s]
    return xp[:, :, ph:ph + h, pw:pw + w].copy()


@register("col2im_backward", "numpy")
def col2im_backward(grad, cols, output_size, kernel_size, stride, padding, dilation, saved=None):
    return (im2col(grad, kernel_size, stride, padding, dilation),)


def _grouped_cols(x, weight, stride, padding, dilation, groups):
    """im2col of x split by group: (N, G, C/G*R*S, L); each group's rows are contiguous."""
    cols = im2col(x, weight.shape[2:], stride, padding, dilation)
    return cols.reshape(x.shape[0], groups, cols.shape[1] // groups, cols.shape[2])


@register("conv2d", "numpy")
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    n, k = x.shape[0], weight.shape[0]
    oh, ow = output_hw("weight", x.shape[2:], weight.shape[2:], stride, padding, dilation)
    cols = _grouped_cols(x, weight, stride, padding, dilation, groups)
    w = weight.reshape(groups, k // groups, -1)                 # (G, K/G, C/G*R*S)
    out = np.matmul(w, cols).reshape(n, k, oh, ow)              # (N, G, K/G, L)
    return out if bias is None else out + bias[:, None, None]


@register("conv2d_backward", "numpy")
def conv2d_backward(grad, x, weight, bias, stride, padding, dilation, groups, saved=None, needs=None):
    """(dx, dW, db); ``needs`` (three bools) skips those nobody wants (None in their place)."""
    need_dx, need_dw, need_db = needs or (True, True, True)
    n, k = x.shape[0], weight.shape[0]
    oh, ow = output_hw("weight", x.shape[2:], weight.shape[2:], stride, padding, dilation)
    g = grad.reshape(n, groups, k // groups, oh * ow)             # (N, G, K/G, L)
    dx = dw = db = None
    if need_dw:
        cols = _grouped_cols(x, weight, stride, padding, dilation, groups)
        dw = np.matmul(g, np.swapaxes(cols, -1, -2)).sum(axis=0).reshape(weight.shape)
    if need_dx:
        w = weight.reshape(groups, k // groups, -1)
        dcols = np.matmul(np.swapaxes(w, -1, -2), g).reshape(n, groups * w.shape[2], oh * ow)
        dx = col2im(dcols, x.shape[2:], weight.shape[2:], stride, padding, dilation)
    if need_db and bias is not None:
        db = grad.sum(axis=(0, 2, 3))
    return dx, dw, db
