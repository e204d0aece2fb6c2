"""TransformerEncoderLayer and TransformerEncoder: torch 2.13's, on pydl's layers.

The submodules and their names are torch's (``self_attn``, ``linear1``,
``dropout``, ``linear2``, ``norm1``, ``norm2``, ``dropout1``, ``dropout2``;
``layers.<i>.`` and ``norm`` in the encoder), so a state_dict moves both ways.
The feed-forward block's first Linear and a relu or exact gelu activation run
as one fused ``F.linear(..., activation=)`` op. The encoder's layers are deep
copies of the given layer (``copy.deepcopy``, as torch: they start equal).

Differences from torch: no NestedTensor fast path (``enable_nested_tensor`` and
``mask_check`` are accepted and ignored), so in eval mode under no_grad the
outputs at padded positions are computed like any other position, where
torch's encoder (fast path) returns zeros there; ``is_causal=True`` without
a mask is the causal mask (torch raises; see MultiheadAttention).
"""
from __future__ import annotations

import copy

import numpy as np

from .. import _array
from ..autograd import Tensor
from . import functional as F
from .activation import GELU, ReLU
from .attention import MultiheadAttention
from .dropout import Dropout
from .linear import Linear
from .module import Module, ModuleList
from .normalization import LayerNorm

__all__ = ["TransformerEncoderLayer", "TransformerEncoder"]


def _get_activation_fn(activation: str):
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise ValueError(f"activation should be relu/gelu, not {activation}")


def _fusable(activation):
    """The name of ``activation`` for ``F.linear(..., activation=)``, or None."""
    if activation is F.relu or type(activation) is ReLU:
        return "relu"
    if activation is F.gelu or (type(activation) is GELU and activation.approximate == "none"):
        return "gelu"
    return None


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual connection and a
    LayerNorm (after, or before with ``norm_first``).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``: src
    (S, B, E) ((B, S, E) with ``batch_first``, (S, E) unbatched); the masks as
    MultiheadAttention's ``attn_mask`` and ``key_padding_mask``.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            **factory)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, str):
            activation = _get_activation_fn(activation)
        elif not callable(activation):
            raise TypeError(f"activation should be 'relu', 'gelu' or a callable, got {type(activation).__name__}")
        fused = _fusable(activation)
        self.activation_relu_or_gelu = {"relu": 1, "gelu": 2}.get(fused, 0)
        self.activation = activation

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        fused = _fusable(self.activation) if type(self.linear1) is Linear else None
        if fused:
            h = F.linear(x, self.linear1.weight, self.linear1.bias, activation=fused)
        else:
            h = self.activation(self.linear1(x))
        return self.dropout2(self.linear2(self.dropout(h)))


def _get_clones(module, n):
    return ModuleList([copy.deepcopy(module) for _ in range(n)])


def _detect_is_causal_mask(mask, is_causal=None, size=None) -> bool:
    """``is_causal`` when given; else whether ``mask`` is the (size, size) causal mask
    (bool True above the diagonal, or float -inf above and 0 elsewhere), as torch."""
    if is_causal is not None or mask is None:
        return is_causal is True
    m = mask.data if isinstance(mask, Tensor) else mask
    if _array.kind(m) is None:
        return False
    sz = size if size is not None else m.shape[-2]
    if tuple(m.shape) != (sz, sz):
        return False
    xp = _array.module(m)
    above = xp.triu(xp.ones((sz, sz), bool), 1)
    if m.dtype == bool:
        return bool((m == above).all())
    return bool(((m == -np.inf) == above).all() and (m[~above] == 0).all())


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` in turn, then ``norm`` if given.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``; with
    ``is_causal`` None, a ``mask`` equal to the causal mask is detected as causal.
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        if not isinstance(encoder_layer, Module):
            raise TypeError(f"encoder_layer must be a Module, got {type(encoder_layer).__name__}")
        self.layers = _get_clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = False  # pydl has no nested tensors
        self.mask_check = mask_check

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        first = self.layers[0]
        batch_first = getattr(getattr(first, "self_attn", None), "batch_first", False)
        shape = src.shape
        seq_len = shape[0] if len(shape) == 2 else shape[1 if batch_first else 0]
        is_causal = _detect_is_causal_mask(mask, is_causal, seq_len)
        out = src
        for mod in self.layers:
            out = mod(out, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            out = self.norm(out)
        return out
