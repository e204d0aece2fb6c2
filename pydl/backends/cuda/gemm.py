"""cuda adapters for the gemm family: matmul and linear on kernels/cuda/gemm.cu.

:func:`gemm` is the one entry every CUDA op uses (conv too): it picks the
template instance from the operands' dtypes and layouts (transposed operands
read in place, 16-byte copies where aligned) and launches it batched over
grid z.

Precision. float32 and float64 run on the CUDA cores in their own precision
(what the conformance suite checks). CuPy has no bfloat16 dtype of its own
(only an optional ``ml_dtypes`` one in recent releases), so the bf16
tensor-core kernel is reached two ways, both opt-in:
- the ``"bf16"`` variant of matmul and linear (``backend="cuda:bf16"``):
  float32 operands are rounded to bf16, multiplied on the tensor cores with
  float32 accumulation, float32 result (error ~1e-3..1e-2 relative);
- ``PYDL_CUDA_MATMUL_PRECISION=bf16`` makes every float32 GEMM of the cuda
  backend (matmul, linear, conv2d) do the same;
- :func:`matmul_bf16` multiplies arrays that already hold bf16 (an
  ``ml_dtypes.bfloat16`` CuPy array, or uint16 bit patterns).
"""
from __future__ import annotations

import os

import numpy as np

from ... import _array
from ...registry import register
from ._loader import blocks_for, cupy_or_raise, declare, launch, ptr, sm_count

ACT_CODE = {None: 0, "relu": 1, "gelu": 2, "tanh": 3, "sigmoid": 4}
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_SIMT = [(False, False, False, False), (False, False, False, True), (False, True, False, False),
         (True, False, False, False), (True, False, True, False), (True, False, False, True),
         (True, False, True, True), (True, True, False, False), (True, True, True, False)]
_B = lambda v: "true" if v else "false"  # noqa: E731
#: gemm_bf16_tc's tile: (BN, pipeline stages, dynamic shared memory bytes; static_assert in gemm.cu)
TC_TILE = (128, 3, 61440)


#: gemm_simt's tiles by BM: (BM, BN)
SIMT_TILES = {128: (128, 128), 64: (64, 256)}


def _simt_name(ctype, ta, tb, va, vb, bm=128):
    return f"gemm_simt<{ctype}, {_B(ta)}, {_B(tb)}, {_B(va)}, {_B(vb)}, {bm}>"


def simt_tile(m: int, n: int, batch: int = 1) -> int:
    """gemm_simt's BM for an (m, n) output: 64 (a 64x256 tile) when m <= 64 and that tile still gives
    the GPU a block per multiprocessor or more, else 128 (128x128); PYDL_CUDA_SIMT_BM overrides."""
    t = os.environ.get("PYDL_CUDA_SIMT_BM")
    if t is not None:
        if t not in ("64", "128"):
            raise ValueError(f"PYDL_CUDA_SIMT_BM: expected 64 or 128, got {t!r}")
        return int(t)
    return 64 if m <= 64 and (n + 255) // 256 * batch >= sm_count() else 128


declare("gemm", [_simt_name(c, *f, bm) for c in ("float", "double") for f in _SIMT for bm in SIMT_TILES]
        + [f"gemm_bf16_tc<{o}, {TC_TILE[0]}, {TC_TILE[1]}>" for o in ("false", "true")]
        + ["cast_f32_bf16<false>", "cast_f32_bf16<true>", "bias_grad<float>", "bias_grad<double>"])
MAX_Z = 65535     # grid z limit: larger batches are launched in chunks


def precision() -> str:
    """float32 GEMM precision: "highest" (default) or "bf16" (PYDL_CUDA_MATMUL_PRECISION)."""
    p = os.environ.get("PYDL_CUDA_MATMUL_PRECISION", "highest").lower()
    if p not in ("highest", "bf16"):
        raise ValueError(f"PYDL_CUDA_MATMUL_PRECISION: expected 'highest' or 'bf16', got {p!r}")
    return p


def _addr(a) -> int:
    """Device address of a CuPy array's first element."""
    return a.data.ptr


def _aligned(a, off, ld, stride):
    """16-byte copies possible: base, leading dimension and batch stride all 16-byte multiples."""
    w = 16 // a.itemsize
    return (_addr(a) + off * a.itemsize) % 16 == 0 and ld % w == 0 and stride % w == 0


