"""Numba kernels for the attention family: scaled_dot_product_attention and
multi_head_attention, forward and backward, float32 and float64.

SDPA, flash-style (the cpp backend's algorithm, FlashAttention-2's loop order):
- forward: tasks (batch, head, block of BR query rows) in ``prange``. A task streams the
  keys and values in blocks of BC: scores S = Q_i K_j^T (one tile product), then per row
  scale + mask, the block's max, the online-softmax update (running max m and sum l, the
  accumulator rescaled by exp(m_old - m_new)), P = exp(S - m) in place, and acc += P V_j
  (a second tile product). Causal: key blocks past the diagonal are never visited, the
  diagonal block masks j > i. The output is acc / l and the saved lse = m + log(l)
  (+inf on a fully masked row, whose output is 0: nothing was accumulated).
- backward: tasks (batch, head, group of key blocks); a task owns dK_j, dV_j of its key
  blocks and walks the query blocks that see them: P = exp(S - lse) (recomputed),
  dV_j += P^T dO_i, dP = dO_i V_j^T, dS = P * (dP - delta_i) with delta = rowsum(dO * O),
  dK_j += dS^T Q_i, dQ_i += dS K_j. When B*H alone gives too few tasks, the key blocks of a
  head are split into G groups, each with its own dQ partial (summed after): G*L*D more
  floats, never L*S.
- masks are read through their broadcast strides (np.broadcast_to views, 0 strides), never
  materialized; a float mask's gradient (dS before the scale) is summed into one
  mask-shaped accumulator per thread, then over threads.

Tile products: BLAS (np.dot inside njit, on contiguous tiles; SciPy's OpenBLAS held to one
thread by threadpoolctl while a kernel runs in Numba's own threads) by default, about 10x
the explicit loops of the variant "loops" (dot products for Q K^T, row updates for P V),
which is also the default when SciPy or threadpoolctl is missing. The figures:
dev/attention/numba.md.

Napkin math, B4 H8 S512 D64 float32: 4*B*H*S*S*D = 2.1 GFLOP forward (+5 exp-and-friends per
score, 8.4 M scores), ~2.5x that for the backward; at ~100 GFLOP/s two cores: ~21 ms
forward. Memory touched: O(S*D) per head and per-task tiles of BR*BC scores.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ... import _array
from .. import get_num_threads
from ...registry import register
from ..reference import attention as _reference
from . import sync_threads
from .elementwise import _row_max, _vexp
from .gemm import gemm_into

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
_PJIT = dict(_JIT, parallel=True)
_SUM = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "nsz", "reassoc"})

BR = 64    # query rows per block
BC = 128   # keys per block (forward)
BCB = 64   # keys per block (backward)
_BLK = [BR, BC]

_NONE, _BOOL, _FLOAT = 0, 1, 2


# -- row helpers: functions of their own, so LLVM vectorizes their loops ---------------------

@njit(**_JIT)
def _scale_mask_bool(row, scale, mrow):
    ninf = row.dtype.type(-np.inf)
    for c in range(row.size):
        x = row[c] * scale
        row[c] = x if mrow[c] else ninf


@njit(**_JIT)
def _scale_mask_float(row, scale, mrow):
    for c in range(row.size):
        row[c] = row[c] * scale + mrow[c]


@njit(**_JIT)
def _scale(row, scale):
    for c in range(row.size):
        row[c] = row[c] * scale


@njit(**_JIT)
def _exp_sum(row, m):
    """row = exp(row - m) in place; returns its sum (float64 for float32 rows)."""
    for c in range(row.size):
        row[c] = _vexp(row[c] - m)
    return _sum(row)


@njit(**_SUM)
def _sum(x):
    s = 0.0
    for c in range(x.size):
        s += x[c]
    return s


@njit(**_SUM)
def _dot(x, y):
    s = x.dtype.type(0)
    for c in range(x.size):
        s += x[c] * y[c]
    return s


@njit(**_JIT)
def _axpy(y, a, x):
    for c in range(y.size):
        y[c] += a * x[c]


@njit(**_JIT)
def _mul(y, a):
    for c in range(y.size):
        y[c] *= a


@njit(**_JIT)
def _mul_keep(row, keep, f):
    zero = row.dtype.type(0)
    for c in range(row.size):
        row[c] = row[c] * f if keep[c] else zero


@njit(**_JIT)
def _ds_row(p, dp, delta):
    """p = p * (dp - delta) in place (dS, before the scale)."""
    for c in range(p.size):
        p[c] = p[c] * (dp[c] - delta)


@njit(**_JIT)
def _has_nan(x):
    bad = False
    for c in range(x.size):
        bad |= x[c] != x[c]
    return bad


@njit(**_JIT)
def _add_into(y, x):
    for c in range(y.size):
        y[c] += x[c]


# -- tile products ---------------------------------------------------------------------------

@njit(**_JIT)
def _mm_nt(a, b, out, blas):
    """out (m, n) = a (m, d) @ b (n, d)^T."""
    if blas:
        np.dot(a, b.T, out)
        return
    m, n = out.shape
    for r in range(m):
        o = out[r]
        ar = a[r]
        for c in range(n):
            o[c] = _dot(ar, b[c])


@njit(**_JIT)
def _mm_nn(a, b, out, blas):
    """out (m, n) = a (m, k) @ b (k, n)."""
    if blas:
        np.dot(a, b, out)
        return
    m, k = a.shape
    for r in range(m):
        o = out[r]
        o[:] = 0
        ar = a[r]
        for p in range(k):
            _axpy(o, ar[p], b[p])


@njit(**_JIT)
def _mm_tn(a, b, out, blas):
    """out (m, n) = a (k, m)^T @ b (k, n)."""
    if blas:
        np.dot(a.T, b, out)
        return
    k, m = a.shape
    out[:] = 0
    for p in range(k):
        ap = a[p]
        bp = b[p]
        for r in range(m):
            _axpy(out[r], ap[r], bp)


# -- forward ---------------------------------------------------------------------------------

@njit(**_PJIT)
def _fwd(q, k, v, mode, bm, fm, causal, scale, keep, pdrop, out, lse, blas, BR, BC):
    """q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv): C order.
    bm / fm: the bool / float mask, keep: the dropout keep-mask (pdrop > 0), each a
    (2, B, H, L, S) broadcast view (_view). Writes out (B, H, L, Dv) and lse (B, H, L)."""
    B, H, L, D = q.shape
    S, Dv = k.shape[2], v.shape[3]
    nqb = (L + BR - 1) // BR
    dt = q.dtype.type
    sc = dt(scale)
    ninf = -np.inf
    fdrop = dt(1.0 / (1.0 - pdrop)) if pdrop < 1.0 else dt(0)
    for t in prange(B * H * nqb):
        bh = t // nqb
        b, h = bh // H, bh % H
        # pair cheap and dear causal blocks in each thread's contiguous share of tasks
        u = t % nqb
        qb = u // 2 if u % 2 == 0 else nqb - 1 - u // 2
        i0 = qb * BR
        i1 = min(L, i0 + BR)
        br = i1 - i0
        qi = q[b, h, i0:i1]
        acc = np.zeros((br, Dv), q.dtype)
        m = np.full(br, ninf)
        l = np.zeros(br)
        bad = np.zeros(br, np.bool_)
        sbuf = np.empty(BR * BC, q.dtype)
        pv = np.empty((br, Dv), q.dtype)
        jend = min(S, i1) if causal else S
        for j0 in range(0, jend, BC):
            j1 = min(jend, j0 + BC)
            bc = j1 - j0
            st = sbuf[:br * bc].reshape((br, bc))
            _mm_nt(qi, k[b, h, j0:j1], st, blas)
            for r in range(br):
                i = i0 + r
                row = st[r]
                if mode == _BOOL:
                    _scale_mask_bool(row, sc, bm[0, b, h, i, j0:j1])
                elif mode == _FLOAT:
                    _scale_mask_float(row, sc, fm[0, b, h, i, j0:j1])
                else:
                    _scale(row, sc)
                if causal and j1 > i + 1:
                    for c in range(i + 1 - j0, bc):
                        row[c] = ninf
                mb = float(_row_max(row))
                mold = m[r]
                mnew = mb if mb > mold else mold
                if mnew == ninf:  # nothing to attend yet in this row
                    bad[r] |= _has_nan(row)
                    row[:] = 0
                    continue
                alpha = math.exp(mold - mnew)  # 0 when mold = -inf
                m[r] = mnew
                l[r] = l[r] * alpha + _exp_sum(row, dt(mnew))
                if alpha != 1.0:
                    _mul(acc[r], dt(alpha))
                if pdrop > 0.0:
                    _mul_keep(row, keep[0, b, h, i, j0:j1], fdrop)
            _mm_nn(st, v[b, h, j0:j1], pv, blas)
            for r in range(br):
                _add_into(acc[r], pv[r])
        for r in range(br):
            i = i0 + r
            o = out[b, h, i]
            if bad[r]:  # a NaN score that the max skipped in an all -inf block
                o[:] = np.nan
                lse[b, h, i] = np.nan
            elif m[r] == ninf:  # fully masked
                o[:] = 0
                lse[b, h, i] = np.inf
            else:
                inv = 1.0 / l[r]
                a = acc[r]
                for c in range(Dv):
                    o[c] = a[c] * inv
                lse[b, h, i] = m[r] + math.log(l[r])


# -- backward --------------------------------------------------------------------------------

@njit(**_PJIT)
def _delta(do, out, delta):
    """delta[b, h, i] = sum_c do[b, h, i, c] * out[b, h, i, c]."""
    B, H, L, Dv = do.shape
    for t in prange(B * H):
        b, h = t // H, t % H
        for i in range(L):
            delta[b, h, i] = _dot(do[b, h, i], out[b, h, i])


@njit(**_PJIT)
def _bwd(q, k, v, do, lse, delta, mode, bm, fm, causal, scale, keep, pdrop, dqp, dk, dv, dm, blas, BR, BC):
    """Tasks (b, h, g): key blocks g, g + G, ... of head (b, h), G = dqp.shape[0]; dK, dV of
    those blocks (scaled: dk), and dQ into the task's partial dqp[g] (unscaled). dm: the
    float mask's gradient, one (Bm, Hm, Lm, Sm) accumulator per thread (mode _FLOAT)."""
    G = dqp.shape[0]
    B, H, L, D = q.shape
    S, Dv = k.shape[2], v.shape[3]
    nkb = (S + BC - 1) // BC
    nqb = (L + BR - 1) // BR
    dt = q.dtype.type
    sc = dt(scale)
    ninf = -np.inf
    fdrop = dt(1.0 / (1.0 - pdrop)) if pdrop < 1.0 else dt(0)
    Bm, Hm, Lm, Sm = dm.shape[1], dm.shape[2], dm.shape[3], dm.shape[4]
    for t in prange(B * H * G):
        bh = t // G
        g = t % G
        b, h = bh // H, bh % H
        dqg = dqp[g, b, h]
        sbuf = np.empty(BR * BC, q.dtype)
        pbuf = np.empty(BR * BC, q.dtype)
        dpbuf = np.empty(BR * BC, q.dtype)
        kbuf = np.empty(BC * max(D, Dv), q.dtype)
        qbuf = np.empty(BR * D, q.dtype)
        for kb in range(g, nkb, G):
            j0 = kb * BC
            j1 = min(S, j0 + BC)
            bc = j1 - j0
            kj, vj = k[b, h, j0:j1], v[b, h, j0:j1]
            dkj, dvj = dk[b, h, j0:j1], dv[b, h, j0:j1]
            dkj[:] = 0
            dvj[:] = 0
            for qb in range(j0 // BR if causal else 0, nqb):
                i0 = qb * BR
                i1 = min(L, i0 + BR)
                br = i1 - i0
                qi, doi = q[b, h, i0:i1], do[b, h, i0:i1]
                st = sbuf[:br * bc].reshape((br, bc))
                _mm_nt(qi, kj, st, blas)
                for r in range(br):
                    i = i0 + r
                    row = st[r]
                    if mode == _BOOL:
                        _scale_mask_bool(row, sc, bm[0, b, h, i, j0:j1])
                    elif mode == _FLOAT:
                        _scale_mask_float(row, sc, fm[0, b, h, i, j0:j1])
                    else:
                        _scale(row, sc)
                    if causal and j1 > i + 1:
                        for c in range(max(0, i + 1 - j0), bc):
                            row[c] = ninf
                    _exp_sum(row, lse[b, h, i])  # P = exp(S - lse): 0 on a fully masked row
                pd = st
                if pdrop > 0.0:  # dV takes the dropped weights, dP the dropped dO V^T
                    pd = pbuf[:br * bc].reshape((br, bc))
                    for r in range(br):
                        pd[r] = st[r]
                        _mul_keep(pd[r], keep[0, b, h, i0 + r, j0:j1], fdrop)
                tv = kbuf[:bc * Dv].reshape((bc, Dv))
                _mm_tn(pd, doi, tv, blas)
                for c in range(bc):
                    _add_into(dvj[c], tv[c])
                dpt = dpbuf[:br * bc].reshape((br, bc))
                _mm_nt(doi, vj, dpt, blas)
                for r in range(br):
                    i = i0 + r
                    if pdrop > 0.0:
                        _mul_keep(dpt[r], keep[0, b, h, i, j0:j1], fdrop)
                    _ds_row(st[r], dpt[r], delta[b, h, i])
                    if mode == _FLOAT:
                        acc = dm[get_thread_id(), b if Bm > 1 else 0, h if Hm > 1 else 0, i if Lm > 1 else 0]
                        if Sm > 1:
                            _add_into(acc[j0:j1], st[r])
                        else:
                            acc[0] += _sum(st[r])
                tk = kbuf[:bc * D].reshape((bc, D))
                _mm_tn(st, qi, tk, blas)
                for c in range(bc):
                    _add_into(dkj[c], tk[c])
                tq = qbuf[:br * D].reshape((br, D))
                _mm_nn(st, kj, tq, blas)
                for r in range(br):
                    _add_into(dqg[i0 + r], tq[r])
            for c in range(bc):
                _mul(dkj[c], sc)


@njit(**_PJIT)
def _finish_dq(dqp, dq, scale):
    """dq = scale * sum_g dqp[g]."""
    G, B, H, L, D = dqp.shape
    sc = dq.dtype.type(scale)
    for t in prange(B * H * L):
        b, h, i = t // (H * L), (t // L) % H, t % L
        o = dq[b, h, i]
        for c in range(D):
            o[c] = dqp[0, b, h, i, c]
        for g in range(1, G):
            _add_into(o, dqp[g, b, h, i])
        _mul(o, sc)


# -- adapters --------------------------------------------------------------------------------

def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


_ONE_B = np.ones(1, np.bool_)
_ONE_F = {np.dtype(np.float32): np.zeros(1, np.float32), np.dtype(np.float64): np.zeros(1, np.float64)}


def _view(a, shape):
    """``a`` broadcast to ``shape`` behind a leading axis of 2 with stride 0: never contiguous,
    so Numba types every mask alike (one compiled kernel per dtype, whether a mask is a
    broadcast view or a full contiguous array); the kernels read index 0 of that axis."""
    return np.broadcast_to(a, (2,) + shape)


def _masks(attn_mask, dropout_p, dropout_mask, dt, shape):
    """(mode, bool mask, float mask, keep, p): every one a 5-D ``_view`` of ``shape``."""
    bm = _view(_ONE_B, shape)
    fm = _view(_ONE_F[dt], shape)
    mode = _NONE
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            mode, bm = _BOOL, _view(attn_mask, shape)
        else:
            mode, fm = _FLOAT, _view(attn_mask, shape)
    p = float(dropout_p) if dropout_mask is not None and dropout_p > 0 else 0.0
    keep = _view(dropout_mask if p > 0 else _ONE_B, shape)
    return mode, bm, fm, keep, p


def _trivial(q, k, v):
    """Empty problems (no rows, keys or head dims): the reference decides."""
    return 0 in q.shape or 0 in k.shape or 0 in v.shape


def _sdpa(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, blas):
    if _trivial(q, k, v):
        return _reference.scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, dropout_p,
                                                       dropout_mask)
    sync_threads()
    q, k, v = _c(q), _c(k), _c(v)
    B, H, L, D = q.shape
    S, Dv = k.shape[2], v.shape[3]
    mode, bm, fm, keep, p = _masks(attn_mask, dropout_p, dropout_mask, q.dtype, (B, H, L, S))
    out = _array.empty((B, H, L, Dv), q.dtype)
    lse = _array.empty((B, H, L), q.dtype)
    with _one_blas_thread(blas):
        _fwd(q, k, v, mode, bm, fm, bool(is_causal), float(scale), keep, p, out, lse, blas, _BLK[0], _BLK[1])
    return out, {"out": out, "lse": lse}


