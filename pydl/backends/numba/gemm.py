"""Numba GEMM: matmul and linear (bias + activation fused into the store), forward and
backward, float32 and float64. The path and the figures of each variant: dev/gemm/numba.md.

Algorithm (``gemm_into``): out[b] = epilogue(op(A[b]) @ op(B[b])), op = optional transpose.
1. Pack A into UMR-row micro-panels (Ba, ceil(M/6), K, 6) and B into UNR-column slivers
   (Bb, ceil(N/UNR), K, UNR), UNR = 32 float32 / 16 float64, zero-padded, in parallel.
   Packing takes the transposes, so the kernel sees one layout.
2. ``prange`` over tasks (batch, 96 rows, 8 slivers). A task accumulates its tile in a
   private buffer, K in blocks of 256 (a (256, UNR) sliver is 32 KiB: L1), then runs the
   epilogue: + bias, activation (or, for the backward, grad * act'(z)), one store into
   ``out``.
3. The kernel (``_tile_kernel``): a 6 x UNR register tile, 12 zmm accumulators, per depth
   2 vector loads of B, 6 broadcasts of A, 12 vfmadd231ps zmm. It is an ``@intrinsic``
   that emits LLVM IR (vector types, llvm.fma): Numba's loops could not say it. What
   limits Numba here, measured (dev/gemm/numba.md): Numba runs LLVM with the SLP
   vectorizer off, so an unrolled tile of scalars stays scalar; a tile in a stack array
   is not promoted to registers (the loop over depth was vectorized with gathers
   instead); with 'reassoc' LLVM vectorizes the depth loop as 192 reductions; array
   indexing with a non-constant offset (``a[o + j]``) is not vectorized at all (the
   negative-index wrap), row views are. The best loops-only kernel (variant "jloop":
   4 rows x 4 depths of A in registers, one vectorized loop over a panel's columns,
   the C tile through L1 and B reloaded per row, since LLVM cannot prove the rows do not
   alias) reaches about a quarter of the FMA peak.
Small M (<= 4 rows per batch): no packing; row updates (B not transposed) or dot
products (B transposed: a weight), parallel over columns, B read once.
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import _array
from ...registry import register
from . import sync_threads
from .elementwise import _verfc, _vexp, _vtanh

_FM = {"contract", "arcp", "nsz"}
_JIT = dict(cache=True, nogil=True, fastmath=_FM, error_model="numpy", boundscheck=False)
_PJIT = dict(_JIT, parallel=True)

# the "jloop" variant (_block, _gemm_packed); the default kernel's sizes are UMR... below
MR = 4      # rows of A per kernel step
KU = 4      # depths per kernel step
MC = 64     # rows per task
KC = 256    # depth per L2 block
NW = 512    # panel width (columns per task)
# both
SMALL_M = 4             # up to this many rows per batch: the unpacked path (_gemm_small)
SERIAL_FLOPS = 1 << 22  # below: one thread (a parallel launch costs more than the product)

# epilogue modes: forward activations, then backward (grad * act'(z))
ACT_CODES = {None: 0, "relu": 1, "gelu": 2, "tanh": 3, "sigmoid": 4}
_BWD = 5
_SQRT1_2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794


def _round_up(n, m):
    return (n + m - 1) // m * m


# -- packing -------------------------------------------------------------------------------

@njit(**_PJIT)
def _pack_a(a, ta, ap):
    """ap[b, i, p] = A[b][i, p] (a is (Ba, M, K), or (Ba, K, M) when ta), zero padded."""
    nb, mp, kp = ap.shape
    m = a.shape[2] if ta else a.shape[1]
    k = a.shape[1] if ta else a.shape[2]
    zero = ap.dtype.type(0)
    for t in prange(nb * mp):
        b, i = t // mp, t % mp
        row = ap[b, i]
        if i >= m:
            for p in range(kp):
                row[p] = zero
            continue
        if ta:
            for p in range(k):
                row[p] = a[b, p, i]
        else:
            src = a[b, i]
            for p in range(k):
                row[p] = src[p]
        for p in range(k, kp):
            row[p] = zero


@njit(**_PJIT)
def _pack_b(b, tb, bp):
    """bp[b, jp, p, jj] = B[b][p, jp*NW + jj] (b is (Bb, K, N), or (Bb, N, K) when tb),
    zero padded. Transposed: 16 depths at a time, so each source row is read in runs."""
    nb, nj, kp, nw = bp.shape
    k = b.shape[2] if tb else b.shape[1]
    n = b.shape[1] if tb else b.shape[2]
    zero = bp.dtype.type(0)
    np16 = (kp + 15) // 16
    for t in prange(nb * nj * np16):
        bb = t // (nj * np16)
        jp = (t // np16) % nj
        p0 = (t % np16) * 16
        p1 = min(p0 + 16, kp)
        j0 = jp * nw
        jn = min(nw, n - j0)
        panel = bp[bb, jp]
        if tb:
            for jj in range(jn):
                src = b[bb, j0 + jj]
                for p in range(p0, p1):
                    panel[p, jj] = src[p] if p < k else zero
        else:
            for p in range(p0, p1):
                dst = panel[p]
                if p < k:
                    src = b[bb, p]
                    for jj in range(jn):
                        dst[jj] = src[j0 + jj]
                else:
                    for jj in range(jn):
                        dst[jj] = zero
        for p in range(p0, p1):
            dst = panel[p]
            for jj in range(jn, nw):
                dst[jj] = zero


# -- the kernel ----------------------------------------------------------------------------

@njit(**_JIT)
def _block(ap, i0, p0, bpan, cb, mc, kc):
    """cb[0:mc, :] += ap[i0:i0+mc, p0:p0+kc] @ bpan[p0:p0+kc, :] (mc, kc multiples of 4).
    A function of its own (not inlined into the prange body), so LLVM vectorizes the j loop."""
    nw = cb.shape[1]
    for i in range(0, mc, 4):
        c0 = cb[i]
        c1 = cb[i + 1]
        c2 = cb[i + 2]
        c3 = cb[i + 3]
        r0 = ap[i0 + i]
        r1 = ap[i0 + i + 1]
        r2 = ap[i0 + i + 2]
        r3 = ap[i0 + i + 3]
        for p in range(p0, p0 + kc, 4):
            a00, a01, a02, a03 = r0[p], r0[p + 1], r0[p + 2], r0[p + 3]
            a10, a11, a12, a13 = r1[p], r1[p + 1], r1[p + 2], r1[p + 3]
            a20, a21, a22, a23 = r2[p], r2[p + 1], r2[p + 2], r2[p + 3]
            a30, a31, a32, a33 = r3[p], r3[p + 1], r3[p + 2], r3[p + 3]
            b0 = bpan[p]
            b1 = bpan[p + 1]
            b2 = bpan[p + 2]
            b3 = bpan[p + 3]
            for j in range(nw):
                c0[j] = (((c0[j] + a00 * b0[j]) + a01 * b1[j]) + a02 * b2[j]) + a03 * b3[j]
                c1[j] = (((c1[j] + a10 * b0[j]) + a11 * b1[j]) + a12 * b2[j]) + a13 * b3[j]
                c2[j] = (((c2[j] + a20 * b0[j]) + a21 * b1[j]) + a22 * b2[j]) + a23 * b3[j]
                c3[j] = (((c3[j] + a30 * b0[j]) + a31 * b1[j]) + a32 * b2[j]) + a33 * b3[j]



# -- the register-tile kernel (default) ------------------------------------------------------
UMR = 6      # register tile rows
UMC = 16     # micro-panels (of UMR rows) per task: 96 rows
UJG = 8      # slivers (of UNR columns) per task: 256 float32 / 128 float64 columns
UKC = 256    # depth per block: a (UKC, UNR) sliver is 32 KiB, L1-resident (AVX-512)


def _vector_bytes():
    """The kernel's vector width: 64 bytes (zmm) with AVX-512, else 32 (ymm: 12 ymm
    accumulators + 3 fit AVX2's 16 registers; 12 zmm-sized ones split in two would not).
    Numba's on-disk cache is per CPU, so a cached kernel matches its machine."""
    try:
        import llvmlite.binding as llb

        return 64 if llb.get_host_cpu_features().get("avx512f", False) else 32
    except Exception:  # pragma: no cover - feature query unavailable
        return 32


