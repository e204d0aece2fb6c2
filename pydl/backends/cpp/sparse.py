"""cpp adapters for the sparse family: embedding forward and backward (kernels/cpp/sparse.cpp).

Indices of any integer dtype become one int64 vector (a copy unless they already are); the
kernels check them again and throw ValueError for one outside the table.
"""
import numpy as np

from ... import _array, _cpp
from ...registry import register
from .._shared import SUFFIX, contiguous

_I64 = np.dtype(np.int64)


def _indices(input):
    return np.ascontiguousarray(input, dtype=_I64).reshape(-1)


@register("embedding", "cpp")
def embedding(input, weight, padding_idx):
    out = _array.empty(tuple(input.shape) + (weight.shape[1],), weight.dtype)
    getattr(_cpp, f"embedding_{SUFFIX[weight.dtype]}")(_indices(input), contiguous(weight), out)
    return out


@register("embedding_backward", "cpp")
def embedding_backward(grad, input, weight, padding_idx, saved=None):
    dw = _array.empty(weight.shape, weight.dtype)
    getattr(_cpp, f"embedding_backward_{SUFFIX[weight.dtype]}")(
        _indices(input), contiguous(grad), -1 if padding_idx is None else int(padding_idx), dw)
    return (dw,)