class _NoLimit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_BLAS_CTL = []


def _blas_controller():
    """threadpoolctl's controller once SciPy's BLAS (what np.dot in njit calls) is loaded, or
    None when SciPy or threadpoolctl is missing: then the kernels take the loops path."""
    if not _BLAS_CTL:
        try:
            import scipy.linalg.cython_blas  # noqa: F401
            from threadpoolctl import ThreadpoolController

            _BLAS_CTL.append(ThreadpoolController())
        except ImportError:
            _BLAS_CTL.append(None)
    return _BLAS_CTL[0]


def _use_blas():
    return _blas_controller() is not None


def _one_blas_thread(blas):
    """SciPy's OpenBLAS keeps its own thread pool, which would oversubscribe Numba's threads
    (measured: 6-15x slower on the shared 2-core machine): hold it to one thread while a
    kernel runs. The limit is process-wide for that time."""
    ctl = _blas_controller() if blas else None
    return _NoLimit() if ctl is None else ctl.limit(limits=1, user_api="blas")


@register("scaled_dot_product_attention", "numba")
def scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, dropout_p=0.0, dropout_mask=None):
    return _sdpa(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, _use_blas())


@register("scaled_dot_product_attention", "numba", variant="loops")
def scaled_dot_product_attention_loops(q, k, v, attn_mask, is_causal, scale, dropout_p=0.0, dropout_mask=None):
    return _sdpa(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, False)


