"""C++ adapters for the elementwise family (kernels/cpp/elementwise.cpp).

Each kernel takes C-contiguous arrays of one dtype and writes into ``out``:
``elementwise_<op>_<f32|f64>(x, out, *params)`` and
``elementwise_<op>_backward_<f32|f64>(grad, x, out, *params)``, with the forward's
output y in place of x for sigmoid, tanh, softmax and log_softmax (register_each
passes the saved one, or runs the forward again).
"""
from ... import _array, _cpp
from ...registry import register
from .._shared import ACTIVATIONS, SOFTMAXES, SUFFIX as _SUFFIX, contiguous as _contiguous, register_each

def _forward(op, x, **params):
    x = _contiguous(x)
    out = _array.empty(x.shape, x.dtype)
    getattr(_cpp, f"elementwise_{op}_{_SUFFIX[x.dtype]}")(x, out, *params.values())
    return out


def _backward(op, grad, x, **params):
    x, grad = _contiguous(x), _contiguous(grad)
    dx = _array.empty(x.shape, x.dtype)
    getattr(_cpp, f"elementwise_{op}_backward_{_SUFFIX[x.dtype]}")(grad, x, dx, *params.values())
    return (dx,)


register_each("cpp", ACTIVATIONS + SOFTMAXES, _forward, _backward)


def _dropout(x, p, seed, mask):
    """x * keep / (1 - p): keep drawn from ``seed`` inside the kernel (dropout_mask's counter
    hash), or the given mask; neither: the identity."""
    x = _contiguous(x)
    out = _array.empty(x.shape, x.dtype)
    if mask is not None:
        getattr(_cpp, f"elementwise_dropout_masked_{_SUFFIX[x.dtype]}")(x, _contiguous(mask), out, float(p))
    elif seed is not None:
        getattr(_cpp, f"elementwise_dropout_seeded_{_SUFFIX[x.dtype]}")(x, out, int(seed), float(p))
    else:
        out[...] = x
    return out


@register("dropout", "cpp")
def dropout(x, p, training, seed, mask):
    return _dropout(x, p, seed, mask), {"mask": mask}


@register("dropout_backward", "cpp")
def dropout_backward(grad, x, p, training, seed, mask, saved=None):
    if saved is not None and saved["mask"] is not None:
        mask = saved["mask"]
    return (_dropout(grad, p, seed, mask),)
