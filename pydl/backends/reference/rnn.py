"""NumPy reference: RNN, LSTM and GRU cells and one-layer sequences.

Each recurrence is written once as a step (forward, and backward from the
step's activations); cells are one step, sequences loop over time. The input
projection ``x @ w_ih.T`` of a whole sequence is one GEMM before the loop,
and the weight gradients are one GEMM over all steps after the backward loop:
only the ``h @ w_hh.T`` recurrence is sequential.
"""
import numpy as np

from ...registry import register
from .elementwise import relu, relu_backward, sigmoid
from .gemm import affine as _affine


def _zeros_if_none(s, x, H):
    return np.zeros(x.shape[:-1] + (H,), x.dtype) if s is None else s


def _cat(*parts):
    return np.concatenate(parts, axis=-1)


def _param_grads(d_ih, d_hh, x, h_prev, b_ih, b_hh):
    """Weight and bias gradients from the pre-activation gradients of every
    step: d_ih (..., G*H) multiplies x (..., I), d_hh multiplies h_prev."""
    GH = d_ih.shape[-1]
    d_ih2, d_hh2 = d_ih.reshape(-1, GH), d_hh.reshape(-1, GH)
    dw_ih = d_ih2.T @ x.reshape(-1, x.shape[-1])
    dw_hh = d_hh2.T @ h_prev.reshape(-1, h_prev.shape[-1])
    db_ih = None if b_ih is None else d_ih2.sum(axis=0)
    db_hh = None if b_hh is None else d_hh2.sum(axis=0)
    return dw_ih, dw_hh, db_ih, db_hh


def _grad_or_zeros(g, like):
    return np.zeros_like(like) if g is None else g


# -- steps -----------------------------------------------------------------------------
# Each *_step takes the input projection xw = x @ w_ih.T + b_ih of one step.


def _rnn_step(xw, h, w_hh, b_hh, nonlinearity):
    pre = xw + _affine(h, w_hh, b_hh)
    return np.tanh(pre) if nonlinearity == "tanh" else relu(pre)


def _rnn_step_backward(dh_new, h_new, nonlinearity):
    """Gradient of the pre-activation (the same for both GEMMs)."""
    if nonlinearity == "tanh":
        return dh_new * (1 - h_new * h_new)
    return relu_backward(dh_new, h_new)[0]  # h_new > 0 exactly where the pre-activation is


