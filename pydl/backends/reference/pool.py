"""NumPy reference: max_pool2d, avg_pool2d, adaptive_avg_pool2d.

max/avg gather every window into a trailing axis (positions outside the
input masked), reduce it, and scatter gradients back with ``np.add.at``.
"""
import numpy as np

from ...ops.conv import output_hw
from ...ops.pool import adaptive_bounds
from ...registry import register


def _taps(n, kernel, stride, padding, dilation, out):
    """Input index of every (output position, tap) along one dimension, clipped
    into [0, n), and whether the unclipped index lies inside the input."""
    idx = np.arange(out)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation
    return np.clip(idx, 0, n - 1), (idx >= 0) & (idx < n)


def _windows(x, kernel_size, stride, padding, dilation, ceil_mode):
    """values (N, C, OH, OW, R*S), inside (OH, OW, R*S), flat input index h*W + w (OH, OW, R*S)."""
    h, w = x.shape[2:]
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    hi, hin = _taps(h, kernel_size[0], stride[0], padding[0], dilation[0], oh)
    wi, win = _taps(w, kernel_size[1], stride[1], padding[1], dilation[1], ow)
    rows, cols = hi[:, None, :, None], wi[None, :, None, :]          # (OH, 1, R, 1), (1, OW, 1, S)
    taps = kernel_size[0] * kernel_size[1]
    values = x[:, :, rows, cols].reshape(x.shape[:2] + (oh, ow, taps))
    inside = (hin[:, None, :, None] & win[None, :, None, :]).reshape(oh, ow, taps)
    flat = np.broadcast_to(rows * w + cols, (oh, ow) + kernel_size).reshape(oh, ow, taps)
    return values, inside, flat


def _scatter(contrib, flat, x_shape):
    """Sum ``contrib`` (N, C, OH, OW, R*S or 1) into the input positions ``flat`` names."""
    n, c, h, w = x_shape
    planes, per_plane = n * c, int(np.prod(contrib.shape[2:]))
    gx = np.zeros((planes, h * w), contrib.dtype)
    flat = np.broadcast_to(flat, contrib.shape).reshape(planes, per_plane)
    np.add.at(gx, (np.arange(planes)[:, None], flat), contrib.reshape(flat.shape))
    return gx.reshape(x_shape)


# -- max_pool2d ----------------------------------------------------------------------

@register("max_pool2d", "numpy")
def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    values, inside, flat = _windows(x, kernel_size, stride, padding, dilation, ceil_mode)
    v = np.where(inside, values, x.dtype.type(-np.inf))
    out = v.max(axis=-1)                                   # NaN propagates
    # torch's argmax: the first input position holding the max (so a padded
    # -inf never beats an input -inf), or the last NaN when the max is NaN;
    # -1 for a window with no input position (possible with dilation).
    first_max = (inside & (v == out[..., None])).argmax(axis=-1)
    last_nan = v.shape[-1] - 1 - np.isnan(v)[..., ::-1].argmax(axis=-1)
    pick = np.where(np.isnan(out), last_nan, first_max)[..., None]
    indices = np.take_along_axis(np.broadcast_to(flat, v.shape), pick, axis=-1)[..., 0]
    indices = np.where(inside.any(axis=-1), indices, -1)
    return out, {"indices": indices.astype(np.int64)}


@register("max_pool2d_backward", "numpy")
def max_pool2d_backward(grad, x, kernel_size, stride, padding, dilation, ceil_mode, saved=None):
    if saved is None:
        saved = max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)[1]
    idx = saved["indices"][..., None]
    g = np.where(idx >= 0, grad[..., None], grad.dtype.type(0))    # -1: no input position
    return (_scatter(g, np.maximum(idx, 0), x.shape),)


# -- avg_pool2d ----------------------------------------------------------------------

def _divisor(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
             divisor_override, dtype):
    """The (OH, OW) divisors of torch's avg_pool2d."""
    (h, w) = x_shape[2:]
    oh, ow = output_hw("kernel_size", (h, w), kernel_size, stride, padding, (1, 1), ceil_mode)
    if divisor_override is not None:
        return np.full((oh, ow), divisor_override, dtype)
    sizes = []
    for n, k, s, p, o in zip((h, w), kernel_size, stride, padding, (oh, ow)):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)                 # clipped to the padded input
        sizes.append(end - start if count_include_pad
                     else np.minimum(end, n) - np.maximum(start, 0))
    return (sizes[0][:, None] * sizes[1][None, :]).astype(dtype)


@register("avg_pool2d", "numpy")
def avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    values, inside, _ = _windows(x, kernel_size, stride, padding, (1, 1), ceil_mode)
    total = np.where(inside, values, x.dtype.type(0)).sum(axis=-1)
    return total / _divisor(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override, x.dtype)


@register("avg_pool2d_backward", "numpy")
def avg_pool2d_backward(grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, saved=None):
    _, inside, flat = _windows(x, kernel_size, stride, padding, (1, 1), ceil_mode)
    g = grad / _divisor(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, grad.dtype)
    contrib = np.where(inside, g[..., None], grad.dtype.type(0))
    return (_scatter(contrib, flat, x.shape),)


# -- adaptive_avg_pool2d ---------------------------------------------------------------

def _adaptive_windows(x, output_size):
    """(oh, ow, rows, cols) for every output position: the input slices it averages."""
    (hs, he), (ws, we) = (adaptive_bounds(n, o) for n, o in zip(x.shape[2:], output_size))
    for i in range(output_size[0]):
        for j in range(output_size[1]):
            yield i, j, slice(hs[i], he[i]), slice(ws[j], we[j])


@register("adaptive_avg_pool2d", "numpy")
def adaptive_avg_pool2d(x, output_size):
    out = np.empty(x.shape[:2] + output_size, x.dtype)
    for i, j, rows, cols in _adaptive_windows(x, output_size):
        out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


@register("adaptive_avg_pool2d_backward", "numpy")
def adaptive_avg_pool2d_backward(grad, x, output_size, saved=None):
    gx = np.zeros_like(x, dtype=grad.dtype)
    for i, j, rows, cols in _adaptive_windows(x, output_size):
        count = (rows.stop - rows.start) * (cols.stop - cols.start)
        gx[:, :, rows, cols] += grad[:, :, i, j, None, None] / count
    return (gx,)