VEC_BYTES = _vector_bytes()


@intrinsic
def _tile_kernel(typingctx, kc, ap, aoff, bp, boff, cb, coff, ldc):
    """cb[coff + i*ldc + j] += sum_p ap[aoff + p*UMR + i] * bp[boff + p*UNR + j] for i < UMR,
    j < UNR (UNR = two vectors of VEC_BYTES: 32 float32, 16 float64 with AVX-512), on the
    arrays' flat data.

    Written in LLVM IR: 2*UMR vector accumulators (allocas of <16 x float>, promoted to
    registers), per depth two vector loads of B, UMR broadcasts of A and 2*UMR calls of
    llvm.fma on vectors: 12 vfmadd231ps zmm, the whole tile in registers. Numba's own
    loops cannot say this (see the module docstring)."""
    dty = ap.dtype
    sig = types.void(kc, ap, aoff, bp, boff, cb, coff, ldc)

    def codegen(context, builder, signature, args):
        kc_, ap_, aoff_, bp_, boff_, cb_, coff_, ldc_ = args
        fty = context.get_value_type(dty)
        size = dty.bitwidth // 8
        w = VEC_BYTES // size
        nr = 2 * w
        vty = ir.VectorType(fty, w)
        ity = ir.IntType(64)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.v{w}f{dty.bitwidth}")
        pa = builder.gep(context.make_array(signature.args[1])(context, builder, ap_).data, [aoff_])
        pb = builder.gep(context.make_array(signature.args[3])(context, builder, bp_).data, [boff_])
        pc = builder.gep(context.make_array(signature.args[5])(context, builder, cb_).data, [coff_])
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * w)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(UMR)]
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), w), [0] * w)
        with cgutils.for_range(builder, kc_) as loop:
            p = loop.index
            brow = builder.gep(pb, [builder.mul(p, ir.Constant(ity, nr))])
            bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(ity, h * w)]),
                                               vty.as_pointer()), align=size) for h in range(2)]
            arow = builder.gep(pa, [builder.mul(p, ir.Constant(ity, UMR))])
            for i in range(UMR):
                a = builder.load(builder.gep(arow, [ir.Constant(ity, i)]))
                av = builder.shuffle_vector(
                    builder.insert_element(undef, a, ir.Constant(ir.IntType(32), 0)), undef, splat)
                for h in range(2):
                    builder.store(builder.call(fma, [av, bv[h], builder.load(acc[i][h])]), acc[i][h])
        for i in range(UMR):
            crow = builder.gep(pc, [builder.mul(ir.Constant(ity, i), ldc_)])
            for h in range(2):
                cp = builder.bitcast(builder.gep(crow, [ir.Constant(ity, h * w)]), vty.as_pointer())
                builder.store(builder.fadd(builder.load(cp, align=size), builder.load(acc[i][h])),
                              cp, align=size)
        return context.get_dummy_value()

    return sig, codegen


