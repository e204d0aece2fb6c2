"""NumPy reference: activations (prelu with its slopes), softmax, log_softmax, dropout."""
import math

import numpy as np

from ...registry import register
from .._shared import saving

_erf = np.frompyfunc(math.erf, 1, 1)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erf(x):
    x = np.asarray(x)
    return np.asarray(_erf(x), dtype=x.dtype) if x.size else x.copy()


@register("relu", "numpy")
def relu(x):
    return np.where(x < 0, np.zeros_like(x), x)  # NaN is not < 0: it propagates


@register("relu_backward", "numpy")
def relu_backward(grad, x, saved=None):
    return (np.where(x > 0, grad, np.zeros_like(grad)),)


@register("leaky_relu", "numpy")
def leaky_relu(x, negative_slope):
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


@register("leaky_relu_backward", "numpy")
def leaky_relu_backward(grad, x, negative_slope, saved=None):
    return (np.where(x > 0, grad, grad * x.dtype.type(negative_slope)),)


@register("elu", "numpy")
def elu(x, alpha):
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))


@register("elu_backward", "numpy")
def elu_backward(grad, x, alpha, saved=None):
    return (np.where(x > 0, grad, grad * x.dtype.type(alpha) * np.exp(np.minimum(x, 0))),)


def _slopes(weight, x):
    """prelu's weight shaped to broadcast against x: (1,) -> 0-d, (C,) -> (1, C, 1, ...)."""
    if weight.shape[0] == 1:
        return weight.reshape(())
    return weight.reshape((1, -1) + (1,) * (x.ndim - 2))


@register("prelu", "numpy")
def prelu(x, weight):
    return np.where(x > 0, x, _slopes(weight, x) * x)


@register("prelu_backward", "numpy")
def prelu_backward(grad, x, weight, saved=None):
    pos = x > 0
    dx = np.where(pos, grad, _slopes(weight, x) * grad)
    dw = np.where(pos, 0, x * grad)  # summed over every axis but the channel one
    dw = dw.sum(axis=tuple(i for i in range(x.ndim) if i != 1 or weight.shape[0] == 1))
    return dx, np.reshape(dw, weight.shape).astype(weight.dtype, copy=False)


def _gelu_tanh_inner(x):
    return x.dtype.type(_SQRT_2_OVER_PI) * (x + x.dtype.type(0.044715) * x**3)


@register("gelu", "numpy")
def gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_gelu_tanh_inner(x)))
    return 0.5 * x * (1 + erf(x / x.dtype.type(math.sqrt(2.0))))


@register("gelu_backward", "numpy")
def gelu_backward(grad, x, approximate, saved=None):
    if approximate == "tanh":
        t = np.tanh(_gelu_tanh_inner(x))
        dinner = x.dtype.type(_SQRT_2_OVER_PI) * (1 + x.dtype.type(3 * 0.044715) * x**2)
        return (grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner),)
    cdf = 0.5 * (1 + erf(x / x.dtype.type(math.sqrt(2.0))))
    pdf = np.exp(-0.5 * x * x) / x.dtype.type(math.sqrt(2.0 * math.pi))
    return (grad * (cdf + x * pdf),)


# sigmoid, tanh, softmax and log_softmax save their output, and their backward is written in it
# (pydl/backends/_shared.py FROM_OUTPUT); without ``saved`` it runs the forward again. The plain
# functions are the forwards (the other reference families call them); the registered ops wrap
# them with the saved dict.

def sigmoid(x):
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)


def sigmoid_backward(grad, x, saved=None):
    y = saved["y"] if saved is not None else sigmoid(x)
    return (grad * y * (1 - y),)


def tanh(x):
    return np.tanh(x)


def tanh_backward(grad, x, saved=None):
    y = saved["y"] if saved is not None else tanh(x)
    return (grad * (1 - y * y),)


def softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True)) if x.size else x.copy()
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward(grad, x, dim, saved=None):
    y = saved["y"] if saved is not None else softmax(x, dim)
    return (y * (grad - (grad * y).sum(axis=dim, keepdims=True)),)


def log_softmax(x, dim):
    if not x.size:
        return x.copy()
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


def log_softmax_backward(grad, x, dim, saved=None):
    y = saved["y"] if saved is not None else log_softmax(x, dim)
    return (grad - np.exp(y) * grad.sum(axis=dim, keepdims=True),)


for _f, _b in ((sigmoid, sigmoid_backward), (tanh, tanh_backward), (softmax, softmax_backward),
               (log_softmax, log_softmax_backward)):
    register(_f.__name__, "numpy")(saving(_f))
    register(_b.__name__, "numpy")(_b)


def _dropout_scale(x, p):
    return x.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))


def _keep(x, p, seed, mask):
    """The keep-mask: given, drawn from ``seed``, or None (the identity)."""
    if mask is None and seed is not None:
        from ...ops.elementwise import dropout_mask
        return dropout_mask(seed, x.shape, p)
    return mask


@register("dropout", "numpy")
def dropout(x, p, training, seed, mask):
    mask = _keep(x, p, seed, mask)
    if mask is None:
        return x.copy(), {"mask": None}
    return x * (mask.astype(x.dtype) * _dropout_scale(x, p)), {"mask": mask}


@register("dropout_backward", "numpy")
def dropout_backward(grad, x, p, training, seed, mask, saved=None):
    if saved is not None and saved["mask"] is not None:
        mask = saved["mask"]
    mask = _keep(x, p, seed, mask)
    if mask is None:
        return (grad.copy(),)
    return (grad * (mask.astype(grad.dtype) * _dropout_scale(x, p)),)
