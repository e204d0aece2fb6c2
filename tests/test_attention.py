"""Attention edge cases beyond the registry's conformance cases (which stay within one
block): sequences crossing the cpp kernels' query and key blocks, L = 1, S = 1, Sq != Sk
with and without causal, head dims that are not a multiple of any vector width, fully
masked rows, broadcast bool and float masks (and the float mask's gradient), dropout,
NaN, strided and non-contiguous q/k/v, float64, 1 and 2 threads, every compiled SIMD
level, PyTorch's ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``
(gradients included), and the flash kernels' memory: O(S*D), never the L x S scores.

Each native backend is checked against the float64 NumPy reference within the spec's
tolerances; outputs are poisoned first (pydl.testing.run_forward/run_backward), and the
backward runs both from the forward's ``saved`` and recomputing.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pydl
from pydl import registry
from pydl.testing import assert_close, copy_args, run_backward, run_forward

SDPA = registry.SPECS["scaled_dot_product_attention"]
MHA = registry.SPECS["multi_head_attention"]
BACKENDS = [b for b in ("cpp", "numba") if b in SDPA.implementations()]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no native attention backend is available")


@pytest.fixture
def small_blocks():
    """The cpp kernels with small query/key blocks, so that small cases cross many of them."""
    from pydl import _cpp
    _cpp.attention_tuning(16, 32, 16, 24)
    yield
    _cpp.attention_tuning()


def _qkv(B, H, L, S, D, Dv, dtype, seed=0, **kw):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return dict(q=f(B, H, L, D), k=f(B, H, S, D), v=f(B, H, S, Dv), **kw)


def _check(args, backend, dtype, spec=SDPA, seed=1):
    name = np.dtype(dtype).name
    rtol, atol = spec.tol[name]
    grtol, gatol = spec.grad_tol[name]
    with np.errstate(all="ignore"):
        ref, ref_saved = spec.with_saved(**copy_args(args, np.float64), backend="numpy")
    out, saved = run_forward(spec, args, backend, saved=True)
    assert out.dtype == np.dtype(dtype)
    assert_close(f"{spec.name}/{backend} out", out, ref, rtol, atol)
    if spec is SDPA:
        assert_close(f"{spec.name}/{backend} lse", saved["lse"], ref_saved["lse"], rtol, atol)
    g = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    with np.errstate(all="ignore"):
        ref_g = spec.backward(g.astype(np.float64), **copy_args(args, np.float64), backend="numpy")
    for sv in (saved, None):
        got = run_backward(spec, g, args, backend, saved=sv)
        for wrt, o, r in zip(spec.differentiable, got, ref_g):
            if r is None:
                assert o is None, wrt
                continue
            assert o.shape == r.shape and o.dtype == np.dtype(dtype), wrt
            assert_close(f"{spec.name}/{backend} d{wrt} (saved={sv is not None})", o, r, grtol, gatol)


SHAPES = [  # B, H, L, S, D, Dv, extra
    (1, 2, 70, 150, 33, 17, {}),
    (2, 1, 70, 150, 19, 40, {"is_causal": True}),
    (1, 2, 150, 70, 5, 3, {"is_causal": True}),
    (1, 1, 1, 97, 64, 64, {}),
    (1, 1, 1, 97, 64, 64, {"is_causal": True}),
    (1, 2, 45, 1, 8, 8, {}),
    (1, 2, 45, 1, 8, 8, {"is_causal": True}),
    (2, 3, 33, 33, 128, 32, {"is_causal": True, "scale": 0.3}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_h{}_l{}_s{}_d{}_dv{}".format(*s[:6]) + "".join(
    f"_{k}" for k in s[6]))
def test_blocks(backend, dtype, shape, small_blocks, threads):
    B, H, L, S, D, Dv, kw = shape
    _check(_qkv(B, H, L, S, D, Dv, dtype, **kw), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_blocks_long(backend, threads):
    """Default block sizes, S across several key blocks, L across query blocks."""
    _check(_qkv(1, 2, 200, 300, 64, 64, "float32", is_causal=True), backend, "float32")
    _check(_qkv(1, 2, 130, 260, 48, 64, "float32"), backend, "float32")


def _bool(rng, shape, full_rows=()):
    m = rng.random(shape) < 0.6
    m[..., 0] = True
    for r in full_rows:
        m[..., r, :] = False
    return m


def _float(rng, shape, dtype):
    m = rng.standard_normal(shape).astype(dtype)
    m[rng.random(shape) < 0.2] = -np.inf
    m[..., 0] = 0.25
    return m


MASKS = [(37, 50), (2, 1, 37, 50), (1, 3, 1, 50), (1, 3, 37, 1), (2, 3, 37, 50), (50,)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("mshape", MASKS, ids=str)
def test_masks(backend, kind, mshape, small_blocks, threads):
    rng = np.random.default_rng(7)
    dtype = "float32"
    if kind == "bool":
        m = _bool(rng, mshape, full_rows=(3, 30) if len(mshape) > 1 and mshape[-2] > 1 else ())
    else:
        m = _float(rng, mshape, dtype)
        if len(mshape) > 1 and mshape[-2] > 1:
            m[..., 5, :] = -np.inf  # a fully masked row
    _check(_qkv(2, 3, 37, 50, 12, 7, dtype, attn_mask=m), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_rows_give_zeros(backend, small_blocks):
    rng = np.random.default_rng(3)
    a = _qkv(1, 2, 40, 50, 16, 16, "float32", attn_mask=_bool(rng, (40, 50), full_rows=(0, 17, 39)))
    (out, saved) = SDPA.with_saved(**a, backend=backend)
    assert np.all(out[:, :, [0, 17, 39]] == 0)
    assert np.all(np.isposinf(saved["lse"][:, :, [0, 17, 39]]))
    dq, dk, dv, _ = SDPA.backward(np.ones_like(out), **a, saved=saved, backend=backend)
    assert np.all(dq[:, :, [0, 17, 39]] == 0) and np.isfinite(dk).all() and np.isfinite(dv).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout(backend, small_blocks):
    for p in (0.3, 1.0):
        a = dict(_qkv(2, 2, 40, 55, 12, 9, "float32"), dropout_p=p, seed=123)
        _check(a, backend, "float32")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_propagates(backend, where, small_blocks):
    a = _qkv(1, 2, 40, 60, 16, 8, "float32")
    a[where][0, 1, 5, 3] = np.nan
    _check(a, backend, "float32")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strided_inputs(backend, dtype, small_blocks, threads):
    rng = np.random.default_rng(5)
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    # (B, L, H, D) storage seen as (B, H, L, D); a last dimension with stride 2; a negative stride
    q = f(2, 40, 3, 24).transpose(0, 2, 1, 3)
    k = f(2, 3, 50, 48)[..., ::2]
    v = f(2, 3, 50, 10)[:, ::-1]
    _check(dict(q=q, k=k, v=v, is_causal=True), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_simd_levels(backend, small_blocks):
    if backend != "cpp":
        pytest.skip("SIMD levels are the cpp backend's")
    from pydl import _cpp
    order = ["scalar", "avx2", "avx512"]
    before = _cpp.simd_level()
    try:
        for level in order[: order.index(_cpp.compiled_simd()) + 1]:
            _cpp.set_simd_level(level)
            for dtype in ("float32", "float64"):
                rng = np.random.default_rng(2)
                _check(_qkv(2, 2, 37, 45, 21, 13, dtype, attn_mask=_float(rng, (37, 45), dtype)), backend, dtype)
                _check(_qkv(1, 2, 45, 37, 16, 19, dtype, is_causal=True), backend, dtype)
    finally:
        _cpp.set_simd_level(before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tiles", [1, 2], ids=["gemm_hpp", "own_tiles"])
def test_tile_products(backend, tiles):
    """Both tile products (gemm.hpp's, the kernel's register tiles) give the reference's results."""
    if backend != "cpp":
        pytest.skip("cpp development control")
    from pydl import _cpp
    _cpp.attention_tuning(32, 48, 32, 40, tiles)
    try:
        for dtype in ("float32", "float64"):
            _check(_qkv(1, 2, 70, 100, 24, 16, dtype, is_causal=True), backend, dtype)
            _check(_qkv(2, 1, 40, 90, 64, 64, dtype), backend, dtype)
    finally:
        _cpp.attention_tuning()


