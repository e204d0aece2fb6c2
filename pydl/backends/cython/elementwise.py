"""Cython adapters for the elementwise family (kernels/cython/elementwise.pyx).

Each adapter makes its inputs C-contiguous, allocates the output through
``pydl._array.empty`` and hands the kernel flat (activations) or
(outer, n, inner) (softmax) views.
"""
import numpy as np

from ... import _array, _cython
from .._shared import ACTIVATIONS, SOFTMAXES, contiguous, activation_kernel, reduction_view, register_each

_OPS = _cython.ELEMENTWISE_ACTIVATIONS


def _act(op, x, **params):
    kernel, param = activation_kernel(op, params)
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        _cython.elementwise_activation(_OPS[kernel], contiguous(x, (-1,)), contiguous(y, (-1,)), param)
    return y


def _act_backward(op, grad, x, **params):
    """``x`` is the forward's output for sigmoid and tanh (register_each's FROM_OUTPUT)."""
    kernel, param = activation_kernel(op, params)
    dx = _array.empty(x.shape, x.dtype)
    if x.size:
        _cython.elementwise_activation_backward(_OPS[kernel], contiguous(grad, (-1,)), contiguous(x, (-1,)), contiguous(dx, (-1,)), param)
    return (dx,)


def _softmax(op, x, dim):
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        view = reduction_view(x.shape, dim)
        _cython.elementwise_softmax(contiguous(x, view), contiguous(y, view), op == "log_softmax")
    return y


def _softmax_backward(op, grad, y, dim):
    """From the forward's output y (register_each passes the saved one)."""
    dx = _array.empty(y.shape, y.dtype)
    if y.size:
        view = reduction_view(y.shape, dim)
        _cython.elementwise_softmax_backward(contiguous(grad, view), contiguous(y, view), contiguous(dx, view), op == "log_softmax")
    return (dx,)


register_each("cython", ACTIVATIONS, _act, _act_backward)
register_each("cython", SOFTMAXES, _softmax, _softmax_backward)
