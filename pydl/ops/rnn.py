"""Recurrent cells (rnn_cell, lstm_cell, gru_cell) and one-layer sequences
(rnn, lstm, gru).

Semantics and weight layouts follow PyTorch: ``w_ih`` is ``(G*H, I)`` and
``w_hh`` is ``(G*H, H)`` with G gates stacked along the rows, biases are
``(G*H,)``; LSTM gates in the order i, f, g, o; GRU gates r, z, n with the
reset gate applied to ``W_hn h + b_hn``::

    rnn:  h' = act(W_ih x + b_ih + W_hh h + b_hh)                  act = tanh | relu
    lstm: i, f, g, o = sig, sig, tanh, sig of (W_ih x + b_ih + W_hh h + b_hh)
          c' = f * c + i * g;  h' = o * tanh(c')
    gru:  r = sig(W_ir x + b_ir + W_hr h + b_hr);  z = sig(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h

A missing state (``h``, ``c``, ``h0``, ``c0`` = None) means zeros and gets
no gradient; a missing bias means no bias.

Deliberate differences from PyTorch:
- Sequences are one layer, one direction, time-major ``(T, B, I)``; states
  are ``(B, H)``, not torch's ``(num_layers, B, H)``; outputs are flat
  tuples ``(out, h_n)`` / ``(out, h_n, c_n)``, not ``(out, (h_n, c_n))``.
  Stack layers and directions by composing calls.
- Cells take batched input only (``(B, I)``, not torch's unbatched ``(I,)``).
- ``T >= 1``, as in torch (an empty sequence has no defined output).

Flops: two GEMMs per step, ``2*B*(I+H)*G*H``, plus the pointwise work, counted
per hidden unit with one flop per add/multiply and exp/tanh as one; a
sigmoid counts 4, as in the elementwise family.
"""
from __future__ import annotations

import numpy as np

from ..registry import BadCase, Case, defop
from . import _checks as ck

# float32: a few GEMMs of length I+H per step, squashed by sigmoid/tanh; the
# error stays near the accumulation error of one step (the gates' slopes
# are <= 1), but the recurrence compounds it over T steps.
TOL = {"float32": (1e-5, 2e-5), "float64": (1e-11, 1e-12)}
# Backward through time sums T per-step weight-gradient GEMMs of length B
# (at T=50, B=16, I=H=256 the LSTM's dw_ih reaches a fifth of the bound).
GRAD_TOL = {"float32": (2e-5, 5e-5), "float64": (1e-10, 1e-11)}

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# Pointwise flops per hidden unit per step (see the module docstring):
# rnn: 3 adds (two biases, two GEMM results) + act;
# lstm: 4 gates x 3 adds + 3 sigmoids x 4 + 2 tanh + c' (3) + h' (1);
# gru: 3 gates x 3 adds + 2 sigmoids x 4 + tanh + r*hn (1) + h' (4).
POINTWISE = {"rnn": 4, "lstm": 30, "gru": 22}
NONLINEARITIES = ("tanh", "relu")


# -- validation --------------------------------------------------------------------


def _gh(G):
    """How G*H reads in messages: "H" for the plain RNN, "4*H" for the LSTM."""
    return "H" if G == 1 else f"{G}*H"