def test_native_checks():
    from pydl import _cpp
    q = np.zeros((1, 1, 4, 8), np.float32)
    out, lse = np.empty((1, 1, 4, 8), np.float32), np.empty((1, 1, 4), np.float32)
    with pytest.raises(ValueError, match="k: expected shape"):
        _cpp.attention_sdpa_forward_f32(q, q[:, :, :, :4], q, None, False, 1.0, None, 0.0, out, lse)
    with pytest.raises(ValueError, match="lse"):
        _cpp.attention_sdpa_forward_f32(q, q, q, None, False, 1.0, None, 0.0, out, lse[..., :2])
    with pytest.raises(ValueError, match="attn_mask"):
        _cpp.attention_sdpa_forward_f32(q, q, q, np.ones((1, 1, 4, 3), bool), False, 1.0, None, 0.0, out, lse)
    with pytest.raises(ValueError, match="attn_mask"):
        _cpp.attention_sdpa_forward_f32(q, q, q, np.ones((1, 1, 4, 4), np.int32), False, 1.0, None, 0.0, out, lse)
    with pytest.raises(ValueError, match="dropout_p"):
        _cpp.attention_sdpa_forward_f32(q, q, q, None, False, 1.0, None, 2.0, out, lse)
    with pytest.raises(ValueError, match="attention_tuning"):
        _cpp.attention_tuning(-1)


