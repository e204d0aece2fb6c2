"""The numba attention kernels' edges, beyond the conformance suite's small cases: block
boundaries (L, S not multiples of the query/key blocks), L = 1 and S = 1, Sq != Sk with
causal, fully masked rows, NaN, strided inputs, the key-block groups of the backward (dQ
partials), dropout, and agreement with torch (gradients included).

Every check runs the public ops with backend="numba" against the NumPy reference in float64.
"""
import numpy as np
import pytest

pytest.importorskip("numba")

import pydl  # noqa: E402
from pydl import ops  # noqa: E402
from pydl.testing import assert_close  # noqa: E402

sdpa = ops.scaled_dot_product_attention
TOL = {np.float32: (5e-5, 5e-5), np.float64: (1e-10, 1e-11)}


def _rng(seed):
    return np.random.default_rng(seed)


def _qkv(rng, B, H, L, S, D, Dv, dtype=np.float64):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(B, H, L, D), f(B, H, S, D), f(B, H, S, Dv)


def _check(q, k, v, rng, what="", **kw):
    """Forward, saved lse, and backward (saved and recomputed) against the reference."""
    dt = q.dtype.type
    rtol, atol = TOL[dt]
    out, saved = sdpa.with_saved(q, k, v, backend="numba", **kw)
    ref, rsaved = sdpa.with_saved(*(x.astype(np.float64) for x in (q, k, v)), backend="numpy",
                                  **{n: (a.astype(np.float64) if n == "attn_mask" and a is not None and a.dtype != bool
                                         else a) for n, a in kw.items()})
    assert out.dtype == q.dtype
    assert_close(f"{what} out", out, ref, rtol, atol)
    assert_close(f"{what} lse", saved["lse"], rsaved["lse"], rtol, atol)
    g = rng.standard_normal(out.shape).astype(q.dtype)
    rg = ops.scaled_dot_product_attention_backward(
        g.astype(np.float64), *(x.astype(np.float64) for x in (q, k, v)), backend="numpy",
        **{n: (a.astype(np.float64) if n == "attn_mask" and a is not None and a.dtype != bool else a)
           for n, a in kw.items()})
    for label, sv in (("saved", saved), ("recomputed", None)):
        grads = ops.scaled_dot_product_attention_backward(g, q, k, v, saved=sv, backend="numba", **kw)
        for name, o, r in zip(("dq", "dk", "dv", "dmask"), grads, rg):
            if r is None:
                assert o is None, f"{what} {name}: expected None"
                continue
            assert_close(f"{what} {name} ({label})", o, r, 2 * rtol, 2 * atol)
    return out, saved


@pytest.mark.parametrize("L,S", [(65, 129), (1, 130), (130, 1), (64, 128), (1, 1), (127, 63)])
def test_block_boundaries(L, S):
    rng = _rng(L * 1000 + S)
    q, k, v = _qkv(rng, 1, 2, L, S, 8, 5)
    _check(q, k, v, rng, f"L{L} S{S}")


@pytest.mark.parametrize("L,S", [(70, 200), (200, 70), (129, 129), (1, 5), (5, 1)])
def test_causal_sq_ne_sk(L, S):
    rng = _rng(L + 7 * S)
    q, k, v = _qkv(rng, 1, 2, L, S, 6, 4)
    _check(q, k, v, rng, f"causal L{L} S{S}", is_causal=True)


def test_float32_and_threads(threads):
    rng = _rng(3)
    q, k, v = _qkv(rng, 2, 3, 100, 150, 16, 16, np.float32)
    _check(q, k, v, rng, f"float32 {threads} threads", is_causal=True)
    _check(q, k, v, rng, f"float32 {threads} threads")


def test_key_block_groups():
    """B*H = 1: the backward splits the key blocks into groups with dQ partials."""
    rng = _rng(4)
    q, k, v = _qkv(rng, 1, 1, 90, 300, 8, 8)
    _check(q, k, v, rng, "groups")
    _check(q, k, v, rng, "groups causal", is_causal=True)


def test_masks_broadcast():
    rng = _rng(5)
    B, H, L, S = 2, 3, 70, 140
    q, k, v = _qkv(rng, B, H, L, S, 4, 3)
    bm = rng.random((H, 1, S)) < 0.6
    bm[..., 0] = True
    _check(q, k, v, rng, "bool (H,1,S)", attn_mask=bm)
    fm = rng.standard_normal((B, 1, L, 1))
    _check(q, k, v, rng, "float (B,1,L,1)", attn_mask=fm)
    fm = rng.standard_normal((L, S))
    fm[rng.random((L, S)) < 0.3] = -np.inf
    fm[:, 3] = 0.0
    _check(q, k, v, rng, "float (L,S) with -inf", attn_mask=fm)


def test_fully_masked_rows():
    rng = _rng(6)
    q, k, v = _qkv(rng, 1, 2, 70, 140, 4, 3)
    m = rng.random((70, 140)) < 0.5
    m[3] = False
    m[66] = False
    out, saved = _check(q, k, v, rng, "bool full rows", attn_mask=m)
    assert not out[:, :, [3, 66]].any()
    assert np.isposinf(saved["lse"][:, :, [3, 66]]).all()
    fm = np.where(m, 0.5, -np.inf)
    _check(q, k, v, rng, "float full rows", attn_mask=fm)