def _groups(bh, nkb, nt):
    """Key-block groups per head in the backward: enough tasks (4 per thread) that the threads
    share the work evenly when B*H alone is too few; each group beyond the first costs a dQ
    partial (L*D floats)."""
    return max(1, min(nkb, -(-4 * nt // bh)))


def _sdpa_backward(grad, q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, saved, blas):
    if _trivial(q, k, v):
        return _reference.scaled_dot_product_attention_backward(grad, q, k, v, attn_mask, is_causal, scale,
                                                                dropout_p, dropout_mask, saved)
    if saved is None:
        _, saved = _sdpa(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, blas)
    sync_threads()
    q, k, v, do, o, lse = _c(q), _c(k), _c(v), _c(grad), _c(saved["out"]), _c(saved["lse"])
    B, H, L, D = q.shape
    S, Dv = k.shape[2], v.shape[3]
    dt = q.dtype
    mode, bm, fm, keep, p = _masks(attn_mask, dropout_p, dropout_mask, dt, (B, H, L, S))
    nt = get_num_threads()
    nkb = (S + BCB - 1) // BCB
    G = _groups(B * H, nkb, nt)
    dq = _array.empty(q.shape, dt)
    dqp = dq[None] if G == 1 else np.empty((G,) + q.shape, dt)
    dqp[...] = 0
    dk = _array.empty(k.shape, dt)
    dv = _array.empty(v.shape, dt)
    if mode == _FLOAT:
        m4 = (1,) * (4 - attn_mask.ndim) + attn_mask.shape
        # one accumulator per thread id: numba.get_thread_id() < the active thread count
        dm = np.zeros((numba.get_num_threads(),) + m4, dt)
    else:
        dm = np.zeros((1, 1, 1, 1, 1), dt)
    delta = np.empty((B, H, L), dt)
    _delta(do, o, delta)
    with _one_blas_thread(blas):
        _bwd(q, k, v, do, lse, delta, mode, bm, fm, bool(is_causal), float(scale), keep, p, dqp, dk, dv, dm,
             blas, _BLK[0], BCB)
    _finish_dq(dqp, dq, float(scale))
    dmask = None
    if mode == _FLOAT:
        dmask = _array.empty(attn_mask.shape, dt)
        dmask[...] = dm.sum(axis=0).reshape(attn_mask.shape)
    return dq, dk, dv, dmask


@register("scaled_dot_product_attention_backward", "numba")
def scaled_dot_product_attention_backward(grad, q, k, v, attn_mask, is_causal, scale, dropout_p=0.0,
                                          dropout_mask=None, saved=None):
    return _sdpa_backward(grad, q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, saved, _use_blas())


@register("scaled_dot_product_attention_backward", "numba", variant="loops")
def scaled_dot_product_attention_backward_loops(grad, q, k, v, attn_mask, is_causal, scale, dropout_p=0.0,
                                                dropout_mask=None, saved=None):
    return _sdpa_backward(grad, q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, saved, False)


# -- multi_head_attention: four projections on the numba GEMM around the SDPA above ----------

def _split(x2, B, n, nh):
    """(B*n, E) rows -> (B, nh, n, E/nh), contiguous (the kernels' layout)."""
    return np.ascontiguousarray(x2.reshape(B, n, nh, -1).transpose(0, 2, 1, 3))


def _merge(x):
    """(B, nh, n, hd) -> (B*n, nh*hd), contiguous."""
    B, nh, n, hd = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(B * n, nh * hd)


def _project(query, key, value, in_proj_weight, in_proj_bias):
    """x @ w^T + b for the q, k, v thirds; self-attention (one array for all three): one GEMM."""
    E = query.shape[2]
    dt = query.dtype
    if query is key and key is value:
        x2 = _c(query).reshape(-1, E)
        y = gemm_into(x2, _c(in_proj_weight), np.empty((x2.shape[0], 3 * E), dt), tb=True, bias=in_proj_bias)
        return y[:, :E], y[:, E:2 * E], y[:, 2 * E:]
    ws = np.split(in_proj_weight, 3)
    bs = (None,) * 3 if in_proj_bias is None else np.split(in_proj_bias, 3)
    return tuple(gemm_into(_c(x).reshape(-1, E), _c(w), np.empty((x.shape[0] * x.shape[1], E), dt), tb=True,
                           bias=b) for x, w, b in zip((query, key, value), ws, bs))


def _mha(query, key, value, num_heads, in_proj_weight, out_proj_weight, in_proj_bias, out_proj_bias,
         attn_mask, is_causal):
    B, L, E = query.shape
    S = key.shape[1]
    qp, kp, vp = _project(query, key, value, in_proj_weight, in_proj_bias)
    q, k, v = _split(qp, B, L, num_heads), _split(kp, B, S, num_heads), _split(vp, B, S, num_heads)
    sa = _reference._sdpa_args(query, num_heads, attn_mask, is_causal)
    o, sv = _sdpa(q, k, v, sa["attn_mask"], sa["is_causal"], sa["scale"], 0.0, None, _use_blas())
    attn = _merge(o)
    out = _array.empty((B, L, E), query.dtype)
    gemm_into(attn, _c(out_proj_weight), out.reshape(B * L, E), tb=True, bias=out_proj_bias)
    return out, dict(q=q, k=k, v=v, attn=attn.reshape(B, L, E), lse=sv["lse"])


@register("multi_head_attention", "numba")
def multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                         in_proj_bias, out_proj_bias, attn_mask, is_causal):
    if 0 in query.shape or 0 in key.shape:
        return _reference.multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                                               in_proj_bias, out_proj_bias, attn_mask, is_causal)
    return _mha(query, key, value, num_heads, in_proj_weight, out_proj_weight, in_proj_bias, out_proj_bias,
                attn_mask, is_causal)


def _colsum(y2):
    return y2.sum(axis=0, dtype=np.float64).astype(y2.dtype)


@register("multi_head_attention_backward", "numba")
def multi_head_attention_backward(grad, query, key, value, num_heads, in_proj_weight, out_proj_weight,
                                  in_proj_bias, out_proj_bias, attn_mask, is_causal, saved=None):
    args = (query, key, value, num_heads, in_proj_weight, out_proj_weight, in_proj_bias, out_proj_bias,
            attn_mask, is_causal)
    if 0 in query.shape or 0 in key.shape:
        return _reference.multi_head_attention_backward(grad, *args, saved=saved)
    if saved is None:
        _, saved = _mha(*args)
    B, L, E = query.shape
    S = key.shape[1]
    dt = query.dtype
    g2 = _c(grad).reshape(B * L, E)
    attn2 = _c(saved["attn"]).reshape(B * L, E)
    d_out_w = gemm_into(g2, attn2, _array.empty((E, E), dt), ta=True)
    d_out_b = None if out_proj_bias is None else _colsum(g2)
    d_o = _split(gemm_into(g2, _c(out_proj_weight), np.empty((B * L, E), dt)), B, L, num_heads)
    sa = _reference._sdpa_args(query, num_heads, attn_mask, is_causal)
    d_heads = _sdpa_backward(d_o, saved["q"], saved["k"], saved["v"], sa["attn_mask"], sa["is_causal"], sa["scale"],
                             0.0, None, dict(out=_split(attn2, B, L, num_heads), lse=saved["lse"]), _use_blas())[:3]
    dxs, dws, dbs = [], [], []
    for x, w, dh in zip((query, key, value), np.split(in_proj_weight, 3), d_heads):
        n = x.shape[1]
        dy = _merge(dh)
        dxs.append(gemm_into(dy, _c(w), _array.empty((B * n, E), dt)).reshape(B, n, E))
        dws.append(gemm_into(dy, _c(x).reshape(B * n, E), np.empty((E, E), dt), ta=True))
        dbs.append(_colsum(dy))
    d_in_w = _array.empty((3 * E, E), dt)
    d_in_w[...] = np.concatenate(dws)
    d_in_b = None if in_proj_bias is None else np.concatenate(dbs)
    return (*dxs, d_in_w, d_out_w, d_in_b, d_out_b)
