"""NumPy reference: mse_loss, l1_loss, cross_entropy, nll_loss,
binary_cross_entropy, binary_cross_entropy_with_logits, gaussian_nll_loss,
kl_div (forward and backward).

Each loss computes its pointwise (or per-sample) terms and reduces them;
each backward multiplies the terms' derivatives by the upstream gradient
spread back over the terms (:func:`_spread`, the backward of :func:`_reduce`).
"""
import math

import numpy as np

from ...registry import register
from .elementwise import log_softmax, sigmoid


def _count(shape, reduction):
    """What "mean" and "batchmean" divide the sum of terms of ``shape`` by."""
    if reduction == "batchmean":
        return shape[0] if shape else 1
    return math.prod(shape)


def _reduce(loss, reduction, count=None):
    """The terms ("none"), their sum, or the sum / ``count`` (NaN over nothing)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    count = _count(loss.shape, reduction) if count is None else count
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / loss.dtype.type(count)


def _spread(grad, shape, reduction, count=None):
    """The upstream gradient of each term of ``shape``."""
    if reduction == "none":
        return grad
    if reduction != "sum":
        count = _count(shape, reduction) if count is None else count
        with np.errstate(invalid="ignore", divide="ignore"):
            grad = grad / grad.dtype.type(count)
    return np.broadcast_to(grad, shape)


# -- mse_loss ---------------------------------------------------------------------------------


@register("mse_loss", "numpy")
def mse_loss(input, target, reduction):
    return _reduce((input - target) ** 2, reduction)


@register("mse_loss_backward", "numpy")
def mse_loss_backward(grad, input, target, reduction, saved=None):
    d = 2 * (input - target) * _spread(grad, input.shape, reduction)
    return d, -d


# -- l1_loss ----------------------------------------------------------------------------------


@register("l1_loss", "numpy")
def l1_loss(input, target, reduction):
    return _reduce(np.abs(input - target), reduction)


@register("l1_loss_backward", "numpy")
def l1_loss_backward(grad, input, target, reduction, saved=None):
    d = np.sign(input - target) * _spread(grad, input.shape, reduction)  # sign(0) = 0, as torch
    return d, -d


# -- cross_entropy -------------------------------------------------------------------------------
# input (N, C, *spatial); per sample i (over N and the spatial positions), with
# logp = log_softmax(input, dim=1), class weights w (ones without weight) and
# ls = label_smoothing:
#   class index t:  loss_i = -(1 - ls) * w[t] * logp[i, t] - ls/C * sum_c w[c] * logp[i, c]
#                   (0 where t == ignore_index); "mean" divides by sum of w[t] over the rest
#   probabilities:  loss_i = -sum_c w[c] * ((1 - ls) * target[i, c] + ls/C) * logp[i, c]
#                   "mean" divides by the number of samples
# Both are loss_i = -sum_c a[i, c] * logp[i, c], so dloss_i/dinput[i] = softmax * sum_c a[i, c] - a[i].


def _class_weights(input, weight):
    """(C,) class weights, ones without ``weight``."""
    return np.ones(input.shape[1], input.dtype) if weight is None else weight


def _by_class(v, input):
    """A (C,) array shaped to broadcast against input (N, C, *spatial)."""
    return v.reshape((1, -1) + (1,) * (input.ndim - 2))


def _picks(target, ignore_index, w):
    """(keep, t, wt): samples that count, their class (0 where ignored; intp whatever the
    target's integer dtype), its weight (0 where ignored)."""
    keep = target != ignore_index
    t = np.where(keep, target, 0).astype(np.intp, copy=False)
    return keep, t, np.where(keep, w[t], 0)


def _ce_coefficients(input, target, weight, ignore_index, label_smoothing):
    """(a, keep, count): loss_i = -sum_c a[i, c] * logp[i, c]; keep (None for
    probabilities) marks the samples that count; the mean divides by count."""
    C, ls = input.shape[1], label_smoothing
    w = _class_weights(input, weight)
    if target.dtype.kind == "f":
        return _by_class(w, input) * (target * (1 - ls) + ls / C), None, input.size // C
    keep, t, wt = _picks(target, ignore_index, w)
    onehot = _by_class(np.arange(C), input) == t[:, None]
    a = (1 - ls) * wt[:, None] * onehot + (ls / C) * _by_class(w, input) * keep[:, None]
    return a, keep, wt.sum()


@register("cross_entropy", "numpy")
def cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    logp = log_softmax(input, 1)
    if target.dtype.kind == "f":
        a, _, count = _ce_coefficients(input, target, weight, ignore_index, label_smoothing)
        return _reduce(-(a * logp).sum(axis=1), reduction, count)
    # class indices: pick logp at the target, so a -inf logit elsewhere stays harmless
    C, ls = input.shape[1], label_smoothing
    w = _class_weights(input, weight)
    keep, t, wt = _picks(target, ignore_index, w)
    loss = -(1 - ls) * wt * np.take_along_axis(logp, t[:, None], axis=1)[:, 0]
    if ls > 0:
        loss = loss - (ls / C) * (_by_class(w, input) * logp).sum(axis=1)
    return _reduce(np.where(keep, loss, 0), reduction, wt.sum())


@register("cross_entropy_backward", "numpy")
def cross_entropy_backward(grad, input, target, weight, ignore_index, reduction, label_smoothing, saved=None):
    a, keep, count = _ce_coefficients(input, target, weight, ignore_index, label_smoothing)
    g = _spread(grad, input.shape[:1] + input.shape[2:], reduction, count)[:, None]
    logp = log_softmax(input, 1)
    with np.errstate(invalid="ignore"):  # inf * 0 where every target is ignored: masked below
        dx = g * (np.exp(logp) * a.sum(axis=1, keepdims=True) - a)
    # ignored samples get exactly 0 (even where the mean divides by a zero weight sum)
    if keep is not None:
        return np.where(keep[:, None], dx, 0), None
    return dx, cross_entropy_target_grad(g, logp, weight, label_smoothing)


def cross_entropy_target_grad(g, logp, weight, label_smoothing):
    """d loss / d target for probability targets: -(1 - ls) * w[c] * logp[i, c] * g[i]
    (g: the upstream gradient spread over the samples, broadcasting against logp)."""
    d = -(1 - label_smoothing) * g * logp
    return d if weight is None else d * _by_class(weight, logp)


# -- nll_loss -------------------------------------------------------------------------------------
# loss_i = -w[t_i] * input[i, t_i] (0 where t_i == ignore_index); "mean" divides by the sum of w[t_i]
# over the samples that count: the cross_entropy of log-probabilities, without the softmax.


@register("nll_loss", "numpy")
def nll_loss(input, target, weight, ignore_index, reduction):
    keep, t, wt = _picks(target, ignore_index, _class_weights(input, weight))
    loss = -wt * np.take_along_axis(input, t[:, None], axis=1)[:, 0]
    return _reduce(np.where(keep, loss, 0), reduction, wt.sum())


@register("nll_loss_backward", "numpy")
def nll_loss_backward(grad, input, target, weight, ignore_index, reduction, saved=None):
    keep, t, wt = _picks(target, ignore_index, _class_weights(input, weight))
    g = _spread(grad, target.shape, reduction, wt.sum())
    dx = np.zeros_like(input)
    with np.errstate(invalid="ignore"):  # inf * 0 where every target is ignored: masked
        np.put_along_axis(dx, t[:, None], np.where(keep, -wt * g, 0)[:, None], axis=1)
    return (dx,)


# -- binary_cross_entropy ------------------------------------------------------------------------


def _weighted(loss, weight):
    return loss if weight is None else loss * weight


@register("binary_cross_entropy", "numpy")
def binary_cross_entropy(input, target, weight, reduction):
    with np.errstate(divide="ignore"):
        log_p, log_1mp = np.log(input), np.log1p(-input)
    loss = -(target * np.maximum(log_p, -100) + (1 - target) * np.maximum(log_1mp, -100))
    return _reduce(_weighted(loss, weight), reduction)


@register("binary_cross_entropy_backward", "numpy")
def binary_cross_entropy_backward(grad, input, target, weight, reduction, saved=None):
    d = (input - target) / np.maximum(input * (1 - input), 1e-12)
    g = _spread(grad, input.shape, reduction)
    with np.errstate(divide="ignore"):  # d/dtarget: the clamped log-odds of 1 - input, as torch
        dt = np.maximum(np.log1p(-input), -100) - np.maximum(np.log(input), -100)
    return _weighted(d, weight) * g, _weighted(dt, weight) * g


# -- binary_cross_entropy_with_logits ----------------------------------------------------------


def _log_sigmoid(x):
    return -np.logaddexp(0, -x)


@register("binary_cross_entropy_with_logits", "numpy")
def binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight):
    log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
    loss = (1 - target) * input - log_weight * _log_sigmoid(input)
    return _reduce(_weighted(loss, weight), reduction)