def _arrays(G, x, states, w_ih, w_hh, b_ih, b_hh, x_ndim):
    """Kinds, ranks and dtypes of every array; ``states`` maps names to (B, H) arrays or None."""
    gh = _gh(G)
    x = ck.array("x", x, ndim=x_ndim, layout="(B, I)" if x_ndim == 2 else "(T, B, I)")
    state_layout = "(B, H)" if x_ndim == 2 else "(B, H) (one layer: not torch's (1, B, H))"
    states = {k: ck.optional_array(k, v, ndim=2, layout=state_layout) for k, v in states.items()}
    w_ih = ck.array("w_ih", w_ih, ndim=2, layout=f"({gh}, I)")
    w_hh = ck.array("w_hh", w_hh, ndim=2, layout=f"({gh}, H)")
    b_ih = ck.optional_array("b_ih", b_ih, ndim=1, layout=f"({gh},)")
    b_hh = ck.optional_array("b_hh", b_hh, ndim=1, layout=f"({gh},)")
    ck.same_dtype(x=x, **states, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    return x, states, w_ih, w_hh, b_ih, b_hh


def _shapes(kind, x, states, w_ih, w_hh, b_ih, b_hh):
    """Every shape against H = w_hh.shape[1], I = x.shape[-1], B = x.shape[-2]."""
    G, gh = GATES[kind], _gh(GATES[kind])
    B, I = x.shape[-2:]
    H = w_hh.shape[1]
    ck.shape("w_hh", w_hh, (G * H, H), f"({gh}, H) with H = w_hh.shape[1] = {H}")
    ck.shape("w_ih", w_ih, (G * H, I), f"({gh}, I) with H = {H} from w_hh and I = {I} from x")
    ck.shape("b_ih", b_ih, (G * H,), f"({gh},) with H = {H}")
    ck.shape("b_hh", b_hh, (G * H,), f"({gh},) with H = {H}")
    for name, s in states.items():
        ck.shape(name, s, (B, H), f"(B, H) with B = {B} from x and H = {H} from w_hh")
    T = x.shape[0] if x.ndim == 3 else 1
    # the outputs and what the forward saves for the backward (the gates of every step)
    ck.fits("x, w_hh", (T, B, (G + 2) * H), x.itemsize, "the outputs and saved gates")


def _cell_args(kind, x, states, w_ih, w_hh, b_ih, b_hh):
    x, states, w_ih, w_hh, b_ih, b_hh = _arrays(GATES[kind], x, states, w_ih, w_hh, b_ih, b_hh, 2)
    _shapes(kind, x, states, w_ih, w_hh, b_ih, b_hh)
    return dict(x=x, **states, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)


def _seq_args(kind, x, states, w_ih, w_hh, b_ih, b_hh):
    x, states, w_ih, w_hh, b_ih, b_hh = _arrays(GATES[kind], x, states, w_ih, w_hh, b_ih, b_hh, 3)
    if x.shape[0] < 1:
        raise ValueError(f"x: expected a sequence length T >= 1 in (T, B, I), got shape {tuple(x.shape)}")
    _shapes(kind, x, states, w_ih, w_hh, b_ih, b_hh)
    return dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, **states)


# -- shapes and counts -------------------------------------------------------------


def _dims(a):
    """(T, B, I, H); T = 1 for a cell."""
    x = a["x"]
    T = x.shape[0] if x.ndim == 3 else 1
    return T, x.shape[-2], x.shape[-1], a["w_hh"].shape[1]


def _flops(kind):
    G = GATES[kind]

    def flops(a):
        T, B, I, H = _dims(a)
        return T * (2 * B * (I + H) * G * H + POINTWISE[kind] * B * H)

    return flops


def _cell_shape(a):
    _, B, _, H = _dims(a)
    return (B, H)


def _seq_shape(n_states):
    def shape(a):
        T, B, _, H = _dims(a)
        return ((T, B, H),) + ((B, H),) * n_states

    return shape


# -- cases ---------------------------------------------------------------------------


def _params(rng, dtype, kind, I, H, bias="both"):
    """Weights scaled by 1/sqrt(fan-in), as torch initialises them, so the gates
    are not saturated."""
    G = GATES[kind]

    def u(*shape, fan):
        return (rng.standard_normal(shape) / np.sqrt(fan)).astype(dtype)

    p = dict(w_ih=u(G * H, I, fan=I + H), w_hh=u(G * H, H, fan=I + H))
    p["b_ih"] = u(G * H, fan=2) if bias in ("both", "ih") else None
    p["b_hh"] = u(G * H, fan=2) if bias in ("both", "hh") else None
    return p


def _state(rng, dtype, B, H, given=True):
    return rng.standard_normal((B, H)).astype(dtype) if given else None


# (id, B, I, H, bias, states given)
_CELL_SHAPES = [
    ("b3_i5_h4", 3, 5, 4, "both", True),
    ("b1_i1_h1", 1, 1, 1, "both", True),
    ("b2_i7_h3_nobias", 2, 7, 3, "none", True),
    ("b4_i2_h5_bih_only", 4, 2, 5, "ih", True),
    ("b3_i3_h2_bhh_only", 3, 3, 2, "hh", True),
    ("b5_i4_h3_nostate", 5, 4, 3, "both", False),
    ("b0_i3_h2", 0, 3, 2, "both", True),
]


