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
Cell backwards recompute the forward step (the cell ops save nothing).
"""
from __future__ import annotations

from ... import _array, _cpp
from ...registry import register
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


def _want(needs, n):
    return (True,) * n if needs is None else tuple(bool(v) for v in needs)


# -- sequences ---------------------------------------------------------------------------


@register("rnn", "cpp")
def rnn(x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity):
    s = _forward("rnn", x, w_ih, w_hh, b_ih, b_hh, h0, relu=nonlinearity == "relu")
    hs = s["hs"]
    return (hs[1:], hs[-1].copy()), s


@register("rnn_backward", "cpp")
def rnn_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity, saved=None, needs=None):
    relu = nonlinearity == "relu"
    if saved is None:
        saved = _forward("rnn", x, w_ih, w_hh, b_ih, b_hh, h0, relu=relu)
    nx, nwi, nwh, nbi, nbh, nh = _want(needs, 6)
    dx, dwi, dwh, dbi, dbh, dh0, _ = _backward("rnn", saved, grad[0], grad[1], None, x, w_ih, w_hh, b_ih,
                                               b_hh, (nx, nwi, nwh, nbi, nbh, nh and h0 is not None, False),
                                               relu)
    return dx, dwi, dwh, dbi, dbh, dh0


@register("lstm", "cpp")
def lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
    s = _forward("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    return (s["hs"][1:], s["hs"][-1].copy(), s["cs"][-1].copy()), s


@register("lstm_backward", "cpp")
def lstm_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, c0, saved=None, needs=None):
    if saved is None:
        saved = _forward("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    nx, nwi, nwh, nbi, nbh, nh, nc = _want(needs, 7)
    dx, dwi, dwh, dbi, dbh, dh0, dc0 = _backward(
        "lstm", saved, grad[0], grad[1], grad[2], x, w_ih, w_hh, b_ih, b_hh,
        (nx, nwi, nwh, nbi, nbh, nh and h0 is not None, nc and c0 is not None))
    return dx, dwi, dwh, dbi, dbh, dh0, dc0


@register("gru", "cpp")
def gru(x, w_ih, w_hh, b_ih, b_hh, h0):
    s = _forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0)
    hs = s["hs"]
    return (hs[1:], hs[-1].copy()), s


@register("gru_backward", "cpp")
def gru_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, saved=None, needs=None):
    if saved is None:
        saved = _forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0)
    nx, nwi, nwh, nbi, nbh, nh = _want(needs, 6)
    dx, dwi, dwh, dbi, dbh, dh0, _ = _backward("gru", saved, grad[0], grad[1], None, x, w_ih, w_hh, b_ih,
                                               b_hh, (nx, nwi, nwh, nbi, nbh, nh and h0 is not None, False))
    return dx, dwi, dwh, dbi, dbh, dh0


# -- cells: one step ------------------------------------------------------------------------


def _x3(x):
    return x.reshape((1,) + x.shape)


@register("rnn_cell", "cpp")
def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    return _forward("rnn", _x3(x), w_ih, w_hh, b_ih, b_hh, h, relu=nonlinearity == "relu")["hs"][1]


@register("rnn_cell_backward", "cpp")
def rnn_cell_backward(grad, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity, saved=None, needs=None):
    relu = nonlinearity == "relu"
    x3 = _x3(x)
    s = _forward("rnn", x3, w_ih, w_hh, b_ih, b_hh, h, relu=relu)
    nx, nh, nwi, nwh, nbi, nbh = _want(needs, 6)
    dx, dwi, dwh, dbi, dbh, dh, _ = _backward("rnn", s, _x3(grad), None, None, x3, w_ih, w_hh, b_ih, b_hh,
                                              (nx, nwi, nwh, nbi, nbh, nh and h is not None, False), relu)
    return None if dx is None else dx[0], dh, dwi, dwh, dbi, dbh


@register("lstm_cell", "cpp")
def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    s = _forward("lstm", _x3(x), w_ih, w_hh, b_ih, b_hh, h, c)
    return s["hs"][1], s["cs"][1]


@register("lstm_cell_backward", "cpp")
def lstm_cell_backward(grad, x, h, c, w_ih, w_hh, b_ih, b_hh, saved=None, needs=None):
    x3 = _x3(x)
    s = _forward("lstm", x3, w_ih, w_hh, b_ih, b_hh, h, c)
    nx, nh, nc, nwi, nwh, nbi, nbh = _want(needs, 7)
    g_h, g_c = grad
    dx, dwi, dwh, dbi, dbh, dh, dc = _backward(
        "lstm", s, None if g_h is None else _x3(g_h), None, g_c, x3, w_ih, w_hh, b_ih, b_hh,
        (nx, nwi, nwh, nbi, nbh, nh and h is not None, nc and c is not None))
    return None if dx is None else dx[0], dh, dc, dwi, dwh, dbi, dbh


@register("gru_cell", "cpp")
def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    return _forward("gru", _x3(x), w_ih, w_hh, b_ih, b_hh, h)["hs"][1]


@register("gru_cell_backward", "cpp")
def gru_cell_backward(grad, x, h, w_ih, w_hh, b_ih, b_hh, saved=None, needs=None):
    x3 = _x3(x)
    s = _forward("gru", x3, w_ih, w_hh, b_ih, b_hh, h)
    nx, nh, nwi, nwh, nbi, nbh = _want(needs, 6)
    dx, dwi, dwh, dbi, dbh, dh, _ = _backward("gru", s, _x3(grad), None, None, x3, w_ih, w_hh, b_ih, b_hh,
                                              (nx, nwi, nwh, nbi, nbh, nh and h is not None, False))
    return None if dx is None else dx[0], dh, dwi, dwh, dbi, dbh