def gemm(a, b, c, m, n, k, *, ta=False, tb=False, lda, ldb, ldc, batch=1, sa=0, sb=0, sc=0,
         a_off=0, b_off=0, c_off=0, bias=None, bias_off=0, bias_mode=0, act=None, gmul=None, beta=0.0,
         tensor_cores=None):
    """c[z] = epilogue(op(a[z]) @ op(b[z])) for z < batch (see gemm.cu).

    Element (i, j) of matrix z of ``a`` is ``a.flat[a_off + z*sa + i*lda + j]``
    (likewise b, c); ``ta``: a is stored (K, M); ``tb``: b is stored (N, K).
    ``bias_mode`` 1 adds bias[j] per column, 2 bias[i] per row; ``gmul``
    (same layout as c) turns the epilogue into gmul * act'(v) (linear's
    backward). ``tensor_cores``: None follows :func:`precision`.
    """
    if m == 0 or n == 0 or batch == 0:
        return c
    if tensor_cores is None:
        tensor_cores = a.dtype == np.float32 and precision() == "bf16"
    if tensor_cores:
        return _gemm_bf16_from_f32(a, b, c, m, n, k, ta=ta, tb=tb, lda=lda, ldb=ldb, ldc=ldc, batch=batch,
                                   sa=sa, sb=sb, sc=sc, a_off=a_off, b_off=b_off, c_off=c_off, bias=bias,
                                   bias_off=bias_off, bias_mode=bias_mode, act=act, gmul=gmul, beta=beta)
    ctype = _CTYPE[a.dtype]
    va = ta and _aligned(a, a_off, lda, sa)
    vb = (not tb) and _aligned(b, b_off, ldb, sb)
    bm = simt_tile(m, n, batch)
    bn = SIMT_TILES[bm][1]
    name = _simt_name(ctype, ta, tb, va, vb, bm)
    for z0 in range(0, batch, MAX_Z):
        nz = min(MAX_Z, batch - z0)
        launch("gemm", name, ((n + bn - 1) // bn, (m + bm - 1) // bm, nz), (256,),
               (ptr(a, a_off + z0 * sa), ptr(b, b_off + z0 * sb), ptr(c, c_off + z0 * sc),
                np.int32(m), np.int32(n), np.int32(k), np.int64(lda), np.int64(ldb), np.int64(ldc),
                np.int64(sa), np.int64(sb), np.int64(sc), ptr(bias, bias_off),
                ptr(gmul, c_off + z0 * sc), np.int64(sc), np.int32(bias_mode), np.int32(ACT_CODE[act]),
                np.float32(beta)))
    return c


def to_bf16(x, rows, cols, *, trans=False, ld_in, batch=1, s_in=0, off=0):
    """float32 matrices (rows, cols) -> bf16 bits (batch, rows, ceil8(cols)) as uint16, zero-padded;
    ``trans``: the source is stored (cols, rows)."""
    cupy = cupy_or_raise()
    ld = (cols + 7) // 8 * 8
    y = cupy.empty((batch, rows, ld), np.uint16)
    if y.size:
        per = rows * ld
        launch("gemm", f"cast_f32_bf16<{_B(trans)}>", (blocks_for(per), 1, batch), (256,),
               (ptr(x, off), y, np.int32(rows), np.int32(cols), np.int64(ld_in), np.int64(ld),
                np.int64(s_in), np.int64(per)))
    return y


def gemm_bf16(a16, b16, c, m, n, k, *, lda, ldb, ldc, batch=1, sa=0, sb=0, sc=0, c_off=0, bias=None,
              bias_off=0, bias_mode=0, act=None, gmul=None, beta=0.0):
    """Tensor-core GEMM: a16 (M, K) and b16 (N, K) bf16 bits (uint16 or bfloat16 arrays), K-contiguous,
    lda/ldb multiples of 8; c float32 or bf16 (uint16/bfloat16), c = epilogue(a @ b^T)."""
    if m == 0 or n == 0 or batch == 0:
        return c
    for name, x, ld, s in (("a", a16, lda, sa), ("b", b16, ldb, sb)):
        if x.itemsize != 2 or _addr(x) % 16 or ld % 8 or s % 8:
            raise ValueError(f"{name}: the bf16 kernel needs 16-byte aligned rows (2-byte elements, leading "
                             f"dimension and batch stride multiples of 8), got itemsize {x.itemsize}, "
                             f"ld {ld}, stride {s}")
    out_bf16 = c.itemsize == 2
    if bias is not None and bias.dtype != np.float32:
        raise TypeError(f"bias: the bf16 kernel's epilogue takes float32, got {bias.dtype}")
    bn, stages, smem = TC_TILE
    for z0 in range(0, batch, MAX_Z):
        nz = min(MAX_Z, batch - z0)
        launch("gemm", f"gemm_bf16_tc<{_B(out_bf16)}, {bn}, {stages}>", ((n + bn - 1) // bn, (m + 127) // 128, nz),
               (256,),
               (ptr(a16, z0 * sa), ptr(b16, z0 * sb), ptr(c, c_off + z0 * sc), np.int32(m), np.int32(n),
                np.int32(k), np.int64(lda), np.int64(ldb), np.int64(ldc), np.int64(sa), np.int64(sb),
                np.int64(sc), ptr(bias, bias_off), ptr(gmul, c_off + z0 * sc), np.int64(sc),
                np.int32(bias_mode), np.int32(ACT_CODE[act]), np.float32(beta)), shared_mem=smem)
    return c


def _gemm_bf16_from_f32(a, b, c, m, n, k, *, ta, tb, lda, ldb, ldc, batch, sa, sb, sc, a_off, b_off, c_off,
                        bias, bias_off, bias_mode, act, gmul, beta):
    """float32 operands rounded to bf16 ((M, K) and (N, K), K padded to 8), then the tensor-core kernel."""
    ab = 1 if sa == 0 else batch
    bb = 1 if sb == 0 else batch
    a16 = to_bf16(a, m, k, trans=ta, ld_in=lda, batch=ab, s_in=sa, off=a_off)
    b16 = to_bf16(b, n, k, trans=not tb, ld_in=ldb, batch=bb, s_in=sb, off=b_off)
    kp = a16.shape[2]
    return gemm_bf16(a16, b16, c, m, n, k, lda=kp, ldb=kp, ldc=ldc, batch=batch,
                     sa=0 if ab == 1 else m * kp, sb=0 if bb == 1 else n * kp, sc=sc, c_off=c_off, bias=bias,
                     bias_off=bias_off, bias_mode=bias_mode, act=act, gmul=gmul, beta=beta)


def matmul_bf16(a, b, out_dtype=np.float32):
    """(M, K) @ (K, N) of arrays holding bf16 (``ml_dtypes.bfloat16`` CuPy arrays or uint16 bit
    patterns, C-contiguous, K a multiple of 8) on the tensor cores; float32 result (or bf16 bits
    as uint16 with ``out_dtype=np.uint16``). ``b`` is transposed to (N, K) first (one copy)."""
    cupy = cupy_or_raise()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"b: expected (K, N) matching a (M, K), got a {a.shape}, b {b.shape}")
    a = cupy.ascontiguousarray(a)
    bt = cupy.ascontiguousarray(b.T)
    m, k = a.shape
    n = b.shape[1]
    c = cupy.empty((m, n), out_dtype)
    return gemm_bf16(a, bt, c, m, n, k, lda=k, ldb=k, ldc=n)


# -- layouts ------------------------------------------------------------------------

def _operand(x):
    """(array, transposed, leading dimension) of a 2-D or 3-D CuPy array's last two
    dims, read in place when C-ordered or transposed-C-ordered, else copied."""
    cupy = cupy_or_raise()
    if x.flags.c_contiguous:
        return x, False, x.shape[-1]
    xt = x.swapaxes(-1, -2)
    if xt.flags.c_contiguous:
        return xt, True, xt.shape[-1]
    x = cupy.ascontiguousarray(x)
    return x, False, x.shape[-1]


def _matmul(a, b, tensor_cores=None):
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else 1)
    out = _array.empty(((batch,) if max(a.ndim, b.ndim) == 3 else ()) + (m, n), a.dtype, like=a)
    A, ta, lda = _operand(a)
    B, tb, ldb = _operand(b)
    gemm(A, B, out, m, n, k, ta=ta, tb=tb, lda=lda, ldb=ldb, ldc=n, batch=batch,
         sa=m * k if a.ndim == 3 else 0, sb=k * n if b.ndim == 3 else 0, sc=m * n, tensor_cores=tensor_cores)
    return out


