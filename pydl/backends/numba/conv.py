"""numba adapters for the conv family: im2col, col2im, conv2d forward and backward.

im2col / col2im ops: one ``prange`` over the (image, channel) planes; each plane's
R*S column rows are written (read) row by row with the valid output range
[lo, hi) computed once per tap, the copies and adds on uint64 flat offsets (a
signed offset index ``a[o + j]`` is not vectorized). col2im owns each input plane,
so the overlapping-window sums need no atomics.

conv2d (dev/conv/jit.md, rounds 1 and 2): with at least as many images as threads, one
prange over image slots (one per thread); per image, tile of output rows (column tile
within TILE_BYTES) and group: im2col straight into the GEMM's slivers (``_im2col_slivers``:
each run one masked vector copy, ``_mcopy``; a width stride first splits the image into
column phases), then a serial GEMM on the register-tile kernel of gemm.py
(``_tile_kernel``) with the weights packed once per call, stored straight into out with
the bias. Backward per tile: dW_g += dy_g @ cols^T (cols^T straight into slivers) into the
slot's partial, dcols = W_g^T @ dy_g, col2im into dx (1x1: straight into dx). Few filters
per group (<= 4: depthwise): a direct forward and backward, no columns. Fewer images than
threads: the chunked driver of _conv_im2col, whose GEMM (gemm.gemm_into) runs on every
thread. Index arithmetic is on uint64 flat offsets and never through numba's slice
assignment (~30 ns a call; a signed offset index does not vectorize): see _copy_row.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import _array
from ...ops.conv import output_hw
from .. import _conv_im2col
from . import sync_threads
from .gemm import SERIAL_FLOPS, SMALL_M, UKC, UMR, VEC_BYTES, _tile_kernel, gemm_into

_JIT = dict(parallel=True, cache=True, nogil=True)
_HELP = dict(cache=True, nogil=True, fastmath={"contract", "nsz"})


@njit(**_HELP)
def _valid(off, stride, w, ow):
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    hi = 0 if off > w - 1 else (w - 1 - off) // stride + 1
    hi = min(hi, ow)
    return min(lo, hi), hi


_U = np.uint64


@njit(**_HELP)
def _copy_row(dst, d0, src, s0, lo, hi, ow, sw):
    """dst[d0:d0+ow] = the row src[s0 + j*sw] for j in [lo, hi), zero outside. Flat indices
    in uint64: a signed index costs the negative-index wrap test, which keeps LLVM from
    vectorizing (and numba's slice assignment costs ~30 ns a call: 9x slower on 32-wide
    rows, dev/conv/jit.md round 2). Every index here is >= 0 (s0 may be negative, s0 +
    lo*sw is not); all the uint64 arithmetic stays uint64 (uint64 + int64 is float64)."""
    d = _U(d0)
    for j in range(_U(lo)):
        dst[d + j] = 0
    db = _U(d0 + lo)
    sb = _U(s0 + lo * sw)
    if sw == 1:
        for j in range(_U(hi - lo)):
            dst[db + j] = src[sb + j]
    else:
        st = _U(sw)
        for j in range(_U(hi - lo)):
            dst[db + j] = src[sb + j * st]
    for j in range(_U(hi), _U(ow)):
        dst[d + j] = 0


@njit(**_HELP)
def _zero_row(dst, d0, ow):
    d = _U(d0)
    for j in range(_U(ow)):
        dst[d + j] = 0


@njit(**_HELP)
def _add_row(dst, d0, src, s0, lo, hi, sw):
    """dst[d0 + j*sw] += src[s0 + j] for j in [lo, hi) (uint64 indices, as _copy_row)."""
    db = _U(d0 + lo * sw)
    sb = _U(s0 + lo)
    if sw == 1:
        for j in range(_U(hi - lo)):
            dst[db + j] += src[sb + j]
    else:
        st = _U(sw)
        for j in range(_U(hi - lo)):
            dst[db + j * st] += src[sb + j]


@njit(**_JIT)
def _im2col(x, cols, planes, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """x flat (planes*h*w), cols flat (planes*kh*kw*oh*ow)."""
    L = oh * ow
    for p in prange(planes):
        for r in range(kh):
            for s in range(kw):
                row = (p * kh * kw + r * kw + s) * L
                off = s * dw - pw
                lo, hi = _valid(off, sw, w, ow)
                for o in range(oh):
                    ih = o * sh - ph + r * dh
                    if ih < 0 or ih >= h:
                        _zero_row(cols, row + o * ow, ow)
                    else:
                        _copy_row(cols, row + o * ow, x, (p * h + ih) * w + off, lo, hi, ow, sw)


@njit(**_JIT)
def _col2im(cols, x, planes, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Overwrites x flat (planes*h*w) with the column sums."""
    L = oh * ow
    for p in prange(planes):
        _zero_row(x, p * h * w, h * w)
        for r in range(kh):
            for s in range(kw):
                row = (p * kh * kw + r * kw + s) * L
                off = s * dw - pw
                lo, hi = _valid(off, sw, w, ow)
                for o in range(oh):
                    ih = o * sh - ph + r * dh
                    if ih >= 0 and ih < h:
                        _add_row(x, (p * h + ih) * w + off, cols, row + o * ow, lo, hi, sw)