# -- multi_head_attention -------------------------------------------------------------


def _mha_args(B, L, S, E, nh, dtype, seed=0, self_attn=False, bias=True, **kw):
    rng = np.random.default_rng(seed)
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(dtype)  # noqa: E731
    query = f(B, L, E)
    key = query if self_attn else f(B, S, E)
    value = query if self_attn else f(B, S, E)
    w = 1 / np.sqrt(E)
    return dict(query=query, key=key, value=value, num_heads=nh, in_proj_weight=f(3 * E, E, sc=w),
                out_proj_weight=f(E, E, sc=w), in_proj_bias=f(3 * E, sc=0.5) if bias else None,
                out_proj_bias=f(E, sc=0.5) if bias else None, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mha(backend, dtype, small_blocks, threads):
    rng = np.random.default_rng(9)
    _check(_mha_args(2, 40, 40, 48, 4, dtype, self_attn=True), backend, dtype, MHA)
    _check(_mha_args(2, 40, 40, 48, 4, dtype, self_attn=True, bias=False, is_causal=True), backend, dtype, MHA)
    _check(_mha_args(2, 33, 50, 24, 3, dtype, attn_mask=~_bool(rng, (2 * 3, 33, 50), (4,))), backend, dtype, MHA)
    kv = _mha_args(1, 20, 30, 16, 2, dtype)
    kv["value"] = kv["key"]
    _check(kv, backend, dtype, MHA)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mha_needs(backend):
    """Autograd's needs: only the wanted gradients are computed, and they are right."""
    a = _mha_args(2, 20, 20, 16, 2, "float32", self_attn=True)
    bound = MHA.bind((), copy_args(a))
    g = np.random.default_rng(1).standard_normal((2, 20, 16)).astype(np.float32)
    full = MHA.call_backward(g, bound, backend=backend)
    part = MHA.call_backward(g, bound, backend=backend, needs=(False, False, False, True, True, False, False))
    for i in (3, 4):
        np.testing.assert_allclose(part[i], full[i], rtol=1e-6, atol=1e-6)


# -- PyTorch ----------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", [{}, {"is_causal": True}, {"mask": "float"}, {"mask": "bool"}], ids=str)
def test_torch_sdpa(backend, kw, small_blocks):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    a = _qkv(2, 3, 45, 70, 32, 16, "float64", is_causal=kw.get("is_causal", False))
    if kw.get("mask") == "float":
        a["attn_mask"] = _float(rng, (2, 1, 45, 70), "float64")
    elif kw.get("mask") == "bool":
        a["attn_mask"] = _bool(rng, (45, 70))
    out, saved = SDPA.with_saved(**a, backend=backend)
    g = rng.standard_normal(out.shape)
    grads = SDPA.backward(g, **a, saved=saved, backend=backend)
    t = {n: torch.tensor(a[n], requires_grad=True) for n in ("q", "k", "v")}
    tm = None
    if "attn_mask" in a:
        tm = torch.tensor(a["attn_mask"], requires_grad=a["attn_mask"].dtype != bool)
    with torch.no_grad():
        pass
    to = F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=tm, is_causal=a["is_causal"])
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(out, to.detach().numpy(), rtol=1e-10, atol=1e-10)
    for n, d in zip(("q", "k", "v"), grads):
        np.testing.assert_allclose(d, t[n].grad.numpy(), rtol=1e-9, atol=1e-9, err_msg=n)
    if tm is not None and tm.requires_grad:
        np.testing.assert_allclose(grads[3], tm.grad.numpy(), rtol=1e-9, atol=1e-9, err_msg="mask")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("self_attn", [True, False])
