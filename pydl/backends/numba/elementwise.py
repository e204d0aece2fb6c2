"""Numba kernels and adapters for the elementwise family: activations
(forward and backward), softmax and log_softmax. float32 and float64.

Activations: x, y flat (N,) C-contiguous, one ``prange`` over the elements
(Numba gives each thread one contiguous block). exp/erfc/tanh/expm1 are libm
calls in the input's precision; constants are made with ``x.dtype.type`` so
float32 kernels stay float32 (a bare ``1`` or ``0.5`` would promote to
float64). Napkin math: relu is bandwidth-bound; float32 over N elements moves
8N bytes, at ~29 GB/s copy bandwidth N = 4M takes ~1.2 ms (less while 32 MB
fit in L3). The libm ops are compute-bound instead: LLVM vectorizes the
arithmetic around them but calls scalar expf once per lane (~3 ns), so
sigmoid over 4M float32 takes ~6 ms on 2 cores, ~5x the memory floor.
NumPy's own SIMD exp is ~6x faster per element than libm, which is why the
exp-bound softmax here only matches NumPy.

Softmax: x viewed as (outer, n, inner), normalized along n. inner == 1 (the
hot case): one contiguous row per task, a max pass, an exp+sum pass writing
exp(x - max) into the output, a scale pass. inner > 1: tasks are tiles of
(n, _TILE) columns with per-column reductions, so inner loops run along
contiguous memory. Sums accumulate in float64. Reads x once and writes y
once (later passes hit cache): 8N bytes for float32, but bound by N expf.

``fastmath`` leaves out 'nnan' and 'ninf': with them LLVM may assume no NaN,
and NaN must propagate as in the reference (``relu(nan) == nan``): each
comparison is written so that a NaN falls into the branch that keeps it.
It leaves out 'reassoc' too: LLVM then rewrites log_softmax's
``(x - max) - log(sum)`` as ``x - (max + log(sum))``, which loses log(sum)
in float32 when max is large (an error of ~1e-5 at max ~ 100, caught by the
tests). The only reductions it could speed up (softmax sums) wait on exp.
"""
import math

import numpy as np
from numba import njit, prange

from ... import _array
from .._shared import ACTIVATIONS, SOFTMAXES, activation_kernel, reduction_view, register_each