@njit(**_HELP)
def _col2im_planes(cols, x, h, w, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow):
    """x (planes*h*w flat) += the column sums of output rows o0..o1 (cols: (planes*kh*kw,
    (o1-o0)*ow), rows of taps as im2col's), one thread."""
    for p in range(x.size // (h * w)):
        for r in range(kh):
            for s in range(kw):
                row = cols[(p * kh + r) * kw + s]
                off = s * dw - pw
                lo, hi = _valid(off, sw, w, ow)
                for o in range(o0, o1):
                    ih = o * sh - ph + r * dh
                    if ih >= 0 and ih < h:
                        _add_row(x, (p * h + ih) * w + off, row, (o - o0) * ow, lo, hi, sw)


# -- conv2d forward / backward: parallel over images, a serial tile GEMM per image --------
#
# The chunked driver (_conv_im2col.forward) calls gemm_into once per chunk and group: every
# call re-packs the weights, runs three parallel loops (two packings, the tiles) and the
# result is copied into out. Here one prange runs over slots of images (slot t takes
# images t, t+T, ...); per image and group: im2col into the slot's buffer, the columns
# packed into UNR-wide slivers, then gemm_serial with the weights packed ONCE per call,
# stored straight into out (bias added in the store). Backward: dW_g += dy_g @ cols^T into
# the slot's dW partial, dcols = W_g^T @ dy_g (W^T packed once per call), col2im into dx.


@intrinsic
def _mcopy(typingctx, dst, doff, src, soff, a, b, m):
    """dst[doff + u] = (src[soff + u] if a <= u < b else 0) for u < m, m <= one 64-byte
    vector's lanes (16 float32, 8 float64): one masked load (lanes outside [a, b) read
    nothing: no fault, soff + u may be out of the array there) and one masked store, in
    LLVM IR (llvm.masked.load / store). For the short runs of im2col-to-slivers (rows of
    ow <= 56, cut at sliver edges): LLVM's vectorized loops run 64 elements a step
    (4 x 16, interleaved), so every shorter run went through their scalar remainder."""
    dty = dst.dtype
    sig = types.void(dst, doff, src, soff, a, b, m)

    def codegen(context, builder, signature, args):
        dst_, doff_, src_, soff_, a_, b_, m_ = args
        fty = context.get_value_type(dty)
        w = 64 // (dty.bitwidth // 8)
        vty = ir.VectorType(fty, w)
        ity = ir.IntType(64)
        ivty = ir.VectorType(ity, w)
        mty = ir.VectorType(ir.IntType(1), w)
        i32 = ir.IntType(32)
        ld = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty.as_pointer(), i32, mty, vty]),
            f"llvm.masked.load.v{w}f{dty.bitwidth}.p0")
        st = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
            f"llvm.masked.store.v{w}f{dty.bitwidth}.p0")
        pd = builder.gep(context.make_array(signature.args[0])(context, builder, dst_).data, [doff_])
        ps = builder.gep(context.make_array(signature.args[2])(context, builder, src_).data, [soff_])
        lanes = ir.Constant(ivty, list(range(w)))
        undef = ir.Constant(ivty, ir.Undefined)
        zeros32 = ir.Constant(ir.VectorType(i32, w), [0] * w)

        def splat(v):
            return builder.shuffle_vector(builder.insert_element(undef, v, ir.Constant(i32, 0)), undef, zeros32)

        mload = builder.and_(builder.icmp_signed(">=", lanes, splat(a_)), builder.icmp_signed("<", lanes, splat(b_)))
        mstore = builder.icmp_signed("<", lanes, splat(m_))
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * w)
        align = ir.Constant(i32, dty.bitwidth // 8)
        v = builder.call(ld, [builder.bitcast(ps, vty.as_pointer()), align, mload, zero])
        builder.call(st, [v, builder.bitcast(pd, vty.as_pointer()), align, mstore])
        return context.get_dummy_value()

    return sig, codegen


@njit(**_HELP)
def _pack_panels(a, ap):
    """ap (nmp, k, UMR) = a (m, k) (row-major rows, any row stride) in UMR-row micro-panels,
    rows past m zero (uint64 flat indices, see _copy_row)."""
    m, k = a.shape
    nmp = ap.shape[0]
    apf = ap.reshape(-1)
    for ir in range(nmp):
        for i in range(UMR):
            row = ir * UMR + i
            d = _U(ir * k * UMR + i)
            if row < m:
                src = a[row]
                for p in range(_U(k)):
                    apf[d + p * _U(UMR)] = src[p]
            else:
                for p in range(_U(k)):
                    apf[d + p * _U(UMR)] = 0


@njit(**_HELP)
def _pack_slivers(b, bp):
    """bp (nsl, k, nr) = b (k, n) (row-major rows, any row stride) in nr-column slivers,
    columns past n zero (uint64 flat indices: numba's ``d[:jn] = b[p, j0:j1]`` cost ~30 ns
    a call, 9x this loop)."""
    k, n = b.shape
    nsl, nr = bp.shape[0], bp.shape[2]
    bpf = bp.reshape(-1)
    for p in range(k):
        src = b[p]
        for jr in range(nsl):
            j0 = jr * nr
            jn = min(nr, n - j0)
            d = _U((jr * k + p) * nr)
            s0 = _U(j0)
            for j in range(_U(jn)):
                bpf[d + j] = src[s0 + j]
            for j in range(_U(jn), _U(nr)):
                bpf[d + j] = 0


@njit(**_HELP)
def _im2col_slivers(x, bpf, h, w, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow, crs, nr, wq, t0=0):
    """The column tile of output rows o0..o1 straight into GEMM slivers, no column matrix:
    bpf[(t // nr)*crs*nr + q*nr + t % nr] = cols[q, t] (q = (ci*kh + r)*kw + s, t = (o-o0)*ow
    + j), positions past the tile zero. x: one group's planes (crs // (kh*kw) of h*w), flat;
    or, when wq > 0 (a width stride sw > 1), the same planes split by _phase_split into sw
    column phases of wq columns each ((ci*sw + phase)*h + row)*wq + col, so every run is a
    contiguous copy. Per (tap, output row) the valid range [lo, hi) once, then runs cut at
    sliver edges. t0 > 0: the positions start at t0 (a second image after a first one's
    t0 positions, dev/conv/jit.md round 2), the tail zeroed for t0 + T positions."""
    T = t0 + (o1 - o0) * ow
    nsl = (T + nr - 1) // nr
    tail = T - (nsl - 1) * nr
    if tail < nr:
        for q in range(crs):
            d = _U(((nsl - 1) * crs + q) * nr)
            for u in range(_U(tail), _U(nr)):
                bpf[d + u] = 0
    st = _U(sw)
    vl = 64 // x.itemsize  # _mcopy's lanes
    for ci in range(crs // (kh * kw)):
        for r in range(kh):
            for s in range(kw):
                q = (ci * kh + r) * kw + s
                off = s * dw - pw
                if wq > 0:  # column j*sw + off = (j + offq)*sw + phase: phase plane, stride 1
                    phs = off % sw
                    offq = (off - phs) // sw
                    lo, hi = _valid(offq, 1, (w - phs + sw - 1) // sw, ow)
                else:
                    lo, hi = _valid(off, sw, w, ow)
                dq = (t0 // nr * crs + q) * nr  # flat offset of (sliver, tap q), advanced run by run
                jj = t0 % nr                     # position within the sliver
                for o in range(o0, o1):
                    ih = o * sh - ph + r * dh
                    if ih < 0 or ih >= h:
                        lo_o, hi_o = ow, ow
                    else:
                        lo_o, hi_o = lo, hi
                    if wq > 0:
                        srow = ((ci * sw + phs) * h + ih) * wq + offq
                    else:
                        srow = (ci * h + ih) * w + off  # may be < 0; + j*sw is not for j in [lo, hi)
                    j = 0
                    while j < ow:
                        m = min(nr - jj, ow - j)
                        a = min(max(lo_o - j, 0), m)
                        b = max(min(hi_o - j, m), a)
                        if sw == 1 or wq > 0:  # masked vector copies, zeros included
                            c0 = 0
                            while c0 < m:
                                _mcopy(bpf, dq + jj + c0, x, srow + j + c0, a - c0, b - c0, min(vl, m - c0))
                                c0 += vl
                        else:
                            d = _U(dq + jj)
                            for u in range(_U(a)):
                                bpf[d + u] = 0
                            if b > a:
                                db = d + _U(a)
                                sb = _U(srow + (j + a) * sw)
                                for u in range(_U(b - a)):
                                    bpf[db + u] = x[sb + u * st]
                            for u in range(_U(b), _U(m)):
                                bpf[d + u] = 0
                        j += m
                        jj += m
                        if jj == nr:
                            jj = 0
                            dq += crs * nr


@njit(**_HELP)
def _phase_split(x, xs, planes, h, w, sw, wq):
    """xs[((p*sw + phase)*h + row)*wq + jq] = x[p, row, jq*sw + phase] (flat; columns past a
    phase's width left as they are, never read): a width stride's gather done once per
    image, not once per tap (AlexNet: 121 taps, stride 4)."""
    st = _U(sw)
    for p in range(planes):
        for phs in range(sw):
            wp = (w - phs + sw - 1) // sw
            for r in range(h):
                d = _U(((p * sw + phs) * h + r) * wq)
                s0 = _U((p * h + r) * w + phs)
                for jq in range(_U(wp)):
                    xs[d + jq] = x[s0 + jq * st]


@njit(**_HELP)
def _im2col_slivers_t(x, bpf, h, w, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow, crs, nr):
    """cols^T of the tile in slivers of nr taps (depth = the T positions):
    bpf[((q // nr)*T + t)*nr + q % nr] = cols[q, t], taps past crs zero (the B operand of
    dW_g += dy_g @ cols^T). Strided stores (nr apart), one pass, no column matrix. (Sliver by
    sliver, each output row's (ow x nr) block filled by its nr taps while in L1, ran 1.1-1.8x
    slower: the per-(tap, row) set-up is paid per row of ow elements, not per tap.)"""
    T = (o1 - o0) * ow
    nsl = (crs + nr - 1) // nr
    tail = crs - (nsl - 1) * nr
    ntr = _U(nr)
    if tail < nr:
        for t in range(T):
            d = _U(((nsl - 1) * T + t) * nr)
            for u in range(_U(tail), ntr):
                bpf[d + u] = 0
    st = _U(sw)
    for ci in range(crs // (kh * kw)):
        for r in range(kh):
            for s in range(kw):
                q = (ci * kh + r) * kw + s
                base = (q // nr) * T * nr + q % nr
                off = s * dw - pw
                lo, hi = _valid(off, sw, w, ow)
                for o in range(o0, o1):
                    ih = o * sh - ph + r * dh
                    d = _U(base + (o - o0) * ow * nr)
                    if ih < 0 or ih >= h:
                        for j in range(_U(ow)):
                            bpf[d + j * ntr] = 0
                        continue
                    for j in range(_U(lo)):
                        bpf[d + j * ntr] = 0
                    sb = _U((ci * h + ih) * w + off + lo * sw)
                    db = _U(base + ((o - o0) * ow + lo) * nr)
                    for j in range(_U(hi - lo)):
                        bpf[db + j * ntr] = x[sb + j * st]
                    for j in range(_U(hi), _U(ow)):
                        bpf[d + j * ntr] = 0


@njit(**_HELP)
def _sliver_product(ap, bp, jr, cb):
    """cb (nmp*UMR, nr) = A @ sliver jr of B, A packed by _pack_panels (nmp, k, UMR), B by
    _pack_slivers (nsl, k, nr): every micro-panel of A, KC rows at a time."""
    nmp, k = ap.shape[0], ap.shape[1]
    nr = bp.shape[2]
    cbf = cb.reshape(-1)
    for j in range(_U(cbf.size)):
        cbf[j] = 0
    for p0 in range(0, k, UKC):
        kc = min(UKC, k - p0)
        for ir in range(nmp):
            _tile_kernel(kc, ap, (ir * k + p0) * UMR, bp, (jr * k + p0) * nr, cb, ir * UMR * nr, nr)


@njit(**_HELP)
def _gemm_serial(ap, bp, c, accumulate, bias, cb):
    """c (m, n) (=|+=) A @ B (+ bias[i] per row, bias.size 0: none), A packed by
    _pack_panels (nmp, k, UMR), B by _pack_slivers (nsl, k, nr); cb: (nmp*UMR, nr) scratch."""
    m, n = c.shape
    nsl, nr = bp.shape[0], bp.shape[2]
    hasb = bias.size > 0
    for jr in range(nsl):
        _sliver_product(ap, bp, jr, cb)
        j0 = _U(jr * nr)
        jn = _U(min(nr, n - jr * nr))
        # loops on uint64 indices, not ``d[:] = z``: numba's slice assignment cost ~30 ns a
        # row, as much as the kernel on K = 64 (the backward's W^T @ dy ran at 1/3 speed)
        for i in range(m):
            d = c[i]
            z = cb[i]
            if accumulate:
                for j in range(jn):
                    d[j0 + j] += z[j]
            elif hasb:
                bv = bias[i]
                for j in range(jn):
                    d[j0 + j] = z[j] + bv
            else:
                for j in range(jn):
                    d[j0 + j] = z[j]


@njit(**_HELP)
def _gemm_serial2(ap, bp, c1, c2, bias, cb):
    """_gemm_serial (no accumulate) into the columns of two outputs side by side: columns
    [0, n1) of A @ B go to c1 (m, n1), the next n2 to c2 (m, n2) (two images' output planes:
    a 14x14 image's L = 196 fills 6.1 slivers of 32, two fill 12.25: 2% of the tile's
    columns padding instead of 12.5%)."""
    m, n1 = c1.shape
    n = n1 + c2.shape[1]
    nsl, nr = bp.shape[0], bp.shape[2]
    hasb = bias.size > 0
    for jr in range(nsl):
        _sliver_product(ap, bp, jr, cb)
        j0 = jr * nr
        jn = min(nr, n - j0)
        s1 = min(max(n1 - j0, 0), jn)  # columns of this sliver in c1
        for i in range(m):
            z = cb[i]
            bv = bias[i] if hasb else cb.dtype.type(0)
            d = c1[i]
            for j in range(_U(s1)):
                d[_U(j0) + j] = z[j] + bv
            d = c2[i]
            for j in range(_U(s1), _U(jn)):
                d[_U(j0 - n1) + j] = z[j] + bv


@njit(**_HELP)
def _direct_image(x, w2, out, bias, groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Few filters per group (depthwise): no columns. out (K, L) of one image x (C*H*W
    flat): each output plane is bias + one pass per input channel and tap (row views)."""
    k, L = out.shape
    crs = w2.shape[1]
    cg = crs // (kh * kw)
    kg = k // groups
    st = _U(sw)
    for kk in range(k):
        g = kk // kg
        orow = out[kk]
        bv = bias[kk] if bias.size else 0
        for j in range(_U(L)):
            orow[j] = bv
        for ci in range(cg):
            for r in range(kh):
                for s in range(kw):
                    wv = w2[kk, (ci * kh + r) * kw + s]
                    off = s * dw - pw
                    lo, hi = _valid(off, sw, w, ow)
                    if hi <= lo:
                        continue
                    for o in range(oh):
                        ih = o * sh - ph + r * dh
                        if ih < 0 or ih >= h:
                            continue
                        s0 = _U(((g * cg + ci) * h + ih) * w + off + lo * sw)
                        d0 = _U(o * ow + lo)
                        if sw == 1:
                            for j in range(_U(hi - lo)):
                                orow[d0 + j] += wv * x[s0 + j]
                        else:
                            for j in range(_U(hi - lo)):
                                orow[d0 + j] += wv * x[s0 + j * st]


@njit(cache=True, nogil=True, fastmath={"contract", "nsz", "reassoc"})
def _dot_at(a, a0, b, b0, n):
    """sum a[a0 + j] * b[b0 + j], j < n (uint64 offsets); 'reassoc' (this function only) lets
    LLVM vectorize the sum (a serial chain of float adds: 4 cycles an element)."""
    acc = a.dtype.type(0)
    for j in range(_U(n)):
        acc += a[a0 + j] * b[b0 + j]
    return acc


@njit(**_HELP)
def _direct_bwd_image(x, w2, gy, dx, dwp, groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, with_dx):
    """The direct forward's backward for one image: dx (C*H*W flat, overwritten; untouched
    without with_dx) gets w * dy scattered back per tap (a transposed convolution), dwp
    (K, C/G*R*S) += the dot products of dy with the tap's input rows."""
    k, L = gy.shape
    crs = w2.shape[1]
    cg = crs // (kh * kw)
    kg = k // groups
    st = _U(sw)
    if with_dx:
        dx[:] = 0
    for kk in range(k):
        g = kk // kg
        gr = gy[kk]
        for ci in range(cg):
            for r in range(kh):
                for s in range(kw):
                    q = (ci * kh + r) * kw + s
                    wv = w2[kk, q]
                    off = s * dw - pw
                    lo, hi = _valid(off, sw, w, ow)
                    if hi <= lo:
                        continue
                    acc = x.dtype.type(0)
                    for o in range(oh):
                        ih = o * sh - ph + r * dh
                        if ih < 0 or ih >= h:
                            continue
                        s0 = _U(((g * cg + ci) * h + ih) * w + off + lo * sw)
                        d0 = _U(o * ow + lo)
                        if sw == 1:
                            acc += _dot_at(gr, d0, x, s0, hi - lo)
                            if with_dx:
                                for j in range(_U(hi - lo)):
                                    dx[s0 + j] += wv * gr[d0 + j]
                        else:
                            for j in range(_U(hi - lo)):
                                acc += gr[d0 + j] * x[s0 + j * st]
                            if with_dx:
                                for j in range(_U(hi - lo)):
                                    dx[s0 + j * st] += wv * gr[d0 + j]
                    dwp[kk, q] += acc


@njit(**_JIT)
def _conv_direct_bwd(x, w2, gy, dx, dwp, groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, with_dx):
    n = gy.shape[0]
    nslots = dwp.shape[0]
    for t in prange(nslots):
        dwp[t] = 0
        for i in range(t, n, nslots):
            _direct_bwd_image(x[i], w2, gy[i], dx[i], dwp[t], groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                              oh, ow, with_dx)


@njit(**_JIT)
def _conv_direct(x, w2, out, bias, groups, nslots, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    n = out.shape[0]
    for t in prange(nslots):
        for i in range(t, n, nslots):
            _direct_image(x[i], w2, out[i], bias, groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


@njit(**_JIT)
def _conv_fwd(x, apk, out, bias, groups, nslots, nr, trows, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, one):
    """x (N, C*H*W) flat images; apk (G, nmp, C/G*R*S, UMR) packed weights; out (N, K, L)
    (+ bias per channel; bias.size 0: none); columns in tiles of trows output rows, im2col'd
    straight into the GEMM's slivers (one: 1x1 / stride 1 / no padding, x's rows packed)."""
    n, k, L = out.shape
    crs = apk.shape[2]
    cgp = crs // (kh * kw) * h * w  # one group's input, flat
    kg = k // groups
    tmax = trows * ow
    cg = crs // (kh * kw)
    wq = (w + sw - 1) // sw if 1 < sw <= w and not one else 0  # a stride past the row: read in place
    # whole images per tile and a partial last sliver: two images per GEMM (_gemm_serial2):
    # c256 and s2 (L = 196) 4-6% faster; not 1x1, whose x-row packer beats the general
    # im2col the pairs go through (0.83 vs 0.85-0.92 ms, 1 thread N16)
    pair = trows >= oh and L % nr != 0 and n >= 2 * nslots and not one
    for t in prange(nslots):
        bpf = np.empty((2 * tmax + nr - 1) // nr * crs * nr, x.dtype)
        cb = np.empty((apk.shape[1] * UMR, nr), x.dtype)
        xs = np.empty(groups * cg * sw * h * wq * (2 if pair else 1), x.dtype)
        if pair:
            xsz = groups * cg * sw * h * wq
            for pi in range(t, (n + 1) // 2, nslots):
                i0 = 2 * pi
                ni = min(2, n - i0)
                for e in range(ni):
                    if wq > 0:
                        _phase_split(x[i0 + e], xs[e * xsz:(e + 1) * xsz], groups * cg, h, w, sw, wq)
                T = ni * L
                bp = bpf[:(T + nr - 1) // nr * crs * nr].reshape(((T + nr - 1) // nr, crs, nr))
                for g in range(groups):
                    for e in range(ni):
                        if wq > 0:
                            _im2col_slivers(xs[e * xsz + g * cg * sw * h * wq:e * xsz + (g + 1) * cg * sw * h * wq],
                                            bpf, h, w, kh, kw, sh, sw, ph, pw, dh, dw, 0, oh, ow, crs, nr, wq, e * L)
                        else:
                            _im2col_slivers(x[i0 + e, g * cgp:(g + 1) * cgp], bpf, h, w, kh, kw, sh, sw, ph, pw,
                                            dh, dw, 0, oh, ow, crs, nr, 0, e * L)
                    bg = bias[g * kg:(g + 1) * kg] if bias.size else bias
                    if ni == 2:
                        _gemm_serial2(apk[g], bp, out[i0, g * kg:(g + 1) * kg], out[i0 + 1, g * kg:(g + 1) * kg],
                                      bg, cb)
                    else:
                        _gemm_serial(apk[g], bp, out[i0, g * kg:(g + 1) * kg], False, bg, cb)
            continue
        for i in range(t, n, nslots):
            if wq > 0:
                _phase_split(x[i], xs, groups * cg, h, w, sw, wq)
            for o0 in range(0, oh, trows):
                o1 = min(oh, o0 + trows)
                T = (o1 - o0) * ow
                bp = bpf[:(T + nr - 1) // nr * crs * nr].reshape(((T + nr - 1) // nr, crs, nr))
                for g in range(groups):
                    if one:  # 1x1 / stride 1 / no padding: x's rows are the columns
                        _pack_slivers(x[i, g * cgp:(g + 1) * cgp].reshape((crs, L))[:, o0 * ow:o1 * ow], bp)
                    elif wq > 0:
                        _im2col_slivers(xs[g * cg * sw * h * wq:(g + 1) * cg * sw * h * wq], bpf, h, w, kh, kw, sh, sw,
                                        ph, pw, dh, dw, o0, o1, ow, crs, nr, wq)
                    else:
                        _im2col_slivers(x[i, g * cgp:(g + 1) * cgp], bpf, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                                        o0, o1, ow, crs, nr, 0)
                    _gemm_serial(apk[g], bp, out[i, g * kg:(g + 1) * kg, o0 * ow:o1 * ow], False,
                                 bias[g * kg:(g + 1) * kg] if bias.size else bias, cb)


@njit(**_JIT)
def _conv_bwd(x, apt, gy, dx, dwp, groups, nr, trows, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, one,
              with_dx):
    """x, dx (N, C*H*W) flat images; apt (G, nmp, K/G, UMR): each W_g^T (C/G*R*S x K/G)
    packed; gy (N, K, L); dwp (T, K, C/G*R*S) per-slot dW partials (written in full);
    columns in tiles of trows output rows. one (1x1 / stride 1 / no padding): W^T @ dy goes
    straight into dx's rows, no col2im. Without with_dx, dW only (dx and apt untouched)."""
    n, k, L = gy.shape
    nslots = dwp.shape[0]
    crs = dwp.shape[2]
    cgp = crs // (kh * kw) * h * w
    kg = k // groups
    tmax = trows * ow
    nsl_c = (crs + nr - 1) // nr
    nmp_k = (kg + UMR - 1) // UMR
    for t in prange(nslots):
        dwp[t] = 0
        dcolsf = np.empty(crs * tmax, x.dtype)
        bplf = np.empty((tmax + nr - 1) // nr * kg * nr, x.dtype)   # dy_g tile in slivers (depth K/G)
        bpcf = np.empty(nsl_c * tmax * nr, x.dtype)                  # cols^T in slivers (depth T)
        apgf = np.empty(nmp_k * tmax * UMR, x.dtype)                 # dy_g tile in panels (depth T)
        cbw = np.empty((nmp_k * UMR, nr), x.dtype)
        cbx = np.empty((apt.shape[1] * UMR, nr), x.dtype)
        nob = np.empty(0, x.dtype)
        for i in range(t, n, nslots):
            if with_dx and not one:
                dx[i] = 0
            for o0 in range(0, oh, trows):
                o1 = min(oh, o0 + trows)
                T = (o1 - o0) * ow
                dcols = dcolsf[:crs * T].reshape((crs, T))
                bpl = bplf[:(T + nr - 1) // nr * kg * nr].reshape(((T + nr - 1) // nr, kg, nr))
                bpc = bpcf[:nsl_c * T * nr].reshape((nsl_c, T, nr))
                apg = apgf[:nmp_k * T * UMR].reshape((nmp_k, T, UMR))
                for g in range(groups):
                    _im2col_slivers_t(x[i, g * cgp:(g + 1) * cgp], bpcf, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                                      o0, o1, ow, crs, nr)
                    gyg = gy[i, g * kg:(g + 1) * kg, o0 * ow:o1 * ow]
                    _pack_panels(gyg, apg)
                    _gemm_serial(apg, bpc, dwp[t, g * kg:(g + 1) * kg], True, nob, cbw)
                    if not with_dx:
                        continue
                    _pack_slivers(gyg, bpl)
                    if one:  # 1x1 / stride 1 / no padding: dx's rows are the column gradients
                        _gemm_serial(apt[g], bpl, dx[i, g * cgp:(g + 1) * cgp].reshape((crs, L))[:, o0 * ow:o1 * ow],
                                     False, nob, cbx)
                    else:
                        _gemm_serial(apt[g], bpl, dcols, False, nob, cbx)
                        _col2im_planes(dcols, dx[i, g * cgp:(g + 1) * cgp], h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                                       o0, o1, ow)

def _run(kernel, src, dst, x_shape, geo):
    """kernel over flat views; x_shape (N, C, H, W), geo (R, S, sh, sw, ph, pw, dh, dw)."""
    n, c, h, w = x_shape
    if n == 0:
        return
    sync_threads()
    oh, ow = output_hw("kernel_size", (h, w), geo[0:2], geo[2:4], geo[4:6], geo[6:8])
    kernel(src.reshape(-1), dst.reshape(-1), n * c, h, w, *geo, oh, ow)


def _im2col_k(x, cols, geo):
    _run(_im2col, x, cols, x.shape, geo)


def _col2im_k(cols, x, geo):
    _run(_col2im, cols, x, x.shape, geo)


_NR = 2 * VEC_BYTES  # bytes of one sliver row: 32 float32 / 16 float64 columns


def _packed(w3, trans):
    """(G, nmp, depth, UMR): each w3[g] (or its transpose) in micro-panels."""
    g, m, k = w3.shape
    if trans:
        m, k = k, m
    ap = np.empty((g, (m + UMR - 1) // UMR, k, UMR), w3.dtype)
    for j in range(g):
        _pack_panels(w3[j].T if trans else w3[j], ap[j])
    return ap


#: column-tile budget of the fused drivers (bytes; 0: whole images), as the cython one
TILE_BYTES = 2 << 20


def _tile_rows(crs, oh, ow, itemsize):
    """Output rows per column tile (crs x rows*ow within TILE_BYTES)."""
    if TILE_BYTES <= 0:
        return oh
    return max(1, min(oh, TILE_BYTES // max(1, crs * ow * itemsize)))


def _direct(cg, kg):
    """The direct forward: few filters per group (depthwise), where a GEMM would have a
    handful of rows. LeNet's first layer (one channel, 6 filters: one full 6-row
    micro-panel) runs 2x faster as slivers + GEMM than direct (0.13 vs 0.25 ms at N16, one
    thread; dev/conv/jit.md round 2), so one input channel no longer picks direct here."""
    return kg <= SMALL_M


def _slots(n, flops):
    """Image slots for the fused drivers (slot t runs images t, t+slots, ...): 1 below the
    GEMM's SERIAL_FLOPS (a parallel launch costs more, far more on a busy machine), else
    one per thread."""
    if flops < SERIAL_FLOPS:
        numba.set_num_threads(1)
        return 1
    return numba.get_num_threads()


def _conv_forward(x, weight, bias, stride, padding, dilation, groups):
    try:
        return _forward(x, weight, bias, stride, padding, dilation, groups)
    finally:
        sync_threads()  # _slots may have set one thread


def _conv_backward(grad, x, weight, bias, stride, padding, dilation, groups, needs):
    try:
        return _backward(grad, x, weight, bias, stride, padding, dilation, groups, needs)
    finally:
        sync_threads()


def _forward(x, weight, bias, stride, padding, dilation, groups):
    sync_threads()
    geo, oh, ow = _conv_im2col._geometry(x, weight, stride, padding, dilation)
    n, c, h, w = x.shape
    k = weight.shape[0]
    slots = _slots(n, 2 * n * k * oh * ow * weight[0].size)
    if n * c * h * w == 0 or (n < numba.get_num_threads()
                              and _conv_im2col.image_fits(x, weight, stride, padding, oh * ow)):
        return _conv_im2col.forward(_im2col_k, _gemm, x, weight, bias, stride, padding, dilation, groups)
    out = _array.empty((n, k, oh, ow), x.dtype)
    b = np.empty(0, x.dtype) if bias is None else np.ascontiguousarray(bias)
    if _direct(c // groups, k // groups) and not _conv_im2col._is_1x1(weight, stride, padding):
        _conv_direct(x.reshape(n, -1), weight.reshape(k, -1), out.reshape(n, k, oh * ow), b, groups, slots,
                     h, w, *geo, oh, ow)
        return out
    apk = _packed(weight.reshape(groups, k // groups, -1), False)
    _conv_fwd(x.reshape(n, -1), apk, out.reshape(n, k, oh * ow), b, groups, slots, _NR // x.itemsize,
              _tile_rows(weight[0].size, oh, ow, x.itemsize), h, w, *geo, oh, ow,
              _conv_im2col._is_1x1(weight, stride, padding))
    return out


def _backward(grad, x, weight, bias, stride, padding, dilation, groups, needs):
    """dW always (per-slot partials); dx where needs[0] (else the kernels get an (N, 0) dx and
    skip the W^T GEMM, the col2im or the direct scatter)."""
    sync_threads()
    need_dx, need_dw, need_db = needs
    geo, oh, ow = _conv_im2col._geometry(x, weight, stride, padding, dilation)
    n, c, h, w = x.shape
    k = weight.shape[0]
    slots = _slots(n, 2 * n * k * oh * ow * weight[0].size)
    if n * c * h * w == 0 or (n < numba.get_num_threads()
                              and _conv_im2col.image_fits(x, weight, stride, padding, oh * ow)):
        return _conv_im2col.backward(_im2col_k, _col2im_k, _gemm, grad, x, weight, bias, stride, padding,
                                     dilation, groups, needs)
    w3 = weight.reshape(groups, k // groups, -1)
    dx = _array.empty(x.shape if need_dx else (n, 0), x.dtype)
    dwp = np.empty((slots, k, w3.shape[2]), x.dtype)
    if _direct(c // groups, k // groups) and not _conv_im2col._is_1x1(weight, stride, padding):
        _conv_direct_bwd(x.reshape(n, -1), weight.reshape(k, -1), grad.reshape(n, k, oh * ow), dx.reshape(n, -1),
                         dwp, groups, h, w, *geo, oh, ow, need_dx)
    else:
        apt = _packed(w3, True) if need_dx else np.empty((groups, 0, k // groups, UMR), x.dtype)
        _conv_bwd(x.reshape(n, -1), apt, grad.reshape(n, k, oh * ow), dx.reshape(n, -1), dwp,
                  groups, _NR // x.itemsize, _tile_rows(weight[0].size, oh, ow, x.itemsize), h, w, *geo, oh, ow,
                  _conv_im2col._is_1x1(weight, stride, padding), need_dx)
    dw = dwp.sum(axis=0).reshape(weight.shape) if need_dw else None
    db = None if bias is None or not need_db else grad.sum(axis=(0, 2, 3), dtype=grad.dtype)
    return dx if need_dx else None, dw, db


_gemm = _conv_im2col.matmul_with(gemm_into)
_conv_im2col.register_backend("numba", _im2col_k, _col2im_k, _gemm, _conv_forward, _conv_backward)