@njit(**_PJIT)
def _pack_a_panels(a, ta, ap):
    """ap[b, ir, p, i] = A[b][ir*UMR + i, p] (a is (Ba, M, K), or (Ba, K, M) when ta): UMR-row
    micro-panels, depth-major, rows past M zero."""
    nb, nmp, k, mr = ap.shape
    m = a.shape[2] if ta else a.shape[1]
    zero = ap.dtype.type(0)
    for t in prange(nb * nmp):
        b, ir = t // nmp, t % nmp
        pan = ap[b, ir]
        for i in range(mr):
            row = ir * mr + i
            if row >= m:
                for p in range(k):
                    pan[p, i] = zero
            elif ta:
                for p in range(k):
                    pan[p, i] = a[b, p, row]
            else:
                src = a[b, row]
                for p in range(k):
                    pan[p, i] = src[p]


@njit(**_PJIT)
def _gemm_tiles(ap, bp, out, bias, g, mode, umc, ujg, ukc):
    """Tasks (batch, umc micro-panels, ujg slivers) in prange; each accumulates its tile in
    a private buffer over K blocks of ukc, then runs the epilogue into out."""
    nbt, m, n = out.shape
    nmp, k, mr = ap.shape[1], ap.shape[2], ap.shape[3]
    nsl, nr = bp.shape[1], bp.shape[3]
    ni = (nmp + umc - 1) // umc
    nj = (nsl + ujg - 1) // ujg
    ldc = ujg * nr
    for t in prange(nbt * ni * nj):
        b = t // (ni * nj)
        ib = (t // nj) % ni
        jg = t % nj
        ir0, ir1 = ib * umc, min(ib * umc + umc, nmp)
        jr0, jr1 = jg * ujg, min(jg * ujg + ujg, nsl)
        cb = np.zeros(((ir1 - ir0) * mr, ldc), out.dtype)
        ba = b if ap.shape[0] > 1 else 0
        bb = b if bp.shape[0] > 1 else 0
        for p0 in range(0, k, ukc):
            kc = min(ukc, k - p0)
            for jr in range(jr0, jr1):
                boff = ((bb * nsl + jr) * k + p0) * nr
                for ir in range(ir0, ir1):
                    _tile_kernel(kc, ap, ((ba * nmp + ir) * k + p0) * mr, bp, boff,
                                 cb, ((ir - ir0) * mr) * ldc + (jr - jr0) * nr, ldc)
        gb = g[b if g.shape[0] > 1 else 0]
        i0 = ir0 * mr
        for i in range(min((ir1 - ir0) * mr, m - i0)):
            _store_row(cb[i], out[b, i0 + i], jr0 * nr, bias,
                       gb[i0 + i if gb.shape[0] > 1 else 0], mode)


# -- epilogue ------------------------------------------------------------------------------

@njit(**_JIT)
def _store_row(z, out, j0, bias, g, mode):
    """out[j0 + j] = f(z[j] + bias[j0 + j]) for j < out.size - j0 (bias.size 0: none).
    mode < 5: f = activation; mode >= 5: out = g[j0 + j] * act'(z + bias)."""
    n = min(z.size, out.size - j0)
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    half = out.dtype.type(0.5)
    c = out.dtype.type(_SQRT1_2)
    ci = out.dtype.type(_INV_SQRT_2PI)
    hasb = bias.size > 0
    o = out[j0:j0 + n]  # views: an offset index (out[j0 + j]) would not vectorize
    bs = bias[j0:j0 + n] if hasb else bias
    gs = g[j0:j0 + n] if mode >= 5 else g
    for j in range(n):
        v = z[j] + bs[j] if hasb else z[j]
        if mode == 0:
            r = v
        elif mode == 1:
            r = zero if v < zero else v
        elif mode == 2:
            r = half * v * _verfc(-v * c)
        elif mode == 3:
            r = _vtanh(v)
        elif mode == 4:
            e = _vexp(-abs(v))
            r = one / (one + e) if v >= zero else e / (one + e)
        elif mode == 5:
            r = gs[j]
        elif mode == 6:
            r = gs[j] if v > zero else zero
        elif mode == 7:
            r = gs[j] * (half * _verfc(-v * c) + v * ci * _vexp(-half * v * v))
        elif mode == 8:
            t = _vtanh(v)
            r = gs[j] * (one - t * t)
        else:
            e = _vexp(-abs(v))
            s = one / (one + e)
            r = gs[j] * (e * s * s)
        o[j] = r


# -- drivers -------------------------------------------------------------------------------

@njit(**_PJIT)
def _gemm_packed(ap, bp, out, bias, g, mode, mc_, kc_):
    nbt, m, n = out.shape
    mp, kp = ap.shape[1], ap.shape[2]
    nj, nw = bp.shape[1], bp.shape[3]
    ni = (mp + mc_ - 1) // mc_
    for t in prange(nbt * ni * nj):
        b = t // (ni * nj)
        ib = (t // nj) % ni
        jp = t % nj
        i0 = ib * mc_
        mc = min(mc_, mp - i0)
        cb = np.zeros((mc, nw), out.dtype)
        apb = ap[b if ap.shape[0] > 1 else 0]
        pan = bp[b if bp.shape[0] > 1 else 0, jp]
        for p0 in range(0, kp, kc_):
            _block(apb, i0, p0, pan, cb, mc, min(kc_, kp - p0))
        gb = g[b if g.shape[0] > 1 else 0]
        for i in range(min(mc, m - i0)):
            _store_row(cb[i], out[b, i0 + i], jp * nw, bias, gb[i0 + i if gb.shape[0] > 1 else 0], mode)


@njit(**_JIT)
def _axpy_rows(a, b, ta, o, j0, j1, acc):
    """acc[i, :] = sum_p A[i, p] * b[p, j0:j1] (b (K, N) rows; small M)."""
    m = acc.shape[0]
    k = b.shape[0]
    for i in range(m):
        c = acc[i]
        for j in range(j1 - j0):
            c[j] = 0
        for p in range(k):
            s = a[o, p, i] if ta else a[o, i, p]
            src = b[p, j0:j1]  # a view: src[j0 + j] (an offset index) would not vectorize
            for j in range(j1 - j0):
                c[j] += s * src[j]


@njit(cache=True, nogil=True, fastmath={"contract", "arcp", "nsz", "reassoc"},
      error_model="numpy", boundscheck=False)
def _dot(x, y):
    """sum x * y (1-D): 'reassoc' (this function only) lets LLVM vectorize the sum."""
    s = x.dtype.type(0)
    for p in range(x.size):
        s += x[p] * y[p]
    return s


@njit(**_PJIT)
def _gemm_small(a, ta, b, tb, out, bias, g, mode, chunk):
    """Few rows: no packing, B read once, parallel over column chunks."""
    nbt, m, n = out.shape
    nch = (n + chunk - 1) // chunk
    for t in prange(nbt * nch):
        bi = t // nch
        j0 = (t % nch) * chunk
        j1 = min(j0 + chunk, n)
        oa = bi if a.shape[0] > 1 else 0
        ob = bi if b.shape[0] > 1 else 0
        acc = np.empty((m, chunk), out.dtype)
        if tb:
            arow = np.empty(b.shape[2], out.dtype)
            for i in range(m):
                for p in range(arow.size):
                    arow[p] = a[oa, p, i] if ta else a[oa, i, p]
                for j in range(j1 - j0):
                    acc[i, j] = _dot(arow, b[ob, j0 + j])
        else:
            _axpy_rows(a, b[ob], ta, oa, j0, j1, acc)
        for i in range(m):
            _store_row(acc[i, :j1 - j0], out[bi, i, j0:], 0, bias[j0:j1] if bias.size else bias,
                       g[bi if g.shape[0] > 1 else 0, i if g.shape[1] > 1 else 0, j0:], mode)


_NO_BIAS = {np.dtype(np.float32): np.zeros(0, np.float32), np.dtype(np.float64): np.zeros(0, np.float64)}


def _c3(x):
    x = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    return x if x.ndim == 3 else x[None]


def _operand(x, trans):
    """(C-contiguous 3-D array, transposed flag) for op(x) = x or x.T per batch: an
    F-ordered matrix (x.T of a C array) is passed as its C-ordered transpose."""
    if x.ndim == 2 and not x.flags.c_contiguous and x.flags.f_contiguous and x.size > 1:
        return x.T[None], not trans
    if x.ndim == 3 and not x.flags.c_contiguous:
        s = np.swapaxes(x, 1, 2)
        if s.flags.c_contiguous:
            return s, not trans
    return _c3(x), trans


def gemm_into(a, b, out, ta=False, tb=False, bias=None, activation=None, grad=None,
              kernel="tile"):
    """out = act(op(a) @ op(b) + bias) on plain NumPy arrays (float32 or float64, one dtype).

    op(x) is x, or x's last two axes swapped when ta/tb. a: (M, K) or (Ba, M, K)
    ((K, M) ... when ta); b: (K, N) or (Bb, K, N) ((N, K) ... when tb); out: (M, N) or
    (B, M, N), C-contiguous, written in full; a 2-D operand is shared by every batch.
    bias: (N,) or None. activation: None, "relu", "gelu", "tanh", "sigmoid". With ``grad``
    (shaped like out), out = grad * act'(op(a) @ op(b) + bias) instead (the backward).
    Any strides: non-contiguous inputs are copied. Returns out. ``kernel``: "tile" (the
    register-tile kernel) or "jloop" (the first variant, in Numba loops only).
    """
    assert out.flags.c_contiguous
    sync_threads()
    a3, ta = _operand(a, ta)
    b3, tb = _operand(b, tb)
    o3 = out if out.ndim == 3 else out[None]
    nbt, m, n = o3.shape
    k = a3.shape[1] if ta else a3.shape[2]
    if o3.size == 0:
        return out
    mode = ACT_CODES[activation] + (_BWD if grad is not None else 0)
    bias = _NO_BIAS[out.dtype] if bias is None else np.ascontiguousarray(bias)
    g3 = o3[:1, :1] if grad is None else _c3(grad)
    if k == 0:
        a3 = np.zeros((1, m, 1), o3.dtype)
        b3 = np.zeros((1, 1, n), o3.dtype)
        ta = tb = False
        k = 1
    serial = 2 * nbt * m * n * k < SERIAL_FLOPS
    if serial:  # a parallel launch costs more than the product (and far more on a busy machine)
        numba.set_num_threads(1)
    try:
        _gemm_dispatch(a3, ta, b3, tb, o3, bias, g3, mode, m, n, k, kernel)
    finally:
        if serial:
            sync_threads()
    return out


def _gemm_dispatch(a3, ta, b3, tb, o3, bias, g3, mode, m, n, k, kernel):
    if m <= SMALL_M:
        # wide chunks: B's rows are read in runs of chunk columns; runs of 256 (1 KiB) from
        # rows 16 KiB apart touched a new page every KiB (0.2x NumPy on 1x4096x4096)
        chunk = min(2048, max(64, _round_up(-(-n // numba.get_num_threads()), 16)))
        _gemm_small(a3, ta, b3, tb, o3, bias, g3, mode, chunk)
        return
    if kernel == "tile":
        nr = 2 * VEC_BYTES // o3.itemsize
        ap = np.empty((a3.shape[0], (m + UMR - 1) // UMR, k, UMR), o3.dtype)
        _pack_a_panels(a3, ta, ap)
        bp = np.empty((b3.shape[0], (n + nr - 1) // nr, k, nr), o3.dtype)
        _pack_b(b3, tb, bp)
        _gemm_tiles(ap, bp, o3, bias, g3, mode, UMC, UJG, UKC)
        return
    mp, kp = _round_up(m, MR), _round_up(k, KU)
    nw = min(NW, _round_up(n, 16))
    nj = (n + nw - 1) // nw
    ap = np.empty((a3.shape[0], mp, kp), o3.dtype)
    _pack_a(a3, ta, ap)
    bp = np.empty((b3.shape[0], nj, kp, nw), o3.dtype)
    _pack_b(b3, tb, bp)
    _gemm_packed(ap, bp, o3, bias, g3, mode, MC, KC)


# -- ops -----------------------------------------------------------------------------------

@register("matmul", "numba")
def matmul(a, b):
    shape = (max(a.shape[0] if a.ndim == 3 else 0, b.shape[0] if b.ndim == 3 else 0),) \
        if max(a.ndim, b.ndim) == 3 else ()
    out = _array.empty(shape + (a.shape[-2], b.shape[-1]), a.dtype)
    return gemm_into(a, b, out)


def _rows(x):
    """x as 2-D rows (..., n) -> (prod(...), n); the row count given for n = 0, where
    reshape(-1, 0) of an empty array is ambiguous (NumPy refuses it)."""
    n = x.shape[-1]
    return x.reshape(-1, n) if n else x.reshape(math.prod(x.shape[:-1]), 0)


def _sum_batch(x3, shape):
    """x3 (B, r, c) summed over the batch when the operand was 2-D."""
    return x3 if len(shape) == 3 else x3.sum(axis=0)


@register("matmul", "numba", variant="jloop")
def matmul_jloop(a, b):
    """The first variant: the 4x4 j-loop kernel (Numba loops only, C tile through L1)."""
    shape = (max(a.shape[0] if a.ndim == 3 else 0, b.shape[0] if b.ndim == 3 else 0),) \
        if max(a.ndim, b.ndim) == 3 else ()
    out = _array.empty(shape + (a.shape[-2], b.shape[-1]), a.dtype)
    return gemm_into(a, b, out, kernel="jloop")


@register("matmul_backward", "numba")
def matmul_backward(grad, a, b, saved=None):
    # da = grad @ b^T, db = a^T @ grad. A 2-D b under a 3-D a: db = a2^T grad2, one product
    # over the flattened batch rows (no sum needed); a 2-D a under a 3-D b: per batch, summed.
    if a.ndim == 3 and b.ndim == 2:
        da = gemm_into(grad, b, _array.empty(a.shape, a.dtype), tb=True)
        a2, g2 = _rows(a), _rows(grad)
        db = gemm_into(a2, g2, _array.empty(b.shape, b.dtype), ta=True)
        return da, db
    # batched by grad's rank, not its batch size: an empty batch (0, M, N) is still one, and
    # a 2-D operand's gradient is then the sum of nothing, zeros (it was np.empty's garbage)
    batched = grad.ndim == 3
    nb = grad.shape[0] if batched else 0
    da_shape = (nb,) + a.shape[-2:] if batched else a.shape
    db_shape = (nb,) + b.shape[-2:] if batched else b.shape
    da = gemm_into(grad, b, np.empty(da_shape, a.dtype), tb=True)
    db = gemm_into(a, grad, np.empty(db_shape, b.dtype), ta=True)
    if batched and a.ndim == 2:
        da = da.sum(axis=0)
    return da.astype(a.dtype, copy=False), db


@register("linear", "numba")
def linear(x, weight, bias, activation):
    x2 = _rows(x)
    out = _array.empty(x.shape[:-1] + (weight.shape[0],), x.dtype)
    gemm_into(x2, weight, _rows(out), tb=True, bias=bias,
              activation=activation)
    # nothing saved: the backward recomputes grad * act'(z) inside its first GEMM's store
    return out, {"preact": None}


@register("linear_backward", "numba")
def linear_backward(grad, x, weight, bias, activation, saved=None):
    n_out, n_in = weight.shape
    x2, g2 = _rows(x), _rows(grad)
    if activation is None:
        dz = np.ascontiguousarray(g2)
    else:  # dz = grad * act'(x W^T + b): the GEMM's epilogue applies it, z never stored
        dz = gemm_into(x2, weight, np.empty(g2.shape, x.dtype), tb=True, bias=bias,
                       activation=activation, grad=g2)
    dx = gemm_into(dz, weight, _rows(_array.empty(x.shape, x.dtype)))
    dw = gemm_into(dz, x2, _array.empty(weight.shape, x.dtype), ta=True)
    db = None if bias is None else dz.sum(axis=0, dtype=np.float64).astype(x.dtype)
    return dx.reshape(x.shape), dw, db
