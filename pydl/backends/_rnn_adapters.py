"""The rnn family's op adapters, written once for every native backend.

A native backend (cpp, numba) supplies two functions over time-major sequences:

- ``forward(kind, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, relu=False) -> saved``: the dict the
  reference saves (``hs`` (T+1, B, H) with h0 first, ``cs`` for the LSTM, ``gates``);
- ``backward(kind, saved, g_out, g_hn, g_cn, x, w_ih, w_hh, b_ih, b_hh, want, relu=False)``:
  ``(dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0)``, each None unless its flag in ``want`` is set.

``register_rnn(backend, forward, backward)`` registers the six ops and their backwards on them:
the sequences return ``out`` as a view ``hs[1:]`` of the saved states (``h_n``/``c_n`` copies);
a cell is a sequence of one step (x viewed as (1, B, I)) and saves what that sequence saves
(its backward recomputes the step only when called without ``saved``). Backwards honour autograd's ``needs``: no dh0/dc0 for a missing
state, nothing for an input nobody asked about.
"""
from __future__ import annotations

from ..registry import register


def _want(needs, n):
    return (True,) * n if needs is None else tuple(bool(v) for v in needs)


def _x3(x):
    return x.reshape((1,) + x.shape)


def register_rnn(backend: str, forward, backward) -> None:
    """Register rnn/lstm/gru and their cells on ``backend`` from its sequence kernels."""

    # -- sequences -----------------------------------------------------------------------

    @register("rnn", backend)
    def rnn(x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity):
        s = forward("rnn", x, w_ih, w_hh, b_ih, b_hh, h0, relu=nonlinearity == "relu")
        return (s["hs"][1:], s["hs"][-1].copy()), s

    @register("rnn_backward", backend)
    def rnn_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity, saved=None, needs=None):
        relu = nonlinearity == "relu"
        if saved is None:
            saved = forward("rnn", x, w_ih, w_hh, b_ih, b_hh, h0, relu=relu)
        nx, nwi, nwh, nbi, nbh, nh = _want(needs, 6)
        return backward("rnn", saved, grad[0], grad[1], None, x, w_ih, w_hh, b_ih, b_hh,
                        (nx, nwi, nwh, nbi, nbh, nh and h0 is not None, False), relu)[:6]

    @register("lstm", backend)
    def lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
        s = forward("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0)
        return (s["hs"][1:], s["hs"][-1].copy(), s["cs"][-1].copy()), s

    @register("lstm_backward", backend)
    def lstm_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, c0, saved=None, needs=None):
        if saved is None:
            saved = forward("lstm", x, w_ih, w_hh, b_ih, b_hh, h0, c0)
        nx, nwi, nwh, nbi, nbh, nh, nc = _want(needs, 7)
        return backward("lstm", saved, grad[0], grad[1], grad[2], x, w_ih, w_hh, b_ih, b_hh,
                        (nx, nwi, nwh, nbi, nbh, nh and h0 is not None, nc and c0 is not None))

    @register("gru", backend)
    def gru(x, w_ih, w_hh, b_ih, b_hh, h0):
        s = forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0)
        return (s["hs"][1:], s["hs"][-1].copy()), s

    @register("gru_backward", backend)
    def gru_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, saved=None, needs=None):
        if saved is None:
            saved = forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0)
        nx, nwi, nwh, nbi, nbh, nh = _want(needs, 6)
        return backward("gru", saved, grad[0], grad[1], None, x, w_ih, w_hh, b_ih, b_hh,
                        (nx, nwi, nwh, nbi, nbh, nh and h0 is not None, False))[:6]

    # -- cells: one step -------------------------------------------------------------------

    def cell_backward(kind, g_h, g_c, x, h, c, w_ih, w_hh, b_ih, b_hh, needs, saved, relu=False):
        """(dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh) of one step, in the cell ops' order."""
        x3 = _x3(x)
        s = forward(kind, x3, w_ih, w_hh, b_ih, b_hh, h, c, relu=relu) if saved is None else saved
        if kind == "lstm":
            nx, nh, nc, nwi, nwh, nbi, nbh = _want(needs, 7)
        else:
            (nx, nh, nwi, nwh, nbi, nbh), nc = _want(needs, 6), False
        dx, dwi, dwh, dbi, dbh, dh, dc = backward(
            kind, s, None if g_h is None else _x3(g_h), None, g_c, x3, w_ih, w_hh, b_ih, b_hh,
            (nx, nwi, nwh, nbi, nbh, nh and h is not None, nc and c is not None), relu)
        return None if dx is None else dx[0], dh, dc, dwi, dwh, dbi, dbh

    @register("rnn_cell", backend)
    def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
        s = forward("rnn", _x3(x), w_ih, w_hh, b_ih, b_hh, h, relu=nonlinearity == "relu")
        return s["hs"][1], s

    @register("rnn_cell_backward", backend)
    def rnn_cell_backward(grad, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity, saved=None, needs=None):
        dx, dh, _, dwi, dwh, dbi, dbh = cell_backward("rnn", grad, None, x, h, None, w_ih, w_hh, b_ih, b_hh,
                                                      needs, saved, relu=nonlinearity == "relu")
        return dx, dh, dwi, dwh, dbi, dbh

    @register("lstm_cell", backend)
    def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
        s = forward("lstm", _x3(x), w_ih, w_hh, b_ih, b_hh, h, c)
        return (s["hs"][1], s["cs"][1]), s

    @register("lstm_cell_backward", backend)
    def lstm_cell_backward(grad, x, h, c, w_ih, w_hh, b_ih, b_hh, saved=None, needs=None):
        return cell_backward("lstm", grad[0], grad[1], x, h, c, w_ih, w_hh, b_ih, b_hh, needs, saved)

    @register("gru_cell", backend)
    def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
        s = forward("gru", _x3(x), w_ih, w_hh, b_ih, b_hh, h)
        return s["hs"][1], s

    @register("gru_cell_backward", backend)
    def gru_cell_backward(grad, x, h, w_ih, w_hh, b_ih, b_hh, saved=None, needs=None):
        dx, dh, _, dwi, dwh, dbi, dbh = cell_backward("gru", grad, None, x, h, None, w_ih, w_hh, b_ih, b_hh,
                                                      needs, saved)
        return dx, dh, dwi, dwh, dbi, dbh
