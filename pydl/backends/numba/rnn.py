"""Numba kernels for the rnn family: rnn/lstm/gru cells and one-layer sequences,
forward and backward, float32 and float64.

The algorithm of the cpp backend (kernels/cpp/rnn.cpp), on the numba GEMM (gemm.py):
- forward: the input projection of all T steps is one GEMM (``gemm_into``) over T*B rows
  with the biases fused into its store (b_ih + b_hh; the GRU keeps b_hn apart, inside
  r * (W_hn h + b_hn)); w_hh^T is packed once per call into the GEMM's B slivers; per step
  one GEMM for all gates (h packed, the register-tile kernel on the packed w_hh^T; B <= 4
  rows: the unpacked small-M kernel), then one fused ``prange`` pass over the batch rows:
  gate nonlinearities, cell update, output and the saved activations, in an inner loop over
  hidden units on row views (which LLVM vectorizes: the float32 exp/tanh of the elementwise
  module inline, no libm call). The whole recurrence is one ``@njit`` call.
- backward through time: per step a fused ``prange`` pass for the gate gradients, then one
  GEMM dh = d @ w_hh (w_hh packed once); the weight gradients are one GEMM each over all
  T*B rows after the loop (A transposed by the packing, no copy), the bias gradients a
  ``prange`` column sum.
Saved activations and their layouts are the reference's (``hs``, ``cs``, ``gates``);
backwards take ``needs`` like the cpp adapters. A cell is a sequence of one step.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ... import _array
from .. import get_num_threads
from .._rnn_adapters import register_rnn
from . import sync_threads
from .elementwise import _vexp, _vtanh
from .gemm import (SMALL_M, UJG, UKC, UMC, UMR, VEC_BYTES, _gemm_small, _gemm_tiles, _pack_a_panels, _pack_b,
                   gemm_into)

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
_PJIT = dict(_JIT, parallel=True)


@njit(inline="always", **_JIT)
def _sig(v, one):
    e = _vexp(-abs(v))
    s = one / (one + e)
    return s if v >= 0 else e * s


# -- the recurrent GEMM of a step, on the numba GEMM (gemm.py) -------------------------------
# np.dot inside njit would call SciPy's OpenBLAS, whose own thread pool ignores
# pydl.set_num_threads (measured on the shared 2-core machine: 1.9 s instead of 0.14 s for
# the LSTM forward while it competed with other processes).


def _pack_weight(w, tb):
    """w (K, N), or (N, K) when tb, packed once per call into the GEMM's B slivers."""
    nr = 2 * VEC_BYTES // w.itemsize
    k, n = (w.shape[1], w.shape[0]) if tb else w.shape
    bp = np.empty((1, (n + nr - 1) // nr, k, nr), w.dtype)
    _pack_b(w[None], tb, bp)
    return bp


@njit(**_JIT)
def _step_gemm(a, b3, tb, bp, out, bias, nt):
    """out (M, N) = a (M, K) @ op(b3[0]) + bias (bias.size 0: none); bp: b3 packed."""
    m = a.shape[0]
    k = a.shape[1]
    o3 = out.reshape((1,) + out.shape)
    a3 = a.reshape((1,) + a.shape)
    if k == 0:
        for i in range(m):
            for j in range(out.shape[1]):
                out[i, j] = bias[j] if bias.size else 0
        return
    if m <= SMALL_M:
        n = out.shape[1]
        chunk = max(64, (((n + nt - 1) // nt) + 15) // 16 * 16)
        _gemm_small(a3, False, b3, tb, o3, bias, o3[:1, :1], 0, min(2048, chunk))
        return
    ap = np.empty((1, (m + UMR - 1) // UMR, k, UMR), out.dtype)
    _pack_a_panels(a3, False, ap)
    _gemm_tiles(ap, bp, o3, bias, o3[:1, :1], 0, UMC, UJG, UKC)


# -- forward -----------------------------------------------------------------------------


@njit(**_PJIT)
def _forward(kind, relu, xw, w_hh3, bp, bn, hs, cs, gates, save, nt):
    """kind 0 rnn, 1 lstm, 2 gru. xw (S, B, G*H): x @ w_ih^T + the biases (the GRU's
    without b_hn, which is bn (H,)); w_hh3 (1, G*H, H) and bp its packed transpose.
    hs[0] (and cs[0]) hold the initial states on entry."""
    S, B, GH = xw.shape
    H = hs.shape[2]
    one, zero = xw.dtype.type(1), xw.dtype.type(0)
    if B == 0 or H == 0:
        return
    nob = np.zeros(0, xw.dtype)
    gh = np.empty((B, GH), xw.dtype)
    for t in range(S):
        _step_gemm(hs[t], w_hh3, True, bp, gh, nob, nt)
        for b in prange(B):
            xr = xw[t, b]
            gr = gh[b]
            hn = hs[t + 1, b]
            if kind == 0:
                for u in range(H):
                    z = xr[u] + gr[u]
                    if relu:
                        hn[u] = zero if z <= zero else z
                    else:
                        hn[u] = _vtanh(z)
            elif kind == 1:
                xi, xf, xg, xo = xr[:H], xr[H:2 * H], xr[2 * H:3 * H], xr[3 * H:]
                hi, hf, hg, ho = gr[:H], gr[H:2 * H], gr[2 * H:3 * H], gr[3 * H:]
                cp, cn = cs[t, b], cs[t + 1, b]
                sv = gates[t, b]
                si, sf, sg, so = sv[:H], sv[H:2 * H], sv[2 * H:3 * H], sv[3 * H:]
                for u in range(H):
                    i = _sig(xi[u] + hi[u], one)
                    f = _sig(xf[u] + hf[u], one)
                    g = _vtanh(xg[u] + hg[u])
                    o = _sig(xo[u] + ho[u], one)
                    c = f * cp[u] + i * g
                    cn[u] = c
                    hn[u] = o * _vtanh(c)
                    if save:
                        si[u] = i
                        sf[u] = f
                        sg[u] = g
                        so[u] = o
            else:
                xr_, xz, xn = xr[:H], xr[H:2 * H], xr[2 * H:]
                hr, hz, hh = gr[:H], gr[H:2 * H], gr[2 * H:]
                hp = hs[t, b]
                sv = gates[t, b]
                sr, sz, sn, shn = sv[:H], sv[H:2 * H], sv[2 * H:3 * H], sv[3 * H:]
                for u in range(H):
                    r = _sig(xr_[u] + hr[u], one)
                    z = _sig(xz[u] + hz[u], one)
                    hnn = hh[u] + bn[u]
                    n = _vtanh(xn[u] + r * hnn)
                    hn[u] = (one - z) * n + z * hp[u]
                    if save:
                        sr[u] = r
                        sz[u] = z
                        sn[u] = n
                        shn[u] = hnn


# -- backward ----------------------------------------------------------------------------


@njit(**_PJIT)
def _backward(kind, relu, w_hh3, bp, hs, cs, gates, g_out, has_gout, g_hn, g_cn, want_dh0, want_w, nt):
    """Returns (d_ih, d_hh, dh0, dc0); d_* (S, B, G*H) the pre-activation gradients.
    w_hh3 (1, G*H, H), bp: w_hh packed (the B of dh = d_hh @ w_hh)."""
    S, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    GH = w_hh3.shape[1]
    one, zero = hs.dtype.type(1), hs.dtype.type(0)
    d_ih = np.zeros((S, B, GH), hs.dtype)
    d_hh = np.zeros((S, B, GH), hs.dtype) if kind == 2 else d_ih
    dh = g_hn.copy()
    dc = g_cn.copy()
    nob = np.zeros(0, hs.dtype)
    tmp = np.empty((B, H), hs.dtype)
    if B == 0 or H == 0 or not (want_w or want_dh0):
        return d_ih, d_hh, dh, dc
    for t in range(S - 1, -1, -1):
        for b in prange(B):
            dhb = dh[b]
            go = g_out[t, b] if has_gout else g_out[0, 0]
            di = d_ih[t, b]
            if kind == 0:
                h = hs[t + 1, b]
                for u in range(H):
                    g = dhb[u] + go[u] if has_gout else dhb[u]
                    if relu:
                        di[u] = g if h[u] > zero else zero
                    else:
                        di[u] = g * (one - h[u] * h[u])
            elif kind == 1:
                sv = gates[t, b]
                si, sf, sg, so = sv[:H], sv[H:2 * H], sv[2 * H:3 * H], sv[3 * H:]
                di_, df, dg, do = di[:H], di[H:2 * H], di[2 * H:3 * H], di[3 * H:]
                cp, cn = cs[t, b], cs[t + 1, b]
                dcb = dc[b]
                for u in range(H):
                    g = dhb[u] + go[u] if has_gout else dhb[u]
                    i, f, gg, o = si[u], sf[u], sg[u], so[u]
                    tc = _vtanh(cn[u])
                    c = dcb[u] + g * o * (one - tc * tc)
                    di_[u] = c * gg * i * (one - i)
                    df[u] = c * cp[u] * f * (one - f)
                    dg[u] = c * i * (one - gg * gg)
                    do[u] = g * tc * o * (one - o)
                    dcb[u] = c * f
            else:
                sv = gates[t, b]
                sr, sz, sn, shn = sv[:H], sv[H:2 * H], sv[2 * H:3 * H], sv[3 * H:]
                dr_, dz_, dn_ = di[:H], di[H:2 * H], di[2 * H:]
                dhh = d_hh[t, b]
                er, ez, en = dhh[:H], dhh[H:2 * H], dhh[2 * H:]
                hp = hs[t, b]
                for u in range(H):
                    g = dhb[u] + go[u] if has_gout else dhb[u]
                    r, z, n, hnn = sr[u], sz[u], sn[u], shn[u]
                    dn = g * (one - z) * (one - n * n)
                    dz = g * (hp[u] - n) * z * (one - z)
                    dr = dn * hnn * r * (one - r)
                    dr_[u] = dr
                    dz_[u] = dz
                    dn_[u] = dn
                    er[u] = dr
                    ez[u] = dz
                    en[u] = dn * r
                    dhb[u] = g * z
        if t > 0 or want_dh0:
            if kind == 2:
                _step_gemm(d_hh[t], w_hh3, False, bp, tmp, nob, nt)
                dh += tmp
            else:
                _step_gemm(d_hh[t], w_hh3, False, bp, dh, nob, nt)
    return d_ih, d_hh, dh, dc


# -- adapters ----------------------------------------------------------------------------

_KIND = {"rnn": 0, "lstm": 1, "gru": 2}


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _fwd(kind, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, relu=False):
    sync_threads()
    S, B, I = x.shape
    GH, H = w_hh.shape
    dt = x.dtype
    x, w_ih, w_hh = _c(x), _c(w_ih), _c(w_hh)
    hs = _array.empty((S + 1, B, H), dt)
    hs[0] = 0 if h0 is None else h0
    cs = _array.empty((S + 1, B, H), dt) if kind == "lstm" else np.zeros((1, 1, 1), dt)
    if kind == "lstm":
        cs[0] = 0 if c0 is None else c0
    save = kind != "rnn"
    gates = _array.empty((S, B, 4 * H), dt) if save else np.zeros((1, 1, 1), dt)
    bias = np.zeros(GH, dt)
    bn = np.zeros(H, dt)
    if b_ih is not None:
        bias += b_ih
    if b_hh is not None:
        if kind == "gru":
            bias[:2 * H] += b_hh[:2 * H]
            bn[:] = b_hh[2 * H:]
        else:
            bias += b_hh
    if B and H:
        xw = np.empty((S, B, GH), dt)
        gemm_into(x.reshape(S * B, I), w_ih, xw.reshape(S * B, GH), tb=True, bias=bias)
        _forward(_KIND[kind], relu, xw, w_hh[None], _pack_weight(w_hh, True), bn, hs, cs, gates, save,
                 get_num_threads())
    saved = {"hs": hs}
    if kind == "lstm":
        saved["cs"] = cs
    if save:
        saved["gates"] = gates
    return saved


def _bwd(kind, saved, g_out, g_hn, g_cn, x, w_ih, w_hh, b_ih, b_hh, want, relu=False):
    """want: (dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0)."""
    sync_threads()
    S, B, I = x.shape
    GH, H = w_hh.shape
    dt = x.dtype
    zs = np.zeros((B, H), dt)
    x, w_ih, w_hh = _c(x), _c(w_ih), _c(w_hh)
    d_ih, d_hh, dh, dc = _backward(
        _KIND[kind], relu, w_hh[None], _pack_weight(w_hh, False), saved["hs"],
        saved.get("cs", np.zeros((1, 1, 1), dt)), saved.get("gates", np.zeros((1, 1, 1), dt)),
        np.zeros((1, 1, 1), dt) if g_out is None else _c(g_out), g_out is not None,
        zs if g_hn is None else _c(g_hn), zs if g_cn is None else _c(g_cn),
        bool(want[5] or want[6]), any(want[:5]), get_num_threads())
    d2 = d_ih.reshape(S * B, GH)
    e2 = d_hh.reshape(S * B, GH)
    mm = lambda a, b, shape, ta=False: gemm_into(a, b, _array.empty(shape, dt), ta=ta)  # noqa: E731
    dx = mm(d2, w_ih, (S * B, I)).reshape(S, B, I) if want[0] else None
    dw_ih = mm(d2, x.reshape(S * B, I), (GH, I), ta=True) if want[1] else None
    dw_hh = mm(e2, saved["hs"][:S].reshape(S * B, H), (GH, H), ta=True) if want[2] else None
    db_ih = _colsum(d2) if want[3] and b_ih is not None else None
    db_hh = _colsum(e2) if want[4] and b_hh is not None else None
    return dx, dw_ih, dw_hh, db_ih, db_hh, dh if want[5] else None, dc if want[6] else None


@njit(**_PJIT)
def _colsum(d):
    rows, n = d.shape
    out = np.zeros(n, d.dtype)
    nch = (n + 63) // 64
    for c in prange(nch):
        j0 = c * 64
        j1 = min(n, j0 + 64)
        acc = out[j0:j1]
        for r in range(rows):
            src = d[r, j0:j1]
            for j in range(j1 - j0):
                acc[j] += src[j]
    return out


register_rnn("numba", _fwd, _bwd)