def _matmul_backward(grad, a, b, tensor_cores=None):
    cupy = cupy_or_raise()
    g = cupy.ascontiguousarray(grad)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    A, ta, lda = _operand(a)
    B, tb, ldb = _operand(b)
    batch = g.shape[0] if g.ndim == 3 else 1
    sa, sb = (m * k if a.ndim == 3 else 0), (k * n if b.ndim == 3 else 0)
    # da[z] = g[z] @ b[z]^T: b^T is b read with the other transpose flag
    da = _array.empty((batch, m, k) if g.ndim == 3 else (m, k), a.dtype, like=a)
    gemm(g, B, da, m, k, n, ta=False, tb=not tb, lda=n, ldb=ldb, ldc=k, batch=batch, sa=m * n, sb=sb,
         sc=m * k, tensor_cores=tensor_cores)
    if a.ndim < g.ndim:
        da = da.sum(axis=0)
    db = _array.empty((k, n), b.dtype, like=b)
    if b.ndim < g.ndim and a.ndim == 3 and not ta:
        # shared b: db = sum_z a[z]^T g[z] = (a flattened to (B*M, K))^T @ (g flattened to (B*M, N))
        gemm(A, g, db, k, n, batch * m, ta=True, tb=False, lda=lda, ldb=n, ldc=n, tensor_cores=tensor_cores)
        return da, db
    db = _array.empty((batch, k, n) if g.ndim == 3 else (k, n), b.dtype, like=b)
    gemm(A, g, db, k, n, m, ta=not ta, tb=False, lda=lda, ldb=n, ldc=n, batch=batch, sa=sa, sb=m * n,
         sc=k * n, tensor_cores=tensor_cores)
    if b.ndim < g.ndim:
        db = db.sum(axis=0)
    return da, db