def test_torch_mha(backend, self_attn):
    torch = _torch()
    E, nh = 32, 4
    a = _mha_args(2, 25, 25 if self_attn else 31, E, nh, "float64", seed=6, self_attn=self_attn)
    m = torch.nn.MultiheadAttention(E, nh, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        m.in_proj_weight.copy_(torch.tensor(a["in_proj_weight"]))
        m.in_proj_bias.copy_(torch.tensor(a["in_proj_bias"]))
        m.out_proj.weight.copy_(torch.tensor(a["out_proj_weight"]))
        m.out_proj.bias.copy_(torch.tensor(a["out_proj_bias"]))
    xq = torch.tensor(a["query"], requires_grad=True)
    xk = xq if self_attn else torch.tensor(a["key"], requires_grad=True)
    xv = xq if self_attn else torch.tensor(a["value"], requires_grad=True)
    to, _ = m(xq, xk, xv, need_weights=False)
    g = np.random.default_rng(2).standard_normal(to.shape)
    to.backward(torch.tensor(g))
    out, saved = MHA.with_saved(**a, backend=backend)
    grads = MHA.backward(g, **a, saved=saved, backend=backend)
    np.testing.assert_allclose(out, to.detach().numpy(), rtol=1e-10, atol=1e-10)
    dx = grads[0] + grads[1] + grads[2] if self_attn else grads[0]
    np.testing.assert_allclose(dx, xq.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grads[3], m.in_proj_weight.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grads[4], m.out_proj.weight.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grads[5], m.in_proj_bias.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grads[6], m.out_proj.bias.grad.numpy(), rtol=1e-9, atol=1e-9)


# -- memory -------------------------------------------------------------------------

_MEM = textwrap.dedent("""
    import sys
    import numpy as np
    import pydl
    from pydl import registry
    spec = registry.SPECS["scaled_dot_product_attention"]
    S, D = int(sys.argv[1]), 64
    rng = np.random.default_rng(0)
    a = {n: rng.standard_normal((1, 1, S, D)).astype(np.float32) for n in "qkv"}
    g = rng.standard_normal((1, 1, S, D)).astype(np.float32)
    small = {n: x[:, :, :256].copy() for n, x in a.items()}  # several key blocks: the multi-block paths
    out, sv = spec.with_saved(**small, backend=sys.argv[2])   # threads, scratch, code paths warm
    spec.backward(g[:, :, :256].copy(), **small, saved=sv, backend=sys.argv[2])

    def kib(key):  # from /proc/self/status, KiB
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    base = kib("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
    out, sv = spec.with_saved(**a, backend=sys.argv[2])
    grads = spec.backward(g, **a, saved=sv, backend=sys.argv[2])
    print(kib("VmHWM") - base)
""")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM")
def test_memory_is_linear_in_s(backend):
    """Peak resident memory (VmHWM, reset first) of a forward + backward at S = 4096, D = 64 grows
    by a small multiple of one (S, D) array, far below the one (S, S) float32 score matrix the
    materialized version needs (64 MiB; dev/attention/bench.py --only mem compares the two at
    S = 8192). What the kernels allocate: out, dQ, dK, dV, and up to 4 dQ partials per thread
    when B*H is smaller than the thread count (numba's backward splits a head's key blocks into
    groups, 8 at 2 threads: 12 arrays), plus lse, delta and scratch; the bound allows 14."""
    S, D = 4096, 64
    env = dict(os.environ, PYDL_NUM_THREADS="2", OMP_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", _MEM, str(S), backend], capture_output=True, text=True, env=env,
                         timeout=120, cwd=os.path.dirname(os.path.dirname(pydl.__file__)))
    assert res.returncode == 0, res.stderr
    grew_kib = int(res.stdout.split()[-1])
    one_sd_kib, materialized_kib = S * D * 4 // 1024, S * S * 4 // 1024
    assert grew_kib < 14 * one_sd_kib and grew_kib < materialized_kib / 4, (grew_kib, one_sd_kib, materialized_kib)
