"""Numba kernels and adapters for the elementwise family: activations
(forward and backward), softmax and log_softmax. float32 and float64.

Activations: x, y flat (N,) C-contiguous, one ``prange`` over the elements
(Numba gives each thread one contiguous block). Constants are made with
``x.dtype.type`` so float32 kernels stay float32 (a bare ``1`` or ``0.5``
would promote to float64). float32 exp/expm1/tanh/erfc are the call-free
inline forms below (_exp_f32...), so LLVM vectorizes whole loops (zmm
vfmadd, no call); float64 calls libm. Napkin math: relu is bandwidth-bound;
float32 over N elements moves 8N bytes, at ~29 GB/s copy bandwidth N = 4M
takes ~1.2 ms (less while 32 MB fit in L3). A libm expf per element (~3 ns,
scalar) made sigmoid ~5x that floor; the inline exp is ~25 flops in 16 lanes,
so sigmoid over 2M float32 now runs in ~0.3 ms on 2 cores (was 2.7 ms), near
the bandwidth of L3-resident data; exact gelu (erfc: two polynomials, a
divide and an exp) ~0.8 ms (was 12.6 ms).

Softmax: x viewed as (outer, n, inner), normalized along n. inner == 1 (the
hot case): one contiguous row per task, a max pass (8 independent chains:
LLVM does not vectorize a float max without 'nnan'), an exp pass writing
exp(x - max) into the output, a float64 sum of it, a scale pass (log_softmax
rewrites the output from x). LLVM does not vectorize loops inside a prange
body here, so the row loops are small njit functions of their own
(_exp_shifted, _sum64, _row_max), which it does vectorize. inner > 1: tasks
are tiles of (n, _TILE) columns with per-column reductions, so inner loops
run along contiguous memory. Reads x once and writes y once (later passes hit
cache): 8N bytes for float32; (4096, 512) float32 ~0.6 ms (was 4.0 ms).

``fastmath`` leaves out 'nnan' and 'ninf': with them LLVM may assume no NaN,
and NaN must propagate as in the reference (``relu(nan) == nan``): each
comparison is written so that a NaN falls into the branch that keeps it.
It leaves out 'reassoc' too: LLVM then rewrites log_softmax's
``(x - max) - log(sum)`` as ``x - (max + log(sum))``, which loses log(sum)
in float32 when max is large (an error of ~1e-5 at max ~ 100, caught by the
tests). Only the float64 sums (_sum64, _dot64) have it, in functions of
their own, where reordering a sum is all it can do.
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ... import _array
from . import sync_threads
from .._shared import ACTIVATIONS, SOFTMAXES, contiguous, activation_kernel, reduction_view, register_each

_JIT = dict(parallel=True, cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"})
_TILE = 128  # softmax columns per task when inner > 1
_SQRT1_2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_2_OVER_PI = 0.79788456080286535588
_GELU_C = 0.044715


# -- float32 exp / expm1 without libm ----------------------------------------------------------
# A libm call per element keeps LLVM from vectorizing; these inline into the loops, which then
# vectorize (vfmadd on ymm/zmm, no call). Cody-Waite: n = round(x log2e) via the 1.5*2^23
# shifter (t = x log2e + S leaves n in t's low mantissa bits, t - S is n as a float, no float
# -> int conversion, so NaN is no undefined case), r = x - n ln2 with ln2 split in a hi part
# whose products with n are exact and a lo part, |r| <= ln2/2, expm1(r) = r + r^2 q(r) with q
# of degree 4 (fitted here: relative error 1.3e-8 in exact arithmetic), then a scale by 2^n
# from integer bits. x is first clamped to [-104, 89] (a NaN passes both compares, and then
# poisons r): 2^n is applied as two normal factors 2^(n>>1) 2^(n - n>>1), so exp(89) rounds
# to inf, exp(-104) to 0 and results in between to (gradual-underflow) denormals, as libm.
# Accuracy vs float64: about 1.5e-7 relative (a few float32 ulp), tolerance 2e-5.
_F32 = np.float32
_I32 = np.int32
_LOG2E = _F32(1.4426950408889634)
_SHIFT = _F32(12582912.0)
_SHIFT_BITS = _I32(np.float32(12582912.0).view(np.int32))
_LN2_HI = _F32(0.693359375)  # 9 significant bits: n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = _F32(math.log(2.0) - 0.693359375)
_Q0, _Q1, _Q2, _Q3, _Q4 = (_F32(0.49999997), _F32(0.16666543), _F32(0.041667204),
                           _F32(0.008366526), _F32(0.0013882293))
_EXP_LO, _EXP_HI, _EXPM1_LO = _F32(-104.0), _F32(89.0), _F32(-87.0)


@njit(inline="always")
def _f32_pow2(n):
    """2^n as float32 for integer n in [-126, 127], from the exponent bits."""
    return _I32((n + 127) << 23).view(_F32)


@njit(inline="always")
def _reduce_f32(x, lo):
    """(integer n, r) with x + lo = n ln2 + r, |r| <= ln2/2 (x clamped; lo tiny next to x,
    or 0): x - n ln2_hi is exact, so lo (x's rounding error) is kept."""
    t = (x + lo) * _LOG2E + _SHIFT
    nf = t - _SHIFT
    r = x - nf * _LN2_HI
    r = (r + lo) - nf * _LN2_LO
    return _F32(t).view(_I32) - _SHIFT_BITS, r


@njit(inline="always")
def _expm1_reduced_f32(r):
    return r + r * r * (_Q0 + r * (_Q1 + r * (_Q2 + r * (_Q3 + r * _Q4))))


@njit(inline="always")
def _exp_f32(x):
    """exp(x) for float32 x: inf above ~88.72, 0 below ~-103.3, NaN stays NaN."""
    return _exp_hilo_f32(x, _F32(0))


@njit(inline="always")
def _exp_hilo_f32(x, lo):
    """exp(x + lo), lo a small correction to x (|lo| <= ~0.1) or 0."""
    x = _EXP_LO if x < _EXP_LO else x
    x = _EXP_HI if x > _EXP_HI else x
    n, r = _reduce_f32(x, lo)
    p = _expm1_reduced_f32(r) + _F32(1)
    n1 = n >> 1
    return p * _f32_pow2(n1) * _f32_pow2(n - n1)


@njit(inline="always")
def _expm1_neg_f32(x):
    """expm1(x) for float32 x <= 0 (or NaN): 2^n expm1(r) + (2^n - 1), no cancellation near 0;
    below -87 expm1 is -1 in float32, so 2^n stays a normal number."""
    x = _EXPM1_LO if x < _EXPM1_LO else x
    n, r = _reduce_f32(x, _F32(0))
    s = _f32_pow2(n)
    return s * _expm1_reduced_f32(r) + (s - _F32(1))


@njit(inline="always")
def _tanh_f32(x):
    """tanh(x) = sign(x) (-m / (2 + m)) with m = expm1(-2|x|): no cancellation near 0."""
    m = _expm1_neg_f32(_F32(-2) * abs(x))
    return math.copysign(-m / (_F32(2) + m), x)


# erfc(z) = 1 - z P(z^2) for |z| < 0.5 (P of degree 4, relative error 1.4e-9), else
# erfc(|z|) = exp(-z^2) R(u), u = 3.45 / (1 + |z|) - 1.3 in [-1, 1] on |z| in [0.5, 10.5]
# (R of degree 8, relative error 5e-8; both fitted for this file), and erfc(z) = 2 - erfc(-z)
# for z < 0. Both forms are computed and one is selected. z^2 = h^2 + d with h = z's top 12
# bits (h^2 exact) goes into exp as hi + lo: without it exp(-z^2) has z^2's rounding,
# ~7e-6 relative at z = 10. |z| is clamped at 10.5 (NaN passes), where exp gives exactly 0,
# as erfc(inf) must for gelu(-inf) = -inf * 0 = NaN. Float32 accuracy ~5e-7 relative
# (rounding of 1 / (1 + |z|), to which R is sensitive).
_ERF_P = (_F32(1.1283791), _F32(-0.37612608), _F32(0.11282828), _F32(-0.026757453),
          _F32(0.0047184727))
_ERFC_R = (_F32(0.2981022), _F32(0.29059377), _F32(0.03767585), _F32(-0.010496637),
           _F32(-0.0010480931), _F32(0.001079356), _F32(-0.00017803768), _F32(-7.726387e-05),
           _F32(3.9207138e-05))
_ERFC_K1, _ERFC_K0, _ERFC_HI, _ERF_SPLIT = _F32(3.45), _F32(-1.3), _F32(10.5), _F32(0.5)
_TOP12 = _I32(-4096)  # mask keeping sign, exponent and the top 12 significant bits


@njit(inline="always")
def _erfc_f32(z):
    one = _F32(1)
    P, R = _ERF_P, _ERFC_R
    s = z * z
    small = one - z * (P[0] + s * (P[1] + s * (P[2] + s * (P[3] + s * P[4]))))
    a = abs(z)
    a = _ERFC_HI if a > _ERFC_HI else a
    u = _ERFC_K1 / (one + a) + _ERFC_K0
    r = R[8]
    r = r * u + R[7]
    r = r * u + R[6]
    r = r * u + R[5]
    r = r * u + R[4]
    r = r * u + R[3]
    r = r * u + R[2]
    r = r * u + R[1]
    r = r * u + R[0]
    h = _I32(_F32(a).view(_I32) & _TOP12).view(_F32)
    big = _exp_hilo_f32(-(h * h), -((a - h) * (a + h))) * r
    big = _F32(2) - big if z < _F32(0) else big
    return small if a < _ERF_SPLIT else big


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"})
def _sum64(a):
    """float64 sum of a 1-D array; 'reassoc' (this function only) lets LLVM vectorize it."""
    s = 0.0
    for j in range(a.size):
        s += a[j]
    return s


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"})
def _dot64(a, b):
    """float64 sum of a * b (1-D arrays), vectorized like _sum64."""
    s = 0.0
    for j in range(a.size):
        s += a[j] * b[j]
    return s


# exp / expm1 / tanh / erfc in the argument's precision: the call-free forms above for float32,
# libm for float64 (picked at compile time, by type). _vexpm1_neg wants x <= 0 or NaN.
def _vexp(x):
    return math.exp(x)


def _vexpm1_neg(x):
    return math.expm1(x)


def _vtanh(x):
    return math.tanh(x)


def _verfc(x):
    return math.erfc(x)


def _by_precision(generic, f32, f64):
    @overload(generic, inline="always")
    def _impl(x):
        if x == types.float32:
            return lambda x: f32(x)
        return lambda x: f64(x)
    return _impl


_by_precision(_vexp, _exp_f32, math.exp)
_by_precision(_vexpm1_neg, _expm1_neg_f32, math.expm1)
_by_precision(_vtanh, _tanh_f32, math.tanh)
_by_precision(_verfc, _erfc_f32, math.erfc)


@njit(nogil=True, cache=True, fastmath=_JIT["fastmath"])
def _exp_shifted(x, m, y):
    """y = exp(x - m) on 1-D arrays. A function of its own: LLVM vectorizes this loop here,
    but not when it sits in a prange body."""
    for j in range(x.size):
        y[j] = _vexp(x[j] - m)


@njit(nogil=True, cache=True, fastmath=_JIT["fastmath"])
def _exp_sub(x, m, y):
    """y = exp(x - m), elementwise on 1-D arrays (vectorized, as _exp_shifted)."""
    for j in range(x.size):
        y[j] = _vexp(x[j] - m[j])


@njit(nogil=True, cache=True, fastmath=_JIT["fastmath"])
def _row_max(x):
    """max of a 1-D array (size >= 1) in 8 independent chains: LLVM does not vectorize a float
    max reduction without 'nnan', but the chains still overlap (~2.5x one chain). A NaN may be
    skipped, as in the note above _softmax_rows."""
    n = x.size
    m = x[0]
    nb = n - n % 8
    if nb:
        a0, a1, a2, a3, a4, a5, a6, a7 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        for b in range(8, nb, 8):
            v = x[b]
            a0 = v if v > a0 else a0
            v = x[b + 1]
            a1 = v if v > a1 else a1
            v = x[b + 2]
            a2 = v if v > a2 else a2
            v = x[b + 3]
            a3 = v if v > a3 else a3
            v = x[b + 4]
            a4 = v if v > a4 else a4
            v = x[b + 5]
            a5 = v if v > a5 else a5
            v = x[b + 6]
            a6 = v if v > a6 else a6
            v = x[b + 7]
            a7 = v if v > a7 else a7
        a0 = a1 if a1 > a0 else a0
        a2 = a3 if a3 > a2 else a2
        a4 = a5 if a5 > a4 else a4
        a6 = a7 if a7 > a6 else a6
        a0 = a2 if a2 > a0 else a0
        a4 = a6 if a6 > a4 else a4
        m = a4 if a4 > a0 else a0
    for j in range(nb, n):
        m = x[j] if x[j] > m else m
    return m


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
        w = zero if v > zero else v  # <= 0 or NaN: both sides are computed (a select)
        y[i] = v if v > zero else p * _vexpm1_neg(w)


@njit(**_JIT)
def _elu_backward(g, x, dx, p):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        dx[i] = g[i] if v > zero else g[i] * p * _vexp(v)


@njit(**_JIT)
def _gelu(x, y, p):
    # 0.5 x (1 + erf(x/sqrt2)) as 0.5 x erfc(-x/sqrt2): no cancellation for x << 0
    half, c = x.dtype.type(0.5), x.dtype.type(_SQRT1_2)
    for i in prange(x.size):
        v = x[i]
        y[i] = half * v * _verfc(-v * c)


@njit(**_JIT)
def _gelu_backward(g, x, dx, p):
    # Phi(x) + x phi(x)
    T = x.dtype.type
    half, c, k = T(0.5), T(_SQRT1_2), T(_INV_SQRT_2PI)
    for i in prange(x.size):
        v = x[i]
        dx[i] = g[i] * (half * _verfc(-v * c) + v * k * _vexp(-half * v * v))


@njit(**_JIT)
def _gelu_tanh(x, y, p):
    # 0.5 x (1 + tanh(u)) = x sigmoid(2u), from exp(-2|u|) only (never overflows)
    T = x.dtype.type
    zero, one, two, a, b = T(0), T(1), T(2), T(_SQRT_2_OVER_PI), T(_GELU_C)
    for i in prange(x.size):
        v = x[i]
        u = a * (v + b * v * v * v)
        e = _vexp(-two * abs(u))
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
        e = _vexp(-two * abs(u))
        d = one / (one + e)
        dx[i] = g[i] * ((d if u >= zero else e * d) + two * v * e * d * d * a * (one + b3 * v * v))


@njit(**_JIT)
def _sigmoid(x, y, p):
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for i in prange(x.size):
        v = x[i]
        e = _vexp(-abs(v))
        y[i] = one / (one + e) if v >= zero else e / (one + e)


@njit(**_JIT)
def _sigmoid_backward(g, y, dx, p):
    # from the forward's output y: y (1 - y)
    one = y.dtype.type(1)
    for i in prange(y.size):
        dx[i] = g[i] * y[i] * (one - y[i])


@njit(**_JIT)
def _tanh(x, y, p):
    for i in prange(x.size):
        y[i] = _vtanh(x[i])


@njit(**_JIT)
def _tanh_backward(g, y, dx, p):
    # from the forward's output y: 1 - y^2
    one = y.dtype.type(1)
    for i in prange(y.size):
        dx[i] = g[i] * (one - y[i] * y[i])


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
        m = _row_max(xr)
        _exp_shifted(xr, m, yr)  # exp into y, then the sum: both loops vectorize
        s = _sum64(yr)
        if log:
            c = x.dtype.type(math.log(s))
            for j in range(n):
                yr[j] = (xr[j] - m) - c
        else:
            c = x.dtype.type(1.0 / s)
            for j in range(n):
                yr[j] *= c


@njit(cache=True, nogil=True)
def _tile_max(x, o, k0, k1):
    """Column maxima of x[o, :, k0:k1] (a NaN that is not first in its column
    is skipped; the sums after it still turn the column NaN, as the reference)."""
    m = x[o, 0, k0:k1].copy()
    for j in range(1, x.shape[1]):
        xr = x[o, j, k0:k1]
        for k in range(k1 - k0):
            m[k] = xr[k] if xr[k] > m[k] else m[k]
    return m


@njit(**_JIT)
def _softmax_tiles(x, y, log):
    """x, y (outer, n, inner), normalized along axis 1; a task is (n, <= _TILE) columns.
    Rows are taken as x[o, j, k0:k1], which Numba types contiguous (x[o, :, k0:k1][j] is not,
    and loops over it do not vectorize)."""
    outer, n, inner = x.shape
    tiles = (inner + _TILE - 1) // _TILE
    for t in prange(outer * tiles):
        o, k0 = t // tiles, (t % tiles) * _TILE
        k1 = min(k0 + _TILE, inner)
        m = _tile_max(x, o, k0, k1)
        s = np.zeros(k1 - k0)
        for j in range(n):
            # exp into y (log_softmax too), then the sums
            yr = y[o, j, k0:k1]
            _exp_sub(x[o, j, k0:k1], m, yr)
            for k in range(k1 - k0):
                s[k] += yr[k]
        if log:
            c = np.log(s).astype(x.dtype)
            for j in range(n):
                xr, yr = x[o, j, k0:k1], y[o, j, k0:k1]
                for k in range(k1 - k0):
                    yr[k] = (xr[k] - m[k]) - c[k]
        else:
            c = (1.0 / s).astype(x.dtype)
            for j in range(n):
                yr = y[o, j, k0:k1]
                for k in range(k1 - k0):
                    yr[k] *= c[k]


@njit(**_JIT)
def _softmax_rows_backward(g, y, dx, log):
    """From the forward's output y: softmax dx = y (g - sum(g y)); log_softmax
    dx = g - exp(y) sum(g)."""
    rows, n = y.shape
    for r in prange(rows):
        gr, yr, dr = g[r], y[r], dx[r]
        c = y.dtype.type(_sum64(gr) if log else _dot64(gr, yr))
        if log:
            for j in range(n):
                dr[j] = gr[j] - _vexp(yr[j]) * c
        else:
            for j in range(n):
                dr[j] = yr[j] * (gr[j] - c)


@njit(**_JIT)
def _softmax_tiles_backward(g, y, dx, log):
    outer, n, inner = y.shape
    tiles = (inner + _TILE - 1) // _TILE
    for q in prange(outer * tiles):
        o, k0 = q // tiles, (q % tiles) * _TILE
        k1 = min(k0 + _TILE, inner)
        t = np.zeros(k1 - k0)
        for j in range(n):
            gr, yr = g[o, j, k0:k1], y[o, j, k0:k1]
            for k in range(k1 - k0):
                t[k] += gr[k] if log else gr[k] * yr[k]
        c = t.astype(y.dtype)
        for j in range(n):
            gr, yr, dr = g[o, j, k0:k1], y[o, j, k0:k1], dx[o, j, k0:k1]
            if log:
                for k in range(k1 - k0):
                    dr[k] = gr[k] - _vexp(yr[k]) * c[k]
            else:
                for k in range(k1 - k0):
                    dr[k] = yr[k] * (gr[k] - c[k])


# -- adapters ----------------------------------------------------------------------------------
_KERNELS = {name: (globals()[f"_{name}"], globals()[f"_{name}_backward"])
            for name in ("relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh")}


def _act(op, x, **params):
    sync_threads()
    kernel, param = activation_kernel(op, params)
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        _KERNELS[kernel][0](contiguous(x, (-1,)), contiguous(y, (-1,)), x.dtype.type(param))
    return y


def _act_backward(op, grad, x, **params):
    """``x`` is the forward's output for sigmoid and tanh (register_each's FROM_OUTPUT)."""
    sync_threads()
    kernel, param = activation_kernel(op, params)
    dx = _array.empty(x.shape, x.dtype)
    if x.size:
        _KERNELS[kernel][1](contiguous(grad, (-1,)), contiguous(x, (-1,)), contiguous(dx, (-1,)), x.dtype.type(param))
    return (dx,)


def _softmax(op, x, dim):
    sync_threads()
    y = _array.empty(x.shape, x.dtype)
    if x.size:
        outer, n, inner = view = reduction_view(x.shape, dim)
        if inner == 1:
            _softmax_rows(contiguous(x, (outer, n)), contiguous(y, (outer, n)), op == "log_softmax")
        else:
            _softmax_tiles(contiguous(x, view), contiguous(y, view), op == "log_softmax")
    return y


def _softmax_backward(op, grad, y, dim):
    """From the forward's output y (register_each passes the saved one)."""
    sync_threads()
    dx = _array.empty(y.shape, y.dtype)
    if y.size:
        outer, n, inner = view = reduction_view(y.shape, dim)
        log = op == "log_softmax"
        if inner == 1:
            _softmax_rows_backward(contiguous(grad, (outer, n)), contiguous(y, (outer, n)), contiguous(dx, (outer, n)), log)
        else:
            _softmax_tiles_backward(contiguous(grad, view), contiguous(y, view), contiguous(dx, view), log)
    return (dx,)


register_each("numba", ACTIVATIONS, _act, _act_backward)
register_each("numba", SOFTMAXES, _softmax, _softmax_backward)