def _lstm_step(xw, h, c, w_hh, b_hh):
    """Returns h', c' and the activated gates [i, f, g, o] (B, 4H)."""
    i, f, g, o = np.split(xw + _affine(h, w_hh, b_hh), 4, axis=-1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new, _cat(i, f, g, o)


def _lstm_step_backward(dh_new, dc_new, c, c_new, gates):
    """Returns the gradient of the pre-activation gates (B, 4H) and of c."""
    i, f, g, o = np.split(gates, 4, axis=-1)
    tc = np.tanh(c_new)
    dc_new = dc_new + dh_new * o * (1 - tc * tc)
    d_gates = _cat(dc_new * g * i * (1 - i), dc_new * c * f * (1 - f),
                   dc_new * i * (1 - g * g), dh_new * tc * o * (1 - o))
    return d_gates, dc_new * f


def _gru_step(xw, h, w_hh, b_hh):
    """Returns h' and [r, z, n, W_hn h + b_hn] (B, 4H)."""
    x_r, x_z, x_n = np.split(xw, 3, axis=-1)
    h_r, h_z, h_n = np.split(_affine(h, w_hh, b_hh), 3, axis=-1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, _cat(r, z, n, h_n)


def _gru_step_backward(dh_new, h, acts):
    """Returns the gradients of x @ w_ih.T + b_ih (B, 3H), of h @ w_hh.T + b_hh
    (B, 3H), and the direct part of dh (through z * h)."""
    r, z, n, h_n = np.split(acts, 4, axis=-1)
    dn = dh_new * (1 - z) * (1 - n * n)
    dz = dh_new * (h - n) * z * (1 - z)
    dr = dn * h_n * r * (1 - r)
    return _cat(dr, dz, dn), _cat(dr, dz, dn * r), dh_new * z


# -- cells -----------------------------------------------------------------------------


# A cell saves what a sequence of that one step saves: hs (2, B, H) = [h, h'], for the LSTM
# cs (2, B, H) = [c, c'] and gates (1, B, 4H), for the GRU gates (1, B, 4H) (see the sequences).


@register("rnn_cell", "numpy")
def rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    h = _zeros_if_none(h, x, w_hh.shape[1])
    h_new = _rnn_step(_affine(x, w_ih, b_ih), h, w_hh, b_hh, nonlinearity)
    return h_new, {"hs": np.stack([h, h_new])}


@register("rnn_cell_backward", "numpy")
def rnn_cell_backward(grad, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity, saved=None):
    if saved is None:
        _, saved = rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    h_prev, h_new = saved["hs"]
    d = _rnn_step_backward(grad, h_new, nonlinearity)
    dw_ih, dw_hh, db_ih, db_hh = _param_grads(d, d, x, h_prev, b_ih, b_hh)
    return d @ w_ih, None if h is None else d @ w_hh, dw_ih, dw_hh, db_ih, db_hh


@register("lstm_cell", "numpy")
def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    H = w_hh.shape[1]
    h, c = _zeros_if_none(h, x, H), _zeros_if_none(c, x, H)
    h_new, c_new, gates = _lstm_step(_affine(x, w_ih, b_ih), h, c, w_hh, b_hh)
    return (h_new, c_new), {"hs": np.stack([h, h_new]), "cs": np.stack([c, c_new]), "gates": gates[None]}


@register("lstm_cell_backward", "numpy")
def lstm_cell_backward(grad, x, h, c, w_ih, w_hh, b_ih, b_hh, saved=None):
    if saved is None:
        _, saved = lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    (h_prev, _), (c_prev, c_new), gates = saved["hs"], saved["cs"], saved["gates"][0]
    dh_new, dc_new = (_grad_or_zeros(g, c_new) for g in grad)
    d, dc = _lstm_step_backward(dh_new, dc_new, c_prev, c_new, gates)
    dw_ih, dw_hh, db_ih, db_hh = _param_grads(d, d, x, h_prev, b_ih, b_hh)
    return (d @ w_ih, None if h is None else d @ w_hh, None if c is None else dc,
            dw_ih, dw_hh, db_ih, db_hh)


@register("gru_cell", "numpy")
def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    h = _zeros_if_none(h, x, w_hh.shape[1])
    h_new, acts = _gru_step(_affine(x, w_ih, b_ih), h, w_hh, b_hh)
    return h_new, {"hs": np.stack([h, h_new]), "gates": acts[None]}


@register("gru_cell_backward", "numpy")
def gru_cell_backward(grad, x, h, w_ih, w_hh, b_ih, b_hh, saved=None):
    if saved is None:
        _, saved = gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    h_prev, acts = saved["hs"][0], saved["gates"][0]
    d_ih, d_hh, dh = _gru_step_backward(grad, h_prev, acts)
    dw_ih, dw_hh, db_ih, db_hh = _param_grads(d_ih, d_hh, x, h_prev, b_ih, b_hh)
    return d_ih @ w_ih, None if h is None else dh + d_hh @ w_hh, dw_ih, dw_hh, db_ih, db_hh


# -- sequences -------------------------------------------------------------------------
# x (T, B, I); hs (T+1, B, H) holds h0 first, so hs[t] is step t's input state
# and hs[t + 1] its output.


@register("rnn", "numpy")
def rnn(x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity):
    T = x.shape[0]
    xw = _affine(x, w_ih, b_ih)
    hs = np.empty((T + 1,) + xw.shape[1:], x.dtype)
    hs[0] = _zeros_if_none(h0, x[0], w_hh.shape[1])
    for t in range(T):
        hs[t + 1] = _rnn_step(xw[t], hs[t], w_hh, b_hh, nonlinearity)
    return (hs[1:].copy(), hs[T].copy()), {"hs": hs}


@register("rnn_backward", "numpy")
def rnn_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity, saved=None):
    if saved is None:
        _, saved = rnn(x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity)
    hs = saved["hs"]
    g_out, dh = _grad_or_zeros(grad[0], hs[1:]), _grad_or_zeros(grad[1], hs[0])
    d = np.empty_like(g_out)
    for t in reversed(range(x.shape[0])):
        d[t] = _rnn_step_backward(dh + g_out[t], hs[t + 1], nonlinearity)
        dh = d[t] @ w_hh
    dw_ih, dw_hh, db_ih, db_hh = _param_grads(d, d, x, hs[:-1], b_ih, b_hh)
    return d @ w_ih, dw_ih, dw_hh, db_ih, db_hh, None if h0 is None else dh


@register("lstm", "numpy")
def lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
    T, H = x.shape[0], w_hh.shape[1]
    xw = _affine(x, w_ih, b_ih)
    hs = np.empty((T + 1,) + x.shape[1:-1] + (H,), x.dtype)
    cs = np.empty_like(hs)
    gates = np.empty_like(xw)
    hs[0], cs[0] = _zeros_if_none(h0, x[0], H), _zeros_if_none(c0, x[0], H)
    for t in range(T):
        hs[t + 1], cs[t + 1], gates[t] = _lstm_step(xw[t], hs[t], cs[t], w_hh, b_hh)
    return (hs[1:].copy(), hs[T].copy(), cs[T].copy()), {"hs": hs, "cs": cs, "gates": gates}


@register("lstm_backward", "numpy")
def lstm_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, c0, saved=None):
    if saved is None:
        _, saved = lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    hs, cs, gates = saved["hs"], saved["cs"], saved["gates"]
    g_out = _grad_or_zeros(grad[0], hs[1:])
    dh, dc = _grad_or_zeros(grad[1], hs[0]), _grad_or_zeros(grad[2], cs[0])
    d = np.empty_like(gates)
    for t in reversed(range(x.shape[0])):
        d[t], dc = _lstm_step_backward(dh + g_out[t], dc, cs[t], cs[t + 1], gates[t])
        dh = d[t] @ w_hh
    dw_ih, dw_hh, db_ih, db_hh = _param_grads(d, d, x, hs[:-1], b_ih, b_hh)
    return (d @ w_ih, dw_ih, dw_hh, db_ih, db_hh,
            None if h0 is None else dh, None if c0 is None else dc)


