"""CUDA backend tests beyond the conformance suite: sizes that cross GEMM tile
boundaries, every transpose / alignment path of the GEMM kernels, batched and
shared operands, fused epilogues, the bf16 tensor-core path, and conv/pool at
sizes the conformance cases do not reach. Marked ``gpu`` and skipped (like the
conformance suite's cuda cases) when CuPy or a GPU is missing; the loader's
error handling is tested everywhere.
"""
import numpy as np
import pytest

import pydl
from pydl import _array, backends
from pydl.backends.cuda import _loader

gpu = pytest.mark.gpu


@pytest.fixture
def cp():
    why = backends.unavailable_reason("cuda")
    if why:
        pytest.skip(f"no GPU: {why}")
    import cupy

    return cupy


def _rng(seed):
    return np.random.default_rng(seed)


def _rel(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    assert not np.isnan(out).any()
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


# -- loader (no GPU needed) -----------------------------------------------------------------

def test_missing_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_loader, "_READY", False)
    monkeypatch.setattr(backends, "unavailable_reason", lambda name: "CuPy is not installed (test)")
    with pytest.raises(RuntimeError, match="cuda backend cannot run here: CuPy is not installed"):
        _loader.cupy_or_raise()


def test_declared_names_cover_every_family():
    from pydl.backends.cuda import conv, gemm, pool  # noqa: F401

    assert any(n.startswith("gemm_simt<float,") for n in _loader._NAMES["gemm"])
    assert "gemm_bf16_tc<false>" in _loader._NAMES["gemm"]
    assert set(_loader._NAMES["conv"]) == {"im2col<float>", "im2col<double>", "col2im<float>", "col2im<double>"}
    assert len(_loader._NAMES["pool"]) == 12


def test_precision_env(monkeypatch):
    from pydl.backends.cuda import gemm

    monkeypatch.setenv("PYDL_CUDA_MATMUL_PRECISION", "bf16")
    assert gemm.precision() == "bf16"
    monkeypatch.setenv("PYDL_CUDA_MATMUL_PRECISION", "fp8")
    with pytest.raises(ValueError, match="PYDL_CUDA_MATMUL_PRECISION"):
        gemm.precision()


# -- loader on the GPU ---------------------------------------------------------------------

@gpu
def test_launch_error_names_the_kernel(cp):
    with pytest.raises(RuntimeError, match=r"CUDA kernel gemm\.no_such_kernel failed"):
        _loader.launch("gemm", "no_such_kernel", (1,), (1,), ())


@gpu
def test_runs_on_current_stream(cp):
    a = cp.asarray(_rng(0).standard_normal((300, 200)), np.float32)
    b = cp.asarray(_rng(1).standard_normal((200, 100)), np.float32)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        y = pydl.ops.matmul(a, b, backend="cuda")
    s.synchronize()
    assert _rel(y.get(), a.get().astype(np.float64) @ b.get()) < 1e-5


# -- GEMM ---------------------------------------------------------------------------------