def _cell_cases(kind, state_names, **params):
    def cases(rng, dtype):
        out = []
        for cid, B, I, H, bias, given in _CELL_SHAPES:
            x = rng.standard_normal((B, I)).astype(dtype)
            states = {k: _state(rng, dtype, B, H, given) for k in state_names}
            out.append(Case(cid, dict(x=x, **states, **_params(rng, dtype, kind, I, H, bias), **params)))
        if len(state_names) == 2:  # lstm: each state missing on its own
            for missing in state_names:
                B, I, H = 3, 4, 2
                x = rng.standard_normal((B, I)).astype(dtype)
                states = {k: _state(rng, dtype, B, H, k != missing) for k in state_names}
                out.append(Case(f"no_{missing}", dict(x=x, **states, **_params(rng, dtype, kind, I, H), **params)))
        return out

    return cases


# (id, T, B, I, H, bias, states given)
_SEQ_SHAPES = [
    ("t5_b3_i4_h3", 5, 3, 4, 3, "both", True),
    ("t1_b1_i1_h1", 1, 1, 1, 1, "both", True),
    ("t4_b2_i3_h5_nobias", 4, 2, 3, 5, "none", True),
    ("t3_b2_i2_h3_bih_only", 3, 2, 2, 3, "ih", True),
    ("t6_b1_i5_h2_nostate", 6, 1, 5, 2, "both", False),
    ("t3_b0_i3_h2", 3, 0, 3, 2, "both", True),
]


def _seq_cases(kind, state_names, **params):
    def cases(rng, dtype):
        out = []
        for cid, T, B, I, H, bias, given in _SEQ_SHAPES:
            x = rng.standard_normal((T, B, I)).astype(dtype)
            states = {k: _state(rng, dtype, B, H, given) for k in state_names}
            out.append(Case(cid, dict(x=x, **_params(rng, dtype, kind, I, H, bias), **states, **params)))
        return out

    return cases


def _with_relu(cases):
    """The tanh cases again with relu; relu's kink at 0 is never hit by random data."""

    def both(rng, dtype):
        out = cases(rng, dtype)
        return out + [Case(c.id + "_relu", dict(c.args, nonlinearity="relu")) for c in cases(rng, dtype)[:4]]

    return both


def _bad(kind, state_names, seq):
    G = GATES[kind]

    def bad(rng):
        T, B, I, H = 3, 2, 4, 3
        f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
        x = f(T, B, I) if seq else f(B, I)
        good = dict(x=x, w_ih=f(G * H, I), w_hh=f(G * H, H), b_ih=f(G * H), b_hh=f(G * H),
                    **{k: f(B, H) for k in state_names})

        def case(cid, exc, match, **wrong):
            return BadCase(cid, dict(good, **wrong), exc, match)

        out = [
            case("x rank", ValueError, "x", x=f(B, I, 1, 1)),
            case("x I mismatch", ValueError, "w_ih", x=f(T, B, I + 1) if seq else f(B, I + 1)),
            case("w_ih rows", ValueError, "w_ih", w_ih=f((G + 1) * H, I)),
            case("w_ih rank", ValueError, "w_ih", w_ih=f(G * H * I)),
            case("w_hh not (G*H, H)", ValueError, "w_hh", w_hh=f(G * H, H + 1)),
            case("w_hh rows", ValueError, "w_hh", w_hh=f(G * H + 1, H)),
            case("b_ih shape", ValueError, "b_ih", b_ih=f(G * H + 1)),
            case("b_hh shape", ValueError, "b_hh", b_hh=f(1, G * H)),
            case("w_hh int", TypeError, "w_hh", w_hh=np.ones((G * H, H), np.int32)),
        ]
        for k in state_names:
            out += [
                case(f"{k} batch mismatch", ValueError, k, **{k: f(B + 1, H)}),
                case(f"{k} H mismatch", ValueError, k, **{k: f(B, H + 1)}),
                case(f"{k} torch layout (1, B, H)", ValueError, k, **{k: f(1, B, H)}),
                case(f"{k} float64", TypeError, k, **{k: np.ones((B, H))}),
            ]
        if seq:
            out.append(case("T = 0", ValueError, "x", x=f(0, B, I)))
        if kind == "rnn":
            out += [case("nonlinearity", ValueError, "nonlinearity", nonlinearity="sigmoid"),
                    case("nonlinearity type", TypeError, "nonlinearity", nonlinearity=None)]
        return out

    return bad


# -- torch oracles -------------------------------------------------------------------


def _zeros_if_none(torch, s, like, H):
    return torch.zeros(like.shape[-2], H, dtype=torch.float64) if s is None else s


