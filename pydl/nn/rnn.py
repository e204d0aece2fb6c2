"""RNN, LSTM, GRU and their cells: torch 2.13's layers on pydl's rnn ops.

Names, constructor arguments, parameter names (``weight_ih_l0``,
``bias_hh_l1_reverse``, ...), shapes and initialisation (every parameter
uniform in +-1/sqrt(hidden_size)) are torch's, so a state_dict moves both ways.

A multi-layer, bidirectional layer is composed from the one-layer,
one-direction sequence ops (``F.rnn`` / ``F.lstm`` / ``F.gru``, time-major
``(T, B, I)``, states ``(B, H)``): the reverse direction runs the op on the
time-flipped input and flips its output back; the directions' outputs are
concatenated on the feature axis and feed the next layer, with dropout
between layers (not after the last) in training mode. States come and go in
torch's ``(num_layers * num_directions, B, H)``.

Differences from torch: no PackedSequence input; LSTM ``proj_size`` is not
supported (NotImplementedError); shape errors are ValueError (torch raises
RuntimeError for some).
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .. import _array
from ..autograd import Tensor, cat, stack
from . import functional as F
from . import init
from ._factory import empty_param as _empty, integer as _int, place as _place
from .module import Module

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# -- helpers -------------------------------------------------------------------------------


def _bool(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} should be of type bool, got: {type(v).__name__}")
    return bool(v)


def _tensor(name, x):
    """A Tensor (an array is wrapped, without a copy)."""
    if isinstance(x, Tensor):
        return x
    if _array.kind(x) is not None:
        return Tensor(x)
    raise TypeError(f"{name}: expected a pydl Tensor or an array, got {type(x).__name__}"
                    + (" (PackedSequence is not supported)" if "Packed" in type(x).__name__ else ""))


# -- multi-layer sequences ------------------------------------------------------------------



def _reset_uniform(m):
    """torch's recurrent init: every parameter uniform(-1/sqrt(H), 1/sqrt(H))."""
    stdv = 1.0 / math.sqrt(m.hidden_size) if m.hidden_size > 0 else 0
    for w in m.parameters():
        init.uniform_(w, -stdv, stdv)

class RNNBase(Module):
    """What RNN, LSTM and GRU share: the parameters, their names and init, the checks,
    and the loop over layers and directions (``forward``)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__()
        if mode not in _GATES:
            raise ValueError(f"Unrecognized RNN mode: {mode}")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability "
                             "of an element being zeroed")
        self.mode = mode
        self.input_size = _int("input_size", input_size, 1)
        self.hidden_size = _int("hidden_size", hidden_size, 1)
        self.num_layers = _int("num_layers", num_layers, 1)
        self.bias = _bool("bias", bias)
        self.batch_first = _bool("batch_first", batch_first)
        self.dropout = float(dropout)
        self.bidirectional = _bool("bidirectional", bidirectional)
        self.proj_size = _int("proj_size", proj_size, 0)
        if self.proj_size:
            raise NotImplementedError("LSTM with proj_size > 0 (projections) is not supported by pydl")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=2)
        G = _GATES[mode]
        D = 2 if self.bidirectional else 1
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.hidden_size * D
            for direction in range(D):
                suffix = "_reverse" if direction == 1 else ""
                shapes = {"weight_ih": (G * hidden_size, layer_input), "weight_hh": (G * hidden_size, hidden_size)}
                if self.bias:
                    shapes.update(bias_ih=(G * hidden_size,), bias_hh=(G * hidden_size,))
                names = []
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{suffix}"
                    setattr(self, name, _empty(shape, dtype))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()
        _place(self, device)

    def reset_parameters(self):
        _reset_uniform(self)

    @property
    def all_weights(self):
        """The parameters per (layer, direction), in torch's order."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def flatten_parameters(self):
        """A no-op, as torch's on the CPU (kept so torch code runs unchanged)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # -- forward -----------------------------------------------------------------------
    def _weights(self, k):
        """(w_ih, w_hh, b_ih, b_hh) of (layer, direction) number k = layer * D + direction."""
        names = self._all_weights[k]
        w = [getattr(self, n) for n in names]
        return (w[0], w[1], w[2], w[3]) if self.bias else (w[0], w[1], None, None)

    def _run(self, x, k, states):
        """Layer-direction k's op on x (T, B, I) from ``states`` (each (B, H) or None);
        returns (out, *final states)."""
        raise NotImplementedError

    def _check_input(self, input, n_states, hx):
        name = type(self).__name__
        input = _tensor("input", input)
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D tensor instead")
        batched = input.ndim == 3
        if hx is not None:
            hx = tuple(_tensor("hx", h) for h in ((hx,) if n_states == 1 else hx))
            if len(hx) != n_states:
                raise ValueError(f"{name}: hx must be a tuple (h_0, c_0), got {len(hx)} tensors")
            want = 3 if batched else 2
            if any(h.ndim != want for h in hx):
                raise ValueError(f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, hx should also be "
                                 f"{want}-D but got {', '.join(f'{h.ndim}-D' for h in hx)} tensor")
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            hx = None if hx is None else tuple(h.unsqueeze(1) for h in hx)
        x = input.transpose(0, 1) if self.batch_first else input  # time-major for the ops
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                             f"got {x.shape[-1]}")
        w = self._flat_weights_names[0]
        if x.dtype != getattr(self, w).dtype:
            raise TypeError(f"{name} input dtype ({x.dtype}) does not match weight dtype "
                            f"({getattr(self, w).dtype}); convert the input or the module (.double(), .float())")
        expected = ((2 if self.bidirectional else 1) * self.num_layers, x.shape[1], self.hidden_size)
        for h in hx or ():
            if h.shape != expected:
                raise ValueError(f"Expected hidden size {expected}, got {list(h.shape)}")
        return x, hx, batched

    def forward(self, input, hx=None):
        n_states = 2 if self.mode == "LSTM" else 1
        x, hx, batched = self._check_input(input, n_states, hx)
        D = 2 if self.bidirectional else 1
        finals = [[] for _ in range(n_states)]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                states = (None,) * n_states if hx is None else tuple(h[k] for h in hx)
                res = self._run(layer_in if d == 0 else layer_in.flip(0), k, states)
                outs.append(res[0] if d == 0 else res[0].flip(0))
                for f, s in zip(finals, res[1:]):
                    f.append(s)
            layer_in = outs[0] if D == 1 else cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, p=self.dropout, training=True)
        output = layer_in.transpose(0, 1) if self.batch_first else layer_in
        finals = [stack(f, 0) for f in finals]
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            finals = [f.squeeze(1) for f in finals]
        return output, (finals[0] if n_states == 1 else tuple(finals))


class RNN(RNNBase):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or relu.

    ``forward(input, hx=None)`` -> ``(output, h_n)``: input (T, B, I) ((B, T, I) with
    ``batch_first``, or unbatched (T, I)), hx (num_layers * D, B, H); output
    (T, B, D * H).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _run(self, x, k, states):
        return F.rnn(x, *self._weights(k), h0=states[0], nonlinearity=self.nonlinearity)


class LSTM(RNNBase):
    """LSTM (gates i, f, g, o). ``forward(input, hx=None)`` -> ``(output, (h_n, c_n))``,
    hx = (h_0, c_0), each (num_layers * D, B, H). ``proj_size`` must be 0."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)

    def _run(self, x, k, states):
        return F.lstm(x, *self._weights(k), h0=states[0], c0=states[1])