def test_nan_propagates():
    rng = _rng(7)
    q, k, v = _qkv(rng, 1, 2, 70, 140, 4, 3)
    q[0, 1, 5, 2] = np.nan
    out = sdpa(q, k, v, backend="numba")
    assert np.isnan(out[0, 1, 5]).all()
    ref = sdpa(q, k, v, backend="numpy")
    assert_close("nan out", out, ref, *TOL[np.float64])
    g = rng.standard_normal(out.shape)
    grads = ops.scaled_dot_product_attention_backward(g, q, k, v, backend="numba")
    rg = ops.scaled_dot_product_attention_backward(g, q, k, v, backend="numpy")
    for name, o, r in zip(("dq", "dk", "dv"), grads, rg):
        assert_close(f"nan {name}", o, r, 2e-10, 2e-11)
    # a NaN among otherwise masked scores still makes its row NaN
    m = np.zeros((70, 140), bool)
    m[:, 7] = True
    k[0, 0, 7, 0] = np.nan
    out = sdpa(q, k, v, attn_mask=m, backend="numba")
    assert np.isnan(out[0, 0]).all() and not np.isnan(out[0, 1, 0]).any()


def test_strided_inputs():
    rng = _rng(8)
    q, k, v = _qkv(rng, 2, 4, 80, 150, 6, 10)
    qs, ks = q[:, ::2], k[:, ::2]                     # every other head
    vs = np.asfortranarray(v[:, ::2])[..., ::2]       # and every other column, F order
    _check(qs, ks, vs, rng, "strided")
    m = (rng.random((150, 80)) < 0.7).T[None]         # a transposed mask view
    m[..., 0] = True
    _check(qs, ks, vs, rng, "strided mask", attn_mask=m)


def test_dropout_mask():
    rng = _rng(9)
    q, k, v = _qkv(rng, 1, 2, 70, 140, 4, 3)
    keep = rng.random((1, 2, 70, 140)) < 0.8
    _check(q, k, v, rng, "dropout", dropout_p=0.2, dropout_mask=keep)
    _check(q, k, v, rng, "dropout causal", dropout_p=0.2, dropout_mask=keep, is_causal=True)


def test_loops_variant_agrees():
    rng = _rng(10)
    q, k, v = _qkv(rng, 1, 2, 70, 140, 8, 8)
    a = sdpa(q, k, v, is_causal=True, backend="numba")
    b = sdpa(q, k, v, is_causal=True, backend="numba:loops")
    assert_close("loops", b, a, 1e-12, 1e-13)


def test_mha_self_attention_one_gemm():
    """query is key is value: the packed projection runs as one GEMM; same results."""
    rng = _rng(11)
    B, L, E, nh = 2, 70, 16, 4
    x = rng.standard_normal((B, L, E))
    w = rng.standard_normal((3 * E, E)) / 4
    wo = rng.standard_normal((E, E)) / 4
    bi, bo = rng.standard_normal(3 * E), rng.standard_normal(E)
    mha = ops.multi_head_attention
    out, saved = mha.with_saved(x, x, x, nh, w, wo, bi, bo, is_causal=True, backend="numba")
    ref, rsaved = mha.with_saved(x, x, x, nh, w, wo, bi, bo, is_causal=True, backend="numpy")
    assert_close("mha out", out, ref, 1e-10, 1e-10)
    assert sorted(saved) == sorted(rsaved)
    for n in saved:
        assert_close(f"mha saved {n}", saved[n], rsaved[n], 1e-10, 1e-10)
    g = rng.standard_normal(out.shape)
    got = ops.multi_head_attention_backward(g, x, x, x, nh, w, wo, bi, bo, is_causal=True, saved=saved,
                                            backend="numba")
    exp = ops.multi_head_attention_backward(g, x, x, x, nh, w, wo, bi, bo, is_causal=True, backend="numpy")
    for i, (o, r) in enumerate(zip(got, exp)):
        assert_close(f"mha grad {i}", o, r, 1e-9, 1e-9)


def test_agrees_with_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = _rng(12)
    for kw in (dict(is_causal=True), dict(attn_mask="float"), dict(attn_mask="bool")):
        q, k, v = _qkv(rng, 2, 2, 70, 130, 8, 6, np.float32)
        m = kw.get("attn_mask")
        if m == "float":
            m = rng.standard_normal((70, 130)).astype(np.float32)
        elif m == "bool":
            m = rng.random((2, 1, 70, 130)) < 0.7
            m[..., 0] = True
        causal = kw.get("is_causal", False)
        out, saved = sdpa.with_saved(q, k, v, attn_mask=m, is_causal=causal, backend="numba")
        tq, tk, tv = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
        tm = None if m is None else torch.tensor(m if m.dtype == bool else m.astype(np.float64),
                                                 requires_grad=m.dtype != bool)
        to = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal)
        g = rng.standard_normal(out.shape).astype(np.float32)
        to.backward(torch.tensor(g, dtype=torch.float64))
        assert_close(f"torch {kw} out", out, to.detach().numpy(), 5e-5, 5e-5)
        grads = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=m, is_causal=causal, saved=saved,
                                                          backend="numba")
        want = [tq.grad, tk.grad, tv.grad, tm.grad if tm is not None and tm.requires_grad else None]
        for name, o, w in zip(("dq", "dk", "dv", "dmask"), grads, want):
            if w is None:
                assert o is None
                continue
            assert_close(f"torch {kw} {name}", o, w.numpy(), 1e-4, 1e-4)
