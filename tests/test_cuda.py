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
from pydl import _array, backends, testing
from pydl.backends._shared import ACTIVATIONS, SOFTMAXES
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


def _tol(n):
    """float32 accumulation of n random terms: relative error ~ sqrt(n) * 2^-24; 10x margin, at least 1e-5."""
    return max(1e-5, 10 * np.sqrt(max(n, 1)) * 2.0 ** -24)


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
    assert {"gemm_bf16_tc<false, 128, 3>", "gemm_bf16_tc<true, 128, 3>"} <= set(_loader._NAMES["gemm"])
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
    assert _rel(c.get(), ref) < (_tol(k) if dtype == "float32" else 1e-12)


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
    assert _rel(y.get(), np.matmul(a64, b64)) < _tol(5 * 140)
    assert _rel(da.get(), rda) < _tol(5 * 140)
    assert _rel(db.get(), rdb) < _tol(5 * 140)


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
    assert _rel(y.get(), ref) < _tol(300)
    for out, r in zip(grads, rgrads):
        assert _rel(out.get(), r) < _tol(300)


# -- bf16 tensor cores ---------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("mnk", [(128, 128, 32), (129, 200, 8), (300, 257, 520), (17, 9, 1000), (256, 520, 264)],
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
    assert _rel(c.get(), up(a16) @ up(b16).T) < _tol(k)
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
    n_acc = max(np.prod(c["w"][1:]), c["x"][0] * np.prod(ref.shape[2:]), c["w"][0] * np.prod(c["w"][2:]))
    assert _rel(y.get(), ref) < _tol(n_acc)
    for out, r in zip(grads, rgrads):
        assert _rel(out.get(), r) < _tol(n_acc)


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


# -- the adapters' index arithmetic, without a GPU ---------------------------------------------
#
# The kernels' launch arguments (pointers with element offsets, leading dimensions,
# batch strides, transpose flags, group offsets) are where an adapter bug would
# hide. Here `launch` is replaced by a NumPy emulation of each kernel's documented
# contract (gemm.cu / conv.cu headers), reading through the same offsets and
# strides with bounds checks, and the adapters run on NumPy arrays against the
# reference backend. This checks the Python side only; the kernels themselves
# are checked on the GPU (the tests above, dev/cuda/validate.py).

def _view(p, rows, cols, ld, z, stride):
    """(rows, cols) matrix z at element offset p[1] + z*stride, leading dimension ld, of p[0]'s storage."""
    base, off = p
    flat = base.reshape(-1)
    start = off + z * stride
    if rows and cols:
        last = start + (rows - 1) * ld + cols - 1
        assert 0 <= start and last < flat.size, f"out of bounds: [{start}, {last}] of {flat.size}"
    it = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[start:] if flat.size > start else flat[:0],
                                           (rows, cols), (ld * it, it), writeable=True)