def _torch_cell(kind):
    def run(torch, F, a):
        H = a["w_hh"].shape[1]
        h = _zeros_if_none(torch, a["h"], a["x"], H)
        w = (a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
        if kind == "rnn":
            cell = torch.rnn_tanh_cell if a["nonlinearity"] == "tanh" else torch.rnn_relu_cell
            return cell(a["x"], h, *w)
        if kind == "lstm":
            return tuple(torch.lstm_cell(a["x"], (h, _zeros_if_none(torch, a["c"], a["x"], H)), *w))
        return torch.gru_cell(a["x"], h, *w)

    return run


def _torch_seq(kind):
    """torch.nn.RNN/LSTM/GRU with the op's weights swapped in (functional_call)."""

    def run(torch, F, a):
        x = a["x"]
        I, H = x.shape[-1], a["w_hh"].shape[1]
        has_bias = a["b_ih"] is not None or a["b_hh"] is not None
        module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
        extra = dict(nonlinearity=a["nonlinearity"]) if kind == "rnn" else {}
        m = module(I, H, bias=has_bias, dtype=torch.float64, **extra)
        params = dict(weight_ih_l0=a["w_ih"], weight_hh_l0=a["w_hh"])
        if has_bias:  # torch has both biases or neither: a missing one is zeros
            zero = torch.zeros(a["w_hh"].shape[0], dtype=torch.float64)
            params.update(bias_ih_l0=zero if a["b_ih"] is None else a["b_ih"],
                          bias_hh_l0=zero if a["b_hh"] is None else a["b_hh"])
        h0 = _zeros_if_none(torch, a["h0"], x, H)[None]
        if kind == "lstm":
            c0 = _zeros_if_none(torch, a["c0"], x, H)[None]
            out, (h_n, c_n) = torch.func.functional_call(m, params, (x, (h0, c0)))
            return out, h_n[0], c_n[0]
        out, h_n = torch.func.functional_call(m, params, (x, h0))
        return out, h_n[0]

    return run


# -- cells ---------------------------------------------------------------------------



# -- benchmark cases (pydl bench): language-model and speech sizes ----------------


def _cell_bench(kind, state_names, **params):
    """One step: B x I -> B x H (quick: 64 x 512 -> 512; full: also issue 12's B1, and 256 x 1024
    -> 1024)."""

    def bench(rng, dtype, quick=False):
        out = []
        for B, I, H, q in ((64, 512, 512, True), (1, 512, 512, False), (256, 1024, 1024, False))[:1 if quick else 3]:
            states = {k: _state(rng, dtype, B, H) for k in state_names}
            out.append(Case(f"b{B}_i{I}_h{H}", dict(x=rng.standard_normal((B, I)).astype(dtype), **states,
                                                     **_params(rng, dtype, kind, I, H), **params),
                            tags=("quick",) if q else ()))
        return out

    return bench


def _seq_bench(kind, state_names, **params):
    """A sequence: quick T10 B32 I=H=256; full also issue 12's T50 B64 I256 H256 and T200 B16 I128
    H512, and T100 B64 I=H=512 (the cuDNN anchor in PERF.md)."""

    def bench(rng, dtype, quick=False):
        out = []
        shapes = ((10, 32, 256, 256, True), (50, 64, 256, 256, False), (200, 16, 128, 512, False),
                  (100, 64, 512, 512, False))
        for T, B, I, H, q in shapes[:1 if quick else 4]:
            states = {k: _state(rng, dtype, B, H) for k in state_names}
            out.append(Case(f"t{T}_b{B}_i{I}_h{H}", dict(x=rng.standard_normal((T, B, I)).astype(dtype),
                                                          **_params(rng, dtype, kind, I, H), **states, **params),
                            tags=("quick",) if q else ()))
        return out

    return bench


@defop(family="rnn", differentiable=("x", "h", "w_ih", "w_hh", "b_ih", "b_hh"),
       out_shape=_cell_shape, flops=_flops("rnn"), tol=TOL, grad_tol=GRAD_TOL,
       cases=_with_relu(_cell_cases("rnn", ("h",), nonlinearity="tanh")),
       bad_cases=_bad("rnn", ("h",), seq=False), torch=_torch_cell("rnn"), saves=("hs",),
       bench=_cell_bench("rnn", ("h",), nonlinearity="tanh"))
def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One Elman RNN step: ``act(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)``.

    x (B, I), h (B, H) or None (zeros), w_ih (H, I), w_hh (H, H), biases (H,);
    ``nonlinearity`` "tanh" or "relu". Returns h' (B, H).
    """
    a = _cell_args("rnn", x, dict(h=h), w_ih, w_hh, b_ih, b_hh)
    return dict(a, nonlinearity=ck.choice("nonlinearity", nonlinearity, NONLINEARITIES))


@defop(family="rnn", differentiable=("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"),
       out_shape=lambda a: (_cell_shape(a),) * 2, outputs=2, flops=_flops("lstm"),
       tol=TOL, grad_tol=GRAD_TOL, cases=_cell_cases("lstm", ("h", "c")),
       bad_cases=_bad("lstm", ("h", "c"), seq=False), torch=_torch_cell("lstm"),
       saves=("hs", "cs", "gates"), bench=_cell_bench("lstm", ("h", "c")))
def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step; gates i, f, g, o stacked in that order in w_ih (4H, I),
    w_hh (4H, H) and the biases (4H,). h, c (B, H) or None (zeros).
    Returns (h', c')."""
    return _cell_args("lstm", x, dict(h=h, c=c), w_ih, w_hh, b_ih, b_hh)


@defop(family="rnn", differentiable=("x", "h", "w_ih", "w_hh", "b_ih", "b_hh"),
       out_shape=_cell_shape, flops=_flops("gru"), tol=TOL, grad_tol=GRAD_TOL,
       cases=_cell_cases("gru", ("h",)), bad_cases=_bad("gru", ("h",), seq=False),
       torch=_torch_cell("gru"), saves=("hs", "gates"),
       bench=_cell_bench("gru", ("h",)))
def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step; gates r, z, n stacked in that order in w_ih (3H, I),
    w_hh (3H, H) and the biases (3H,); the reset gate multiplies
    ``W_hn h + b_hn``. h (B, H) or None (zeros). Returns h'."""
    return _cell_args("gru", x, dict(h=h), w_ih, w_hh, b_ih, b_hh)


# -- sequences -------------------------------------------------------------------------


@defop(family="rnn", differentiable=("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"),
       out_shape=_seq_shape(1), outputs=2, flops=_flops("rnn"), tol=TOL, grad_tol=GRAD_TOL,
       cases=_with_relu(_seq_cases("rnn", ("h0",), nonlinearity="tanh")),
       bad_cases=_bad("rnn", ("h0",), seq=True), torch=_torch_seq("rnn"), saves=("hs",),
       bench=_seq_bench("rnn", ("h0",), nonlinearity="tanh"))
def rnn(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, nonlinearity="tanh"):
    """A one-layer Elman RNN over a sequence: x (T, B, I), h0 (B, H) or None.

    Returns ``(out, h_n)``: every step's hidden state (T, B, H) and the last
    one (B, H). The reference saves the states ``hs`` (T+1, B, H), h0 first.
    """
    a = _seq_args("rnn", x, dict(h0=h0), w_ih, w_hh, b_ih, b_hh)
    return dict(a, nonlinearity=ck.choice("nonlinearity", nonlinearity, NONLINEARITIES))


@defop(family="rnn", differentiable=("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0"),
       out_shape=_seq_shape(2), outputs=3, flops=_flops("lstm"), tol=TOL, grad_tol=GRAD_TOL,
       cases=_seq_cases("lstm", ("h0", "c0")), bad_cases=_bad("lstm", ("h0", "c0"), seq=True),
       torch=_torch_seq("lstm"), saves=("hs", "cs", "gates"),
       bench=_seq_bench("lstm", ("h0", "c0")))
def lstm(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None):
    """A one-layer LSTM over a sequence: x (T, B, I), h0, c0 (B, H) or None.

    Returns ``(out, h_n, c_n)``. The reference saves the states ``hs``, ``cs``
    (T+1, B, H) and the activated gates (T, B, 4H).
    """
    return _seq_args("lstm", x, dict(h0=h0, c0=c0), w_ih, w_hh, b_ih, b_hh)


@defop(family="rnn", differentiable=("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"),
       out_shape=_seq_shape(1), outputs=2, flops=_flops("gru"), tol=TOL, grad_tol=GRAD_TOL,
       cases=_seq_cases("gru", ("h0",)), bad_cases=_bad("gru", ("h0",), seq=True),
       torch=_torch_seq("gru"), saves=("hs", "gates"),
       bench=_seq_bench("gru", ("h0",)))
def gru(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None):
    """A one-layer GRU over a sequence: x (T, B, I), h0 (B, H) or None.

    Returns ``(out, h_n)``. The reference saves the states ``hs`` (T+1, B, H)
    and per step r, z, n and ``W_hn h + b_hn`` (T, B, 4H).
    """
    return _seq_args("gru", x, dict(h0=h0), w_ih, w_hh, b_ih, b_hh)
