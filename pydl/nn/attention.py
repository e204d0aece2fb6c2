"""MultiheadAttention: torch 2.13's layer on pydl's attention ops.

Parameters as torch: ``in_proj_weight`` (3E, E) xavier-uniform and
``in_proj_bias`` (3E,) zeros, or ``q_proj_weight`` / ``k_proj_weight`` /
``v_proj_weight`` when ``kdim`` or ``vdim`` differ from E; ``out_proj`` a
Linear whose bias starts at zero. Masks have torch MHA's meaning: bool True =
may NOT attend, float = added to the scores; ``attn_mask`` is (L, S) or
(B*num_heads, L, S), ``key_padding_mask`` (B, S).

Three paths, one result:
- ``need_weights=False`` without dropout (p = 0 or eval) and without a
  key_padding_mask: the fused ``F.multi_head_attention`` op;
- the same with a key_padding_mask (or separate q/k/v weights): ``F.linear``
  projections around ``F.scaled_dot_product_attention``, the two masks merged
  into one broadcast over the heads (never materialised per head);
- ``need_weights=True``, or attention dropout in training: the weights
  explicitly, ``softmax(q k^T / sqrt(d) + mask)`` with Tensor ops and
  ``F.softmax``, dropout on them with ``F.dropout``; the weights returned are
  averaged over the heads (or per head) after dropout, as torch's.

Differences from torch: ``add_bias_kv`` and ``add_zero_attn`` raise
NotImplementedError; ``is_causal=True`` without ``attn_mask`` is the causal
mask (torch raises: it wants the mask too, is_causal being only a hint);
masks are constants (no gradient flows into a float mask); a float mask of
the other float dtype is cast to the query's; no NestedTensor fast path.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import _array
from ..autograd import Tensor
from . import functional as F
from . import init
from ._factory import empty_param, integer, place
from .linear import Linear
from .module import Module
from .rnn import _bool, _tensor

__all__ = ["MultiheadAttention"]


class NonDynamicallyQuantizableLinear(Linear):
    """torch's name for MultiheadAttention's ``out_proj``: a Linear."""


def _mask(name, m, dtype, shapes):
    """A mask as an array (bool or float of ``dtype``) of one of ``shapes``; None stays None."""
    if m is None:
        return None
    if isinstance(m, Tensor):
        m = m.data
    elif _array.kind(m) is None and hasattr(m, "detach") and hasattr(m, "numpy"):
        m = m.detach().cpu().numpy()  # a torch tensor
    if _array.kind(m) is None:
        raise TypeError(f"{name}: expected a Tensor or an array, got {type(m).__name__}")
    if m.dtype != bool and m.dtype.kind != "f":
        raise TypeError(f"{name}: only bool and floating types of {name} are supported, got {m.dtype}")
    if tuple(m.shape) not in shapes:
        raise ValueError(f"{name}: expected shape {' or '.join(map(str, shapes))}, got {tuple(m.shape)}")
    return m if m.dtype == bool else m.astype(dtype, copy=False)


def _merge_masks(attn_mask, key_padding_mask, B, nh, L, S):
    """torch MHA's two masks as one broadcastable to (B, nh, L, S), in SDPA's meaning:
    bool True = may attend when both are bool, else float (added; a bool one is 0 or -inf)."""
    parts = []
    if attn_mask is not None:
        parts.append(attn_mask.reshape((1, 1, L, S) if attn_mask.ndim == 2 else (B, nh, L, S)))
    if key_padding_mask is not None:
        parts.append(key_padding_mask.reshape(B, 1, 1, S))
    if not parts:
        return None
    if all(p.dtype == bool for p in parts):
        return ~(parts[0] | parts[1]) if len(parts) == 2 else ~parts[0]
    dtype = next(p.dtype for p in parts if p.dtype != bool)
    xp = _array.module(parts[0])
    fl = [xp.where(p, dtype.type(-np.inf), dtype.type(0)) if p.dtype == bool else p for p in parts]
    return fl[0] + fl[1] if len(fl) == 2 else fl[0]


def _same_map(f, q, k, v):
    """(f(q), f(k), f(v)), keeping which of q, k, v are the same Tensor (self-attention)."""
    fq = f(q)
    fk = fq if k is q else f(k)
    fv = fq if v is q else fk if v is k else f(v)
    return fq, fk, fv


def _additive(m, dtype):
    """An SDPA-meaning mask as the float added to the scores."""
    if m is None or m.dtype != bool:
        return m
    return _array.module(m).where(m, dtype.type(0), dtype.type(-np.inf))


class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al.), torch's ``nn.MultiheadAttention``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` ->
    ``(attn_output, attn_weights or None)``; query (L, B, E) ((B, L, E) with
    ``batch_first``, (L, E) unbatched), key (S, B, kdim), value (S, B, vdim).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        embed_dim, num_heads = integer("embed_dim", embed_dim), integer("num_heads", num_heads)
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} "
                             f"and num_heads={num_heads} instead")
        if add_bias_kv:
            raise NotImplementedError("MultiheadAttention: add_bias_kv=True is not supported by pydl")
        if add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_zero_attn=True is not supported by pydl")
        self.embed_dim = embed_dim
        self.kdim = integer("kdim", kdim, 1) if kdim is not None else embed_dim
        self.vdim = integer("vdim", vdim, 1) if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = _bool("batch_first", batch_first)
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError(f"embed_dim must be divisible by num_heads, got embed_dim={embed_dim} "
                             f"and num_heads={num_heads}")
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = empty_param((embed_dim, embed_dim), dtype)
            self.k_proj_weight = empty_param((embed_dim, self.kdim), dtype)
            self.v_proj_weight = empty_param((embed_dim, self.vdim), dtype)
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = empty_param((3 * embed_dim, embed_dim), dtype)
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = empty_param((3 * embed_dim,), dtype)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()
        place(self, device)

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    # -- forward -----------------------------------------------------------------------
    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        q, k, v = _tensor("query", query), _tensor("key", key), _tensor("value", value)
        if q.ndim not in (2, 3):
            raise ValueError(f"query should be unbatched 2D or batched 3D tensor but received {q.ndim}-D query tensor")
        batched = q.ndim == 3
        if k.ndim != q.ndim or v.ndim != q.ndim:
            raise ValueError(f"For {'batched (3-D)' if batched else 'unbatched (2-D)'} `query`, expected `key` and "
                             f"`value` to be {q.ndim}-D but found {k.ndim}-D and {v.ndim}-D tensors respectively")
        if not batched:
            q, k, v = _same_map(lambda t: t.unsqueeze(0), q, k, v)
        elif not self.batch_first:
            q, k, v = _same_map(lambda t: t.transpose(0, 1), q, k, v)
        B, L, E = q.shape
        S = k.shape[1]
        if E != self.embed_dim:
            raise ValueError(f"query: was expecting embedding dimension of {self.embed_dim}, but got {E}")
        if k.shape != (B, S, self.kdim) or v.shape != (B, S, self.vdim):
            raise ValueError(f"key and value: expected (batch {B}, length S, kdim {self.kdim} / vdim {self.vdim}) with "
                             f"one S, got key {k.shape} and value {v.shape} (batch first)")
        nh = self.num_heads
        if key_padding_mask is not None and not batched:
            key_padding_mask = _mask("key_padding_mask", key_padding_mask, q.dtype, [(S,)])[None]
        key_padding_mask = _mask("key_padding_mask", key_padding_mask, q.dtype, [(B, S)])
        attn_mask = _mask("attn_mask", attn_mask, q.dtype, [(L, S), (B * nh, L, S)])
        if (key_padding_mask is not None and attn_mask is not None
                and (key_padding_mask.dtype == bool) != (attn_mask.dtype == bool)):
            warnings.warn("Support for mismatched key_padding_mask and attn_mask is deprecated. "
                          "Use same type for both instead.", stacklevel=3)
        is_causal = _bool("is_causal", is_causal)
        p = float(self.dropout) if self.training else 0.0
        explicit = need_weights or p > 0
        # torch: is_causal is a hint that attn_mask is causal; the fused paths then drop the mask
        causal_flag = is_causal and key_padding_mask is None and not explicit
        if is_causal and attn_mask is None and not causal_flag:
            xp = _array.module(q.data)
            attn_mask = xp.triu(xp.ones((L, S), bool), 1)

        weights = None
        if explicit:
            out, weights = self._explicit(q, k, v, _merge_masks(attn_mask, key_padding_mask, B, nh, L, S), p,
                                          average_attn_weights)
            if not need_weights:
                weights = None
        elif key_padding_mask is None and self._qkv_same_embed_dim:
            out = F.multi_head_attention(q, k, v, nh, self.in_proj_weight, self.out_proj.weight, self.in_proj_bias,
                                         self.out_proj.bias, attn_mask=None if causal_flag else attn_mask,
                                         is_causal=causal_flag)
        else:
            mask = None if causal_flag else _merge_masks(attn_mask, key_padding_mask, B, nh, L, S)
            qh, kh, vh = (t.reshape(B, -1, nh, self.head_dim).transpose(1, 2) for t in self._in_projection(q, k, v))
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=causal_flag)
            out = F.linear(o.transpose(1, 2).reshape(B, L, E), self.out_proj.weight, self.out_proj.bias)

        if not batched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _in_projection(self, q, k, v):
        """q, k, v (B, L|S, E|kdim|vdim) -> their projections (B, L|S, E)."""
        E = self.embed_dim
        b = self.in_proj_bias
        bs = (None,) * 3 if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if q is k and k is v:  # self-attention: one GEMM for the three
                qkv = F.linear(q, w, b)
                return qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]
            ws = (w[:E], w[E:2 * E], w[2 * E:])
        else:
            ws = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        return tuple(F.linear(x, wi, bi) for x, wi, bi in zip((q, k, v), ws, bs))

    def _explicit(self, q, k, v, mask, p, average):
        """The attention weights spelt out: (output (B, L, E), weights (B, [nh,] L, S))."""
        B, L, E = q.shape
        S, nh, hd = k.shape[1], self.num_heads, self.head_dim
        qp, kp, vp = self._in_projection(q, k, v)

        def heads(t, n):  # (B, n, E) -> (B*nh, n, hd)
            return t.reshape(B, n, nh, hd).transpose(1, 2).reshape(B * nh, n, hd)

        scores = (heads(qp, L) * math.sqrt(1.0 / hd)) @ heads(kp, S).transpose(1, 2)  # (B*nh, L, S)
        scores = scores.reshape(B, nh, L, S)
        if mask is not None:
            scores = scores + _additive(mask, q.dtype)
        attn = F.softmax(scores, -1)
        if p > 0:
            attn = F.dropout(attn, p=p, training=True)
        o = attn.reshape(B * nh, L, S) @ heads(vp, S)  # (B*nh, L, hd)
        o = o.reshape(B, nh, L, hd).transpose(1, 2).reshape(B, L, E)
        out = F.linear(o, self.out_proj.weight, self.out_proj.bias)
        return out, (attn.mean(1) if average else attn)