class GRU(RNNBase):
    """GRU (gates r, z, n). ``forward(input, hx=None)`` -> ``(output, h_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)

    def _run(self, x, k, states):
        return F.gru(x, *self._weights(k), h0=states[0])


# -- cells ------------------------------------------------------------------------------------


class RNNCellBase(Module):
    """weight_ih (G*H, I), weight_hh (G*H, H), bias_ih and bias_hh (G*H,), all uniform
    in +-1/sqrt(hidden_size)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int, device=None, dtype=None):
        super().__init__()
        self.input_size = _int("input_size", input_size, 1)
        self.hidden_size = _int("hidden_size", hidden_size, 1)
        self.bias = _bool("bias", bias)
        self.weight_ih = _empty((num_chunks * hidden_size, input_size), dtype)
        self.weight_hh = _empty((num_chunks * hidden_size, hidden_size), dtype)
        if bias:
            self.bias_ih = _empty((num_chunks * hidden_size,), dtype)
            self.bias_hh = _empty((num_chunks * hidden_size,), dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        _place(self, device)

    def reset_parameters(self):
        _reset_uniform(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _cell_args(self, input, hx, n_states):
        """input (B, I) or (I,) and hx -> (x (B, I), states (B, H) or None, batched)."""
        name = type(self).__name__
        input = _tensor("input", input)
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if hx is None:
            hx = (None,) * n_states
        else:
            hx = tuple(_tensor("hx", h) for h in ((hx,) if n_states == 1 else hx))
            if len(hx) != n_states:
                raise ValueError(f"{name}: hx must be a tuple (h, c), got {len(hx)} tensors")
            for i, h in enumerate(hx):
                if h.ndim not in (1, 2):
                    raise ValueError(f"{name}: Expected hx[{i}] to be 1D or 2D, got {h.ndim}D instead")
        batched = input.ndim == 2
        if not batched:
            input = input.unsqueeze(0)
            hx = tuple(None if h is None else h.unsqueeze(0) for h in hx)
        return input, hx, batched


class RNNCell(RNNCellBase):
    """One Elman step: ``forward(input, hx=None)`` -> h' (B, H), or (H,) for an unbatched (I,) input."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, (h,), batched = self._cell_args(input, hx, 1)
        out = F.rnn_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                         nonlinearity=self.nonlinearity)
        return out if batched else out.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step: ``forward(input, hx=None)`` with hx = (h, c) -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        x, (h, c), batched = self._cell_args(input, hx, 2)
        h1, c1 = F.lstm_cell(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h1, c1) if batched else (h1.squeeze(0), c1.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step: ``forward(input, hx=None)`` -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        x, (h,), batched = self._cell_args(input, hx, 1)
        out = F.gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return out if batched else out.squeeze(0)
