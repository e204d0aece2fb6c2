"""Numba kernels and adapter for the loss family: cross_entropy, forward and backward.
float32 and float64.

input (N, C, *spatial) is viewed as x (N, C, S), S = prod(spatial); a sample is (n, s), its
logits x[n, :, s]. Per sample, with m = max_c x_c, Z = sum_c exp(x_c - m), lz = log Z,
logp_c = (x_c - m) - lz, class weights w (ones without weight), ls = label_smoothing and
u = ls / C (the reference's notation, pydl/backends/reference/loss.py):
  class index t:  loss = -(1 - ls) w_t logp_t - u sum_c w_c logp_c
                       = -(1 - ls) w_t logp_t - u (sum_c w_c (x_c - m) - W lz),  W = sum_c w_c
                  (0 where t == ignore_index; the smoothing sum only when ls > 0, so a -inf
                  logit elsewhere stays harmless, as in the reference)
  probabilities:  a_c = w_c ((1 - ls) T_c + u),  loss = (sum_c a_c) lz - sum_c a_c (x_c - m)
  backward:       dx_c = g (softmax_c sum_c a_c - a_c),  g the upstream gradient of the sample
                  (grad / count for "mean"); 0 exactly for an ignored sample.
Sums over c (Z, the smoothing sums) and the reduction accumulate in float64; exp runs in the
input's precision (the call-free float32 exp of the elementwise module, which vectorizes).

Loop order, without any transpose: S == 1 (input (N, C), the hot case) walks one contiguous
row per sample: a max pass, exp(x - m) into a row buffer (the backward: into dx's row), a
float64 sum of it, then the target pick and (ls > 0) a dot with the weights; the backward scales
the row in place and fixes the target element. S > 1 takes tiles x[n, :, s0:s0+B] of C x B
logits (B <= 1024, a tile within ~256 KB): the per-position state (max, sums, coefficients)
lives in B-long scratch and every pass is `for c: for k in tile`, a contiguous, vectorized
inner loop over positions (channel-strided access, one class row at a time).

Fixed cost: the adapter is a handful of Python operations and one njit call; the serial
kernels allocate nothing but the output (and one row or tile of scratch inside the kernel).
Numba's parallel launch costs several microseconds, so a separate prange kernel (_PARTS
contiguous ranges of rows or tiles, partial sums reduced) runs from _PAR_MIN elements on.

Napkin math, (8192, 1000) float32: the forward reads 33 MB (~1.2 ms at ~28 GB/s), the backward
reads 33 MB and writes 33 MB (~2.4 ms); a 4 KB row stays in L1 between its passes. Measured
per element on one Zen 4 core: max 0.17 ns, exp 0.44 ns (vectorized; a libm expf would be
~3 ns), float64 sum 0.14 ns: the forward is compute-bound at ~0.75 ns a logit, ~6 ms, the
backward adds a scale pass (PyTorch's fused kernels take about as long, the NumPy reference ~3x).

Kernels are fastmath=False; only the float64 sums (_sum64 and the dots below) have 'reassoc',
in functions of their own, so LLVM vectorizes them; it may not reach the exp, whose rounding
tricks it would undo. NaN propagates as in the reference: a NaN or +inf logit makes its
sample's Z, and so its loss and its whole gradient row, NaN (an ignored sample stays 0).
"""
import math

import numpy as np
from numba import njit, prange

from ... import _array
from .. import get_num_threads
from ...registry import register
from .._shared import contiguous
from ..reference import loss as _reference
from . import sync_threads
from .elementwise import _exp_shifted, _exp_sub, _row_max, _sum64

_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")  # numpy: 0/0 is NaN
_PAR = dict(_JIT, parallel=True)
_SUM = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
_PAR_MIN = 100_000  # input elements from which the prange kernels run
_PARTS = 64         # contiguous ranges of rows or tiles a prange kernel splits (threads take equal shares)


# -- float64 sums over one row (vectorized: 'reassoc' here only) ----------------------------
@njit(**_SUM)
def _sum_shifted(x, w, has_w, m):
    """sum_c w_c (x_c - m) (w_c = 1 without weight)."""
    s = 0.0
    if has_w:
        for c in range(x.size):
            s += float(w[c]) * (float(x[c]) - m)
    else:
        for c in range(x.size):
            s += float(x[c]) - m
    return s