def _bf16_round(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _bf16_value(h):
    return (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


_ACT_F = {0: lambda v: v, 1: lambda v: np.where(v < 0, 0, v), 3: np.tanh,
          4: lambda v: 1 / (1 + np.exp(-v))}


def _act(code, v, g):
    from math import erf, pi, sqrt

    erfv = np.vectorize(erf)
    if g is None:
        if code == 2:
            return 0.5 * v * (1 + erfv(v / sqrt(2)))
        return _ACT_F[code](v)
    d = {0: lambda: np.ones_like(v), 1: lambda: (v > 0).astype(v.dtype),
         2: lambda: 0.5 * (1 + erfv(v / sqrt(2))) + v * np.exp(-0.5 * v * v) / sqrt(2 * pi),
         3: lambda: 1 - np.tanh(v) ** 2, 4: lambda: _ACT_F[4](v) * (1 - _ACT_F[4](v))}[code]()
    return g * d


def _emulate(family, kernel, grid, block, args, shared_mem=0):
    from pydl.backends.cuda import gemm
    from pydl.backends.reference import conv as rconv

    name, _, targs = kernel.partition("<")
    targs = [t.strip() for t in targs.rstrip(">").split(",")] if targs else []
    nz = int(grid[2]) if len(grid) > 2 else 1
    if name in ("gemm_simt", "gemm_bf16_tc"):
        A, B, C, M, N, K, lda, ldb, ldc, sA, sB, sC, bias, gmul, sG, bmode, act, beta = args
        M, N, K = int(M), int(N), int(K)
        if name == "gemm_simt":
            ta, tb, va, vb = (t == "true" for t in targs[1:5])
            bm, bn = gemm.SIMT_TILES[int(targs[5])]
            assert int(grid[0]) == (N + bn - 1) // bn and int(grid[1]) == (M + bm - 1) // bm
            w = 16 // A[0].itemsize
            if va:
                assert ta and (lda % w == 0 and sA % w == 0), "16-byte path on an unaligned A"
            if vb:
                assert not tb and (ldb % w == 0 and sB % w == 0), "16-byte path on an unaligned B"
        else:
            ta, tb = False, True
            bn, stages = int(targs[1]), int(targs[2])
            assert (bn, stages, shared_mem) == gemm.TC_TILE and lda % 8 == 0 and ldb % 8 == 0
            assert int(grid[0]) == (N + bn - 1) // bn and int(grid[1]) == (M + 127) // 128
        for z in range(nz):
            a = _view(A, K, M, lda, z, sA).T if ta else _view(A, M, K, lda, z, sA)
            b = _view(B, N, K, ldb, z, sB).T if tb else _view(B, K, N, ldb, z, sB)
            if name == "gemm_bf16_tc":
                a, b = _bf16_value(a), _bf16_value(b)
            c = _view(C, M, N, ldc, z, sC)
            v = a.astype(np.float64) @ b.astype(np.float64)
            if int(bmode) == 1:
                v = v + _view(bias, 1, N, N, 0, 0)[0]
            elif int(bmode) == 2:
                v = v + _view(bias, 1, M, M, 0, 0)[0][:, None]
            if beta:
                v = v + beta * (_bf16_value(c) if c.dtype == np.uint16 else c)
            g = None if gmul is None else _view(gmul, M, N, ldc, z, int(sG))
            out = _act(int(act), v, g)
            c[...] = _bf16_round(out) if c.dtype == np.uint16 else out
    elif name == "cast_f32_bf16":
        x, y, rows, cols, ld_in, ld_out, s_in, s_out = args
        for z in range(nz):
            src = _view(x, int(cols), int(rows), ld_in, z, s_in).T if targs[0] == "true" \
                else _view(x, int(rows), int(cols), ld_in, z, s_in)
            dst = y.reshape(-1)[z * s_out:(z + 1) * s_out].reshape(int(rows), int(ld_out))
            dst[...] = 0
            dst[:, :int(cols)] = _bf16_round(src)
    elif name == "bias_grad":
        g, out, rows, cols = args
        out[...] = g.reshape(int(rows), int(cols)).sum(axis=0)
    elif name in ("im2col", "col2im"):
        src, dst, planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, *mg = (int(a) if np.isscalar(a) else a
                                                                              for a in args)
        assert mg == [_loader.fastdiv_magic(d) for d in ((OW, OH, kw, kh) if name == "im2col" else (W, H))]
        hp = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
        if name == "im2col":
            dst.reshape(-1)[...] = rconv.im2col(src.reshape(1, planes, H, W), **hp).reshape(-1)
        else:
            dst.reshape(-1)[...] = rconv.col2im(src.reshape(1, planes * kh * kw, OH * OW), (H, W), **hp).reshape(-1)
    elif name.startswith("elementwise_"):
        _emulate_elementwise(name[len("elementwise_"):], args)
    else:
        raise AssertionError(f"no emulation for {kernel}")


_ACT_PARAM = {"relu": ("relu", {}), "leaky_relu": ("leaky_relu", "negative_slope"), "elu": ("elu", "alpha"),
              "gelu": ("gelu", {"approximate": "none"}), "gelu_tanh": ("gelu", {"approximate": "tanh"}),
              "sigmoid": ("sigmoid", {}), "tanh": ("tanh", {})}


def _emulate_elementwise(name, args):
    """elementwise.cu's entry points through the NumPy reference, on the flat buffers they are given
    (the reference's plain functions: every backward kernel here takes x, as the reference's
    backward does without ``saved``)."""
    from pydl.backends.reference import elementwise as rew

    base, sfx = name.rsplit("_", 1)
    assert sfx == {4: "f32", 8: "f64"}[args[0].itemsize], name
    for op in ("log_softmax", "softmax"):
        if base.startswith(op + "_"):
            kind = base[len(op) + 1:]
            if kind == "rows":
                x, y, rows, n = args
                shape = (int(rows), int(n), 1)
            else:
                *bufs, outer, n, inner = args
                shape = (int(outer), int(n), int(inner))
            if kind == "backward":
                g, x, dx = bufs
                (d,) = getattr(rew, op + "_backward")(g.reshape(shape), x.reshape(shape), dim=1)
                dx.reshape(-1)[...] = d.reshape(-1)
            else:
                x, y = (args[0], args[1])
                y.reshape(-1)[...] = getattr(rew, op)(x.reshape(shape), dim=1).reshape(-1)
            return
    backward = base.endswith("_backward")
    kernel = base[:-len("_backward")] if backward else base
    op, params = _ACT_PARAM[kernel]
    *bufs, n, p = args
    params = {params: float(p)} if isinstance(params, str) else params
    assert all(b.size == int(n) and b.flags.c_contiguous for b in bufs), name
    if backward:
        g, x, dx = bufs
        (d,) = getattr(rew, op + "_backward")(g.reshape(-1), x.reshape(-1), **params)
        dx.reshape(-1)[...] = d
    else:
        x, y = bufs
        y.reshape(-1)[...] = getattr(rew, op)(x.reshape(-1), **params)


@pytest.fixture
def emulated(monkeypatch):
    from pydl.backends.cuda import conv, elementwise, gemm

    backends.load()
    monkeypatch.setattr(elementwise, "launch", _emulate)
    for mod in (gemm, conv):
        monkeypatch.setattr(mod, "launch", _emulate)
        monkeypatch.setattr(mod, "cupy_or_raise", lambda: np)
    monkeypatch.setattr(gemm, "ptr", lambda a, off=0: None if a is None else (a, int(off)))
    monkeypatch.setattr(gemm, "_addr", lambda a: a.__array_interface__["data"][0])
    monkeypatch.setattr(gemm, "sm_count", lambda: 1)  # every output of <= 64 rows on the 64x256 tile
    monkeypatch.delenv("PYDL_CUDA_MATMUL_PRECISION", raising=False)


@pytest.mark.parametrize("op,variant", [("matmul", None), ("linear", None), ("conv2d", None), ("im2col", None),
                                        ("col2im", None), ("matmul", "bf16"), ("linear", "bf16"),
                                        *((op, None) for op in ACTIVATIONS + SOFTMAXES)])
def test_adapters_emulated(emulated, op, variant):
    """Every conformance case through the cuda adapters with emulated kernels, forward and backward."""
    from pydl import registry

    spec = registry.SPECS[op]
    fwd = registry.VARIANTS[op]["cuda"][variant] if variant else registry.IMPLS[op]["cuda"]
    bwd = registry.VARIANTS[op + "_backward"]["cuda"][variant] if variant else registry.IMPLS[op + "_backward"]["cuda"]
    dtype = np.float32 if variant else np.float64
    tol = 1e-10

    def close(o, r):  # bf16 operands (~3 significant digits, data of order 1): by norm, with an RMS
        if variant:   # floor of 1e-2 for results that cancel to near 0 (each term rounds by 2^-9)
            return np.linalg.norm(o - r) <= 1e-2 * np.linalg.norm(r) + 1e-2 * np.sqrt(r.size) \
                and not np.isnan(o).any()
        return np.allclose(o, r, rtol=tol, atol=tol * max(1, np.abs(r).max(initial=0)))
    for case in spec.cases(_rng(7), np.dtype(dtype)):
        args = spec.bind((), case.args)
        # bf16 variant: the reference multiplies the same bf16-rounded operands (in float64),
        # so a relu kink is not crossed by rounding alone (sign flips of z near 0 would
        # change a gradient element by a whole upstream value)
        to64 = (lambda v: testing.round_bf16(v).astype(np.float64)) if variant else (lambda v: v.astype(np.float64))
        ref_args = {k: (to64(v) if hasattr(v, "dtype") and v.dtype.kind == "f" and k != "bias" else
                        v.astype(np.float64) if hasattr(v, "dtype") and v.dtype.kind == "f" else v)
                    for k, v in args.items()}
        ref = registry.IMPLS[op]["numpy"](**ref_args)
        with _array.poisoned():
            out = fwd(**args)
        out = out[0] if isinstance(out, tuple) else out
        ref = ref[0] if isinstance(ref, tuple) else ref
        assert out.shape == ref.shape, case.id
        assert close(out, ref), (case.id, np.abs(out - ref).max(initial=0))
        g = _rng(8).standard_normal(ref.shape).astype(dtype)
        rgrads = registry.IMPLS[op + "_backward"]["numpy"](g.astype(np.float64), **ref_args)
        with _array.poisoned():
            grads = bwd(g, **args)
        for name, o, r in zip(spec.differentiable, grads, rgrads):
            assert (o is None) == (r is None), (case.id, name)
            if r is not None:
                assert o.shape == r.shape, (case.id, name)
                assert close(o, r), (case.id, name, np.abs(o - r).max(initial=0))


# -- the pool / col2im kernels' index arithmetic, transcribed ------------------------------------
#
# Line-for-line Python transcriptions of the per-thread bodies of kernels/cuda/
# pool.cu and conv.cu (C integer division: operands are non-negative wherever
# the kernels divide, except avg_pool2d_bwd's lower bound, transcribed with
# truncation toward zero). Run over every conformance case against the NumPy
# reference, they check the gather-form backward ranges and the max-pool
# tie/NaN rules without a GPU. Keep them in step with the .cu files.

def _cdiv(a, b):  # C's truncating division
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _taps_reaching(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw):
    """cuda_helpers.cuh for_each_tap_reaching: (r, s, oh, ow) whose window reads (h, w)."""
    if dh == 1 and dw == 1:  # the undilated range form, in the general loop's order
        hp, wp = h + ph, w + pw
        oh0, oh1 = ((hp - kh + sh) // sh if hp >= kh else 0), min(OH - 1, hp // sh)
        ow0, ow1 = ((wp - kw + sw) // sw if wp >= kw else 0), min(OW - 1, wp // sw)
        for oh in range(oh1, oh0 - 1, -1):
            for ow in range(ow1, ow0 - 1, -1):
                yield hp - oh * sh, wp - ow * sw, oh, ow
        return
    yield from _taps_reaching_general(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw)


def _taps_reaching_general(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw):
    for r in range(kh):
        th = h + ph - r * dh
        if th < 0 or th % sh:
            continue
        oh = th // sh
        if oh >= OH:
            continue
        for s in range(kw):
            tw = w + pw - s * dw
            if tw < 0 or tw % sw:
                continue
            ow = tw // sw
            if ow >= OW:
                continue
            yield r, s, oh, ow


def _divmod_transcribed(n, d, m):
    """cuda_helpers.cuh DivMod::div for unsigned n < 2^31: umulhi(n, m) >> (31 - clz(d - 1))."""
    if m == 0:
        return n
    return ((n * np.uint64(m)) >> np.uint64(32)) >> np.uint64((d - 1).bit_length() - 1)


def test_fastdiv_magic_divides_every_31_bit_index():
    """The multiply-shift quotient equals n // d for every divisor tried and indices up to 2^31 - 1."""
    rng = np.random.default_rng(11)
    ds = list(range(1, 4097)) + [int(d) for d in rng.integers(4097, 1 << 31, 2000)] + [(1 << 31) - 1, 1 << 30,
                                                                                         (1 << 30) + 1, 3 << 28]
    for d in ds:
        m = _loader.fastdiv_magic(d)
        assert 0 <= m < 1 << 32
        n = np.concatenate([rng.integers(0, 1 << 31, 512), [0, 1, d - 1, d, d + 1, 2 * d - 1, (1 << 31) - 1],
                            np.arange(max(0, (1 << 31) - 1 - 3 * d), (1 << 31) - 1, max(1, d // 2))[:64],
                            ((1 << 31) - 1) // d * d + np.arange(-2, 1)]).astype(np.uint64)
        n = n[(n < (1 << 31))]
        assert np.array_equal(_divmod_transcribed(n, d, m), n // np.uint64(d)), d
    with pytest.raises(ValueError, match="divisor"):
        _loader.fastdiv_magic(0)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_pool_adapters_pass_divisor_magic(monkeypatch, op):
    """The pool adapters pass the multipliers of the dimensions their kernels split the index by: the
    output's (OW, OH) forward, the input's (W, H) backward, last."""
    from pydl.backends.cuda import pool

    calls = []

    def record(family, kernel, grid, block, args, shared_mem=0):
        calls.append((kernel, args))

    monkeypatch.setattr(pool, "launch", record)
    monkeypatch.setattr(pool, "cupy_or_raise", lambda: np)
    backends.load()
    from pydl import registry

    x = np.random.default_rng(1).standard_normal((2, 3, 13, 10))
    kw = {"adaptive_avg_pool2d": dict(output_size=(5, 3))}.get(op, dict(kernel_size=(3, 2), stride=(2, 2),
                                                                         padding=(1, 0), ceil_mode=False))
    a = registry.SPECS[op].bind((x,), kw)
    out = registry.IMPLS[op]["cuda"](**a)
    y = out[0] if isinstance(out, tuple) else out
    saved = out[1] if isinstance(out, tuple) else None
    registry.IMPLS[op + "_backward"]["cuda"](np.ones_like(y), **a, **({"saved": saved} if saved else {}))
    (fk, fargs), (bk, bargs) = calls
    oh, ow = y.shape[2:]
    assert [int(v) for v in fargs[-2:]] == [_loader.fastdiv_magic(ow), _loader.fastdiv_magic(oh)], fk
    assert [int(v) for v in bargs[-2:]] == [_loader.fastdiv_magic(10), _loader.fastdiv_magic(13)], bk


def test_taps_reaching_range_form_matches_tap_loop():
    """The undilated range form visits the taps of the general loop, in its order."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        kh, kw, sh, sw = (int(v) for v in rng.integers(1, 6, 4))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        H, W = (int(v) for v in rng.integers(max(kh, kw), 20, 2))
        OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        OH, OW = OH + int(rng.integers(0, 2)), OW + int(rng.integers(0, 2))  # ceil_mode's extra output
        for h in range(H):
            for w in range(W):
                win = (h, w, OH, OW, kh, kw, sh, sw, ph, pw, 1, 1)
                assert list(_taps_reaching(*win)) == list(_taps_reaching_general(*win)), win


def _k_max_fwd(x, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW):
    P, H, W = x.shape
    y, idx = np.empty((P, OH, OW), x.dtype), np.empty((P, OH, OW), np.int64)
    for p in range(P):
        for oh in range(OH):
            for ow in range(OW):
                m, at = -np.inf, -1
                for r in range(kh):
                    ih = oh * sh - ph + r * dh
                    if ih < 0 or ih >= H:
                        continue
                    for s in range(kw):
                        iw = ow * sw - pw + s * dw
                        if iw < 0 or iw >= W:
                            continue
                        v = x[p, ih, iw]
                        if at < 0 or v != v or v > m:
                            m, at = v, ih * W + iw
                y[p, oh, ow], idx[p, oh, ow] = m, at
    return y, idx


def _k_max_bwd(g, idx, H, W, kh, kw, sh, sw, ph, pw, dh, dw):
    P, OH, OW = g.shape
    dx = np.empty((P, H, W), g.dtype)
    for p in range(P):
        for h in range(H):
            for w in range(W):
                acc = 0.0
                for _, _, oh, ow in _taps_reaching(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw):
                    if idx[p, oh, ow] == h * W + w:
                        acc += g[p, oh, ow]
                dx[p, h, w] = acc
    return dx


def _k_avg_div(oh, ow, H, W, kh, kw, sh, sw, ph, pw, cip, div):
    if div > 0:
        return div
    hs, ws = oh * sh - ph, ow * sw - pw
    he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
    if cip:
        return (he - hs) * (we - ws)
    return (min(he, H) - max(hs, 0)) * (min(we, W) - max(ws, 0))


def _k_avg_fwd(x, OH, OW, kh, kw, sh, sw, ph, pw, cip, div):
    P, H, W = x.shape
    y = np.empty((P, OH, OW), x.dtype)
    for p in range(P):
        for oh in range(OH):
            for ow in range(OW):
                h0, h1 = max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)
                w0, w1 = max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)
                y[p, oh, ow] = x[p, h0:h1, w0:w1].sum() / _k_avg_div(oh, ow, H, W, kh, kw, sh, sw, ph, pw, cip, div)
    return y


def _k_avg_bwd(g, H, W, kh, kw, sh, sw, ph, pw, cip, div):
    P, OH, OW = g.shape
    dx = np.empty((P, H, W), g.dtype)
    for p in range(P):
        for h in range(H):
            for w in range(W):
                oh0, oh1 = max(0, _cdiv(h + ph - kh + sh, sh)), min(OH - 1, _cdiv(h + ph, sh))
                ow0, ow1 = max(0, _cdiv(w + pw - kw + sw, sw)), min(OW - 1, _cdiv(w + pw, sw))
                acc = 0.0
                for oh in range(oh0, oh1 + 1):
                    for ow in range(ow0, ow1 + 1):
                        acc += g[p, oh, ow] / _k_avg_div(oh, ow, H, W, kh, kw, sh, sw, ph, pw, cip, div)
                dx[p, h, w] = acc
    return dx


def _k_adaptive_fwd(x, OH, OW):
    P, H, W = x.shape
    y = np.empty((P, OH, OW), x.dtype)
    for p in range(P):
        for oh in range(OH):
            for ow in range(OW):
                h0, h1 = oh * H // OH, ((oh + 1) * H + OH - 1) // OH
                w0, w1 = ow * W // OW, ((ow + 1) * W + OW - 1) // OW
                y[p, oh, ow] = x[p, h0:h1, w0:w1].sum() / ((h1 - h0) * (w1 - w0))
    return y


def _k_adaptive_bwd(g, H, W):
    P, OH, OW = g.shape
    dx = np.empty((P, H, W), g.dtype)
    for p in range(P):
        for h in range(H):
            for w in range(W):
                oh0, oh1 = h * OH // H, min(OH - 1, ((h + 1) * OH + H - 1) // H - 1)
                ow0, ow1 = w * OW // W, min(OW - 1, ((w + 1) * OW + W - 1) // W - 1)
                acc = 0.0
                for oh in range(oh0, oh1 + 1):
                    h0, h1 = oh * H // OH, ((oh + 1) * H + OH - 1) // OH
                    if h < h0 or h >= h1:
                        continue
                    for ow in range(ow0, ow1 + 1):
                        w0, w1 = ow * W // OW, ((ow + 1) * W + OW - 1) // OW
                        if w < w0 or w >= w1:
                            continue
                        acc += g[p, oh, ow] / ((h1 - h0) * (w1 - w0))
                dx[p, h, w] = acc
    return dx


def _k_col2im(cols, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw):
    P = cols.shape[0]
    cols = cols.reshape(P, kh * kw, OH * OW)
    x = np.empty((P, H, W), cols.dtype)
    for p in range(P):
        for h in range(H):
            for w in range(W):
                acc = 0.0
                for r, s, oh, ow in _taps_reaching(h, w, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw):
                    acc += cols[p, r * kw + s, oh * OW + ow]
                x[p, h, w] = acc
    return x


def _planes(x):
    return x.reshape((-1,) + x.shape[2:])


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "col2im"])
def test_kernel_index_math_transcribed(op):
    from pydl import registry

    backends.load()
    spec = registry.SPECS[op]
    for case in spec.cases(_rng(3), np.dtype(np.float64)):
        a = spec.bind((), case.args)
        ref = registry.IMPLS[op]["numpy"](**a)
        ref = ref[0] if isinstance(ref, tuple) else ref
        g = _rng(4).standard_normal(ref.shape)
        (rdx,) = registry.IMPLS[op + "_backward"]["numpy"](g, **a)
        if op == "col2im":
            kh, kw = a["kernel_size"]
            H, W = a["output_size"]
            from pydl.ops.conv import output_hw
            OH, OW = output_hw("k", (H, W), a["kernel_size"], a["stride"], a["padding"], a["dilation"])
            n = a["cols"].shape[0]
            c = a["cols"].shape[1] // (kh * kw)
            out = _k_col2im(a["cols"].reshape(n * c, kh * kw * OH * OW), H, W, OH, OW, kh, kw,
                            *a["stride"], *a["padding"], *a["dilation"]).reshape(ref.shape)
            assert np.allclose(out, ref, rtol=1e-12, atol=1e-12), case.id
            continue
        x = a["x"]
        H, W = x.shape[2:]
        OH, OW = ref.shape[2:]
        if op == "max_pool2d":
            win = (*a["kernel_size"], *a["stride"], *a["padding"], *a["dilation"])
            y, idx = _k_max_fwd(_planes(x), *win, OH, OW)
            saved = registry.IMPLS[op]["numpy"](**a)[1]["indices"]
            assert np.array_equal(idx.reshape(saved.shape), saved), case.id
            dx = _k_max_bwd(_planes(g), idx, H, W, *win)
        elif op == "avg_pool2d":
            div = a["divisor_override"] or 0
            hp = (*a["kernel_size"], *a["stride"], *a["padding"], int(a["count_include_pad"]), div)
            y = _k_avg_fwd(_planes(x), OH, OW, *hp)
            dx = _k_avg_bwd(_planes(g), H, W, *hp)
        else:
            y = _k_adaptive_fwd(_planes(x), OH, OW)
            dx = _k_adaptive_bwd(_planes(g), H, W)
        assert np.allclose(y.reshape(ref.shape), ref, rtol=1e-12, atol=1e-12, equal_nan=True), case.id
        assert np.allclose(dx.reshape(rdx.shape), rdx, rtol=1e-12, atol=1e-12), case.id


# -- the GEMM kernels' thread -> element maps, transcribed --------------------------------------
#
# One block at a time, every thread's copies and reads as written in gemm.cu
# (load_tile, the 8x8 thread tile; load_stage, ldmatrix addresses and the
# m16n8k16 fragment layouts of the PTX ISA), with shared memory as arrays that
# start as NaN: a copy that lands in the wrong place, or a read of a slot no
# copy wrote, shows up in the result. Keep in step with gemm.cu.

def _simt_block_emulated(A, B, M, N, K, ta, tb, lda, ldb, by, bx, vec_a, vec_b, bm=128):
    BM, BN = bm, 8 // (bm // 64) * 32
    WARPS_N = BN // 32
    BK, PAD, W = 8, 4, 4
    m0, n0 = by * BM, bx * BN
    acc = np.zeros((256, 8, 8))
    for k0 in range(0, K, BK):
        As = np.full((BK, BM + PAD), np.nan)
        Bs = np.full((BK, BN + PAD), np.nan)
        for S, X, ld, trans, vec, R, r0, ROWS in ((As, A, lda, ta, vec_a, M, m0, BM),
                                                  (Bs, B, ldb, not tb, vec_b, N, n0, BN)):
            for tid in range(256):
                if trans and vec:
                    for c in range(tid, BK * ROWS // W, 256):
                        k, r = c // (ROWS // W), (c % (ROWS // W)) * W
                        gk, gr = k0 + k, r0 + r
                        n = min(W, R - gr) if (gk < K and gr < R) else 0
                        S[k, r:r + W] = 0
                        S[k, r:r + n] = X[gk * ld + gr: gk * ld + gr + n]
                elif trans:
                    for e in range(tid, BK * ROWS, 256):
                        k, r = e // ROWS, e % ROWS
                        gk, gr = k0 + k, r0 + r
                        S[k, r] = X[gk * ld + gr] if (gk < K and gr < R) else 0
                else:
                    for e in range(tid, BK * ROWS, 256):
                        k, r = e % BK, e // BK
                        gk, gr = k0 + k, r0 + r
                        S[k, r] = X[gr * ld + gk] if (gk < K and gr < R) else 0
        for tid in range(256):
            lane, warp = tid % 32, tid // 32
            wm, wn = (warp // WARPS_N) * 64, (warp % WARPS_N) * 32
            lm, ln = lane // 4, lane % 4
            for k in range(BK):
                a = np.concatenate([As[k, wm + lm * 4: wm + lm * 4 + 4], As[k, wm + 32 + lm * 4: wm + 36 + lm * 4]])
                b = np.concatenate([Bs[k, wn + ln * 4: wn + ln * 4 + 4], Bs[k, wn + 16 + ln * 4: wn + 20 + ln * 4]])
                acc[tid] += np.outer(a, b)
    C = {}
    for tid in range(256):
        lane, warp = tid % 32, tid // 32
        wm, wn = (warp // WARPS_N) * 64, (warp % WARPS_N) * 32
        lm, ln = lane // 4, lane % 4
        for i in range(8):
            m = m0 + wm + (i // 4) * 32 + lm * 4 + i % 4
            for j in range(8):
                n = n0 + wn + (j // 4) * 16 + ln * 4 + j % 4
                if m < M and n < N:
                    assert (m, n) not in C
                    C[m, n] = acc[tid, i, j]
    return C


@pytest.mark.parametrize("bm", [128, 64])
@pytest.mark.parametrize("ta,tb,vec", [(False, False, True), (True, False, True), (True, False, False),
                                       (False, True, False), (True, True, True)])
def test_simt_thread_map_transcribed(ta, tb, vec, bm):
    rng = _rng(9)
    M, N, K = (133, 130, 19) if bm == 128 else (70, 260, 19)  # two blocks each way, a partial k tile
    a = rng.standard_normal((K, M) if ta else (M, K))
    b = rng.standard_normal((N, K) if tb else (K, N))
    ref = (a.T if ta else a) @ (b.T if tb else b)
    got = np.full((M, N), np.nan)
    for by in range(2):
        for bx in range(2):
            for (m, n), v in _simt_block_emulated(a.ravel(), b.ravel(), M, N, K, ta, tb, a.shape[1], b.shape[1],
                                                  by, bx, vec and ta, vec and not tb, bm).items():
                got[m, n] = v
    assert np.allclose(got, ref, rtol=1e-12, atol=1e-12)


def _ldmatrix_x4(smem, addrs):
    """PTX ldmatrix .x4 .b16: lane l supplies the row address of matrix l // 8, row l % 8;
    lane l receives, from each matrix q, row l // 4, columns 2*(l % 4) and +1."""
    out = np.empty((32, 4, 2))
    for q in range(4):
        for lane in range(32):
            row = addrs[q * 8 + lane // 4]
            out[lane, q] = smem[row + 2 * (lane % 4): row + 2 * (lane % 4) + 2]
    return out


def _mma_16816(d, a, b0, b1):
    """PTX mma.m16n8k16 .row.col, g = lane // 4, t = lane % 4: a[0] (g, 2t..), a[1] (g+8, 2t..),
    a[2] (g, 2t+8..), a[3] (g+8, 2t+8..); b0 (k 2t.., n g), b1 (k 2t+8.., n g);
    d[0..1] (g, 2t..), d[2..3] (g+8, 2t..)."""
    Am, Bm = np.empty((16, 16)), np.empty((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        Am[g, 2 * t:2 * t + 2], Am[g + 8, 2 * t:2 * t + 2] = a[lane][0], a[lane][1]
        Am[g, 2 * t + 8:2 * t + 10], Am[g + 8, 2 * t + 8:2 * t + 10] = a[lane][2], a[lane][3]
        Bm[2 * t:2 * t + 2, g], Bm[2 * t + 8:2 * t + 10, g] = b0[lane], b1[lane]
    Dm = Am @ Bm
    for lane in range(32):
        g, t = lane // 4, lane % 4
        d[lane] += [Dm[g, 2 * t], Dm[g, 2 * t + 1], Dm[g + 8, 2 * t], Dm[g + 8, 2 * t + 1]]


def test_tensor_core_fragment_map_transcribed():
    rng = _rng(10)
    M, N, K = 130, 129, 40         # partial tiles in every dimension (K a multiple of 8)
    a, bt = rng.standard_normal((M, K)), rng.standard_normal((N, K))   # B given as (N, K)
    BM, BN, BK, LDS = 128, 128, 32, 40
    got = np.full((M, N), np.nan)
    for by in range(2):
        for bx in range(2):
            m0, n0 = by * BM, bx * BN
            acc = np.zeros((8, 4, 4, 32, 4))      # warp, i, j, lane, q
            for k0 in range(0, K, BK):
                As, Bs = np.full(BM * LDS, np.nan), np.full(BN * LDS, np.nan)
                for tid in range(256):
                    for c in range(tid, BM * (BK // 8), 256):
                        r, kc = c // (BK // 8), (c % (BK // 8)) * 8
                        gk = k0 + kc
                        for S, X, R, r0 in ((As, a, M, m0), (Bs, bt, N, n0)):
                            n = min(8, K - gk) if (r0 + r < R and gk < K) else 0
                            S[r * LDS + kc: r * LDS + kc + 8] = 0
                            if n:
                                S[r * LDS + kc: r * LDS + kc + n] = X[r0 + r, gk:gk + n]
                for warp in range(8):
                    wm, wn = (warp // 4) * 64, (warp % 4) * 32
                    for kk in range(0, BK, 16):
                        af = [_ldmatrix_x4(As, [(wm + i * 16 + (l % 16)) * LDS + kk + (l // 16) * 8
                                                for l in range(32)]) for i in range(4)]
                        bf = [_ldmatrix_x4(Bs, [(wn + j * 16 + (l % 8) + (l // 16) * 8) * LDS + kk + ((l // 8) % 2) * 8
                                                for l in range(32)]) for j in range(2)]
                        for i in range(4):
                            for j in range(4):
                                q0 = (j % 2) * 2
                                _mma_16816(acc[warp, i, j], af[i], bf[j // 2][:, q0], bf[j // 2][:, q0 + 1])
            for warp in range(8):
                wm, wn = (warp // 4) * 64, (warp % 4) * 32
                for i in range(4):
                    for j in range(4):
                        for lane in range(32):
                            for q in range(4):
                                m = m0 + wm + i * 16 + lane // 4 + (q // 2) * 8
                                n = n0 + wn + j * 8 + (lane % 4) * 2 + (q % 2)
                                if m < M and n < N:
                                    got[m, n] = acc[warp, i, j, lane, q]
    assert np.allclose(got, a @ bt.T, rtol=1e-12, atol=1e-12)
