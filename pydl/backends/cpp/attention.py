"""cpp adapters for the attention family: scaled_dot_product_attention (flash-style
kernels in kernels/cpp/attention.cpp) and multi_head_attention (the gemm family's
kernels around them), forward and backward.

The SDPA kernels read q, k, v, out and grad through their (B, H, rows) strides and write
dq, dk, dv through theirs; only a last dimension that is not unit-stride is copied. A
mask is passed as its (B, H, L, S) broadcast view (0 strides, never materialized); its
gradient (a float mask's) is summed by the kernel into an array of the mask's own shape.
Dropout: the kernels take the spec's keep-mask (the normalized ``dropout_mask``), so a
dropout call runs here too (its mask is (B, H, L, S) bytes, as the spec draws it).
Saved: ``out`` and ``lse`` (B, H, L), as the reference (+inf on a fully masked row).

multi_head_attention: the input projection is one (B*L, E) x (E, 3E) GEMM when query,
key and value are one array (self-attention; two when key is value, three otherwise);
the heads are strided views into the projection's columns and SDPA writes its output
straight into the merged (B, L, E) layout (no transposing copies), which feeds the
output projection. The backward writes dq, dk, dv into the merged layout of one
(B*L, 3E) buffer, so the input weight's gradient is one GEMM for self-attention.
Saved as the reference: ``q``, ``k``, ``v`` (head views), ``attn``, ``lse``.
"""
from __future__ import annotations

import numpy as np

from ... import _array, _cpp
from ...ops.attention import default_scale
from ...registry import register
from .._shared import SUFFIX


def _rows(x):
    """x with a unit-stride last dimension and item-aligned strides (a copy only otherwise)."""
    it = x.itemsize
    if x.size == 0:  # any strides at all: fresh ones
        return np.empty(x.shape, x.dtype)
    if (x.shape[-1] > 1 and x.strides[-1] != it) or any(s % it for s in x.strides):
        return np.ascontiguousarray(x)
    return x


def _mask4(m, shape):
    return None if m is None else np.broadcast_to(m, shape)


def _keep(dropout_p, dropout_mask):
    if dropout_mask is None or not dropout_p:
        return None, 0.0
    return np.ascontiguousarray(dropout_mask), float(dropout_p)


def _sdpa_forward(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask, out=None):
    B, H, L, _ = q.shape
    S, Dv = k.shape[2], v.shape[3]
    if out is None:
        out = _array.empty((B, H, L, Dv), q.dtype)
    lse = _array.empty((B, H, L), q.dtype)
    keep, p = _keep(dropout_p, dropout_mask)
    getattr(_cpp, f"attention_sdpa_forward_{SUFFIX[q.dtype]}")(
        _rows(q), _rows(k), _rows(v), _mask4(attn_mask, (B, H, L, S)), bool(is_causal), float(scale),
        keep, p, out, lse)
    return out, lse


def _sdpa_backward(grad, q, k, v, out, lse, attn_mask, is_causal, scale, dropout_p, dropout_mask,
                   want_dmask=True, dq=None, dk=None, dv=None):
    B, H, L, D = q.shape
    S, Dv = k.shape[2], v.shape[3]
    dt = q.dtype
    dq = _array.empty(q.shape, dt) if dq is None else dq
    dk = _array.empty(k.shape, dt) if dk is None else dk
    dv = _array.empty(v.shape, dt) if dv is None else dv
    shape = (B, H, L, S)
    dm = dm4 = None
    m4 = _mask4(attn_mask, shape)
    if attn_mask is not None and attn_mask.dtype.kind == "f" and want_dmask:
        m = np.ascontiguousarray(attn_mask)
        m4 = np.broadcast_to(m, shape)
        dm = np.zeros(m.shape, dt)
        dm4 = np.lib.stride_tricks.as_strided(dm, shape, m4.strides, writeable=True)
    keep, p = _keep(dropout_p, dropout_mask)
    getattr(_cpp, f"attention_sdpa_backward_{SUFFIX[dt]}")(
        _rows(q), _rows(k), _rows(v), _rows(out), _rows(grad), np.ascontiguousarray(lse), m4,
        bool(is_causal), float(scale), keep, p, dq, dk, dv, dm4)
    return dq, dk, dv, dm


