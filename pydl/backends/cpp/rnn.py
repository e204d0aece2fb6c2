"""cpp adapters for the rnn family: rnn/lstm/gru cells and one-layer sequences,
forward and backward (kernels/cpp/rnn.cpp).

A cell is a sequence of one step: the same kernels with x viewed as (1, B, I).
The forward saves what the reference saves, in the reference's layouts:
``hs`` (T+1, B, H) with h0 first, ``cs`` (T+1, B, H) for the LSTM, and the
activated ``gates`` (T, B, 4H): LSTM [i, f, g, o], GRU [r, z, n, W_hn h + b_hn].
``out`` is ``hs[1:]`` (a view of the saved states, no copy); ``h_n``/``c_n`` are copies.
Backwards take autograd's ``needs`` (one flag per differentiable input): an
unwanted input gradient is not computed (no dx GEMM for a network's input, no
dh0 GEMM at step 0 for a zero initial state, no weight GEMMs for frozen weights).
Cell backwards recompute the forward step (the cell ops save nothing). The op adapters on top of
_forward/_backward are shared with numba: pydl/backends/_rnn_adapters.py.
"""
from __future__ import annotations

from ... import _array, _cpp
from .._rnn_adapters import register_rnn
from .._shared import SUFFIX, contiguous as _c

_KIND = {"rnn": 0, "lstm": 1, "gru": 2}
_G = {"rnn": 1, "lstm": 4, "gru": 3}


def _opt(a):
    return None if a is None else _c(a)


def _forward(kind, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, relu=False):
    S, B, _ = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    hs = _array.empty((S + 1, B, H), dt)
    cs = _array.empty((S + 1, B, H), dt) if kind == "lstm" else None
    gates = _array.empty((S, B, 4 * H), dt) if kind != "rnn" else None
    getattr(_cpp, f"rnn_forward_{SUFFIX[dt]}")(
        _KIND[kind], relu, _c(x), _c(w_ih), _c(w_hh), _opt(b_ih), _opt(b_hh), _opt(h0), _opt(c0),
        hs, cs, gates)
    saved = {"hs": hs}
    if cs is not None:
        saved["cs"] = cs
    if gates is not None:
        saved["gates"] = gates
    return saved


def _backward(kind, saved, g_out, g_hn, g_cn, x, w_ih, w_hh, b_ih, b_hh, want, relu=False):
    """want: (dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0) flags; returns those gradients (None if not wanted)."""
    S, B, I = x.shape
    GH, H = w_hh.shape
    dt = x.dtype
    e = lambda ok, *shape: _array.empty(shape, dt) if ok else None  # noqa: E731
    dx, dw_ih, dw_hh = e(want[0], S, B, I), e(want[1], GH, I), e(want[2], GH, H)
    db_ih, db_hh = e(want[3] and b_ih is not None, GH), e(want[4] and b_hh is not None, GH)
    dh0, dc0 = e(want[5], B, H), e(want[6] and kind == "lstm", B, H)
    getattr(_cpp, f"rnn_backward_{SUFFIX[dt]}")(
        _KIND[kind], relu, _c(x), _c(w_ih), _c(w_hh), saved["hs"], saved.get("cs"), saved.get("gates"),
        _opt(g_out), _opt(g_hn), _opt(g_cn), dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0)
    return dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0


register_rnn("cpp", _forward, _backward)
