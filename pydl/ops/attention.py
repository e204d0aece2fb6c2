"""Scaled dot-product attention and multi-head attention.

``scaled_dot_product_attention`` follows ``F.scaled_dot_product_attention``::

    q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv) -> out (B, H, L, Dv)
    scores = q @ k^T * scale  (+ float mask | bool mask: False -> -inf | causal)
    out = softmax(scores, dim=-1) @ v

A bool ``attn_mask`` is True where a query may attend (torch's SDPA meaning);
a float one is added to the scores (and differentiated, as in torch); either
broadcasts to (B, H, L, S). The kernels see that 4-D form: other ranks of
q, k, v (3-D, mixed) broadcast their leading dimensions into it (views where
possible), ``enable_gqa`` repeats the k/v heads (the gradients summed back),
and ``dropout_p`` drops attention weights with an explicit keep-mask (drawn
from ``seed`` like ``pydl.ops.dropout``'s, or given as ``dropout_mask``).
``is_causal`` masks above the top-left-aligned diagonal (query i sees keys
j <= i, torch's rule, also when L != S).

``multi_head_attention`` follows ``nn.MultiheadAttention(batch_first=True)``:
packed ``in_proj_weight`` (3E, E) holding the q, k, v projections in that
order, ``out_proj_weight`` (E, E), ``num_heads`` heads of E / num_heads.
Its ``attn_mask`` has torch MHA's meaning and shapes, which differ from
SDPA's: (L, S) or (B*num_heads, L, S), and a bool True means "may NOT attend".

Fully masked rows (every key masked) give an output of zeros and zero
gradients, as torch (2.5+) does in every SDPA backend; the naive softmax
would give NaN. NaN in the inputs still propagates.

Deliberate differences from PyTorch:
- ``dropout_p`` > 0 needs ``seed`` (or ``dropout_mask``): forward and
  backward must see one mask (``pydl.nn.functional`` draws the seed).
- ``attn_mask`` with ``is_causal`` is a ValueError in both ops (torch MHA
  treats is_causal as a hint that *requires* the causal attn_mask; pydl's
  is_causal alone is the causal mask). MHA has no key_padding_mask (pass a
  (B*num_heads, L, S) attn_mask), no add_zero_attn/bias_k/bias_v, no
  separate q/k/v projection weights, and returns the output only (no
  averaged attention weights).
- The flash-style saved ``lse`` (log-sum-exp per query row) is +inf for a
  fully masked row, so that ``exp(score - lse)`` is 0 there.

Flops: SDPA counts its two GEMMs, ``2*B*H*L*S*(D + Dv)``, plus 5 per score
(scale, mask, subtract max, exp, divide); MHA adds its four projections.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _array
from ..registry import BadCase, Case, Viewed, defop
from . import _checks as ck

# float32: dot products of length D, then a softmax-weighted sum of length S;
# exp of scores of size ~|q||k|*scale loses a few ulp of their magnitude.
# At B=2, H=4, L=S=512, D=64 the float32 reference and torch both stay under
# 7% of these bounds (forward and gradients).
TOL = {"float32": (1e-5, 1e-5), "float64": (1e-11, 1e-12)}
# Gradients sum over L (dk, dv) or S (dq) on top of the forward's error.
GRAD_TOL = {"float32": (2e-5, 2e-5), "float64": (1e-10, 1e-11)}
# MHA: four projections of length E around SDPA; the weight gradients sum
# over B*L rows (at B=4, L=128, E=256 they reach a third of the bound).
MHA_TOL = {"float32": (5e-5, 5e-5), "float64": (1e-10, 1e-11)}
MHA_GRAD_TOL = {"float32": (1e-4, 1e-4), "float64": (1e-10, 1e-10)}

MASK_DTYPES = ("bool",) + ck.FLOAT_DTYPES


def default_scale(D: int) -> float:
    """1/sqrt(D), torch's default. With D = 0 every score is 0 whatever the
    scale, so any finite value gives torch's result: pydl uses 1."""
    return 1.0 / math.sqrt(D) if D > 0 else 1.0


