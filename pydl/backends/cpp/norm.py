"""C++ adapters for the norm family (kernels/cpp/norm.cpp).

Two kernels: ``norm_rows_<f32|f64>`` standardizes rows of ``L = Cg * S`` contiguous elements
(layer_norm: one row per sample of the trailing dims; group_norm: one per (sample, group);
instance_norm: one per (sample, channel)), ``norm_channels_<..>`` standardizes each channel of
x viewed as (N, C, S) (batch_norm; instance_norm with the running statistics). The running
statistics are updated here, on (C,) arrays, with the reference's formula.
"""
import math

import numpy as np

from ... import _array, _cpp
from ...registry import register
from .._shared import SUFFIX, contiguous


def _k(op, x):
    return getattr(_cpp, f"norm_{op}_{SUFFIX[x.dtype]}")


def _flat(a):
    return None if a is None else contiguous(a, (-1,))


def _ncs(x):
    """(N, C, S) of x (N, C, *spatial)."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _update(running, momentum, stat):
    """running = (1 - momentum) * running + momentum * stat, in place (the reference's formula)."""
    running[...] = (1 - momentum) * running + momentum * stat


def _rows(x, G, Cg, S, weight, bias, eps, stats=False):
    x = contiguous(x)
    y = _array.empty(x.shape, x.dtype)
    R = x.size // (Cg * S) if Cg * S else 0
    mean = _array.empty(R, x.dtype) if stats else None
    var = _array.empty(R, x.dtype) if stats else None
    _k("rows", x)(x, y, G, Cg, S, _flat(weight), _flat(bias), float(eps), mean, var)
    return y, mean, var


def _rows_backward(grad, x, G, Cg, S, weight, bias, eps):
    x, grad = contiguous(x), contiguous(grad)
    dx = _array.empty(x.shape, x.dtype)
    dw = None if weight is None else _array.empty(weight.shape, x.dtype)
    db = None if bias is None else _array.empty(bias.shape, x.dtype)
    _k("rows_backward", x)(grad, x, dx, G, Cg, S, _flat(weight), float(eps), _flat(dw), _flat(db))
    return dx, dw, db


def _columns(x):
    """x (N, C) with N > 1 (BatchNorm1d): the channels are strided columns, so the kernel takes
    x.T, (C, N) contiguous, as one sample of C channels of N positions (two copies, but every
    pass then streams instead of touching one element per cache line)."""
    return x.ndim == 2 and x.shape[0] > 1


def _channels(x, weight, bias, eps, training, mean=None, var=None):
    """y, mean, var, invstd (C,) over x (N, C, *spatial); eval: ``mean``/``var`` given."""
    if _columns(x):
        y, mean, var, invstd = _channels(np.ascontiguousarray(x.T)[None], weight, bias, eps, training, mean, var)
        return np.ascontiguousarray(y[0].T), mean, var, invstd
    x = contiguous(x)
    N, C, S = _ncs(x)
    y = _array.empty(x.shape, x.dtype)
    if training:
        mean, var = _array.empty(C, x.dtype), _array.empty(C, x.dtype)
    else:
        mean, var = np.array(mean, x.dtype, copy=True, order="C"), contiguous(var)
    invstd = _array.empty(C, x.dtype)
    _k("channels", x)(x, y, N, C, S, _flat(weight), _flat(bias), float(eps), bool(training), mean, var, invstd)
    return y, mean, var, invstd


def _channels_backward(grad, x, weight, bias, mean, invstd, training):
    if _columns(x):
        dx, dw, db = _channels_backward(np.ascontiguousarray(grad.T)[None], np.ascontiguousarray(x.T)[None],
                                        weight, bias, mean, invstd, training)
        return np.ascontiguousarray(dx[0].T), dw, db
    x, grad = contiguous(x), contiguous(grad)
    N, C, S = _ncs(x)
    dx = _array.empty(x.shape, x.dtype)
    dw = None if weight is None else _array.empty(C, x.dtype)
    db = None if bias is None else _array.empty(C, x.dtype)
    _k("channels_backward", x)(grad, x, dx, N, C, S, _flat(weight), contiguous(mean), contiguous(invstd),
                               bool(training), dw, db)
    return dx, dw, db


# -- layer_norm ------------------------------------------------------------------------------------


@register("layer_norm", "cpp")
def layer_norm(x, normalized_shape, weight, bias, eps):
    return _rows(x, 1, math.prod(normalized_shape), 1, weight, bias, eps)[0]


@register("layer_norm_backward", "cpp")
def layer_norm_backward(grad, x, normalized_shape, weight, bias, eps, saved=None):
    return _rows_backward(grad, x, 1, math.prod(normalized_shape), 1, weight, bias, eps)


# -- batch_norm --------------------------------------------------------------------------------------


@register("batch_norm", "cpp")
def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    y, mean, var, invstd = _channels(x, weight, bias, eps, training, running_mean, running_var)
    count = x.size // max(x.shape[1], 1)
    if training and running_mean is not None and count > 0:
        _update(running_mean, momentum, mean)
        _update(running_var, momentum, var * x.dtype.type(count / (count - 1)))
    return y, {"mean": mean, "invstd": invstd}


@register("batch_norm_backward", "cpp")
def batch_norm_backward(grad, x, running_mean, running_var, weight, bias, training, momentum, eps, saved=None):
    if saved is None:  # recompute without touching the running statistics
        _, mean, _, invstd = _channels(x, None, None, eps, training, running_mean, running_var)
    else:
        mean, invstd = saved["mean"], saved["invstd"]
    return _channels_backward(grad, x, weight, bias, mean, invstd, training)


# -- group_norm ----------------------------------------------------------------------------------------


@register("group_norm", "cpp")
def group_norm(x, num_groups, weight, bias, eps):
    N, C, S = _ncs(x)
    return _rows(x, num_groups, C // num_groups, S, weight, bias, eps)[0]


@register("group_norm_backward", "cpp")
def group_norm_backward(grad, x, num_groups, weight, bias, eps, saved=None):
    N, C, S = _ncs(x)
    return _rows_backward(grad, x, num_groups, C // num_groups, S, weight, bias, eps)


# -- instance_norm ----------------------------------------------------------------------------------


def _running_invstd(running_var, eps):
    return (1 / np.sqrt(running_var + eps)).astype(running_var.dtype, copy=False)


@register("instance_norm", "cpp")
def instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    N, C, S = _ncs(x)
    if not use_input_stats:
        return _channels(x, weight, bias, eps, False, running_mean, running_var)[0]
    y, mean, var = _rows(x, C, 1, S, weight, bias, eps, stats=running_mean is not None)
    if running_mean is not None and N > 0:
        # torch runs batch_norm on x viewed as (1, N*C, ...) with the running statistics
        # repeated N times, then averages the N updated copies
        _update(running_mean, momentum, mean.reshape(N, C).mean(axis=0))
        _update(running_var, momentum, (var.reshape(N, C) * x.dtype.type(S / (S - 1))).mean(axis=0))
    return y


@register("instance_norm_backward", "cpp")
def instance_norm_backward(grad, x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                           saved=None):
    N, C, S = _ncs(x)
    if use_input_stats:
        return _rows_backward(grad, x, C, 1, S, weight, bias, eps)
    return _channels_backward(grad, x, weight, bias, running_mean, _running_invstd(running_var, eps), False)


# -- local_response_norm --------------------------------------------------------------------------------


def _lrn(grad, x, size, alpha, beta, k):
    x = contiguous(x)
    y = _array.empty(x.shape, x.dtype)
    _k("lrn", x)(None if grad is None else contiguous(grad), x, y, *_ncs(x), size, float(alpha), float(beta),
                 float(k))
    return y


@register("local_response_norm", "cpp")
def local_response_norm(x, size, alpha, beta, k):
    return _lrn(None, x, size, alpha, beta, k)


@register("local_response_norm_backward", "cpp")
def local_response_norm_backward(grad, x, size, alpha, beta, k, saved=None):
    return (_lrn(grad, x, size, alpha, beta, k),)
