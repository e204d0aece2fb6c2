"""NumPy reference: scaled dot-product attention and multi-head attention.

SDPA materialises the (B, H, L, S) scores and saves what a flash-style
backward needs: the output and the log-sum-exp of each query row, from which
the backward rebuilds the probabilities as exp(score - lse) without a second
softmax. MHA is four projections around SDPA, reusing its forward and backward.
"""
import numpy as np

from ...ops.attention import default_scale
from ...registry import register
from .gemm import affine as _affine


def _t(x):
    return np.swapaxes(x, -1, -2)


def _scores(q, k, attn_mask, is_causal, scale):
    """q @ k^T * scale with the mask applied: masked scores are -inf."""
    s = (q @ _t(k)) * q.dtype.type(scale)
    if is_causal:
        L, S = s.shape[-2:]
        attn_mask = np.tril(np.ones((L, S), bool))  # top-left aligned: query i sees keys j <= i
    if attn_mask is None:
        return s
    if attn_mask.dtype == bool:
        return np.where(attn_mask, s, s.dtype.type(-np.inf))
    return s + attn_mask


@register("scaled_dot_product_attention", "numpy")
def scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, dropout_p=0.0, dropout_mask=None):
    s = _scores(q, k, attn_mask, is_causal, scale)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)  # initial: S may be 0
    empty = m == -np.inf  # fully masked row (NaN rows are not: NaN propagates)
    m = np.where(empty, 0, m)
    e = np.exp(s - m)
    total = np.where(empty, 1, e.sum(axis=-1, keepdims=True))
    p = e / total  # a fully masked row has e = 0, so out = 0
    out = _dropped(p, dropout_p, dropout_mask) @ v
    lse = np.where(empty, np.inf, m + np.log(total))[..., 0]  # +inf: exp(s - lse) = 0 there
    return out, {"out": out, "lse": lse}


def _dropped(p, dropout_p, keep):
    """The weights after dropout: kept ones scaled by 1/(1 - p) (all zero at p = 1)."""
    if keep is None:
        return p
    return p * keep * p.dtype.type(1 / (1 - dropout_p) if dropout_p < 1 else 0)


@register("scaled_dot_product_attention_backward", "numpy")
def scaled_dot_product_attention_backward(grad, q, k, v, attn_mask, is_causal, scale, dropout_p=0.0,
                                          dropout_mask=None, saved=None):
    if saved is None:
        _, saved = scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, dropout_p, dropout_mask)
    p = np.exp(_scores(q, k, attn_mask, is_causal, scale) - saved["lse"][..., None])
    dv = _t(_dropped(p, dropout_p, dropout_mask)) @ grad
    dp = _dropped(grad @ _t(v), dropout_p, dropout_mask)
    # softmax backward: sum_j p_j dp_j = sum_d grad_d out_d (one value per row; with dropout
    # out = dropped(p) @ v, and dropped(p) . (grad v^T) = p . dropped(grad v^T))
    delta = (grad * saved["out"]).sum(axis=-1, keepdims=True)
    dscore = p * (dp - delta)  # of the masked scores: a float mask (added after scaling) gets it
    ds = dscore * q.dtype.type(scale)
    dmask = dscore if attn_mask is not None and attn_mask.dtype != bool else None
    if dmask is not None and dmask.shape != attn_mask.shape:  # summed over what it broadcast to
        lead = dmask.ndim - attn_mask.ndim
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(attn_mask.shape)
                                          if n == 1 and dmask.shape[lead + i] != 1)
        dmask = dmask.sum(axis=axes, keepdims=True).reshape(attn_mask.shape)
    return ds @ k, _t(ds) @ q, dv, dmask


# -- multi-head attention ------------------------------------------------------------


def _split_heads(x, nh):
    """(B, L, E) -> (B, nh, L, E/nh)."""
    B, L, E = x.shape
    return x.reshape(B, L, nh, E // nh).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, nh, L, hd) -> (B, L, nh*hd)."""
    B, nh, L, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, L, nh * hd)


def _thirds(a):
    return (None,) * 3 if a is None else np.split(a, 3)


def _sdpa_mask(attn_mask, B, nh):
    """torch MHA's mask (True = masked; (L, S) or (B*nh, L, S)) as SDPA's."""
    if attn_mask is None:
        return None
    m = ~attn_mask if attn_mask.dtype == bool else attn_mask
    return m if m.ndim == 2 else m.reshape((B, nh) + m.shape[1:])


def _sdpa_args(query, num_heads, attn_mask, is_causal):
    return dict(attn_mask=_sdpa_mask(attn_mask, query.shape[0], num_heads), is_causal=is_causal,
                scale=default_scale(query.shape[2] // num_heads))


@register("multi_head_attention", "numpy")
def multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                         in_proj_bias, out_proj_bias, attn_mask, is_causal):
    ws, bs = np.split(in_proj_weight, 3), _thirds(in_proj_bias)
    q, k, v = (_split_heads(_affine(x, w, b), num_heads) for x, w, b in zip((query, key, value), ws, bs))
    o, sv = scaled_dot_product_attention(q, k, v, **_sdpa_args(query, num_heads, attn_mask, is_causal))
    attn = _merge_heads(o)
    return _affine(attn, out_proj_weight, out_proj_bias), dict(q=q, k=k, v=v, attn=attn, lse=sv["lse"])


@register("multi_head_attention_backward", "numpy")
def multi_head_attention_backward(grad, query, key, value, num_heads, in_proj_weight, out_proj_weight,
                                  in_proj_bias, out_proj_bias, attn_mask, is_causal, saved=None):
    if saved is None:
        _, saved = multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                                        in_proj_bias, out_proj_bias, attn_mask, is_causal)
    attn, E = saved["attn"], query.shape[2]
    d_out_w = grad.reshape(-1, E).T @ attn.reshape(-1, E)
    d_out_b = None if out_proj_bias is None else grad.sum(axis=(0, 1))
    d_o = _split_heads(grad @ out_proj_weight, num_heads)
    sdpa_saved = dict(out=_split_heads(attn, num_heads), lse=saved["lse"])
    d_heads = scaled_dot_product_attention_backward(
        d_o, saved["q"], saved["k"], saved["v"], saved=sdpa_saved,
        **_sdpa_args(query, num_heads, attn_mask, is_causal))[:3]
    # each projection y = x @ w.T + b: dx = dy @ w, dw = dy^T x, db = sum dy
    dxs, dws, dbs = [], [], []
    for x, w, dh in zip((query, key, value), np.split(in_proj_weight, 3), d_heads):
        dy = _merge_heads(dh)
        dxs.append(dy @ w)
        dws.append(dy.reshape(-1, E).T @ x.reshape(-1, E))
        dbs.append(dy.sum(axis=(0, 1)))
    d_in_b = None if in_proj_bias is None else np.concatenate(dbs)
    return (*dxs, np.concatenate(dws), d_out_w, d_in_b, d_out_b)
