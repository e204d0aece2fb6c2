"""cpp adapters for the gemm family: matmul and linear (packed GEMM of kernels/common/gemm.hpp).

Kernels (kernels/cpp/gemm.cpp) read their inputs through strides, so a.T, a
slice or a Fortran array is never copied; outputs are new C-contiguous arrays.
``linear_backward`` takes autograd's ``needs``: without dx (a network's first layer)
it computes dW alone. ``linear`` flattens the leading dimensions of x (a reshape, a copy only when
x's layout cannot be viewed as rows). Saved for the backward: ``preact``,
the pre-activation for gelu, the output itself for relu, tanh and sigmoid (relu'
depends only on the sign, which the output keeps; the elementwise kernels take
tanh's and sigmoid's derivatives from their output), None without activation.

Development variants (``backend="cpp:<name>"``), for ``pydl check`` and the
benchmarks: ``naive`` (the simple scalar driver the packed kernel replaced),
``packed-scalar`` / ``packed-avx2`` / ``packed-avx512`` (the packed path
forced to one SIMD level, clamped to the machine's), ``packed`` (never the
direct small-M path), ``direct`` (no packing, used when M <= 8), ``unpacked`` (A packed,
a row-major B read in place; the path for few rows of A).
"""
from __future__ import annotations

import math

from ... import _array, _cpp
from ...registry import register
from .._shared import SUFFIX, contiguous as _contiguous

_ACT_KERNEL = {"gelu": "gelu", "tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu"}


_MATMUL = {"f": _cpp.gemm_matmul_f32, "d": _cpp.gemm_matmul_f64}
_MATMUL_NEW = {"f": _cpp.gemm_matmul_new_f32, "d": _cpp.gemm_matmul_new_f64}
_POISON = _array._POISON


def _empty_rows(x):
    """x (..., 0) as 2-D rows: reshape(-1, 0) of an empty array is ambiguous (NumPy refuses
    it), so the row count is given (only then: reshape(-1, n) is the cheaper call)."""
    return x.reshape(math.prod(x.shape[:-1]), 0)


def _matmul(a, b, simd="", algo=""):
    # The per-call Python here is part of a small product's time: the usual call is one dict
    # hit and a kernel that allocates its own output (under poisoned(), outputs come NaN-filled
    # from _array.empty so the tests see any element a kernel forgets to write).
    # (empty operands included: the kernel writes the zeros of a K = 0 product and takes an
    # empty batch)
    if not (simd or algo or _POISON.get()):
        return _MATMUL_NEW[a.dtype.char](a, b)
    if a.ndim == 2 and b.ndim == 2:
        shape = (a.shape[0], b.shape[1])
    else:
        shape = (a.shape[0] if a.ndim == 3 else b.shape[0], a.shape[-2], b.shape[-1])
    out = _array.empty(shape, a.dtype)
    if simd or algo:
        _MATMUL[a.dtype.char](a, b, out, simd, algo)
    else:
        _MATMUL[a.dtype.char](a, b, out)
    return out


def _matmul_backward(grad, a, b, simd="", algo=""):
    da = _array.empty(a.shape, a.dtype)
    db = _array.empty(b.shape, b.dtype)
    getattr(_cpp, f"gemm_matmul_backward_{SUFFIX[a.dtype]}")(grad, a, b, da, db, simd, algo)
    return da, db


def _linear(x, weight, bias, activation, simd="", algo=""):
    sfx = SUFFIX[x.dtype]
    n_out, n_in = weight.shape
    x2 = x.reshape(-1, n_in) if n_in else _empty_rows(x)
    bias = None if bias is None else _contiguous(bias)  # (out,): a copy costs nothing
    out = _array.empty((x2.shape[0], n_out), x.dtype)
    keep = activation == "gelu"
    preact = _array.empty(out.shape, x.dtype) if keep else None
    getattr(_cpp, f"gemm_linear_{sfx}")(x2, weight, bias, activation or "none", out, preact, simd, algo)
    shape = tuple(x.shape[:-1]) + (n_out,)
    saved = preact if keep else (None if activation is None else out)
    return out.reshape(shape), {"preact": None if saved is None else saved.reshape(shape)}


def _linear_backward(grad, x, weight, bias, activation, saved=None, simd="", algo="", needs=None):
    sfx = SUFFIX[x.dtype]
    n_out, n_in = weight.shape
    if saved is None:  # recompute what the forward saves
        _, saved = _linear(x, weight, bias, activation, simd, algo)
    g2 = grad.reshape(-1, n_out) if n_out else _empty_rows(grad)
    if activation is None:
        dz = g2
    else:
        z = _contiguous(saved["preact"].reshape(-1, n_out) if n_out else _empty_rows(saved["preact"]))
        dz = _array.empty(z.shape, z.dtype)
        kernel = _ACT_KERNEL[activation]
        extra = ("none",) if kernel == "gelu" else ()
        getattr(_cpp, f"elementwise_{kernel}_backward_{sfx}")(_contiguous(g2), z, dz, *extra)
    x2 = x.reshape(-1, n_in) if n_in else _empty_rows(x)
    want_dx, want_dw, want_db = (True, True, True) if needs is None else needs
    if want_dx and want_dw:
        dx = _array.empty(x2.shape, x.dtype)
        dw = _array.empty(weight.shape, x.dtype)
        getattr(_cpp, f"gemm_linear_backward_{sfx}")(dz, x2, weight, dx, dw, simd, algo)
    else:  # a network's first layer (x needs no gradient): dz @ W, a read of all of W, is skipped
        dx = dw = None
        mm = _MATMUL[x.dtype.char]
        if want_dx:
            dx = _array.empty(x2.shape, x.dtype)
            mm(dz, weight, dx, simd, algo)
        if want_dw:
            dw = _array.empty(weight.shape, x.dtype)
            mm(dz.T, x2, dw, simd, algo)
    db = None if bias is None or not want_db else dz.sum(axis=0, dtype=dz.dtype)
    return None if dx is None else dx.reshape(x.shape), dw, db


register("matmul", "cpp")(_matmul)
register("matmul_backward", "cpp")(lambda grad, a, b, saved=None: _matmul_backward(grad, a, b))
register("linear", "cpp")(_linear)
register("linear_backward", "cpp")(_linear_backward)

_VARIANTS = {"naive": ("", "naive"), "packed": ("", "packed"), "direct": ("", "direct"),
             "unpacked": ("", "unpacked"),
             "packed-scalar": ("scalar", "packed"), "packed-avx2": ("avx2", "packed"),
             "packed-avx512": ("avx512", "packed")}

for _name, (_simd, _algo) in _VARIANTS.items():
    register("matmul", "cpp", variant=_name)(
        lambda a, b, _s=_simd, _a=_algo: _matmul(a, b, _s, _a))
    register("matmul_backward", "cpp", variant=_name)(
        lambda grad, a, b, saved=None, _s=_simd, _a=_algo: _matmul_backward(grad, a, b, _s, _a))
    register("linear", "cpp", variant=_name)(
        lambda x, weight, bias, activation, _s=_simd, _a=_algo: _linear(x, weight, bias, activation, _s, _a))
    register("linear_backward", "cpp", variant=_name)(
        lambda grad, x, weight, bias, activation, saved=None, _s=_simd, _a=_algo:
        _linear_backward(grad, x, weight, bias, activation, saved, _s, _a))