@register("gru", "numpy")
def gru(x, w_ih, w_hh, b_ih, b_hh, h0):
    T, H = x.shape[0], w_hh.shape[1]
    xw = _affine(x, w_ih, b_ih)
    hs = np.empty((T + 1,) + x.shape[1:-1] + (H,), x.dtype)
    acts = np.empty(x.shape[:-1] + (4 * H,), x.dtype)
    hs[0] = _zeros_if_none(h0, x[0], H)
    for t in range(T):
        hs[t + 1], acts[t] = _gru_step(xw[t], hs[t], w_hh, b_hh)
    return (hs[1:].copy(), hs[T].copy()), {"hs": hs, "gates": acts}


@register("gru_backward", "numpy")
def gru_backward(grad, x, w_ih, w_hh, b_ih, b_hh, h0, saved=None):
    if saved is None:
        _, saved = gru(x, w_ih, w_hh, b_ih, b_hh, h0)
    hs, acts = saved["hs"], saved["gates"]
    g_out, dh = _grad_or_zeros(grad[0], hs[1:]), _grad_or_zeros(grad[1], hs[0])
    GH = w_hh.shape[0]
    d_ih = np.empty(x.shape[:-1] + (GH,), x.dtype)
    d_hh = np.empty_like(d_ih)
    for t in reversed(range(x.shape[0])):
        d_ih[t], d_hh[t], dh_direct = _gru_step_backward(dh + g_out[t], hs[t], acts[t])
        dh = dh_direct + d_hh[t] @ w_hh
    dw_ih, dw_hh, db_ih, db_hh = _param_grads(d_ih, d_hh, x, hs[:-1], b_ih, b_hh)
    return d_ih @ w_ih, dw_ih, dw_hh, db_ih, db_hh, None if h0 is None else dh
