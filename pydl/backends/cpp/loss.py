"""C++ adapters for the loss family (kernels/cpp/loss.cpp).

cross_entropy and nll_loss take rows of C logits: input (N, C) as it is; input (N, C, *spatial)
has its class dim moved last (one copy) and the gradient moved back. The pointwise losses take
input, target and any weight at input's shape (a weight that broadcasts is expanded: a copy).
The kernels return the sum of the terms (and, for class indices, the summed weights of the
targets that count); the mean divides here, in the input's dtype, as the reference does.
"""
import math

import numpy as np

from ... import _array, _cpp
from ...registry import register
from .._shared import SUFFIX, contiguous
from ..reference import loss as _reference

_I64 = np.dtype(np.int64)
_KIND = {"mse": 0, "l1": 1, "bce": 2, "bce_logits": 3, "kl": 4, "kl_log": 5, "gnll": 6}


def _k(op, x):
    return getattr(_cpp, f"loss_{op}_{SUFFIX[x.dtype]}")


def _count(shape, reduction):
    if reduction == "batchmean":
        return shape[0] if shape else 1
    return math.prod(shape)


def _reduced(total, count, reduction, dtype):
    """The 0-d result of a "sum" or "mean" reduction (NaN for a mean over nothing)."""
    t = dtype.type(total)
    if reduction == "sum":
        return t
    with np.errstate(invalid="ignore", divide="ignore"):
        return t / dtype.type(count)


def _gscale(grad, count, reduction):
    """The upstream gradient of every term of a "sum" or "mean" reduction, in grad's dtype."""
    g = grad.dtype.type(grad)
    if reduction == "sum":
        return float(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(g / grad.dtype.type(count))


# -- cross_entropy and nll_loss: rows of C classes -------------------------------------------------


def _rows(a):
    """a (N, C, *spatial) as C-contiguous rows (R, C) with the class dim last."""
    if a.ndim == 2:
        return contiguous(a)
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)).reshape(-1, a.shape[1])


def _unrows(d, shape):
    """Rows (R, C) back to (N, C, *spatial)."""
    if len(shape) == 2:
        return d
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return np.ascontiguousarray(np.moveaxis(d.reshape(moved), -1, 1))


def _indices(target, ignore_index):
    """Class indices as C-contiguous int64 (R,) and ignore_index as an int64 the kernel can compare."""
    t = target if target.dtype == _I64 else target.astype(np.int64)
    t = contiguous(t, (-1,))
    if not -2**63 <= ignore_index < 2**63:  # no int64 equals it, but uint64's top half wraps
        ignore_index = ignore_index - 2**64 if target.dtype == np.uint64 and ignore_index < 2**64 else -1
    return t, ignore_index


def _index_count(t, ignore_index, weight, dtype):
    """The summed weights of the targets that count, in the input's dtype (what "mean" divides by)."""
    keep = t[t != ignore_index]
    return dtype.type(keep.size) if weight is None else weight[keep].sum(dtype=dtype)


def _per_sample(input):
    return input.shape[:1] + input.shape[2:]


@register("cross_entropy", "cpp")
def cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    C = input.shape[1]
    if not C:  # no logits: the reference decides (zeros for probabilities)
        return _reference.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    x = _rows(input)
    R = x.shape[0]
    prob = target.dtype.kind == "f"
    t, ignore = (None, 0) if prob else _indices(target, ignore_index)
    P = _rows(target) if prob else None
    out = _array.empty(R, input.dtype) if reduction == "none" else None
    total, wsum = _k("cross_entropy", x)(x, R, C, t, P, None if weight is None else contiguous(weight), ignore,
                                         float(label_smoothing), out)
    if out is not None:
        return out.reshape(_per_sample(input))
    return _reduced(total, R if prob else wsum, reduction, input.dtype)


@register("cross_entropy_backward", "cpp")
def cross_entropy_backward(grad, input, target, weight, ignore_index, reduction, label_smoothing, saved=None):
    C = input.shape[1]
    if not C:
        return _reference.cross_entropy_backward(grad, input, target, weight, ignore_index, reduction,
                                                 label_smoothing)
    x = _rows(input)
    R = x.shape[0]
    prob = target.dtype.kind == "f"
    t, ignore = (None, 0) if prob else _indices(target, ignore_index)
    P = _rows(target) if prob else None
    w = None if weight is None else contiguous(weight)
    g, gs = None, 0.0
    if reduction == "none":
        g = contiguous(grad, (-1,))
    else:
        gs = _gscale(grad, R if prob else _index_count(t, ignore, w, input.dtype), reduction)
    dx = _array.empty((R, C), input.dtype)
    dT = _array.empty((R, C), input.dtype) if prob else None
    _k("cross_entropy_backward", x)(g, gs, x, R, C, t, P, w, ignore, float(label_smoothing), dx, dT)
    return _unrows(dx, input.shape), (None if dT is None else _unrows(dT, input.shape))


@register("nll_loss", "cpp")
def nll_loss(input, target, weight, ignore_index, reduction):
    C = input.shape[1]
    if not C:
        return _reference.nll_loss(input, target, weight, ignore_index, reduction)
    x = _rows(input)
    R = x.shape[0]
    t, ignore = _indices(target, ignore_index)
    out = _array.empty(R, input.dtype) if reduction == "none" else None
    total, wsum = _k("nll", x)(x, R, C, t, None if weight is None else contiguous(weight), ignore, out)
    if out is not None:
        return out.reshape(_per_sample(input))
    return _reduced(total, wsum, reduction, input.dtype)


