"""Cython adapters for the elementwise family (kernels/cython/elementwise.pyx).

Each adapter makes its inputs C-contiguous, allocates the output through
``pydl._array.empty`` and hands the kernel flat (activations) or
(outer, n, inner) (softmax) views.
"""
import numpy as np

from ... import _array, _cython
from ...registry import register

_OPS = _cython.ELEMENTWISE_ACTIVATIONS


def _c(a, shape=(-1,)):
    """``a`` as a C-contiguous array of ``shape`` (a view when it already is contiguous)."""
    return np.ascontiguousarray(a).reshape(shape)


def _act(kernel, x, param=0.0):
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        _cython.elementwise_activation(_OPS[kernel], _c(x), _c(y), param)
    return y


def _act_backward(kernel, grad, x, param=0.0):
    dx = _array.empty(x.shape, x.dtype)
    if x.size:
        _cython.elementwise_activation_backward(_OPS[kernel], _c(grad), _c(x), _c(dx), param)
    return (dx,)


def _gelu_kernel(approximate):
    return "gelu_tanh" if approximate == "tanh" else "gelu"


register("relu", "cython")(lambda x: _act("relu", x))
register("relu_backward", "cython")(lambda grad, x, saved=None: _act_backward("relu", grad, x))
register("leaky_relu", "cython")(lambda x, negative_slope: _act("leaky_relu", x, negative_slope))
register("leaky_relu_backward", "cython")(
    lambda grad, x, negative_slope, saved=None: _act_backward("leaky_relu", grad, x, negative_slope))
register("elu", "cython")(lambda x, alpha: _act("elu", x, alpha))
register("elu_backward", "cython")(lambda grad, x, alpha, saved=None: _act_backward("elu", grad, x, alpha))
register("gelu", "cython")(lambda x, approximate: _act(_gelu_kernel(approximate), x))
register("gelu_backward", "cython")(
    lambda grad, x, approximate, saved=None: _act_backward(_gelu_kernel(approximate), grad, x))
register("sigmoid", "cython")(lambda x: _act("sigmoid", x))
register("sigmoid_backward", "cython")(lambda grad, x, saved=None: _act_backward("sigmoid", grad, x))
register("tanh", "cython")(lambda x: _act("tanh", x))
register("tanh_backward", "cython")(lambda grad, x, saved=None: _act_backward("tanh", grad, x))


def _view(shape, dim):
    """(outer, n, inner) for a reduction along ``dim`` (normalized: >= 0) of ``shape``."""
    outer = int(np.prod(shape[:dim], dtype=np.int64))
    inner = int(np.prod(shape[dim + 1:], dtype=np.int64))
    return outer, shape[dim], inner


def _softmax(x, dim, log):
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        view = _view(x.shape, dim)
        _cython.elementwise_softmax(_c(x, view), _c(y, view), log)
    return y


def _softmax_backward(grad, x, dim, log):
    dx = _array.empty(x.shape, x.dtype)
    if x.size:
        view = _view(x.shape, dim)
        _cython.elementwise_softmax_backward(_c(grad, view), _c(x, view), _c(dx, view), log)
    return (dx,)


register("softmax", "cython")(lambda x, dim: _softmax(x, dim, False))
register("softmax_backward", "cython")(lambda grad, x, dim, saved=None: _softmax_backward(grad, x, dim, False))
register("log_softmax", "cython")(lambda x, dim: _softmax(x, dim, True))
register("log_softmax_backward", "cython")(
    lambda grad, x, dim, saved=None: _softmax_backward(grad, x, dim, True))
