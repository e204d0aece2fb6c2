"""Pieces every backend adapter uses: one registration loop for ops that share
an adapter, the kernel variant of an activation, and the (outer, n, inner)
view of a reduction along one dimension."""
from __future__ import annotations

import numpy as np

from ..registry import register

#: the activations every native backend implements with one kernel pattern
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh")
SOFTMAXES = ("softmax", "log_softmax")
#: ops whose forward saves its own output (``{"y": y}``) and whose backward works from it, as
#: PyTorch's do: the derivative is a function of y (y (1 - y), 1 - y^2, y (g - sum(g y)),
#: g - exp(y) sum(g)), so the backward reads y and skips the forward's exp and division
FROM_OUTPUT = ("sigmoid", "tanh", "softmax", "log_softmax")


def register_each(backend: str, ops, forward, backward, from_output: bool = True) -> None:
    """Register ``forward(op, **args)`` as ``op`` and ``backward(op, grad, src, **params)`` as
    ``op_backward`` on ``backend``, for each op. ``src`` is x, or for the ops of FROM_OUTPUT the
    forward's output: the saved one, else the forward run again (a caller without ``saved``).
    ``from_output=False``: a backend whose kernels for those ops still take x (they save y all
    the same, as their specs declare)."""
    for op in ops:
        saves = op in FROM_OUTPUT
        fwd = lambda op=op, **a: forward(op, **a)  # noqa: E731
        register(op, backend)(saving(fwd) if saves else fwd)
        if saves and from_output:
            def bwd(grad, x, saved=None, op=op, **params):
                y = saved["y"] if saved is not None else forward(op, x=x, **params)
                return backward(op, grad, y, **params)
        else:
            def bwd(grad, x, saved=None, op=op, **params):
                return backward(op, grad, x, **params)
        register(op + "_backward", backend)(bwd)


def saving(forward):
    """``forward`` returning ``(y, {"y": y})``: an op of FROM_OUTPUT."""
    def op(**a):
        y = forward(**a)
        return y, {"y": y}
    return op


def activation_kernel(op: str, params: dict) -> tuple[str, float]:
    """(kernel name, scalar parameter) of an activation with its normalized
    parameters: gelu's tanh form is its own kernel, leaky_relu and elu pass
    their slope or alpha."""
    if op == "gelu":
        return ("gelu_tanh" if params["approximate"] == "tanh" else "gelu"), 0.0
    return op, float(params.get("negative_slope", params.get("alpha", 0.0)))


#: kernel-name suffix per dtype (``<family>_<op>_<suffix>`` entry points)
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def contiguous(a, shape=None):
    """``a`` C-contiguous (copied only when it is not), optionally reshaped; NumPy or CuPy, a 0-d
    array stays 0-d (``ascontiguousarray`` alone returns it 1-d)."""
    if not a.flags.c_contiguous:
        from .._array import module

        a = module(a).ascontiguousarray(a)
    return a if shape is None else a.reshape(shape)


def reduction_view(shape, dim: int) -> tuple[int, int, int]:
    """(outer, n, inner) for a reduction along ``dim`` (>= 0) of ``shape``."""
    outer = int(np.prod(shape[:dim], dtype=np.int64))
    inner = int(np.prod(shape[dim + 1:], dtype=np.int64))
    return outer, int(shape[dim]), inner
