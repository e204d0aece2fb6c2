"""CUDA adapters for the elementwise family (kernels/cuda/elementwise.cu)."""
import numpy as np

from ... import _array
from ...registry import register
from ._loader import blocks_for, launch

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _act(kernel, x, param=0.0):
    import cupy

    x = cupy.ascontiguousarray(x)
    y = _array.empty(x.shape, x.dtype, like=x)
    if x.size:
        launch("elementwise", f"elementwise_{kernel}_{_SUFFIX[x.dtype]}", (blocks_for(x.size),), (256,),
               (x, y, np.int64(x.size), x.dtype.type(param)))
    return y


def _act_backward(kernel, grad, x, param=0.0):
    import cupy

    x, grad = cupy.ascontiguousarray(x), cupy.ascontiguousarray(grad)
    dx = _array.empty(x.shape, x.dtype, like=x)
    if x.size:
        launch("elementwise", f"elementwise_{kernel}_backward_{_SUFFIX[x.dtype]}", (blocks_for(x.size),),
               (256,), (grad, x, dx, np.int64(x.size), x.dtype.type(param)))
    return (dx,)


register("relu", "cuda")(lambda x: _act("relu", x))
register("relu_backward", "cuda")(lambda grad, x, saved=None: _act_backward("relu", grad, x))
register("leaky_relu", "cuda")(lambda x, negative_slope: _act("leaky_relu", x, negative_slope))
register("leaky_relu_backward", "cuda")(
    lambda grad, x, negative_slope, saved=None: _act_backward("leaky_relu", grad, x, negative_slope))
register("elu", "cuda")(lambda x, alpha: _act("elu", x, alpha))
register("elu_backward", "cuda")(lambda grad, x, alpha, saved=None: _act_backward("elu", grad, x, alpha))
register("sigmoid", "cuda")(lambda x: _act("sigmoid", x))
register("sigmoid_backward", "cuda")(lambda grad, x, saved=None: _act_backward("sigmoid", grad, x))
register("tanh", "cuda")(lambda x: _act("tanh", x))
register("tanh_backward", "cuda")(lambda grad, x, saved=None: _act_backward("tanh", grad, x))
register("gelu", "cuda")(lambda x, approximate: _act("gelu_tanh" if approximate == "tanh" else "gelu", x))
register("gelu_backward", "cuda")(
    lambda grad, x, approximate, saved=None: _act_backward("gelu_tanh" if approximate == "tanh" else "gelu", grad, x))


def _softmax(kernel, x, dim):
    import cupy

    x = cupy.ascontiguousarray(x)
    y = _array.empty(x.shape, x.dtype, like=x)
    if not x.size:
        return y
    n = x.shape[dim]
    inner = int(np.prod(x.shape[dim + 1:], dtype=np.int64))
    outer = x.size // (n * inner)
    sfx = _SUFFIX[x.dtype]
    if inner == 1:   # one warp per contiguous row
        rows = outer
        launch("elementwise", f"elementwise_{kernel}_rows_{sfx}", (max(1, min((rows + 7) // 8, 65535 * 32)),),
               (256,), (x, y, np.int64(rows), np.int64(n)))
    else:            # one thread per column
        launch("elementwise", f"elementwise_{kernel}_cols_{sfx}", (blocks_for(outer * inner, per_thread=1),),
               (256,), (x, y, np.int64(outer), np.int64(n), np.int64(inner)))
    return y


def _softmax_backward(kernel, grad, x, dim):
    import cupy

    x, grad = cupy.ascontiguousarray(x), cupy.ascontiguousarray(grad)
    dx = _array.empty(x.shape, x.dtype, like=x)
    if x.size:
        n = x.shape[dim]
        inner = int(np.prod(x.shape[dim + 1:], dtype=np.int64))
        outer = x.size // (n * inner)
        launch("elementwise", f"elementwise_{kernel}_backward_{_SUFFIX[x.dtype]}",
               (blocks_for(outer * inner, per_thread=1),), (256,),
               (grad, x, dx, np.int64(outer), np.int64(n), np.int64(inner)))
    return (dx,)


register("softmax", "cuda")(lambda x, dim: _softmax("softmax", x, dim))
register("softmax_backward", "cuda")(lambda grad, x, dim, saved=None: _softmax_backward("softmax", grad, x, dim))
register("log_softmax", "cuda")(lambda x, dim: _softmax("log_softmax", x, dim))
register("log_softmax_backward", "cuda")(
    lambda grad, x, dim, saved=None: _softmax_backward("log_softmax", grad, x, dim))