GEMM_SIZES = [(1, 1, 1), (128, 128, 8), (129, 127, 9), (257, 131, 65), (64, 300, 1), (3, 517, 260)]


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("mnk", GEMM_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_layouts(cp, dtype, ta, tb, mnk):
    from pydl.backends.cuda.gemm import gemm

    m, n, k = mnk
    rng = _rng(m * 7919 + n * 31 + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = cp.full((m, n), np.nan, dtype)
    gemm(cp.asarray(a), cp.asarray(b), c, m, n, k, ta=ta, tb=tb, lda=a.shape[1], ldb=b.shape[1], ldc=n,
         tensor_cores=False)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    assert _rel(c.get(), ref) < (1e-5 if dtype == "float32" else 1e-12)


@gpu
def test_gemm_unaligned_offsets_and_leading_dims(cp):
    """Operands at odd element offsets with odd leading dimensions: the element-copy paths."""
    from pydl.backends.cuda.gemm import gemm

    rng = _rng(5)
    m, n, k = 133, 70, 45
    buf_a = cp.asarray(rng.standard_normal(3 + k * 137), np.float32)     # A^T stored (K, M), ld 137
    buf_b = cp.asarray(rng.standard_normal(1 + k * 71), np.float32)      # B stored (K, N), ld 71
    c = cp.full((m, 75), np.nan, np.float32)
    gemm(buf_a, buf_b, c, m, n, k, ta=True, lda=137, ldb=71, ldc=75, a_off=3, b_off=1, tensor_cores=False)
    A = buf_a.get()[3:].reshape(k, 137)[:, :m].T
    B = buf_b.get()[1:].reshape(k, 71)[:, :n]
    assert _rel(c.get()[:, :n], A.astype(np.float64) @ B) < 1e-5
    assert np.isnan(c.get()[:, n:]).all()          # nothing written outside the (M, N) window


@gpu
@pytest.mark.parametrize("shapes", [((5, 130, 70), (5, 70, 129)), ((4, 129, 33), (33, 140)),
                                    ((140, 33), (4, 33, 129))], ids=["3d@3d", "3d@2d", "2d@3d"])
def test_matmul_batched_forward_backward(cp, shapes):
    rng = _rng(11)
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes[1]).astype(np.float32)
    with _array.poisoned():
        y = pydl.ops.matmul(cp.asarray(a), cp.asarray(b), backend="cuda")
        g = rng.standard_normal(y.shape).astype(np.float32)
        da, db = pydl.ops.matmul_backward(cp.asarray(g), cp.asarray(a), cp.asarray(b), backend="cuda")
    a64, b64, g64 = a.astype(np.float64), b.astype(np.float64), g.astype(np.float64)
    rda, rdb = pydl.ops.matmul_backward(g64, a64, b64, backend="numpy")
    assert _rel(y.get(), np.matmul(a64, b64)) < 1e-5
    assert _rel(da.get(), rda) < 1e-5
    assert _rel(db.get(), rdb) < 1e-5


@gpu
def test_matmul_transposed_views_read_in_place(cp):
    rng = _rng(12)
    a = cp.asarray(rng.standard_normal((200, 300)), np.float32).T    # F-ordered view
    b = cp.asarray(rng.standard_normal((150, 200)), np.float32).T
    y = pydl.ops.matmul(a, b, backend="cuda")
    assert _rel(y.get(), a.get().astype(np.float64) @ b.get()) < 1e-5


@gpu
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "tanh", "sigmoid"])
def test_linear_large(cp, activation):
    rng = _rng(13)
    x = rng.standard_normal((3, 70, 300)).astype(np.float32)
    w = (rng.standard_normal((257, 300)) / 17).astype(np.float32)
    b = rng.standard_normal(257).astype(np.float32)
    g = rng.standard_normal((3, 70, 257)).astype(np.float32)
    with _array.poisoned():
        y = pydl.ops.linear(cp.asarray(x), cp.asarray(w), cp.asarray(b), activation, backend="cuda")
        grads = pydl.ops.linear_backward(cp.asarray(g), cp.asarray(x), cp.asarray(w), cp.asarray(b), activation,
                                         backend="cuda")
    f64 = [v.astype(np.float64) for v in (x, w, b, g)]
    ref = pydl.ops.linear(*f64[:3], activation, backend="numpy")
    rgrads = pydl.ops.linear_backward(f64[3], *f64[:3], activation, backend="numpy")
    assert _rel(y.get(), ref) < 1e-5
    for out, r in zip(grads, rgrads):
        assert _rel(out.get(), r) < 1e-5


# -- bf16 tensor cores ---------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("mnk", [(128, 128, 32), (129, 200, 8), (300, 257, 520), (17, 9, 1000)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gemm_bf16_exact_on_rounded_operands(cp, mnk):
    from pydl.backends.cuda.gemm import gemm_bf16, to_bf16

    m, n, k = mnk
    rng = _rng(sum(mnk))
    a = cp.asarray(rng.standard_normal((m, k)), np.float32)
    b = cp.asarray(rng.standard_normal((k, n)), np.float32)
    a16 = to_bf16(a, m, k, ld_in=k)[0]
    b16 = to_bf16(b, n, k, trans=True, ld_in=n)[0]       # (N, K)
    kp = a16.shape[1]
    c = cp.full((m, n), np.nan, np.float32)
    gemm_bf16(a16, b16, c, m, n, k, lda=kp, ldb=kp, ldc=n)
    up = lambda h: (h.get().astype(np.uint32) << 16).view(np.float32).astype(np.float64)[:, :k]  # noqa: E731
    # the products of bf16 values are exact in fp32; only the fp32 accumulation rounds
    assert _rel(c.get(), up(a16) @ up(b16).T) < 1e-5
    assert _rel(c.get(), a.get().astype(np.float64) @ b.get()) < 1e-2