def _random_bool_mask(rng, shape, full_row=False):
    """A random "may attend" mask (SDPA's meaning): every row keeps key 0,
    except row 1 when ``full_row`` (a fully masked row)."""
    m = rng.random(shape) < 0.7
    m[..., 0] = True
    if full_row:
        m[..., 1, :] = False
    return m


def _random_float_mask(rng, dtype, shape):
    """A random additive mask with some -inf; key 0 always finite."""
    m = rng.standard_normal(shape).astype(dtype)
    m[rng.random(shape) < 0.2] = -np.inf
    m[..., 0] = 0.5
    return m


def _float_mask(m):
    return m if m is not None and m.dtype.kind == "f" else None


def _broadcastable(shape, target):
    return len(shape) <= len(target) and all(
        d == 1 or d == t for d, t in zip(shape[::-1], target[::-1]))


def _causal_flag(is_causal, attn_mask):
    is_causal = ck.boolean("is_causal", is_causal)
    if is_causal and attn_mask is not None:
        raise ValueError("is_causal: expected False when attn_mask is given (pass one or the "
                         "other; is_causal=True is the causal mask), got True")
    return is_causal


# -- scaled_dot_product_attention ---------------------------------------------------


def _sdpa_shape(a):
    B, H, L, _ = a["q"].shape
    return (B, H, L, a["v"].shape[3])


def _sdpa_flops(a):
    B, H, L, D = a["q"].shape
    S, Dv = a["k"].shape[2], a["v"].shape[3]
    return 2 * B * H * L * S * (D + Dv) + 5 * B * H * L * S


def _sdpa_cases(rng, dtype):
    def qkv(B, H, L, S, D, Dv):
        f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
        return dict(q=f(B, H, L, D), k=f(B, H, S, D), v=f(B, H, S, Dv))

    def bool_mask(*shape, full_row=False):
        return _random_bool_mask(rng, shape, full_row)

    def float_mask(*shape):
        return _random_float_mask(rng, dtype, shape)

    return [
        Case("b2_h3_l5_s7_d4_dv3", qkv(2, 3, 5, 7, 4, 3)),
        Case("b1_h1_l1_s1_d1", qkv(1, 1, 1, 1, 1, 1)),
        Case("l7_s3_d5_dv6", qkv(1, 2, 7, 3, 5, 6)),
        Case("scale", dict(qkv(2, 1, 4, 6, 3, 2), scale=0.3)),
        Case("causal_l4_s6", dict(qkv(2, 2, 4, 6, 3, 5), is_causal=True)),
        Case("causal_l6_s4", dict(qkv(1, 2, 6, 4, 3, 2), is_causal=True)),
        Case("causal_scale", dict(qkv(1, 1, 5, 5, 2, 3), is_causal=True, scale=-0.7)),
        Case("bool_mask_ls", dict(qkv(2, 2, 3, 5, 4, 2), attn_mask=bool_mask(3, 5))),
        Case("bool_mask_b1ls", dict(qkv(2, 3, 4, 5, 2, 3), attn_mask=bool_mask(2, 1, 4, 5))),
        Case("bool_mask_1h1s", dict(qkv(2, 3, 4, 5, 2, 3), attn_mask=bool_mask(1, 3, 1, 5))),
        Case("bool_mask_full_row", dict(qkv(2, 2, 4, 5, 3, 2), attn_mask=bool_mask(2, 2, 4, 5, full_row=True))),
        Case("float_mask_ls", dict(qkv(2, 2, 3, 5, 4, 2), attn_mask=float_mask(3, 5))),
        Case("float_mask_bh1s", dict(qkv(2, 3, 4, 5, 2, 3), attn_mask=float_mask(2, 3, 1, 5))),
        Case("float_mask_1s", dict(qkv(1, 2, 3, 6, 2, 2), attn_mask=float_mask(1, 6), scale=0.9)),
        Case("b0", qkv(0, 2, 3, 5, 4, 2)),
        Case("b0_causal", dict(qkv(0, 2, 3, 5, 4, 2), is_causal=True)),
    ]