@register("nll_loss_backward", "cpp")
def nll_loss_backward(grad, input, target, weight, ignore_index, reduction, saved=None):
    C = input.shape[1]
    if not C:
        return _reference.nll_loss_backward(grad, input, target, weight, ignore_index, reduction)
    x = _rows(input)
    R = x.shape[0]
    t, ignore = _indices(target, ignore_index)
    w = None if weight is None else contiguous(weight)
    g, gs = None, 0.0
    if reduction == "none":
        g = contiguous(grad, (-1,))
    else:
        gs = _gscale(grad, _index_count(t, ignore, w, input.dtype), reduction)
    dx = _array.empty((R, C), input.dtype)
    _k("nll_backward", x)(g, gs, x, R, C, t, w, ignore, dx)
    return (_unrows(dx, input.shape),)


# -- pointwise losses ----------------------------------------------------------------------------------


def _full(a, shape):
    """An optional array expanded to ``shape``, C-contiguous (copied only when it is not already)."""
    if a is None:
        return None
    if a.shape != tuple(shape):
        a = np.broadcast_to(a, shape)
    return contiguous(a)


def _pointwise(kind, input, target, reduction, weight=None, pos_weight=None, var=None, eps=0.0, full=False):
    x, t = contiguous(input), contiguous(target)
    out = _array.empty(x.shape, x.dtype) if reduction == "none" else None
    total = _k("pointwise", x)(_KIND[kind], x, t, _full(weight, x.shape), _full(pos_weight, x.shape),
                               _full(var, x.shape), float(eps), bool(full), out)
    return out if out is not None else _reduced(total, _count(x.shape, reduction), reduction, x.dtype)


def _pointwise_backward(kind, grad, input, target, reduction, weight=None, pos_weight=None, var=None, eps=0.0):
    x, t = contiguous(input), contiguous(target)
    g, gs = None, 0.0
    if reduction == "none":
        g = contiguous(grad)
    else:
        gs = _gscale(grad, _count(x.shape, reduction), reduction)
    dx, dt = _array.empty(x.shape, x.dtype), _array.empty(x.shape, x.dtype)
    dv = _array.empty(x.shape, x.dtype) if var is not None else None
    _k("pointwise_backward", x)(_KIND[kind], g, gs, x, t, _full(weight, x.shape), _full(pos_weight, x.shape),
                                _full(var, x.shape), float(eps), dx, dt, dv)
    return dx, dt, dv


@register("mse_loss", "cpp")
def mse_loss(input, target, reduction):
    return _pointwise("mse", input, target, reduction)


@register("mse_loss_backward", "cpp")
def mse_loss_backward(grad, input, target, reduction, saved=None):
    return _pointwise_backward("mse", grad, input, target, reduction)[:2]


@register("l1_loss", "cpp")
def l1_loss(input, target, reduction):
    return _pointwise("l1", input, target, reduction)


@register("l1_loss_backward", "cpp")
def l1_loss_backward(grad, input, target, reduction, saved=None):
    return _pointwise_backward("l1", grad, input, target, reduction)[:2]


@register("binary_cross_entropy", "cpp")
def binary_cross_entropy(input, target, weight, reduction):
    return _pointwise("bce", input, target, reduction, weight)


@register("binary_cross_entropy_backward", "cpp")
def binary_cross_entropy_backward(grad, input, target, weight, reduction, saved=None):
    return _pointwise_backward("bce", grad, input, target, reduction, weight)[:2]


@register("binary_cross_entropy_with_logits", "cpp")
def binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight):
    return _pointwise("bce_logits", input, target, reduction, weight, pos_weight)


@register("binary_cross_entropy_with_logits_backward", "cpp")
def binary_cross_entropy_with_logits_backward(grad, input, target, weight, reduction, pos_weight, saved=None):
    return _pointwise_backward("bce_logits", grad, input, target, reduction, weight, pos_weight)[:2]


@register("kl_div", "cpp")
def kl_div(input, target, reduction, log_target):
    return _pointwise("kl_log" if log_target else "kl", input, target, reduction)


@register("kl_div_backward", "cpp")
def kl_div_backward(grad, input, target, reduction, log_target, saved=None):
    return _pointwise_backward("kl_log" if log_target else "kl", grad, input, target, reduction)[:2]


def _gnll_var(var, input):
    """var with input's ndim (a var without input's last dim gets it back, size 1)."""
    return var[..., None] if var.shape != input.shape and var.shape == input.shape[:-1] else var


@register("gaussian_nll_loss", "cpp")
def gaussian_nll_loss(input, target, var, full, eps, reduction):
    return _pointwise("gnll", input, target, reduction, var=_gnll_var(var, input), eps=eps, full=full)


@register("gaussian_nll_loss_backward", "cpp")
def gaussian_nll_loss_backward(grad, input, target, var, full, eps, reduction, saved=None):
    v = _gnll_var(var, input)
    dx, dt, dv = _pointwise_backward("gnll", grad, input, target, reduction, var=v, eps=eps)
    shared = tuple(i for i, n in enumerate(v.shape) if n == 1 and input.shape[i] != 1)
    return dx, dt, dv.sum(axis=shared, keepdims=True).reshape(var.shape)