_JIT = dict(parallel=True, cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"})
_TILE = 128  # softmax columns per task when inner > 1
_SQRT1_2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_2_OVER_PI = 0.79788456080286535588
_GELU_C = 0.044715


# -- activations: y = f(x), dx = g * f'(x); p: negative_slope (leaky_relu), alpha (elu) ---------
@njit(**_JIT)
def _relu(x, y, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        y[i] = zero if v < zero else v


@njit(**_JIT)
def _relu_backward(g, x, dx, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        dx[i] = g[i] if x[i] > zero else zero


@njit(**_JIT)
def _leaky_relu(x, y, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > zero else v * p


@njit(**_JIT)
def _leaky_relu_backward(g, x, dx, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        dx[i] = g[i] if x[i] > zero else g[i] * p


@njit(**_JIT)
def _elu(x, y, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > zero else p * math.expm1(v)


@njit(**_JIT)
def _elu_backward(g, x, dx, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        dx[i] = g[i] if v > zero else g[i] * p * math.exp(v)


@njit(**_JIT)
def _gelu(x, y, p):
    # 0.5 x (1 + erf(x/sqrt2)) as 0.5 x erfc(-x/sqrt2): no cancellation for x << 0
    half, c = x.dtype.type(0.5), x.dtype.type(_SQRT1_2)
    for i in prange(x.size):
        v = x[i]
        y[i] = half * v * math.erfc(-v * c)


@njit(**_JIT)
def _gelu_backward(g, x, dx, p):
    # Phi(x) + x phi(x)
    T = x.dtype.type
    half, c, k = T(0.5), T(_SQRT1_2), T(_INV_SQRT_2PI)
    for i in prange(x.size):
        v = x[i]
        dx[i] = g[i] * (half * math.erfc(-v * c) + v * k * math.exp(-half * v * v))


@njit(**_JIT)
def _gelu_tanh(x, y, p):
    # 0.5 x (1 + tanh(u)) = x sigmoid(2u), from exp(-2|u|) only (never overflows)
    T = x.dtype.type
    zero, one, two, a, b = T(0), T(1), T(2), T(_SQRT_2_OVER_PI), T(_GELU_C)
    for i in prange(x.size):
        v = x[i]
        u = a * (v + b * v * v * v)
        e = math.exp(-two * abs(u))
        d = one / (one + e)
        y[i] = v * (d if u >= zero else e * d)


@njit(**_JIT)
def _gelu_tanh_backward(g, x, dx, p):
    # with s = sigmoid(2u): 0.5 (1 + tanh u) = s, and 1 - tanh(u)^2 = 4 s (1 - s) = 4 e d^2
    # (e = exp(-2|u|), d = 1/(1 + e)): exact where 1 - t*t would cancel
    T = x.dtype.type
    zero, one, two, a, b, b3 = T(0), T(1), T(2), T(_SQRT_2_OVER_PI), T(_GELU_C), T(3 * _GELU_C)
    for i in prange(x.size):
        v = x[i]
        u = a * (v + b * v * v * v)
        e = math.exp(-two * abs(u))
        d = one / (one + e)
        dx[i] = g[i] * ((d if u >= zero else e * d) + two * v * e * d * d * a * (one + b3 * v * v))


@njit(**_JIT)
def _sigmoid(x, y, p):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in prange(x.size):
        v = x[i]
        e = math.exp(-abs(v))
        y[i] = one / (one + e) if v >= zero else e / (one + e)


@njit(**_JIT)
def _sigmoid_backward(g, x, dx, p):
    # s (1 - s) = e / (1 + e)^2 with e = exp(-|x|), either sign
    one = x.dtype.type(1)
    for i in prange(x.size):
        e = math.exp(-abs(x[i]))
        d = one / (one + e)
        dx[i] = g[i] * e * d * d


@njit(**_JIT)
def _tanh(x, y, p):
    for i in prange(x.size):
        y[i] = math.tanh(x[i])


@njit(**_JIT)
def _tanh_backward(g, x, dx, p):
    # 1 - tanh(x)^2 = 4 e / (1 + e)^2 with e = exp(-2|x|)
    one, two, four = x.dtype.type(1), x.dtype.type(2), x.dtype.type(4)
    for i in prange(x.size):
        e = math.exp(-two * abs(x[i]))
        d = one / (one + e)
        dx[i] = g[i] * four * e * d * d


# -- softmax / log_softmax -------------------------------------------------------------------
# The max skips a NaN (np.max would return it), but a NaN still makes exp(x - max), the
# sum, and so the whole row NaN, as in the reference; +inf gives inf - inf = NaN as well.
# A plain `v > m` compare keeps the max loop branch-free.
@njit(**_JIT)
def _softmax_rows(x, y, log):
    """x, y (rows, n); softmax or log_softmax of each row."""
    rows, n = x.shape
    for r in prange(rows):
        xr, yr = x[r], y[r]
        m = xr[0]
        for j in range(1, n):
            m = xr[j] if xr[j] > m else m
        s = 0.0
        if log:
            for j in range(n):
                s += math.exp(xr[j] - m)
            c = x.dtype.type(math.log(s))
            for j in range(n):
                yr[j] = (xr[j] - m) - c
        else:
            for j in range(n):
                e = math.exp(xr[j] - m)
                yr[j] = e
                s += e
            c = x.dtype.type(1.0 / s)
            for j in range(n):
                yr[j] *= c


@njit(**_JIT)
def _softmax_tiles(x, y, log):
    """x, y (outer, n, inner), normalized along axis 1; a task is (n, <= _TILE) columns."""
    outer, n, inner = x.shape
    tiles = (inner + _TILE - 1) // _TILE
    for t in prange(outer * tiles):
        o, k0 = t // tiles, (t % tiles) * _TILE
        k1 = min(k0 + _TILE, inner)
        xt, yt = x[o, :, k0:k1], y[o, :, k0:k1]  # (n, w) views, rows contiguous
        m = xt[0].copy()
        for j in range(1, n):
            xr = xt[j]
            for k in range(k1 - k0):
                m[k] = xr[k] if xr[k] > m[k] else m[k]
        s = np.zeros(k1 - k0)
        for j in range(n):
            xr, yr = xt[j], yt[j]
            for k in range(k1 - k0):
                e = math.exp(xr[k] - m[k])
                s[k] += e
                yr[k] = e
        if log:
            c = np.log(s).astype(x.dtype)
            for j in range(n):
                xr, yr = xt[j], yt[j]
                for k in range(k1 - k0):
                    yr[k] = (xr[k] - m[k]) - c[k]
        else:
            c = (1.0 / s).astype(x.dtype)
            for j in range(n):
                yr = yt[j]
                for k in range(k1 - k0):
                    yr[k] *= c[k]


@njit(**_JIT)
def _softmax_rows_backward(g, x, dx, log):
    """softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g).
    exp(x - max) is kept in dx between passes."""
    rows, n = x.shape
    for r in prange(rows):
        gr, xr, dr = g[r], x[r], dx[r]
        m = xr[0]
        for j in range(1, n):
            m = xr[j] if xr[j] > m else m
        s = 0.0
        t = 0.0
        for j in range(n):
            e = math.exp(xr[j] - m)
            dr[j] = e
            s += e
            t += gr[j] if log else gr[j] * e
        inv = x.dtype.type(1.0 / s)
        c = x.dtype.type(t / s)  # log: sum(g) / sum(e); softmax: sum(g y)
        if log:
            for j in range(n):
                dr[j] = gr[j] - dr[j] * c
        else:
            for j in range(n):
                dr[j] = dr[j] * inv * (gr[j] - c)


@njit(**_JIT)
def _softmax_tiles_backward(g, x, dx, log):
    outer, n, inner = x.shape
    tiles = (inner + _TILE - 1) // _TILE
    for q in prange(outer * tiles):
        o, k0 = q // tiles, (q % tiles) * _TILE
        k1 = min(k0 + _TILE, inner)
        gt, xt, dt = g[o, :, k0:k1], x[o, :, k0:k1], dx[o, :, k0:k1]
        m = xt[0].copy()
        for j in range(1, n):
            xr = xt[j]
            for k in range(k1 - k0):
                m[k] = xr[k] if xr[k] > m[k] else m[k]
        s = np.zeros(k1 - k0)
        t = np.zeros(k1 - k0)
        for j in range(n):
            gr, xr, dr = gt[j], xt[j], dt[j]
            for k in range(k1 - k0):
                e = math.exp(xr[k] - m[k])
                dr[k] = e
                s[k] += e
                t[k] += gr[k] if log else gr[k] * e
        inv = (1.0 / s).astype(x.dtype)
        c = (t / s).astype(x.dtype)
        for j in range(n):
            gr, dr = gt[j], dt[j]
            if log:
                for k in range(k1 - k0):
                    dr[k] = gr[k] - dr[k] * c[k]
            else:
                for k in range(k1 - k0):
                    dr[k] = dr[k] * inv[k] * (gr[k] - c[k])


# -- adapters ----------------------------------------------------------------------------------
def _c(a, shape=(-1,)):
    """``a`` as a C-contiguous array of ``shape`` (a view when it already is contiguous)."""
    return np.ascontiguousarray(a).reshape(shape)


_KERNELS = {name: (globals()[f"_{name}"], globals()[f"_{name}_backward"])
            for name in ("relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh")}


def _act(op, x, **params):
    kernel, param = activation_kernel(op, params)
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        _KERNELS[kernel][0](_c(x), _c(y), x.dtype.type(param))
    return y


def _act_backward(op, grad, x, **params):
    kernel, param = activation_kernel(op, params)
    dx = _array.empty(x.shape, x.dtype)
    if x.size:
        _KERNELS[kernel][1](_c(grad), _c(x), _c(dx), x.dtype.type(param))
    return (dx,)


def _softmax(op, x, dim):
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        outer, n, inner = view = reduction_view(x.shape, dim)
        if inner == 1:
            _softmax_rows(_c(x, (outer, n)), _c(y, (outer, n)), op == "log_softmax")
        else:
            _softmax_tiles(_c(x, view), _c(y, view), op == "log_softmax")
    return y


def _softmax_backward(op, grad, x, dim):
    dx = _array.empty(x.shape, x.dtype)
    if x.size:
        outer, n, inner = view = reduction_view(x.shape, dim)
        log = op == "log_softmax"
        if inner == 1:
            _softmax_rows_backward(_c(grad, (outer, n)), _c(x, (outer, n)), _c(dx, (outer, n)), log)
        else:
            _softmax_tiles_backward(_c(grad, view), _c(x, view), _c(dx, view), log)
    return (dx,)


register_each("numba", ACTIVATIONS, _act, _act_backward)
register_each("numba", SOFTMAXES, _softmax, _softmax_backward)
