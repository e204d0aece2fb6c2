"""NumPy reference: layer_norm, batch_norm, group_norm, instance_norm,
local_response_norm (forward and backward).

Every normalization is "standardize over some axes, then a per-channel (or
per-feature) affine map"; the backward of the standardization is

    dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))

with the means over the same axes and dxhat = grad * weight.
"""
import numpy as np

from ...registry import register


def _mean(a, axes):
    """Mean over ``axes`` (keepdims), NaN over zero elements, without warnings."""
    count = int(np.prod([a.shape[i] for i in axes]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return a.sum(axis=axes, keepdims=True) / a.dtype.type(count)


def _moments(x, axes):
    """Mean and biased variance over ``axes`` (keepdims)."""
    mean = _mean(x, axes)
    return mean, _mean((x - mean) ** 2, axes)


def _invstd(var, eps):
    return 1 / np.sqrt(var + eps)


def _standardize_backward(dxhat, xhat, invstd, axes):
    return invstd * (dxhat - _mean(dxhat, axes) - xhat * _mean(dxhat * xhat, axes))


def _cshape(x):
    """The shape a (C,) array takes to broadcast against x (N, C, *spatial)."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _affine(xhat, weight, bias, shape):
    y = xhat if weight is None else xhat * weight.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


def _affine_backward(grad, xhat, weight, bias, shape, axes):
    """(dxhat, dweight, dbias); ``axes`` are the dims weight is broadcast over."""
    dxhat = grad if weight is None else grad * weight.reshape(shape)
    dweight = None if weight is None else (grad * xhat).sum(axis=axes).reshape(weight.shape)
    dbias = None if bias is None else grad.sum(axis=axes).reshape(bias.shape)
    return dxhat, dweight, dbias


def _spatial(x):
    return tuple(range(2, x.ndim))


def _update(running, momentum, stat):
    """running = (1 - momentum) * running + momentum * stat, in place."""
    running[...] = (1 - momentum) * running + momentum * stat


# -- layer_norm ------------------------------------------------------------------------


def _layer_norm_axes(x, normalized_shape):
    first = x.ndim - len(normalized_shape)
    return tuple(range(first, x.ndim)), tuple(range(first))


@register("layer_norm", "numpy")
def layer_norm(x, normalized_shape, weight, bias, eps):
    axes, _ = _layer_norm_axes(x, normalized_shape)
    mean, var = _moments(x, axes)
    return _affine((x - mean) * _invstd(var, eps), weight, bias, normalized_shape)


@register("layer_norm_backward", "numpy")
def layer_norm_backward(grad, x, normalized_shape, weight, bias, eps, saved=None):
    axes, batch_axes = _layer_norm_axes(x, normalized_shape)
    mean, var = _moments(x, axes)
    invstd = _invstd(var, eps)
    xhat = (x - mean) * invstd
    dxhat, dweight, dbias = _affine_backward(grad, xhat, weight, bias, normalized_shape, batch_axes)
    return _standardize_backward(dxhat, xhat, invstd, axes), dweight, dbias


# -- batch_norm -------------------------------------------------------------------------


def _batch_norm_stats(x, running_mean, running_var, training):
    """(mean, var) shaped (1, C, 1, ...): the batch's or the running ones."""
    if training:
        return _moments(x, (0,) + _spatial(x))
    return running_mean.reshape(_cshape(x)), running_var.reshape(_cshape(x))


@register("batch_norm", "numpy")
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    mean, var = _batch_norm_stats(x, running_mean, running_var, training)
    count = x.size // max(x.shape[1], 1)
    if training and running_mean is not None and count > 0:
        _update(running_mean, momentum, mean.reshape(-1))
        _update(running_var, momentum, var.reshape(-1) * x.dtype.type(count / (count - 1)))
    invstd = _invstd(var, eps)
    y = _affine((x - mean) * invstd, weight, bias, _cshape(x))
    return y, {"mean": mean.reshape(-1).copy(), "invstd": invstd.reshape(-1)}


@register("batch_norm_backward", "numpy")
def batch_norm_backward(grad, x, running_mean, running_var, weight, bias, training, momentum, eps, saved=None):
    shape = _cshape(x)
    if saved is None:  # recompute without touching the running statistics
        mean, var = _batch_norm_stats(x, running_mean, running_var, training)
        invstd = _invstd(var, eps)
    else:
        mean, invstd = saved["mean"].reshape(shape), saved["invstd"].reshape(shape)
    axes = (0,) + _spatial(x)
    xhat = (x - mean) * invstd
    dxhat, dweight, dbias = _affine_backward(grad, xhat, weight, bias, shape, axes)
    dx = _standardize_backward(dxhat, xhat, invstd, axes) if training else dxhat * invstd
    return dx, dweight, dbias


# -- group_norm ---------------------------------------------------------------------------


def _grouped(x, num_groups):
    """x's shape viewed as (N, G, C/G * spatial)."""
    return (x.shape[0], num_groups, int(np.prod(x.shape[1:])) // num_groups)


def _group_norm_parts(x, num_groups, eps):
    """xhat (x's shape) and invstd (N, G, 1) of x viewed as (N, G, C/G * spatial)."""
    xg = x.reshape(_grouped(x, num_groups))
    mean, var = _moments(xg, (2,))
    invstd = _invstd(var, eps)
    return ((xg - mean) * invstd).reshape(x.shape), invstd


@register("group_norm", "numpy")
def group_norm(x, num_groups, weight, bias, eps):
    xhat, _ = _group_norm_parts(x, num_groups, eps)
    return _affine(xhat, weight, bias, _cshape(x))


@register("group_norm_backward", "numpy")
def group_norm_backward(grad, x, num_groups, weight, bias, eps, saved=None):
    shape = _cshape(x)
    xhat, invstd = _group_norm_parts(x, num_groups, eps)
    dxhat, dweight, dbias = _affine_backward(grad, xhat, weight, bias, shape, (0,) + _spatial(x))
    grouped = _grouped(x, num_groups)
    dx = _standardize_backward(dxhat.reshape(grouped), xhat.reshape(grouped), invstd, (2,))
    return dx.reshape(x.shape), dweight, dbias


# -- instance_norm ------------------------------------------------------------------------


def _instance_norm_stats(x, running_mean, running_var, use_input_stats):
    """(mean, var) shaped (N, C, 1, ...) or (1, C, 1, ...): per instance or running."""
    if use_input_stats:
        return _moments(x, _spatial(x))
    return running_mean.reshape(_cshape(x)), running_var.reshape(_cshape(x))


@register("instance_norm", "numpy")
def instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    mean, var = _instance_norm_stats(x, running_mean, running_var, use_input_stats)
    if use_input_stats and running_mean is not None and x.shape[0] > 0:
        count = x.size // (x.shape[0] * x.shape[1])
        # torch runs batch_norm on x viewed as (1, N*C, ...) with the running
        # statistics repeated N times, then averages the N updated copies
        _update(running_mean, momentum, mean.mean(axis=0).reshape(-1))
        _update(running_var, momentum, (var * x.dtype.type(count / (count - 1))).mean(axis=0).reshape(-1))
    return _affine((x - mean) * _invstd(var, eps), weight, bias, _cshape(x))


@register("instance_norm_backward", "numpy")
def instance_norm_backward(grad, x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                           saved=None):
    mean, var = _instance_norm_stats(x, running_mean, running_var, use_input_stats)
    invstd = _invstd(var, eps)
    xhat = (x - mean) * invstd
    dxhat, dweight, dbias = _affine_backward(grad, xhat, weight, bias, _cshape(x), (0,) + _spatial(x))
    dx = _standardize_backward(dxhat, xhat, invstd, _spatial(x)) if use_input_stats else dxhat * invstd
    return dx, dweight, dbias


# -- local_response_norm ----------------------------------------------------------------------


def _channel_window_sum(a, before, after):
    """out[:, c] = a[:, c - before] + ... + a[:, c + after], zero outside [0, C)."""
    C = a.shape[1]
    before, after = min(before, C), min(after, C)  # a window past every channel adds only zeros
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    padded = np.pad(a, pad)
    out = np.zeros_like(a)
    for i in range(before + after + 1):
        out += padded[:, i:i + C]
    return out


def _lrn_denominator(x, size, alpha, k):
    """d = k + alpha/size * (sum of x^2 over the window of channels around c)."""
    return k + (alpha / size) * _channel_window_sum(x * x, size // 2, (size - 1) // 2)


@register("local_response_norm", "numpy")
def local_response_norm(x, size, alpha, beta, k):
    return x / _lrn_denominator(x, size, alpha, k) ** beta


@register("local_response_norm_backward", "numpy")
def local_response_norm_backward(grad, x, size, alpha, beta, k, saved=None):
    # y_c = x_c * d_c^-beta and d_c depends on x_j for j in window(c), i.e. for
    # c in [j - (size-1)//2, j + size//2]: the window mirrored.
    d = _lrn_denominator(x, size, alpha, k)
    t = grad * x * d ** (-beta - 1)
    cross = _channel_window_sum(t, (size - 1) // 2, size // 2)
    return (grad * d ** -beta - (2 * alpha * beta / size) * x * cross,)