@njit(**_SUM)
def _prob_sums(x, T, w, has_w, m, ls):
    """(sum_c a_c (x_c - m), sum_c a_c), a_c = w_c ((1 - ls) T_c + ls / C)."""
    u = ls / x.size
    d = 0.0
    at = 0.0
    if has_w:
        for c in range(x.size):
            a = float(w[c]) * ((1.0 - ls) * float(T[c]) + u)
            d += a * (float(x[c]) - m)
            at += a
    else:
        for c in range(x.size):
            a = (1.0 - ls) * float(T[c]) + u
            d += a * (float(x[c]) - m)
            at += a
    return d, at


@njit(**_SUM)
def _prob_mass(T, w, has_w, ls):
    """sum_c a_c."""
    u = ls / T.size
    at = 0.0
    if has_w:
        for c in range(T.size):
            at += float(w[c]) * ((1.0 - ls) * float(T[c]) + u)
    else:
        for c in range(T.size):
            at += (1.0 - ls) * float(T[c]) + u
    return at


# -- row passes of the backward ---------------------------------------------------------------
@njit(**_JIT)
def _scale_idx(d, p, q, w, has_w):
    """d = d * p - q w_c (q = 0: no smoothing)."""
    if has_w:
        for c in range(d.size):
            d[c] = d[c] * p - q * w[c]
    else:
        for c in range(d.size):
            d[c] = d[c] * p - q


@njit(**_JIT)
def _scale_prob(d, p, T, w, has_w, g1, g2):
    """d = d * p - w_c (g1 T_c + g2)."""
    if has_w:
        for c in range(d.size):
            d[c] = d[c] * p - w[c] * (g1 * T[c] + g2)
    else:
        for c in range(d.size):
            d[c] = d[c] * p - (g1 * T[c] + g2)


@njit(**_JIT)
def _zero(d):
    for c in range(d.size):
        d[c] = 0


# -- forward ----------------------------------------------------------------------------------
@njit(**_JIT)
def _fwd_rows(x, t, T, w, has_w, prob, ignore, ls, W, out, none, r0, r1):
    """Rows r0..r1 of x (N, C): (sum of their losses, their count for the mean)."""
    C = x.shape[1]
    u = ls / C
    buf = np.empty(C, x.dtype)
    total = 0.0
    count = 0.0
    for r in range(r0, r1):
        xr = x[r]
        if not prob and t[r] == ignore:
            if none:
                out[r] = 0
            continue
        m = _row_max(xr)
        _exp_shifted(xr, m, buf)
        lz = math.log(_sum64(buf))
        if prob:
            d, at = _prob_sums(xr, T[r], w, has_w, float(m), ls)
            loss = at * lz - d
            count += 1.0
        else:
            ti = t[r]
            wt = float(w[ti]) if has_w else 1.0
            loss = -(1.0 - ls) * wt * ((float(xr[ti]) - m) - lz)
            if ls > 0.0:
                loss -= u * (_sum_shifted(xr, w, has_w, float(m)) - W * lz)
            count += wt
        total += loss
        if none:
            out[r] = loss
    return total, count


# -- tile passes (S > 1): one class row of a tile, x[n, c, s0:s0+nb], against per-position state.
# Inlined (a call per class row costs more than these loops at small S; measured); the exp is
# elementwise's _exp_sub, a call, which measured faster than inlined (LLVM then vectorizes it at
# float32 width, not at the float64 width of the sum it feeds)
@njit(**_JIT, inline='always')
def _max_into(xr, mx):
    """mx = max(mx, xr) per position (a NaN may be skipped: its exp makes Z NaN anyway)."""
    for k in range(xr.size):
        v = xr[k]
        mx[k] = v if v > mx[k] else mx[k]


@njit(**_JIT, inline='always')
def _add_into(e, z):
    """z += e (z float64)."""
    for k in range(e.size):
        z[k] += e[k]


@njit(**_JIT, inline='always')
def _shifted_into(xr, mx, wc, d):
    """d += w_c (x - m)."""
    for k in range(xr.size):
        d[k] += wc * (float(xr[k]) - float(mx[k]))


