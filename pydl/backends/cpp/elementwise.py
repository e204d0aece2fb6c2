"""C++ adapters for the elementwise family (kernels/cpp/elementwise.cpp).

Each kernel takes C-contiguous arrays of one dtype and writes into ``out``:
``elementwise_<op>_<f32|f64>(x, out, *params)`` and
``elementwise_<op>_backward_<f32|f64>(grad, x, out, *params)``.
"""
import numpy as np

from ... import _array, _cpp
from ...registry import register

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _contiguous(a):
    # np.ascontiguousarray would turn a 0-d array into shape (1,)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _forward(op, x, *params):
    x = _contiguous(x)
    out = _array.empty(x.shape, x.dtype)
    getattr(_cpp, f"elementwise_{op}_{_SUFFIX[x.dtype]}")(x, out, *params)
    return out


def _backward(op, grad, x, *params):
    x, grad = _contiguous(x), _contiguous(grad)
    dx = _array.empty(x.shape, x.dtype)
    getattr(_cpp, f"elementwise_{op}_backward_{_SUFFIX[x.dtype]}")(grad, x, dx, *params)
    return (dx,)


register("relu", "cpp")(lambda x: _forward("relu", x))
register("relu_backward", "cpp")(lambda grad, x, saved=None: _backward("relu", grad, x))
register("leaky_relu", "cpp")(lambda x, negative_slope: _forward("leaky_relu", x, negative_slope))
register("leaky_relu_backward", "cpp")(
    lambda grad, x, negative_slope, saved=None: _backward("leaky_relu", grad, x, negative_slope))
register("elu", "cpp")(lambda x, alpha: _forward("elu", x, alpha))
register("elu_backward", "cpp")(lambda grad, x, alpha, saved=None: _backward("elu", grad, x, alpha))
register("gelu", "cpp")(lambda x, approximate: _forward("gelu", x, approximate))
register("gelu_backward", "cpp")(
    lambda grad, x, approximate, saved=None: _backward("gelu", grad, x, approximate))
register("sigmoid", "cpp")(lambda x: _forward("sigmoid", x))
register("sigmoid_backward", "cpp")(lambda grad, x, saved=None: _backward("sigmoid", grad, x))
register("tanh", "cpp")(lambda x: _forward("tanh", x))
register("tanh_backward", "cpp")(lambda grad, x, saved=None: _backward("tanh", grad, x))
register("softmax", "cpp")(lambda x, dim: _forward("softmax", x, dim))
register("softmax_backward", "cpp")(lambda grad, x, dim, saved=None: _backward("softmax", grad, x, dim))
register("log_softmax", "cpp")(lambda x, dim: _forward("log_softmax", x, dim))
register("log_softmax_backward", "cpp")(
    lambda grad, x, dim, saved=None: _backward("log_softmax", grad, x, dim))