@register("binary_cross_entropy_with_logits_backward", "numpy")
def binary_cross_entropy_with_logits_backward(grad, input, target, weight, reduction, pos_weight, saved=None):
    if pos_weight is None:
        d = sigmoid(input) - target
        dt = -input
    else:
        d = (1 + (pos_weight - 1) * target) * sigmoid(input) - pos_weight * target
        dt = -input - (pos_weight - 1) * _log_sigmoid(input)
    g = _spread(grad, input.shape, reduction)
    return _weighted(d, weight) * g, _weighted(dt, weight) * g


# -- gaussian_nll_loss ---------------------------------------------------------------------------


def _clamped_var(var, input, eps):
    """max(var, eps), with a var of input's shape without the last dim given that dim back (size 1)."""
    if var.shape != input.shape and var.shape == input.shape[:-1]:
        var = var[..., None]
    return np.maximum(var, eps)


@register("gaussian_nll_loss", "numpy")
def gaussian_nll_loss(input, target, var, full, eps, reduction):
    v = _clamped_var(var, input, eps)
    loss = 0.5 * (np.log(v) + (input - target) ** 2 / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


@register("gaussian_nll_loss_backward", "numpy")
def gaussian_nll_loss_backward(grad, input, target, var, full, eps, reduction, saved=None):
    v = _clamped_var(var, input, eps)
    g = _spread(grad, input.shape, reduction)
    r = input - target
    dinput = g * r / v
    dv = g * 0.5 * (1 / v - r * r / (v * v))  # straight through the clamp, as torch
    shared = tuple(i for i, n in enumerate(v.shape) if n == 1 and input.shape[i] != 1)
    return dinput, -dinput, dv.sum(axis=shared, keepdims=True).reshape(var.shape)


# -- kl_div ----------------------------------------------------------------------------------------


@register("kl_div", "numpy")
def kl_div(input, target, reduction, log_target):
    if log_target:
        loss = np.exp(target) * (target - input)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = np.where(target == 0, 0, target * np.log(target)) - target * input
    return _reduce(loss, reduction)


@register("kl_div_backward", "numpy")
def kl_div_backward(grad, input, target, reduction, log_target, saved=None):
    g = _spread(grad, input.shape, reduction)
    if log_target:
        p = np.exp(target)
        return -g * p, g * p * (target - input + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -g * target, g * (np.log(target) + 1 - input)
