"""CUDA adapters for the elementwise family (kernels/cuda/elementwise.cu)."""
import numpy as np

from ... import _array
from .._shared import (ACTIVATIONS, SOFTMAXES, SUFFIX as _SUFFIX, activation_kernel, contiguous, reduction_view,
                       register_each)
from ._loader import blocks_for, launch


def _act(op, x, **params):
    kernel, param = activation_kernel(op, params)
    x = contiguous(x)
    y = _array.empty(x.shape, x.dtype, like=x)
    if x.size:
        launch("elementwise", f"elementwise_{kernel}_{_SUFFIX[x.dtype]}", (blocks_for(x.size),), (256,),
               (x, y, np.int64(x.size), x.dtype.type(param)))
    return y


def _act_backward(op, grad, x, **params):
    kernel, param = activation_kernel(op, params)
    x, grad = contiguous(x), contiguous(grad)
    dx = _array.empty(x.shape, x.dtype, like=x)
    if x.size:
        launch("elementwise", f"elementwise_{kernel}_backward_{_SUFFIX[x.dtype]}", (blocks_for(x.size),),
               (256,), (grad, x, dx, np.int64(x.size), x.dtype.type(param)))
    return (dx,)


def _softmax(op, x, dim):
    x = contiguous(x)
    y = _array.empty(x.shape, x.dtype, like=x)
    if not x.size:
        return y
    outer, n, inner = reduction_view(x.shape, dim)
    sfx = _SUFFIX[x.dtype]
    if inner == 1:   # one warp per contiguous row, 8 warps per block
        launch("elementwise", f"elementwise_{op}_rows_{sfx}", (max(1, min((outer + 7) // 8, 65535 * 32)),),
               (256,), (x, y, np.int64(outer), np.int64(n)))
    else:            # one thread per column
        launch("elementwise", f"elementwise_{op}_cols_{sfx}", (blocks_for(outer * inner, per_thread=1),),
               (256,), (x, y, np.int64(outer), np.int64(n), np.int64(inner)))
    return y


def _softmax_backward(op, grad, x, dim):
    x, grad = contiguous(x), contiguous(grad)
    dx = _array.empty(x.shape, x.dtype, like=x)
    if x.size:
        outer, n, inner = reduction_view(x.shape, dim)
        launch("elementwise", f"elementwise_{op}_backward_{_SUFFIX[x.dtype]}",
               (blocks_for(outer * inner, per_thread=1),), (256,),
               (grad, x, dx, np.int64(outer), np.int64(n), np.int64(inner)))
    return (dx,)


# The CUDA kernels of sigmoid's, tanh's and the softmaxes' backward still take x (they recompute
# the forward; moving them to the saved output waits for a session with a GPU to run them).
register_each("cuda", ACTIVATIONS, _act, _act_backward, from_output=False)
register_each("cuda", SOFTMAXES, _softmax, _softmax_backward, from_output=False)
