"""Cython adapters for the gemm family: matmul and linear, forward and backward
(kernels/cython/gemm.pyx: a blocked, packed GEMM with the bias and activation fused
into its store). Transposes and non-contiguous inputs are passed as strides (the
kernel's packing reads them); a 2-D operand shared by a batch gets batch stride 0.
"""
import math

import numpy as np

from ... import _array, _cython
from ...registry import register

_MODES = _cython.GEMM_MODES
_BWD = _cython.GEMM_BWD


def _as3(x, nb):
    """x as (nb, r, c): a 2-D operand broadcast (stride 0, no copy)."""
    return np.broadcast_to(x, (nb,) + x.shape) if x.ndim == 2 else x


def gemm_into(a, b, out, ta=False, tb=False, bias=None, activation=None, grad=None):
    """out = act(op(a) @ op(b) + bias) on plain NumPy arrays (float32 or float64, one dtype).

    op(x) is x, or x with its last two axes swapped when ta/tb (a view: no copy). a:
    (M, K) or (B, M, K); b: (K, N) or (B, K, N) (before op); out (M, N) or (B, M, N),
    C-contiguous, written in full; a 2-D operand is shared by every batch entry. bias:
    (N,) or None. activation: None, "relu", "gelu", "tanh", "sigmoid". With ``grad``
    (shaped like out), out = grad * act'(op(a) @ op(b) + bias) instead. Returns out.
    """
    if ta:
        a = np.swapaxes(a, -1, -2)
    if tb:
        b = np.swapaxes(b, -1, -2)
    o3 = out if out.ndim == 3 else out[None]
    nb, m, n = o3.shape
    if o3.size == 0:
        return out
    k = a.shape[-1]
    if k == 0:  # the product is 0: one depth of zeros gives the epilogue its input
        a = np.zeros((m, 1), out.dtype)
        b = np.zeros((1, n), out.dtype)
    mode = _MODES[activation] + (_BWD if grad is not None else 0)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros(1, out.dtype)
    if grad is not None and grad.strides[-1] != grad.itemsize and grad.shape[-1] > 1:
        # the kernel reads grad by rows (G[i * ldg + j]): its columns must be adjacent (a
        # strided upstream gradient was once read as if they were: wrong values, reads past it)
        grad = np.ascontiguousarray(grad)
    g3 = o3 if grad is None else _as3(grad if grad.ndim == 3 else grad[None], nb)
    _cython.gemm(_as3(a, nb), _as3(b, nb), o3, bias, has_bias, mode, g3)
    return out


def _rows(x):
    """x as 2-D rows (..., n) -> (prod(...), n); the row count given for n = 0, where
    reshape(-1, 0) of an empty array is ambiguous (NumPy refuses it)."""
    n = x.shape[-1]
    return x.reshape(-1, n) if n else x.reshape(math.prod(x.shape[:-1]), 0)


@register("matmul", "cython")
def matmul(a, b):
    batch = (a.shape[0] if a.ndim == 3 else b.shape[0],) if max(a.ndim, b.ndim) == 3 else ()
    out = _array.empty(batch + (a.shape[-2], b.shape[-1]), a.dtype)
    return gemm_into(a, b, out)


@register("matmul_backward", "cython")
def matmul_backward(grad, a, b, saved=None):
    # da = grad @ b^T, db = a^T @ grad. A 2-D b under a 3-D a: db is one product over the
    # flattened batch rows; a 2-D a under a 3-D b: per batch entry, then summed.
    if a.ndim == 3 and b.ndim == 2:
        da = gemm_into(grad, b, _array.empty(a.shape, a.dtype), tb=True)
        a2, g2 = _rows(a), _rows(grad)
        return da, gemm_into(a2, g2, _array.empty(b.shape, b.dtype), ta=True)
    if a.ndim == 2 and b.ndim == 3:
        da = gemm_into(grad, b, np.empty((b.shape[0],) + a.shape, a.dtype), tb=True).sum(axis=0)
        return da, gemm_into(a, grad, _array.empty(b.shape, b.dtype), ta=True)
    da = gemm_into(grad, b, _array.empty(a.shape, a.dtype), tb=True)
    db = gemm_into(a, grad, _array.empty(b.shape, b.dtype), ta=True)
    return da, db


@register("linear", "cython")
def linear(x, weight, bias, activation):
    out = _array.empty(x.shape[:-1] + (weight.shape[0],), x.dtype)
    gemm_into(_rows(x), weight, _rows(out), tb=True,
              bias=bias, activation=activation)
    # nothing saved: the backward recomputes grad * act'(z) inside its first GEMM's store
    return out, {"preact": None}


@register("linear_backward", "cython")
def linear_backward(grad, x, weight, bias, activation, saved=None):
    n_out, n_in = weight.shape
    x2, g2 = _rows(x), _rows(grad)
    if activation is None:
        dz = g2
    else:  # dz = grad * act'(x W^T + b), applied in the GEMM's store: z is never stored
        dz = gemm_into(x2, weight, np.empty(g2.shape, x.dtype), tb=True, bias=bias,
                       activation=activation, grad=g2)
    dx = _array.empty(x.shape, x.dtype)
    gemm_into(dz, weight, _rows(dx))
    dw = gemm_into(dz, x2, _array.empty(weight.shape, x.dtype), ta=True)
    db = None if bias is None else dz.sum(axis=0, dtype=np.float64).astype(x.dtype)
    return dx, dw, db