@njit(**_JIT, inline='always')
def _prob_into(xr, Tr, mx, wc, ls, u, d, at):
    """a = w_c ((1 - ls) T + u); d += a (x - m); at += a."""
    for k in range(xr.size):
        a = wc * ((1.0 - ls) * float(Tr[k]) + u)
        d[k] += a * (float(xr[k]) - float(mx[k]))
        at[k] += a


@njit(**_JIT, inline='always')
def _mass_into(Tr, wc, ls, u, at):
    for k in range(Tr.size):
        at[k] += wc * ((1.0 - ls) * float(Tr[k]) + u)


@njit(**_JIT)
def _tiling(C, S):
    """(B, tiles per sample row): a tile of C x B logits within ~256 KB (L2), B <= 1024."""
    B = min(S, 1024, max(64, 65536 // max(C, 1)))
    return B, (S + B - 1) // B


@njit(**_JIT)
def _tile_lse(x, n, s0, nb, mx, z, e, store):
    """mx, z = max and sum of exp(x - max) over c of x[n, :, s0:s0+nb]; exp(x - max) goes to
    e[n, :, s0:s0+nb] (dx, in the backward) if ``store``, else to the row scratch e[0, 0, :nb]."""
    mx[:nb] = x[n, 0, s0:s0 + nb]
    for c in range(1, x.shape[1]):
        _max_into(x[n, c, s0:s0 + nb], mx[:nb])
    z[:nb] = 0.0
    for c in range(x.shape[1]):
        er = e[n, c, s0:s0 + nb] if store else e[0, 0, :nb]
        _exp_sub(x[n, c, s0:s0 + nb], mx[:nb], er)
        _add_into(er, z[:nb])


@njit(**_JIT)
def _fwd_tiles(x, t, T, w, has_w, prob, ignore, ls, W, out, none, q0, q1):
    """Tiles q0..q1 of x (N, C, S), tile q = (n, positions s0..s0+B): (sum of losses, count)."""
    N, C, S = x.shape
    u = ls / C
    B, nblk = _tiling(C, S)
    mx = np.empty(B, x.dtype)
    e = np.empty((1, 1, B), x.dtype)
    z = np.empty(B)
    d = np.zeros(B)
    at = np.zeros(B)
    total = 0.0
    count = 0.0
    for q in range(q0, q1):
        n = q // nblk
        s0 = (q - n * nblk) * B
        nb = min(B, S - s0)
        _tile_lse(x, n, s0, nb, mx, z, e, False)
        if prob or ls > 0.0:
            d[:nb] = 0.0
            at[:nb] = 0.0
            for c in range(C):
                wc = float(w[c]) if has_w else 1.0
                if prob:
                    _prob_into(x[n, c, s0:s0 + nb], T[n, c, s0:s0 + nb], mx[:nb], wc, ls, u, d[:nb], at[:nb])
                else:
                    _shifted_into(x[n, c, s0:s0 + nb], mx[:nb], wc, d[:nb])
        for k in range(nb):
            i = n * S + s0 + k
            lz = math.log(z[k])
            if prob:
                loss = at[k] * lz - d[k]
                count += 1.0
            else:
                ti = t[n, s0 + k]
                if ti == ignore:
                    if none:
                        out[i] = 0
                    continue
                wt = float(w[ti]) if has_w else 1.0
                loss = -(1.0 - ls) * wt * ((float(x[n, ti, s0 + k]) - float(mx[k])) - lz)
                if ls > 0.0:
                    loss -= u * (d[k] - W * lz)
                count += wt
            total += loss
            if none:
                out[i] = loss
    return total, count


@njit(**_JIT)
def _fwd(x, t, T, w, has_w, prob, ignore, ls, W, out, none, q0, q1):
    if x.shape[2] == 1:
        N, C = x.shape[0], x.shape[1]
        return _fwd_rows(x.reshape((N, C)), t.reshape(t.size), T.reshape((T.shape[0], T.shape[1])),
                         w, has_w, prob, ignore, ls, W, out, none, q0, q1)
    return _fwd_tiles(x, t, T, w, has_w, prob, ignore, ls, W, out, none, q0, q1)


@njit(**_JIT)
def _tasks(x):
    """Rows (S == 1) or tiles (S > 1) of x (N, C, S)."""
    N, C, S = x.shape
    return N if S == 1 else N * _tiling(C, S)[1]


@njit(**_JIT)
def _weight_sum(w, has_w, C):
    return _sum64(w) if has_w else float(C)


@njit(**_JIT)
def _views(x2, t1, T2, C):
    """The kernels' (N, C, S) views of the adapter's flat operands (no copies)."""
    N = x2.shape[0]
    S = x2.shape[1] // C
    return (x2.reshape((N, C, S)), t1.reshape((N if t1.size else 0, S)),
            T2.reshape((T2.shape[0], C, S)))


@njit(**_JIT)
def _reduced(red, total, count):
    if red == 1:
        return total / count  # NaN over nothing, as the reference
    return total


@njit(**_JIT)
def _forward(x2, t1, T2, w, has_w, prob, ignore, ls, C, out, red):
    """x2 (N, C*S); t1 (N*S,) int64, or T2 (N, C*S) if prob; out (N*S,) for "none" (red 0),
    else unused. Returns the "mean" (red 1) or "sum" (red 2)."""
    x, t, T = _views(x2, t1, T2, C)
    W = _weight_sum(w, has_w, C)
    total, count = _fwd(x, t, T, w, has_w, prob, ignore, ls, W, out, red == 0, 0, _tasks(x))
    return _reduced(red, total, count)


@njit(**_PAR)
def _forward_par(x2, t1, T2, w, has_w, prob, ignore, ls, C, out, red):
    """_forward over _PARTS contiguous ranges of rows or tiles, partial sums reduced."""
    x, t, T = _views(x2, t1, T2, C)
    W = _weight_sum(w, has_w, C)
    ntasks = _tasks(x)
    parts = min(ntasks, _PARTS)
    total = 0.0
    count = 0.0
    for p in prange(parts):
        a, b = _fwd(x, t, T, w, has_w, prob, ignore, ls, W, out, red == 0,
                    p * ntasks // parts, (p + 1) * ntasks // parts)
        total += a
        count += b
    return _reduced(red, total, count)


# -- backward ---------------------------------------------------------------------------------
@njit(**_JIT)
def _bwd_rows(g, gs, none, x, t, T, w, has_w, prob, ignore, ls, W, dx, r0, r1):
    C = x.shape[1]
    u = ls / C
    f = x.dtype.type
    for r in range(r0, r1):
        xr, dr = x[r], dx[r]
        if not prob and t[r] == ignore:
            _zero(dr)
            continue
        gi = float(g[r]) if none else gs
        m = _row_max(xr)
        _exp_shifted(xr, m, dr)
        z = _sum64(dr)
        if prob:
            Tr = T[r]
            _scale_prob(dr, f(gi * _prob_mass(Tr, w, has_w, ls) / z), Tr, w, has_w,
                        f(gi * (1.0 - ls)), f(gi * u))
        else:
            ti = t[r]
            wt = float(w[ti]) if has_w else 1.0
            _scale_idx(dr, f(gi * ((1.0 - ls) * wt + u * W) / z), f(gi * u), w, has_w)
            dr[ti] = float(dr[ti]) - gi * (1.0 - ls) * wt


@njit(**_JIT, inline='always')
def _scale_tile_idx(dr, P, wc, G2, keep):
    """dr = dr P - w_c g u per position; exactly 0 at an ignored one (even from a NaN logit)."""
    for k in range(dr.size):
        v = dr[k] * P[k] - wc * G2[k]
        dr[k] = v if keep[k] else 0


@njit(**_JIT, inline='always')
def _scale_tile_prob(dr, P, Tr, wc, G1, G2):
    """dr = dr P - w_c (g (1 - ls) T + g u)."""
    for k in range(dr.size):
        dr[k] = dr[k] * P[k] - wc * (G1[k] * Tr[k] + G2[k])


@njit(**_JIT)
def _bwd_tiles(g, gs, none, x, t, T, w, has_w, prob, ignore, ls, W, dx, q0, q1):
    N, C, S = x.shape
    u = ls / C
    f = x.dtype.type
    B, nblk = _tiling(C, S)
    mx = np.empty(B, x.dtype)
    z = np.empty(B)
    at = np.empty(B)
    P = np.empty(B, x.dtype)   # g sum_c a_c / Z
    G1 = np.empty(B, x.dtype)  # g (1 - ls)
    G2 = np.empty(B, x.dtype)  # g u
    keep = np.empty(B, np.bool_)
    for q in range(q0, q1):
        n = q // nblk
        s0 = (q - n * nblk) * B
        nb = min(B, S - s0)
        _tile_lse(x, n, s0, nb, mx, z, dx, True)
        if prob:
            at[:nb] = 0.0
            for c in range(C):
                _mass_into(T[n, c, s0:s0 + nb], float(w[c]) if has_w else 1.0, ls, u, at[:nb])
        for k in range(nb):
            gi = float(g[n * S + s0 + k]) if none else gs
            keep[k] = True
            if not prob:
                ti = t[n, s0 + k]
                keep[k] = ti != ignore
                wt = (float(w[ti]) if has_w else 1.0) if keep[k] else 0.0
                at[k] = (1.0 - ls) * wt + u * W
            P[k] = f(gi * at[k] / z[k])
            G1[k] = f(gi * (1.0 - ls))
            G2[k] = f(gi * u)
        for c in range(C):
            wc = w[c] if has_w else f(1)
            if prob:
                _scale_tile_prob(dx[n, c, s0:s0 + nb], P[:nb], T[n, c, s0:s0 + nb], wc, G1[:nb], G2[:nb])
            else:
                _scale_tile_idx(dx[n, c, s0:s0 + nb], P[:nb], wc, G2[:nb], keep[:nb])
        if not prob:
            for k in range(nb):
                if keep[k]:
                    ti = t[n, s0 + k]
                    wt = float(w[ti]) if has_w else 1.0
                    gi = float(g[n * S + s0 + k]) if none else gs
                    dx[n, ti, s0 + k] = float(dx[n, ti, s0 + k]) - gi * (1.0 - ls) * wt


@njit(**_JIT)
def _bwd(g, gs, none, x, t, T, w, has_w, prob, ignore, ls, W, dx, q0, q1):
    if x.shape[2] == 1:
        N, C = x.shape[0], x.shape[1]
        _bwd_rows(g, gs, none, x.reshape((N, C)), t.reshape(t.size), T.reshape((T.shape[0], T.shape[1])),
                  w, has_w, prob, ignore, ls, W, dx.reshape((N, C)), q0, q1)
    else:
        _bwd_tiles(g, gs, none, x, t, T, w, has_w, prob, ignore, ls, W, dx, q0, q1)


@njit(**_JIT)
def _grad_scale(g, red, t, w, has_w, prob, ignore, samples):
    """The upstream gradient of every sample for "sum" and "mean" (grad / count)."""
    if red == 0:
        return 0.0
    g0 = float(g[0])
    if red == 2:
        return g0
    if prob:
        return g0 / samples
    count = 0.0
    tf = t.reshape(t.size)
    for i in range(tf.size):
        ti = tf[i]
        if ti != ignore:
            count += float(w[ti]) if has_w else 1.0
    return g0 / count  # inf or NaN over nothing: every sample is then ignored (0)


@njit(**_JIT)
def _backward(g, x2, t1, T2, w, has_w, prob, ignore, ls, C, dx2, red):
    """g: grad (N*S,) for "none", else (1,); dx2 (N, C*S); the rest as in _forward."""
    x, t, T = _views(x2, t1, T2, C)
    dx = dx2.reshape(x.shape)
    W = _weight_sum(w, has_w, C)
    gs = _grad_scale(g, red, t, w, has_w, prob, ignore, x.shape[0] * x.shape[2])
    _bwd(g, gs, red == 0, x, t, T, w, has_w, prob, ignore, ls, W, dx, 0, _tasks(x))


@njit(**_PAR)
def _backward_par(g, x2, t1, T2, w, has_w, prob, ignore, ls, C, dx2, red):
    x, t, T = _views(x2, t1, T2, C)
    dx = dx2.reshape(x.shape)
    W = _weight_sum(w, has_w, C)
    gs = _grad_scale(g, red, t, w, has_w, prob, ignore, x.shape[0] * x.shape[2])
    ntasks = _tasks(x)
    parts = min(ntasks, _PARTS)
    for p in prange(parts):
        _bwd(g, gs, red == 0, x, t, T, w, has_w, prob, ignore, ls, W, dx,
             p * ntasks // parts, (p + 1) * ntasks // parts)


# -- adapters ---------------------------------------------------------------------------------
_RED = {"none": 0, "mean": 1, "sum": 2}
_I64 = np.dtype(np.int64)
_NO_T = np.zeros(0, np.int64)  # stand-ins for the target form not in use, no weight, no output
_NO_P = {np.dtype(d): np.zeros((0, 0), d) for d in (np.float32, np.float64)}
_NO_W = {np.dtype(d): np.zeros(0, d) for d in (np.float32, np.float64)}


def _flat(a, n):
    """``a`` C-contiguous as (n, rest) (no copy, no reshape for a 2-D contiguous array)."""
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a if a.ndim == 2 else a.reshape(n, math.prod(a.shape[1:]))


def _operands(input, target, weight, ignore_index):
    """(x2, t1, T2, w, prob, ignore): input as (N, C*S) and the target as (N*S,) int64 indices or
    (N, C*S) probabilities (the other a stand-in), as the kernels take them."""
    N = input.shape[0]
    w = _NO_W[input.dtype] if weight is None else contiguous(weight)
    if target.dtype.kind == "f":
        return _flat(input, N), _NO_T, _flat(target, N), w, True, 0
    t = target if target.dtype == _I64 else target.astype(np.int64)
    if not t.flags.c_contiguous:
        t = np.ascontiguousarray(t)
    if t.ndim != 1:
        t = t.reshape(-1)
    if not -2**63 <= ignore_index < 2**63:  # no int64 equals it, but uint64's top half wraps
        ignore_index = ignore_index - 2**64 if target.dtype == np.uint64 and ignore_index < 2**64 else -1
    return _flat(input, N), t, _NO_P[input.dtype], w, False, ignore_index


@register("cross_entropy", "numba")
def cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    C = input.shape[1]
    if not C:  # no logits: the reference decides (zeros for probabilities)
        return _reference.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    x, t, T, w, prob, ignore = _operands(input, target, weight, ignore_index)
    none = reduction == "none"
    out = _array.empty(input.shape[:1] + input.shape[2:], input.dtype) if none else _NO_W[input.dtype]
    kernel = _forward
    if x.size >= _PAR_MIN and get_num_threads() > 1:
        sync_threads()
        kernel = _forward_par
    v = kernel(x, t, T, w, weight is not None, prob, ignore, label_smoothing, C,
               out if out.ndim == 1 else out.reshape(-1), _RED[reduction])
    return out if none else input.dtype.type(v)  # the registry makes a 0-d array of it


@register("cross_entropy_backward", "numba")
def cross_entropy_backward(grad, input, target, weight, ignore_index, reduction, label_smoothing, saved=None):
    C = input.shape[1]
    if not C:
        return _reference.cross_entropy_backward(grad, input, target, weight, ignore_index, reduction,
                                                 label_smoothing)
    x, t, T, w, prob, ignore = _operands(input, target, weight, ignore_index)
    dx = _array.empty(input.shape, input.dtype)
    kernel = _backward
    if x.size >= _PAR_MIN and get_num_threads() > 1:
        sync_threads()
        kernel = _backward_par
    kernel(contiguous(grad, (-1,)), x, t, T, w, weight is not None, prob, ignore, label_smoothing, C,
           dx if dx.ndim == 2 else dx.reshape(x.shape), _RED[reduction])
    if not prob:
        return dx, None
    # probability targets: d loss / d target = -(1 - ls) * w * log_softmax(input) * g (NumPy:
    # a second pass over the logits, only when targets are probabilities)
    g = _reference._spread(grad, input.shape[:1] + input.shape[2:], reduction, input.size // C)[:, None]
    logp = _reference.log_softmax(input, 1)
    return dx, _reference.cross_entropy_target_grad(g, logp, weight, label_smoothing)