def _sdpa_bad(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    good = dict(q=f(2, 3, 4, 5), k=f(2, 3, 6, 5), v=f(2, 3, 6, 2))

    def case(cid, exc, match, **wrong):
        return BadCase(cid, dict(good, **wrong), exc, match)

    return [
        case("q 1-D", ValueError, "q", q=f(5)),
        case("k 5-D not broadcasting", ValueError, "k", k=f(1, 4, 3, 6, 5)),
        case("k D mismatch", ValueError, "k", k=f(2, 3, 6, 4)),
        case("k batch mismatch", ValueError, "k", k=f(3, 3, 6, 5)),
        case("k heads mismatch (no GQA)", ValueError, "k", k=f(2, 2, 6, 5)),
        case("k heads not dividing q's (GQA)", ValueError, "k", k=f(2, 2, 6, 5), v=f(2, 2, 6, 2), enable_gqa=True),
        case("dropout without seed", ValueError, "seed", dropout_p=0.5),
        case("dropout_p > 1", ValueError, "dropout_p", dropout_p=1.5, seed=1),
        case("v S mismatch", ValueError, "v", v=f(2, 3, 5, 2)),
        case("v heads mismatch", ValueError, "v", v=f(2, 2, 6, 2)),
        case("mask int", TypeError, "attn_mask", attn_mask=np.ones((4, 6), np.int32)),
        case("mask float64", TypeError, "attn_mask", attn_mask=np.zeros((4, 6))),
        case("mask list", TypeError, "attn_mask", attn_mask=[[True] * 6] * 4),
        case("mask shape", ValueError, "attn_mask", attn_mask=np.ones((4, 5), bool)),
        case("mask 5-D", ValueError, "attn_mask", attn_mask=np.ones((1, 2, 3, 4, 6), bool)),
        case("mask 1-D", ValueError, "attn_mask", attn_mask=np.ones((5,), bool)),
        case("mask and causal", ValueError, "is_causal", attn_mask=np.ones((4, 6), bool), is_causal=True),
        case("is_causal type", TypeError, "is_causal", is_causal="yes"),
        case("scale type", TypeError, "scale", scale="0.5"),
        case("scale inf", ValueError, "scale", scale=float("inf")),
    ]


def _sdpa_torch(torch, F, a):
    return F.scaled_dot_product_attention(a["q"], a["k"], a["v"], attn_mask=a["attn_mask"],
                                          is_causal=a["is_causal"], scale=a["scale"])


def _scale(scale, D):
    if scale is None:
        return default_scale(D)
    scale = ck.real("scale", scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    return scale



# -- benchmark cases (pydl bench): transformer layers -------------------------------


def _sdpa_bench(rng, dtype, quick=False):
    """B x heads x S x D: the quick case, then issue 12's shapes, causal and not (B4 H8 S512,
    B1 H8 S2048, B1 H4 S8192, D64). The reference materializes B*H*S*S scores: 2 GiB in
    float64 at S=8192 (a few such arrays at its peak), which the flash kernels never do."""
    def c(B, H, S, D, quick=False, **kw):
        f = lambda: rng.standard_normal((B, H, S, D)).astype(dtype)  # noqa: E731
        return Case(f"b{B}_h{H}_s{S}_d{D}" + ("_causal" if kw.get("is_causal") else ""),
                    dict(q=f(), k=f(), v=f(), **kw), tags=("quick",) if quick else ())

    if quick:
        return [c(2, 8, 256, 64, quick=True)]
    return [c(2, 8, 256, 64, quick=True)] + [c(B, H, S, 64, is_causal=causal) for B, H, S in
                                             ((4, 8, 512), (1, 8, 2048), (1, 4, 8192)) for causal in (False, True)]


def _mha_bench(rng, dtype, quick=False):
    def c(B, L, E, nh, quick=False):
        f = lambda *s, scale=1.0: (rng.standard_normal(s) * scale).astype(dtype)  # noqa: E731
        w = 1 / np.sqrt(E)
        return Case(f"b{B}_l{L}_e{E}_h{nh}", dict(query=f(B, L, E), key=f(B, L, E), value=f(B, L, E), num_heads=nh,
                                                  in_proj_weight=f(3 * E, E, scale=w), out_proj_weight=f(E, E, scale=w),
                                                  in_proj_bias=f(3 * E, scale=0.5), out_proj_bias=f(E, scale=0.5)),
                    tags=("quick",) if quick else ())

    return [c(2, 128, 256, 4, quick=True)] + ([] if quick else [c(4, 512, 768, 12)])


@defop(family="attention", differentiable=("q", "k", "v", "attn_mask"), out_shape=_sdpa_shape,
       flops=_sdpa_flops, tol=TOL, grad_tol=GRAD_TOL, cases=_sdpa_cases, bad_cases=_sdpa_bad,
       torch=_sdpa_torch, saves=("out", "lse"), bench=_sdpa_bench,
       # a bool mask has no gradient (None), which finite differences cannot skip per case;
       # a float mask's gradient is checked against torch (testing.torch_check, test_opinfo)
       fd_skip=("attn_mask",))
def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, seed=None, dropout_mask=None):
    """softmax(q @ k^T * scale + mask) @ v over the last two dimensions, with
    ``F.scaled_dot_product_attention``'s signature.

    q (..., L, D), k (..., S, D), v (..., S, Dv) -> (..., L, Dv); the leading
    dimensions broadcast (the kernels see (B, H, L, D): 4-D inputs with equal
    B and H pass through as they are). ``attn_mask``: bool (True = may attend)
    or float (added, and differentiated), broadcastable to (..., L, S);
    ``is_causal``: query i attends keys j <= i; ``scale``: None = 1/sqrt(D).
    ``dropout_p`` > 0 drops attention weights with pydl's explicit seed: the
    keep-mask is ``pydl.ops.elementwise.dropout_mask(seed, (B, H, L, S), p)``
    (as ``pydl.ops.dropout``), so forward and backward agree; or pass the
    keep-mask itself, ``dropout_mask`` (bool, (B, H, L, S) or the output's
    leading dimensions + (L, S)), as the normalized arguments carry it.
    ``enable_gqa``: k and v may have fewer heads (dimension -3), each shared by
    H_q / H_kv query heads (torch's grouped-query attention). A fully masked
    row gives zeros. The reference saves ``out`` and ``lse`` (B, H, L).
    """
    if (type(q) is np.ndarray and q.ndim == 4 and type(k) is np.ndarray and k.ndim == 4
            and type(v) is np.ndarray and v.ndim == 4 and q.shape[:2] == k.shape[:2] == v.shape[:2]
            and not dropout_p and enable_gqa is False and seed is None and dropout_mask is None):
        return _sdpa_4d(q, k, v, attn_mask, is_causal, scale)  # the common case
    q = ck.array("q", q, min_ndim=2, layout="(..., L, D)")
    k = ck.array("k", k, min_ndim=2, layout="(..., S, D)")
    v = ck.array("v", v, min_ndim=2, layout="(..., S, Dv)")
    enable_gqa = ck.boolean("enable_gqa", enable_gqa)
    dropout_p = ck.real("dropout_p", dropout_p, 0.0, 1.0)
    shapes = tuple(tuple(x.shape) for x in (q, k, v))
    xp = _array.module(q)
    rep = 1
    if enable_gqa and k.ndim >= 3 and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        if k.shape[-3] == 0 or q.shape[-3] % k.shape[-3] or v.ndim < 3 or v.shape[-3] != k.shape[-3]:
            raise ValueError(f"k: with enable_gqa, k and v need a head count (dimension -3) dividing "
                             f"q's {q.shape[-3]}, got k {shapes[1]} and v {shapes[2]}")
        rep = q.shape[-3] // k.shape[-3]
        k, v = xp.repeat(k, rep, axis=-3), xp.repeat(v, rep, axis=-3)
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"k: leading (batch, head) dimensions of q {shapes[0]}, k {shapes[1]} and "
                         f"v {shapes[2]} do not broadcast (enable_gqa=True shares k/v heads)") from None
    L, S = q.shape[-2], k.shape[-2]
    if attn_mask is not None:
        attn_mask = ck.array("attn_mask", attn_mask, dtypes=MASK_DTYPES, min_ndim=1)
        if not _broadcastable(attn_mask.shape, batch + (L, S)):
            raise ValueError(f"attn_mask: expected a shape broadcastable to {batch + (L, S)}, "
                             f"got {tuple(attn_mask.shape)}")
    mask_shape = None if attn_mask is None else tuple(attn_mask.shape)

    def four(x, tail):
        """x broadcast to batch + tail, as (B, H) + tail: a view unless it must be materialized."""
        if x.shape[:-2] != batch:
            x = xp.broadcast_to(x, batch + tail)
        if len(batch) <= 2:
            return x.reshape((1,) * (2 - len(batch)) + x.shape)
        return x.reshape((-1, batch[-1]) + tail)

    q4, k4, v4 = four(q, q.shape[-2:]), four(k, k.shape[-2:]), four(v, v.shape[-2:])
    m4 = attn_mask
    if attn_mask is not None and len(batch) > 2:
        m4 = xp.broadcast_to(attn_mask, batch + (L, S)).reshape((-1, batch[-1], L, S))
    a = _sdpa_4d(q4, k4, v4, m4, is_causal, scale)
    if seed is not None:
        seed = ck.integer("seed", seed, min=0, max=(1 << 64) - 1)
    weights = a["q"].shape[:3] + (S,)
    if dropout_p > 0:
        if (seed is None) == (dropout_mask is None):
            raise ValueError("seed: dropout_p > 0 needs seed= (an int >= 0; the keep-mask is drawn "
                             "from it, so forward and backward agree) or dropout_mask=, not both")
        if dropout_mask is None:
            from .elementwise import dropout_mask as draw
            dropout_mask = draw(seed, weights, dropout_p, xp)
        else:
            dropout_mask = ck.array("dropout_mask", dropout_mask, dtypes=("bool",))
            if dropout_mask.size != int(np.prod(weights)) or tuple(dropout_mask.shape) not in (
                    weights, batch + (L, S)):
                raise ValueError(f"dropout_mask: expected shape {weights} (or {batch + (L, S)}), "
                                 f"got {tuple(dropout_mask.shape)}")
            dropout_mask = dropout_mask.reshape(weights)
        a["dropout_p"], a["dropout_mask"] = dropout_p, dropout_mask
    if a["q"].shape == shapes[0] and a["k"].shape == shapes[1] and a["v"].shape == shapes[2] and m4 is attn_mask:
        return a
    out_shape = batch + (L, v.shape[-1])

    def grads(res):
        dq, dk, dv, dm = res
        dq = ck.sum_to(dq.reshape(batch + dq.shape[-2:]), shapes[0])
        dk, dv = (ck.sum_to(d.reshape(batch + d.shape[-2:]), x.shape) for d, x in ((dk, k), (dv, v)))
        if rep > 1:  # each k/v head served rep query heads
            dk, dv = (d.reshape(d.shape[:-3] + (d.shape[-3] // rep, rep) + d.shape[-2:]).sum(axis=-3)
                      for d in (dk, dv))
        dk, dv = dk.reshape(shapes[1]), dv.reshape(shapes[2])
        if dm is not None:
            dm = ck.sum_to(dm.reshape(batch + (L, S)) if dm.shape != mask_shape else dm, mask_shape)
        return dq, dk, dv, dm

    def grad(g):
        return g.reshape(a["q"].shape[:3] + (v.shape[-1],)) if getattr(g, "shape", None) == out_shape else g

    return Viewed(a, out=lambda o, saved: o.reshape(out_shape), grad=grad, grads=grads)


def _sdpa_4d(q, k, v, attn_mask, is_causal, scale):
    """The kernels' form: q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv), the mask 2-D to
    4-D broadcastable to (B, H, L, S)."""
    q = ck.array("q", q, ndim=4, layout="(B, H, L, D)")
    k = ck.array("k", k, ndim=4, layout="(B, H, S, D)")
    v = ck.array("v", v, ndim=4, layout="(B, H, S, Dv)")
    attn_mask = ck.optional_array("attn_mask", attn_mask, ndim=(1, 2, 3, 4), dtypes=MASK_DTYPES,
                                  layout="broadcastable to (B, H, L, S)")
    ck.same_dtype(q=q, k=k, v=v, attn_mask=_float_mask(attn_mask))
    B, H, L, D = q.shape
    S = k.shape[2]
    ck.shape("k", k, (B, H, S, D), "(B, H, S, D) with B, H, D from q")
    ck.shape("v", v, (B, H, S, v.shape[3]), "(B, H, S, Dv) with B, H from q and S from k")
    if attn_mask is not None and not _broadcastable(attn_mask.shape, (B, H, L, S)):
        raise ValueError(f"attn_mask: expected a shape broadcastable to (B, H, L, S) = "
                         f"{(B, H, L, S)}, got {tuple(attn_mask.shape)}")
    is_causal = _causal_flag(is_causal, attn_mask)
    return dict(q=q, k=k, v=v, attn_mask=attn_mask, is_causal=is_causal, scale=_scale(scale, D),
                dropout_p=0.0, dropout_mask=None)


# -- multi_head_attention ------------------------------------------------------------


def _mha_shape(a):
    return a["query"].shape


def _mha_flops(a):
    B, L, E = a["query"].shape
    S, nh = a["key"].shape[1], a["num_heads"]
    proj = 2 * B * (2 * L + 2 * S) * E * E  # q and out over L rows, k and v over S rows
    return proj + 2 * B * L * S * 2 * E + 5 * B * nh * L * S


def _mha_cases(rng, dtype):
    def args(B, L, S, E, nh, in_bias=True, out_bias=True, self_attn=False, **kw):
        f = lambda *s, scale=1.0: (rng.standard_normal(s) * scale).astype(dtype)  # noqa: E731
        query = f(B, L, E)
        key = query.copy() if self_attn else f(B, S, E)
        value = query.copy() if self_attn else f(B, S, E)
        w = 1 / np.sqrt(E)
        return dict(query=query, key=key, value=value, num_heads=nh,
                    in_proj_weight=f(3 * E, E, scale=w), out_proj_weight=f(E, E, scale=w),
                    in_proj_bias=f(3 * E, scale=0.5) if in_bias else None,
                    out_proj_bias=f(E, scale=0.5) if out_bias else None, **kw)

    def bool_mask(*shape, full_row=False):
        return ~_random_bool_mask(rng, shape, full_row)  # torch MHA: True = masked out

    def float_mask(*shape):
        return _random_float_mask(rng, dtype, shape)

    return [
        Case("b2_l3_s5_e6_h2", args(2, 3, 5, 6, 2)),
        Case("b1_l1_s1_e1_h1", args(1, 1, 1, 1, 1)),
        Case("self_l4_e4_h4_nobias", args(2, 4, 4, 4, 4, in_bias=False, out_bias=False, self_attn=True)),
        Case("l5_s2_e6_h3_in_bias_only", args(1, 5, 2, 6, 3, out_bias=False)),
        Case("causal_l4_s3", args(2, 4, 3, 4, 2, is_causal=True)),
        Case("bool_mask_ls", args(2, 3, 5, 4, 2, attn_mask=bool_mask(3, 5))),
        Case("bool_mask_bhls_full_row", args(2, 3, 4, 6, 3, attn_mask=bool_mask(2 * 3, 3, 4, full_row=True))),
        Case("float_mask_ls", args(1, 3, 4, 6, 2, attn_mask=float_mask(3, 4))),
        Case("float_mask_bhls", args(2, 2, 3, 4, 2, attn_mask=float_mask(2 * 2, 2, 3))),
        Case("b0", args(0, 3, 4, 6, 2)),
    ]


def _mha_bad(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    B, L, S, E, nh = 2, 3, 5, 6, 2
    good = dict(query=f(B, L, E), key=f(B, S, E), value=f(B, S, E), num_heads=nh,
                in_proj_weight=f(3 * E, E), out_proj_weight=f(E, E),
                in_proj_bias=f(3 * E), out_proj_bias=f(E))

    def case(cid, exc, match, **wrong):
        return BadCase(cid, dict(good, **wrong), exc, match)

    return [
        case("query 2-D", ValueError, "query", query=f(L, E)),
        case("query (L, B, E) 4-D", ValueError, "query", query=f(1, B, L, E)),
        case("key E mismatch", ValueError, "key", key=f(B, S, E + 1)),
        case("key batch mismatch", ValueError, "key", key=f(B + 1, S, E)),
        case("value S mismatch", ValueError, "value", value=f(B, S + 1, E)),
        case("num_heads not a divisor", ValueError, "num_heads", num_heads=4),
        case("num_heads 0", ValueError, "num_heads", num_heads=0),
        case("num_heads float", TypeError, "num_heads", num_heads=2.0),
        case("in_proj_weight (2E, E)", ValueError, "in_proj_weight", in_proj_weight=f(2 * E, E)),
        case("in_proj_weight 1-D", ValueError, "in_proj_weight", in_proj_weight=f(3 * E * E)),
        case("out_proj_weight", ValueError, "out_proj_weight", out_proj_weight=f(E, E + 1)),
        case("in_proj_bias", ValueError, "in_proj_bias", in_proj_bias=f(E)),
        case("out_proj_bias", ValueError, "out_proj_bias", out_proj_bias=f(3 * E)),
        case("mask (L, S+1)", ValueError, "attn_mask", attn_mask=np.ones((L, S + 1), bool)),
        case("mask (B, L, S)", ValueError, "attn_mask", attn_mask=np.ones((B, L, S), bool)),
        case("mask 4-D", ValueError, "attn_mask", attn_mask=np.ones((B, nh, L, S), bool)),
        case("mask int", TypeError, "attn_mask", attn_mask=np.ones((L, S), np.int64)),
        case("mask float64", TypeError, "attn_mask", attn_mask=np.zeros((L, S))),
        case("mask and causal", ValueError, "is_causal", attn_mask=np.ones((L, S), bool), is_causal=True),
        case("is_causal type", TypeError, "is_causal", is_causal=1),
    ]


def _mha_torch(torch, F, a):
    query, key, value = (a[n].transpose(0, 1) for n in ("query", "key", "value"))
    L, B, E = query.shape
    mask = a["attn_mask"]
    if a["is_causal"]:  # torch's is_causal is only a hint: it wants the mask too
        mask = torch.ones(L, key.shape[0], dtype=torch.bool).triu(1)
    out, _ = F.multi_head_attention_forward(
        query, key, value, E, a["num_heads"], a["in_proj_weight"], a["in_proj_bias"],
        None, None, False, 0.0, a["out_proj_weight"], a["out_proj_bias"],
        training=False, need_weights=False, attn_mask=mask, is_causal=a["is_causal"])
    return out.transpose(0, 1)


@defop(family="attention",
       differentiable=("query", "key", "value", "in_proj_weight", "out_proj_weight",
                       "in_proj_bias", "out_proj_bias"),
       out_shape=_mha_shape, flops=_mha_flops, tol=MHA_TOL, grad_tol=MHA_GRAD_TOL,
       cases=_mha_cases, bad_cases=_mha_bad, torch=_mha_torch,
       saves=("q", "k", "v", "attn", "lse"),
       bench=_mha_bench)
def multi_head_attention(query, key, value, num_heads, in_proj_weight, out_proj_weight,
                         in_proj_bias=None, out_proj_bias=None, attn_mask=None, is_causal=False):
    """nn.MultiheadAttention(batch_first=True) forward, output only.

    query (B, L, E), key and value (B, S, E); in_proj_weight (3E, E) with the
    q, k, v rows in that order, in_proj_bias (3E,), out_proj_weight (E, E),
    out_proj_bias (E,); E divisible by num_heads. ``attn_mask`` as torch MHA:
    (L, S) or (B*num_heads, L, S), bool True = may NOT attend, or float
    (added). Returns (B, L, E). The reference saves the projected heads
    ``q``, ``k``, ``v`` (B, nh, L|S, E/nh), the merged attention output
    ``attn`` (B, L, E) and SDPA's ``lse``.
    """
    query = ck.array("query", query, ndim=3, layout="(B, L, E) (batch first)")
    key = ck.array("key", key, ndim=3, layout="(B, S, E) (batch first)")
    value = ck.array("value", value, ndim=3, layout="(B, S, E) (batch first)")
    in_proj_weight = ck.array("in_proj_weight", in_proj_weight, ndim=2, layout="(3E, E)")
    out_proj_weight = ck.array("out_proj_weight", out_proj_weight, ndim=2, layout="(E, E)")
    in_proj_bias = ck.optional_array("in_proj_bias", in_proj_bias, ndim=1, layout="(3E,)")
    out_proj_bias = ck.optional_array("out_proj_bias", out_proj_bias, ndim=1, layout="(E,)")
    attn_mask = ck.optional_array("attn_mask", attn_mask, ndim=(2, 3), dtypes=MASK_DTYPES,
                                  layout="(L, S) or (B*num_heads, L, S)")
    ck.same_dtype(query=query, key=key, value=value, in_proj_weight=in_proj_weight,
                  out_proj_weight=out_proj_weight, in_proj_bias=in_proj_bias,
                  out_proj_bias=out_proj_bias, attn_mask=_float_mask(attn_mask))
    num_heads = ck.integer("num_heads", num_heads, min=1)
    B, L, E = query.shape
    S = key.shape[1]
    if E % num_heads:
        raise ValueError(f"num_heads: expected a divisor of the embedding size E = {E}, got {num_heads}")
    ck.shape("key", key, (B, S, E), "(B, S, E) with B, E from query")
    ck.shape("value", value, (B, S, E), "(B, S, E) with B, E from query and S from key")
    ck.shape("in_proj_weight", in_proj_weight, (3 * E, E), f"(3E, E) with E = {E}")
    ck.shape("out_proj_weight", out_proj_weight, (E, E), f"(E, E) with E = {E}")
    ck.shape("in_proj_bias", in_proj_bias, (3 * E,), f"(3E,) with E = {E}")
    ck.shape("out_proj_bias", out_proj_bias, (E,), f"(E,) with E = {E}")
    if attn_mask is not None and not (
            attn_mask.shape[-2:] == (L, S) and (attn_mask.ndim == 2 or attn_mask.shape[0] == B * num_heads)):
        raise ValueError(f"attn_mask: expected shape (L, S) = {(L, S)} or (B*num_heads, L, S) = "
                         f"{(B * num_heads, L, S)}, got {tuple(attn_mask.shape)}")
    is_causal = _causal_flag(is_causal, attn_mask)
    return dict(query=query, key=key, value=value, num_heads=num_heads,
                in_proj_weight=in_proj_weight, out_proj_weight=out_proj_weight,
                in_proj_bias=in_proj_bias, out_proj_bias=out_proj_bias,
                attn_mask=attn_mask, is_causal=is_causal)
