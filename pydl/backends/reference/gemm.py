"""NumPy reference: matmul, linear (fused bias + activation)."""
import math

import numpy as np

from ...registry import register
from .elementwise import (gelu, gelu_backward, relu, relu_backward, sigmoid, sigmoid_backward,
                          tanh, tanh_backward)


@register("matmul", "numpy")
def matmul(a, b):
    return np.matmul(a, b)


@register("matmul_backward", "numpy")
def matmul_backward(grad, a, b, saved=None):
    # For a 2-D operand shared by a batch, the batched product has a leading
    # batch axis that the operand does not: sum it away.
    da = np.matmul(grad, np.swapaxes(b, -1, -2))
    db = np.matmul(np.swapaxes(a, -1, -2), grad)
    if a.ndim < da.ndim:
        da = da.sum(axis=0)
    if b.ndim < db.ndim:
        db = db.sum(axis=0)
    return da, db


# activation -> (forward f(z), backward (grad, s) -> grad * f'(z)) with s what linear saves: z for
# gelu, the output y = f(z) for the others (relu' is y's sign; tanh' and sigmoid' are written in y)
_ACT = {
    None: (lambda z: z, lambda g, s: g),
    "relu": (relu, lambda g, y: relu_backward(g, y)[0]),
    "gelu": (lambda z: gelu(z, "none"), lambda g, z: gelu_backward(g, z, "none")[0]),
    "tanh": (tanh, lambda g, y: tanh_backward(g, None, {"y": y})[0]),
    "sigmoid": (sigmoid, lambda g, y: sigmoid_backward(g, None, {"y": y})[0]),
}


def affine(x, weight, bias):
    """x @ weight.T (+ bias): the linear map every family's reference uses."""
    z = np.matmul(x, weight.T)
    return z if bias is None else z + bias


@register("linear", "numpy")
def linear(x, weight, bias, activation):
    # saved preact: z for gelu, the output for relu, tanh and sigmoid, None without
    z = affine(x, weight, bias)
    out = _ACT[activation][0](z)
    keep = z if activation == "gelu" else (None if activation is None else out)
    return out, {"preact": keep}


@register("linear_backward", "numpy")
def linear_backward(grad, x, weight, bias, activation, saved=None):
    z = saved["preact"] if saved is not None else linear(x, weight, bias, activation)[1]["preact"]
    dz = grad if activation is None else _ACT[activation][1](grad, z)
    rows = math.prod(x.shape[:-1])  # every leading dim is a row (explicit:
    dz2 = dz.reshape(rows, weight.shape[0])          # reshape(-1, 0) of an empty array fails)
    x2 = x.reshape(rows, weight.shape[1])
    dx = np.matmul(dz, weight)
    dw = np.matmul(dz2.T, x2)
    db = None if bias is None else dz2.sum(axis=0)
    return dx, dw, db