@register("scaled_dot_product_attention", "cpp")
def scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, dropout_p=0.0, dropout_mask=None):
    out, lse = _sdpa_forward(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask)
    return out, {"out": out, "lse": lse}


@register("scaled_dot_product_attention_backward", "cpp")
def scaled_dot_product_attention_backward(grad, q, k, v, attn_mask, is_causal, scale, dropout_p=0.0,
                                          dropout_mask=None, saved=None, needs=None):
    if saved is None:
        _, saved = scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask)
    return _sdpa_backward(grad, q, k, v, saved["out"], saved["lse"], attn_mask, is_causal, scale, dropout_p,
                          dropout_mask, want_dmask=needs is None or bool(needs[3]))


# -- multi-head attention ------------------------------------------------------------


def _same(a, b):
    """a and b are the same elements (the same array, or views of the same memory alike)."""
    return a is b or (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
                      and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _linear(x, w, b, out=None):
    """x (R, K) @ w (N, K)^T + b into out (R, N) (new if None)."""
    R, N = x.shape[0], w.shape[0]
    b = None if b is None else np.ascontiguousarray(b)
    if out is None:
        out = _array.empty((R, N), x.dtype)
    if R == 0:
        return out
    if x.shape[1] == 0:
        out[...] = 0 if b is None else b
        return out
    getattr(_cpp, f"gemm_linear_{SUFFIX[x.dtype]}")(x, w, b, "", out)
    return out


def _matmul(a, b, out=None):
    """a (M, K) @ b (K, N) (strided views) into out (C-contiguous, new if None)."""
    if out is None:
        out = _array.empty((a.shape[0], b.shape[1]), a.dtype)
    if 0 in a.shape or 0 in b.shape:
        out[...] = 0
        return out
    getattr(_cpp, f"gemm_matmul_{SUFFIX[a.dtype]}")(a, b, out)
    return out


def _heads(x2, B, n, nh):
    """(B*n, E) rows (any row stride, unit column stride) as (B, nh, n, E/nh) views."""
    hd = x2.shape[1] // nh
    return np.lib.stride_tricks.as_strided(
        x2, (B, nh, n, hd), (n * x2.strides[0], hd * x2.strides[1], x2.strides[0], x2.strides[1]))


def _mha_mask(attn_mask, B, nh):
    """torch MHA's mask (True = masked; (L, S) or (B*nh, L, S)) as SDPA's."""
    if attn_mask is None:
        return None
    m = ~attn_mask if attn_mask.dtype == bool else attn_mask
    return m if m.ndim == 2 else m.reshape((B, nh) + m.shape[1:])


def _project(query, key, value, w, b):
    """The q, k, v projections (B*L, E), (B*S, E), (B*S, E): column slices of one GEMM's
    output when the inputs are one array (two GEMMs when only key and value are)."""
    B, L, E = query.shape
    S = key.shape[1]
    x, xk, xv = query.reshape(B * L, E), key.reshape(B * S, E), value.reshape(B * S, E)
    bs = (None,) * 3 if b is None else (b[:E], b[E:2 * E], b[2 * E:])
    if _same(query, key) and _same(key, value):
        qkv = _linear(x, w, b)
        return qkv[:, :E], qkv[:, E:2 * E], qkv[:, 2 * E:]
    q = _linear(x, w[:E], bs[0])
    if _same(key, value):
        kv = _linear(xk, w[E:], None if b is None else b[E:])
        return q, kv[:, :E], kv[:, E:]
    return q, _linear(xk, w[E:2 * E], bs[1]), _linear(xv, w[2 * E:], bs[2])


@register("multi_head_attention", "cpp")
def multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                         in_proj_bias, out_proj_bias, attn_mask, is_causal):
    B, L, E = query.shape
    S, nh = key.shape[1], num_heads
    query, key, value = (np.ascontiguousarray(t) for t in (query, key, value))
    q2, k2, v2 = _project(query, key, value, in_proj_weight, in_proj_bias)
    q, k, v = _heads(q2, B, L, nh), _heads(k2, B, S, nh), _heads(v2, B, S, nh)
    attn = _array.empty((B, L, E), query.dtype)
    _, lse = _sdpa_forward(q, k, v, _mha_mask(attn_mask, B, nh), is_causal, default_scale(E // nh), 0.0, None,
                           out=_heads(attn.reshape(B * L, E), B, L, nh))
    out = _linear(attn.reshape(B * L, E), out_proj_weight, out_proj_bias).reshape(B, L, E)
    return out, dict(q=q, k=k, v=v, attn=attn, lse=lse)


@register("multi_head_attention_backward", "cpp")
def multi_head_attention_backward(grad, query, key, value, num_heads, in_proj_weight, out_proj_weight,
                                  in_proj_bias, out_proj_bias, attn_mask, is_causal, saved=None, needs=None):
    if saved is None:
        _, saved = multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                                        in_proj_bias, out_proj_bias, attn_mask, is_causal)
    want = (True,) * 7 if needs is None else tuple(bool(n) for n in needs)
    B, L, E = query.shape
    S, nh = key.shape[1], num_heads
    dt = query.dtype
    query, key, value = (np.ascontiguousarray(t) for t in (query, key, value))
    g2 = np.ascontiguousarray(grad).reshape(B * L, E)
    attn2 = saved["attn"].reshape(B * L, E)
    d_out_w = _matmul(g2.T, attn2) if want[4] else None
    d_out_b = g2.sum(axis=0) if out_proj_bias is not None and want[6] else None
    d_attn = _matmul(g2, out_proj_weight)  # (B*L, E), the merged heads
    self_attn = _same(query, key) and _same(key, value)
    if self_attn:  # dq, dk, dv side by side: the input weight's gradient is one GEMM
        dqkv = _array.empty((B * L, 3 * E), dt)
        dq2, dk2, dv2 = dqkv[:, :E], dqkv[:, E:2 * E], dqkv[:, 2 * E:]
    else:
        dq2, dk2, dv2 = _array.empty((B * L, E), dt), _array.empty((B * S, E), dt), _array.empty((B * S, E), dt)
    _sdpa_backward(_heads(d_attn, B, L, nh), saved["q"], saved["k"], saved["v"],
                   _heads(attn2, B, L, nh), saved["lse"], _mha_mask(attn_mask, B, nh), is_causal,
                   default_scale(E // nh), 0.0, None, want_dmask=False,
                   dq=_heads(dq2, B, L, nh), dk=_heads(dk2, B, S, nh), dv=_heads(dv2, B, S, nh))
    ws = (in_proj_weight[:E], in_proj_weight[E:2 * E], in_proj_weight[2 * E:])
    dxs = [(_matmul(d, w).reshape(x.shape) if n else None)
           for d, w, x, n in zip((dq2, dk2, dv2), ws, (query, key, value), want[:3])]
    d_in_w = d_in_b = None
    if want[3]:
        if self_attn:
            d_in_w = _matmul(dqkv.T, query.reshape(B * L, E))
        else:
            d_in_w = _array.empty((3 * E, E), dt)
            for i, (d, x) in enumerate(zip((dq2, dk2, dv2), (query, key, value))):
                _matmul(d.T, x.reshape(-1, E), out=d_in_w[i * E:(i + 1) * E])
    if in_proj_bias is not None and want[5]:
        d_in_b = (dqkv.sum(axis=0) if self_attn
                  else np.concatenate([d.sum(axis=0) for d in (dq2, dk2, dv2)]))
    return (*dxs, d_in_w, d_out_w, d_in_b, d_out_b)