@register("matmul", "cuda")
def matmul(a, b):
    return _matmul(a, b)


@register("matmul_backward", "cuda")
def matmul_backward(grad, a, b, saved=None):
    return _matmul_backward(grad, a, b)


@register("matmul", "cuda", variant="bf16")
def matmul_bf16_variant(a, b):
    return _matmul(a, b, tensor_cores=a.dtype == np.float32)


@register("matmul_backward", "cuda", variant="bf16")
def matmul_bf16_variant_backward(grad, a, b, saved=None):
    return _matmul_backward(grad, a, b, tensor_cores=a.dtype == np.float32)


# -- linear --------------------------------------------------------------------------

def _linear(x, weight, bias, activation, tensor_cores=None):
    cupy = cupy_or_raise()
    out_f, in_f = weight.shape
    x2 = cupy.ascontiguousarray(x).reshape(-1, in_f)
    W = cupy.ascontiguousarray(weight)
    rows = x2.shape[0]
    out = _array.empty((rows, out_f), x.dtype, like=x)
    gemm(x2, W, out, rows, out_f, in_f, tb=True, lda=in_f, ldb=in_f, ldc=out_f,
         bias=None if bias is None else cupy.ascontiguousarray(bias), bias_mode=0 if bias is None else 1,
         act=activation, tensor_cores=tensor_cores)
    return out.reshape(x.shape[:-1] + (out_f,))


def _linear_backward(grad, x, weight, bias, activation, tensor_cores=None):
    cupy = cupy_or_raise()
    out_f, in_f = weight.shape
    x2 = cupy.ascontiguousarray(x).reshape(-1, in_f)
    W = cupy.ascontiguousarray(weight)
    g2 = cupy.ascontiguousarray(grad).reshape(-1, out_f)
    rows = x2.shape[0]
    if activation is None:
        dz = g2
    else:  # dz = g * act'(x @ W^T + b): the forward GEMM again, its epilogue multiplying by g
        dz = _array.empty((rows, out_f), x.dtype, like=x)
        gemm(x2, W, dz, rows, out_f, in_f, tb=True, lda=in_f, ldb=in_f, ldc=out_f,
             bias=None if bias is None else cupy.ascontiguousarray(bias), bias_mode=0 if bias is None else 1,
             act=activation, gmul=g2, tensor_cores=tensor_cores)
    dx = _array.empty((rows, in_f), x.dtype, like=x)
    gemm(dz, W, dx, rows, in_f, out_f, lda=out_f, ldb=in_f, ldc=in_f, tensor_cores=tensor_cores)
    dw = _array.empty((out_f, in_f), weight.dtype, like=weight)
    gemm(dz, x2, dw, out_f, in_f, rows, ta=True, lda=out_f, ldb=in_f, ldc=in_f, tensor_cores=tensor_cores)
    db = None
    if bias is not None:
        db = _array.empty((out_f,), bias.dtype, like=bias)
        if out_f:
            launch("gemm", f"bias_grad<{_CTYPE[dz.dtype]}>", (blocks_for(out_f, per_thread=1),), (256,),
                   (dz, db, np.int64(rows), np.int32(out_f)))
    return dx.reshape(x.shape), dw, db


@register("linear", "cuda")
def linear(x, weight, bias, activation):
    # nothing saved: the backward recomputes grad * act'(z) inside its first GEMM's epilogue
    return _linear(x, weight, bias, activation), {"preact": None}


@register("linear_backward", "cuda")
def linear_backward(grad, x, weight, bias, activation, saved=None):
    return _linear_backward(grad, x, weight, bias, activation)


@register("linear", "cuda", variant="bf16")
def linear_bf16_variant(x, weight, bias, activation):
    return _linear(x, weight, bias, activation, tensor_cores=x.dtype == np.float32), {"preact": None}


@register("linear_backward", "cuda", variant="bf16")
def linear_bf16_variant_backward(grad, x, weight, bias, activation, saved=None):
    return _linear_backward(grad, x, weight, bias, activation, tensor_cores=x.dtype == np.float32)