@gpu
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_linear_bf16_variant(cp, activation):
    rng = _rng(21)
    x = rng.standard_normal((130, 96)).astype(np.float32)
    w = (rng.standard_normal((70, 96)) / 10).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    with _array.poisoned():
        y = pydl.ops.linear(cp.asarray(x), cp.asarray(w), cp.asarray(b), activation, backend="cuda:bf16")
    ref = pydl.ops.linear(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation,
                          backend="numpy")
    assert _rel(y.get(), ref) < 1e-2


# -- conv and pool at size ------------------------------------------------------------------

CONVS = [dict(x=(2, 16, 33, 31), w=(24, 16, 3, 3), stride=1, padding=1, dilation=1, groups=1),
         dict(x=(3, 8, 20, 21), w=(8, 2, 5, 3), stride=(2, 1), padding=(2, 0), dilation=(1, 2), groups=4),
         dict(x=(2, 3, 40, 40), w=(16, 3, 11, 11), stride=4, padding=2, dilation=1, groups=1),
         dict(x=(2, 130, 9, 9), w=(140, 130, 1, 1), stride=1, padding=0, dilation=1, groups=1)]


@gpu
@pytest.mark.parametrize("c", CONVS, ids=lambda c: f"x{c['x']}w{c['w']}g{c['groups']}")
def test_conv2d_large(cp, c):
    rng = _rng(31)
    x = rng.standard_normal(c["x"])
    w = rng.standard_normal(c["w"]) / np.sqrt(np.prod(c["w"][1:]))
    b = rng.standard_normal(c["w"][0])
    hp = {k: c[k] for k in ("stride", "padding", "dilation", "groups")}
    ref = pydl.ops.conv2d(x, w, b, **hp, backend="numpy")
    g = rng.standard_normal(ref.shape)
    rgrads = pydl.ops.conv2d_backward(g, x, w, b, **hp, backend="numpy")
    f32 = lambda v: cp.asarray(v, np.float32)  # noqa: E731
    with _array.poisoned():
        y = pydl.ops.conv2d(f32(x), f32(w), f32(b), **hp, backend="cuda")
        grads = pydl.ops.conv2d_backward(f32(g), f32(x), f32(w), f32(b), **hp, backend="cuda")
    assert _rel(y.get(), ref) < 1e-5
    for out, r in zip(grads, rgrads):
        assert _rel(out.get(), r) < 1e-5


POOLS = [("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
         ("max_pool2d", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=True)),
         ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
         ("avg_pool2d", dict(kernel_size=(3, 2), stride=1, padding=(1, 1), divisor_override=4)),
         ("adaptive_avg_pool2d", dict(output_size=(5, 7))),
         ("adaptive_avg_pool2d", dict(output_size=(40, 3)))]


@gpu
@pytest.mark.parametrize("op,kw", POOLS, ids=lambda v: str(v))
def test_pool_large(cp, op, kw):
    rng = _rng(41)
    x = rng.standard_normal((3, 5, 37, 29))
    fwd, bwd = getattr(pydl.ops, op), getattr(pydl.ops, op + "_backward")
    ref = fwd(x, **kw, backend="numpy")
    g = rng.standard_normal(ref.shape)
    (rdx,) = bwd(g, x, **kw, backend="numpy")
    with _array.poisoned():
        y = fwd(cp.asarray(x, np.float32), **kw, backend="cuda")
        (dx,) = bwd(cp.asarray(g, np.float32), cp.asarray(x, np.float32), **kw, backend="cuda")
    assert _rel(y.get(), ref) < 1e-6
    assert _rel(dx.get(), rdx) < 1e-6
