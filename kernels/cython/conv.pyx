# conv family (pydl._cython): im2col, col2im, conv2d forward and backward. Included by _cython.pyx.
#
# conv_im2col(x, cols, geometry) and conv_col2im(cols, x, geometry): x (N, C, H, W) and cols
# (N, C*R*S, OH*OW) C-contiguous, float32 or float64 (the `floating` fused type), geometry the
# tuple (R, S, sh, sw, ph, pw, dh, dw). One prange over the N*C planes (each thread owns whole
# planes, so col2im's overlapping-window sums need no atomics); per kernel tap the valid output
# columns [lo, hi) are computed once, so each row is a zero fill, a branch-free copy (or add)
# that GCC vectorizes when the stride is 1, and a zero fill. conv2d: conv_forward /
# conv_backward below (per image: row tiles of columns + gm_gemm, or the direct path for
# few filters per group; parallel over images), adapters in pydl/backends/cython/conv.py,
# figures in dev/conv/jit.md.
# Napkin math: im2col writes R*S times the input; 3x3 over N32 C64 56x56 float32 is 231 MB of
# writes, ~8 ms at the 29 GB/s copy bandwidth.

cdef inline void conv_valid(Py_ssize_t off, Py_ssize_t stride, Py_ssize_t w, Py_ssize_t ow,
                            Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    cdef Py_ssize_t a, b
    a = 0 if off >= 0 else (-off + stride - 1) // stride
    b = 0 if off > w - 1 else (w - 1 - off) // stride + 1
    if b > ow:
        b = ow
    if a > b:
        a = b
    lo[0] = a
    hi[0] = b


cdef void conv_im2col_plane(const floating* x, floating* cols, Py_ssize_t h, Py_ssize_t w,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                            Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t o0, Py_ssize_t o1,
                            Py_ssize_t ow) noexcept nogil:
    """The column rows of output rows o0..o1 of one plane: cols (kh*kw, (o1-o0)*ow)."""
    cdef Py_ssize_t r, s, o, j, ih, off, lo, hi, nrow = o1 - o0
    cdef floating* d
    cdef const floating* src
    for r in range(kh):
        for s in range(kw):
            off = s * dw - pw
            conv_valid(off, sw, w, ow, &lo, &hi)
            for o in range(o0, o1):
                d = cols + ((r * kw + s) * nrow + o - o0) * ow
                ih = o * sh - ph + r * dh
                if ih < 0 or ih >= h:
                    for j in range(ow):
                        d[j] = 0
                    continue
                src = x + ih * w + off
                for j in range(lo):
                    d[j] = 0
                if sw == 1:
                    for j in range(lo, hi):
                        d[j] = src[j]
                else:
                    for j in range(lo, hi):
                        d[j] = src[j * sw]
                for j in range(hi, ow):
                    d[j] = 0


cdef void conv_phase_split(const floating* x, floating* xs, Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w,
                           Py_ssize_t sw, Py_ssize_t wq) noexcept nogil:
    """xs[((p*sw + phase)*h + row)*wq + jq] = x[p, row, jq*sw + phase]: the planes split in
    their sw column phases (columns past a phase's width left as they are, never read), so
    conv_im2col_plane_ph's rows are contiguous copies: a width stride's gather done once per
    image instead of once per tap (AlexNet's first layer: 121 taps, stride 4)."""
    cdef Py_ssize_t p, phs, r, jq, wp
    cdef floating* d
    cdef const floating* src
    for p in range(planes):
        for phs in range(sw):
            wp = (w - phs + sw - 1) // sw
            for r in range(h):
                d = xs + ((p * sw + phs) * h + r) * wq
                src = x + (p * h + r) * w + phs
                for jq in range(wp):
                    d[jq] = src[jq * sw]


cdef void conv_im2col_plane_ph(const floating* xs, floating* cols, Py_ssize_t h, Py_ssize_t w, Py_ssize_t wq,
                               Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                               Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t o0, Py_ssize_t o1,
                               Py_ssize_t ow) noexcept nogil:
    """conv_im2col_plane on a plane split by conv_phase_split (xs: sw x h x wq): input column
    j*sw + off is column j + offq of phase off mod sw (taken >= 0)."""
    cdef Py_ssize_t r, s, o, j, ih, off, phs, offq, lo, hi, nrow = o1 - o0
    cdef floating* d
    cdef const floating* src
    for r in range(kh):
        for s in range(kw):
            off = s * dw - pw
            phs = (off % sw + sw) % sw  # cdivision: C's % keeps the sign of off
            offq = (off - phs) // sw     # exact
            conv_valid(offq, 1, (w - phs + sw - 1) // sw, ow, &lo, &hi)
            for o in range(o0, o1):
                d = cols + ((r * kw + s) * nrow + o - o0) * ow
                ih = o * sh - ph + r * dh
                if ih < 0 or ih >= h:
                    for j in range(ow):
                        d[j] = 0
                    continue
                src = xs + (phs * h + ih) * wq + offq
                for j in range(lo):
                    d[j] = 0
                for j in range(lo, hi):
                    d[j] = src[j]
                for j in range(hi, ow):
                    d[j] = 0


cdef void conv_col2im_plane(const floating* cols, floating* x, Py_ssize_t h, Py_ssize_t w,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                            Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t o0, Py_ssize_t o1,
                            Py_ssize_t ow, bint zero) noexcept nogil:
    """x (h, w) (= when zero, else +=) the column sums of output rows o0..o1 (cols as
    conv_im2col_plane writes them)."""
    cdef Py_ssize_t r, s, o, j, ih, off, lo, hi, nrow = o1 - o0
    cdef floating* d
    cdef const floating* src
    if zero:
        for j in range(h * w):
            x[j] = 0
    for r in range(kh):
        for s in range(kw):
            off = s * dw - pw
            conv_valid(off, sw, w, ow, &lo, &hi)
            for o in range(o0, o1):
                ih = o * sh - ph + r * dh
                if ih < 0 or ih >= h:
                    continue
                src = cols + ((r * kw + s) * nrow + o - o0) * ow
                d = x + ih * w + off
                if sw == 1:
                    for j in range(lo, hi):
                        d[j] += src[j]
                else:
                    for j in range(lo, hi):
                        d[j * sw] += src[j]


cdef inline Py_ssize_t conv_out(Py_ssize_t n, Py_ssize_t k, Py_ssize_t s, Py_ssize_t p, Py_ssize_t d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, tuple geometry):
    cdef Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, p, planes, hw, crs
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1 or cols.shape[0] != n or cols.shape[1] != c * kh * kw or cols.shape[2] != oh * ow:
        raise ValueError(f"cols: expected shape {(n, c * kh * kw, oh * ow)}, got {tuple(cols.shape)[:3]}")
    planes, hw, crs = n * c, h * w, kh * kw * oh * ow
    if planes == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* cp = &cols[0, 0, 0]
    for p in prange(planes, nogil=True, schedule="static", num_threads=_threads()):
        conv_im2col_plane(xp + p * hw, cp + p * crs, h, w, kh, kw, sh, sw, ph, pw, dh, dw, 0, oh, ow)


def conv_col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x, tuple geometry):
    cdef Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, p, planes, hw, crs
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1 or cols.shape[0] != n or cols.shape[1] != c * kh * kw or cols.shape[2] != oh * ow:
        raise ValueError(f"cols: expected shape {(n, c * kh * kw, oh * ow)}, got {tuple(cols.shape)[:3]}")
    planes, hw, crs = n * c, h * w, kh * kw * oh * ow
    if planes == 0:
        return
    cdef const floating* cp = &cols[0, 0, 0]
    cdef floating* xp = &x[0, 0, 0, 0]
    for p in prange(planes, nogil=True, schedule="static", num_threads=_threads()):
        conv_col2im_plane(cp + p * crs, xp + p * hw, h, w, kh, kw, sh, sw, ph, pw, dh, dw, 0, oh, ow, True)


from cython.parallel cimport threadid

cdef enum:
    # below: one thread (as the GEMM's GM_SERIAL_FLOPS). 1 << 19 ran LeNet's layers (2.8 and
    # 7.7 MFLOP at N16) on 2 threads: 0.24 -> 0.12 ms alone, but 50x slower (14 ms) in
    # dev/conv/bench.py, where torch's own OpenMP pool spins between calls on the same 2
    # cores and every region waits for a descheduled thread (dev/conv/jit.md)
    CONV_SERIAL_FLOPS = 1 << 22

# -- conv2d forward and backward, fused drivers ---------------------------------------------
#
# conv_forward / conv_backward run the whole conv2d in one nogil call: per image and group,
# im2col of the group's C/G planes into a per-thread column buffer (C/G*R*S x L: 113 KB for
# the 3x3 depthwise shape, so it stays in L2), then gm_gemm writes W_g @ cols straight into
# out (no temporary, no copy), the bias added per row while the image is in cache. With at
# least as many images as threads: one prange over images, each GEMM serial (nthreads=1):
# no barrier inside an image, no idle thread in im2col/col2im, the weights' packing is the
# only repeated work. Fewer images than threads: images one after another, each GEMM on all
# threads. Backward, per image and group: dW_g += dy_g @ cols_g^T into a per-thread dW
# partial (summed at the end), dcols_g = W_g^T @ dy_g (transposes are strides: gm_gemm's
# packing reads them), col2im into dx; 1x1/stride 1/pad 0 reads x and writes dx in place.

cdef void conv_direct_image(const floating* x, const floating* w, floating* out, const floating* bias,
                            Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd, Py_ssize_t k, Py_ssize_t groups,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                            Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
                            Py_ssize_t ow) noexcept nogil:
    """Few filters per group (depthwise; LeNet's first layer, one channel, 6 filters): no columns; each output plane (L1-resident) is
    bias + one pass per input channel and tap: row[lo:hi] += w * x_row[j*sw + off]."""
    cdef Py_ssize_t cg = c // groups, kg = k // groups, L = oh * ow
    cdef Py_ssize_t kk, ci, r, s, o, j, ih, off, lo, hi, g
    cdef floating* orow
    cdef floating* d
    cdef const floating* src
    cdef floating wv
    for kk in range(k):
        g = kk // kg
        orow = out + kk * L
        wv = bias[kk] if bias != NULL else 0
        for j in range(L):
            orow[j] = wv
        for ci in range(cg):
            for r in range(kh):
                for s in range(kw):
                    wv = w[((kk * cg + ci) * kh + r) * kw + s]
                    off = s * dw - pw
                    conv_valid(off, sw, wd, ow, &lo, &hi)
                    for o in range(oh):
                        ih = o * sh - ph + r * dh
                        if ih < 0 or ih >= h:
                            continue
                        src = x + ((g * cg + ci) * h + ih) * wd + off
                        d = orow + o * ow
                        if sw == 1:
                            for j in range(lo, hi):
                                d[j] = d[j] + wv * src[j]
                        else:
                            for j in range(lo, hi):
                                d[j] = d[j] + wv * src[j * sw]


cdef int conv_fwd_image(const floating* x, const floating* w, floating* out, const floating* bias,
                        floating* buf, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd, Py_ssize_t k,
                        Py_ssize_t groups, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
                        Py_ssize_t ow, bint one, Py_ssize_t trows, int nthreads, const floating* apk,
                        floating* sbuf, floating* xs) noexcept nogil:
    """out (k x L) = W @ im2col(x) (+ bias) for one image x (c x h x wd), in tiles of trows
    output rows (buf: crs x trows*ow). nthreads == 1: gm_gemm_serial_pa on apk (each W_g
    packed once per call by conv_forward, group g at apk + g*ceil(kg/GM_MR)*GM_MR*crs) with
    sbuf (crs*GM_NR) for the B slivers; else gm_gemm on all threads. A width stride sw > 1
    (not 1x1/stride 1): x split in column phases into xs (c*sw*h*ceil(wd/sw)) first.
    Returns gm_gemm's rc."""
    cdef Py_ssize_t cg = c // groups, kg = k // groups, crs = cg * kh * kw, L = oh * ow
    cdef Py_ssize_t g, ci, i, j, o0, o1, T, ldb
    cdef const floating* cols
    cdef floating* orow
    cdef floating bv
    cdef int rc
    cdef Py_ssize_t aps = (kg + GM_MR - 1) // GM_MR * GM_MR * crs
    if kg <= GM_SMALL_M and not one:
        conv_direct_image(x, w, out, bias, c, h, wd, k, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
        return 0
    cdef Py_ssize_t wq = (wd + sw - 1) // sw
    # a stride wider than the row (one output column) has nothing to split: read in place
    cdef bint split = sw > 1 and sw <= wd and not one
    if split:
        conv_phase_split(x, xs, c, h, wd, sw, wq)
    o0 = 0
    while o0 < oh:
        o1 = min(oh, o0 + trows)
        T = (o1 - o0) * ow
        for g in range(groups):
            if one:  # x's rows are the columns (row stride L)
                cols = x + g * cg * L + o0 * ow
                ldb = L
            else:
                for ci in range(cg):
                    if split:
                        conv_im2col_plane_ph(xs + (g * cg + ci) * sw * h * wq, buf + ci * kh * kw * T,
                                             h, wd, wq, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow)
                    else:
                        conv_im2col_plane(x + (g * cg + ci) * h * wd, buf + ci * kh * kw * T,
                                          h, wd, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow)
                cols = buf
                ldb = T
            if nthreads == 1:
                gm_gemm_serial_pa(kg, T, crs, apk + g * aps, cols, ldb, 1, out + g * kg * L + o0 * ow, L,
                                  False, sbuf)
                rc = 0
            else:
                rc = gm_gemm(kg, T, crs, w + g * kg * crs, crs, 1, cols, ldb, 1, out + g * kg * L + o0 * ow, L,
                             False, NULL, 0, NULL, 0, nthreads)
            if rc != 0:
                return rc
        o0 = o1
    if bias != NULL:
        for i in range(k):
            orow = out + i * L
            bv = bias[i]
            for j in range(L):
                orow[j] = orow[j] + bv
    return 0


cdef void conv_direct_bwd_image(const floating* x, const floating* w, const floating* gy, floating* dx,
                                floating* dwp, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd, Py_ssize_t k,
                                Py_ssize_t groups, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                                Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                                Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """conv_direct_image's backward for one image: dx (overwritten; NULL: not wanted) gets
    w * dy scattered back per tap (a transposed convolution); dwp (k x crs) += dot(dy row,
    the tap's x row)."""
    cdef Py_ssize_t cg = c // groups, kg = k // groups, L = oh * ow, crs = cg * kh * kw
    cdef Py_ssize_t kk, ci, r, s, o, j, ih, off, lo, hi, g, q
    cdef const floating* d
    cdef const floating* src
    cdef floating* dxr
    cdef floating wv, acc
    cdef floating lanes[8]
    cdef Py_ssize_t l
    cdef bint with_dx = dx != NULL
    if with_dx:
        for j in range(c * h * wd):
            dx[j] = 0
    for kk in range(k):
        g = kk // kg
        for ci in range(cg):
            for r in range(kh):
                for s in range(kw):
                    q = (ci * kh + r) * kw + s
                    wv = w[kk * crs + q]
                    off = s * dw - pw
                    conv_valid(off, sw, wd, ow, &lo, &hi)
                    acc = 0
                    for l in range(8):
                        lanes[l] = 0
                    for o in range(oh):
                        ih = o * sh - ph + r * dh
                        if ih < 0 or ih >= h:
                            continue
                        src = x + ((g * cg + ci) * h + ih) * wd + off
                        dxr = dx + ((g * cg + ci) * h + ih) * wd + off if with_dx else NULL
                        d = gy + kk * L + o * ow
                        if sw == 1:
                            # the dot product in 8 lanes (one vector; GCC does not reassociate
                            # a single running sum: a serial chain of adds, 4 cycles each)
                            j = lo
                            while j + 8 <= hi:
                                for l in range(8):
                                    lanes[l] = lanes[l] + d[j + l] * src[j + l]
                                j = j + 8
                            while j < hi:
                                acc = acc + d[j] * src[j]
                                j = j + 1
                            if with_dx:
                                for j in range(lo, hi):
                                    dxr[j] = dxr[j] + wv * d[j]
                        else:
                            for j in range(lo, hi):
                                acc = acc + d[j] * src[j * sw]
                            if with_dx:
                                for j in range(lo, hi):
                                    dxr[j * sw] = dxr[j * sw] + wv * d[j]
                    for l in range(8):
                        acc = acc + lanes[l]
                    dwp[kk * crs + q] += acc


cdef int conv_bwd_image(const floating* x, const floating* w, const floating* gy, floating* dx,
                        floating* dwp, floating* cbuf, floating* dbuf, Py_ssize_t c, Py_ssize_t h,
                        Py_ssize_t wd, Py_ssize_t k, Py_ssize_t groups, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                        Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow, bint one, Py_ssize_t trows,
                        int nthreads, const floating* apt, floating* apg, floating* sbuf) noexcept nogil:
    """For one image, in tiles of trows output rows: dwp (k x crs) += gy @ im2col(x)^T per
    group; dx = col2im(W^T @ gy) (cbuf, dbuf: crs x trows*ow; dx NULL: not wanted, no W^T GEMM
    nor col2im). nthreads == 1: both GEMMs
    on gm_gemm_serial_pa: W_g^T packed once per call (apt, group g at
    apt + g*ceil(crs/GM_MR)*GM_MR*kg), the dy tile packed per tile into apg
    (ceil(kg/GM_MR)*GM_MR*trows*ow), B slivers in sbuf (max(crs, trows*ow, kg)*GM_NR: each
    GEMM's depth, T for dW, kg for the column gradients)."""
    cdef Py_ssize_t cg = c // groups, kg = k // groups, crs = cg * kh * kw, L = oh * ow
    cdef Py_ssize_t g, ci, j, o0, o1, T, rsb, csb, ldd
    cdef const floating* cols
    cdef floating* dcols
    cdef int rc
    cdef Py_ssize_t apts = (crs + GM_MR - 1) // GM_MR * GM_MR * kg
    if kg <= GM_SMALL_M and not one:
        conv_direct_bwd_image(x, w, gy, dx, dwp, c, h, wd, k, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
        return 0
    cdef bint with_dx = dx != NULL
    if with_dx and not one:
        for j in range(c * h * wd):
            dx[j] = 0
    o0 = 0
    while o0 < oh:
        o1 = min(oh, o0 + trows)
        T = (o1 - o0) * ow
        for g in range(groups):
            if one:  # x and dx rows are the columns (row stride L)
                cols = x + g * cg * L + o0 * ow
                dcols = dx + g * cg * L + o0 * ow if with_dx else NULL
                ldd = L
            else:
                for ci in range(cg):
                    conv_im2col_plane(x + (g * cg + ci) * h * wd, cbuf + ci * kh * kw * T,
                                      h, wd, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow)
                cols = cbuf
                dcols = dbuf
                ldd = T
            if nthreads == 1:
                gm_pack_a_all(kg, T, gy + g * kg * L + o0 * ow, L, 1, apg)
                gm_gemm_serial_pa(kg, crs, T, apg, cols, 1, ldd, dwp + g * kg * crs, crs, True, sbuf)
                if with_dx:
                    gm_gemm_serial_pa(crs, T, kg, apt + g * apts, gy + g * kg * L + o0 * ow, L, 1, dcols, ldd,
                                      False, sbuf)
            else:
                # dW_g (kg x crs) += dy_g tile (kg x T, row stride L) @ cols^T (T x crs: strides 1, ldd)
                rc = gm_gemm(kg, crs, T, gy + g * kg * L + o0 * ow, L, 1, cols, 1, ldd, dwp + g * kg * crs, crs,
                             True, NULL, 0, NULL, 0, nthreads)
                if rc != 0:
                    return rc
                # dcols (crs x T) = W_g^T (crs x kg: strides 1, crs) @ dy_g tile (kg x T)
                if with_dx:
                    rc = gm_gemm(crs, T, kg, w + g * kg * crs, 1, crs, gy + g * kg * L + o0 * ow, L, 1, dcols,
                                 ldd, False, NULL, 0, NULL, 0, nthreads)
                    if rc != 0:
                        return rc
            if with_dx and not one:
                for ci in range(cg):
                    conv_col2im_plane(dbuf + ci * kh * kw * T, dx + (g * cg + ci) * h * wd,
                                      h, wd, kh, kw, sh, sw, ph, pw, dh, dw, o0, o1, ow, False)
        o0 = o1
    return 0


cdef Py_ssize_t _CONV_TILE_BYTES = 2 << 20  # 0: whole images (no row tiles); 2 MB: dev/conv/jit.md


def conv_set_tile_bytes(Py_ssize_t b):
    """Column-tile budget of conv_forward / conv_backward in bytes (0: one tile per
    image); returns the old one. A tuning hook (dev/conv/jit.md)."""
    global _CONV_TILE_BYTES
    old = _CONV_TILE_BYTES
    _CONV_TILE_BYTES = b
    return old


cdef Py_ssize_t conv_tile_rows(Py_ssize_t crs, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t isz) noexcept:
    """Output rows per tile: the column tile (crs x rows*ow) within _CONV_TILE_BYTES."""
    if _CONV_TILE_BYTES <= 0:
        return oh
    return max(1, min(oh, _CONV_TILE_BYTES // max(1, crs * ow * isz)))


cdef inline bint conv_is_1x1(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0


def conv_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] w, floating[:, :, ::1] out,
                 const floating[::1] bias, bint has_bias, tuple geometry, Py_ssize_t groups):
    """out (N, K, OH*OW) = conv2d(x, w) (+ bias), w as (K, C/G*R*S); all C-contiguous."""
    cdef Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3], k = w.shape[0]
    cdef Py_ssize_t oh = conv_out(h, kh, sh, ph, dh), ow = conv_out(wd, kw, sw, pw, dw)
    cdef Py_ssize_t L = oh * ow, crs = w.shape[1], i
    cdef int nt = _threads(), rc = 0, t
    cdef bint one = conv_is_1x1(kh, kw, sh, sw, ph, pw)
    if (groups < 1 or c % groups or k % groups or crs != c // groups * kh * kw or oh < 1 or ow < 1
            or tuple(out.shape)[:3] != (n, k, L) or (has_bias and bias.shape[0] != k)):
        raise ValueError("conv_forward: inconsistent shapes")
    if n == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &w[0, 0]
    cdef floating* op = &out[0, 0, 0]
    cdef const floating* bp = &bias[0] if has_bias else NULL
    cdef Py_ssize_t trows = conv_tile_rows(crs, oh, ow, sizeof(floating))
    cdef Py_ssize_t chw = c * h * wd, kl = k * L, bsz = 1 if one else crs * trows * ow
    if 2 * n * k * L * crs < CONV_SERIAL_FLOPS:
        nt = 1
    cdef bint per_image = n >= nt and nt > 1
    cdef Py_ssize_t nbuf = nt if per_image else 1
    # per thread: the column tile, one B sliver (crs x GM_NR), the phase-split image (a width
    # stride); the packed weights
    cdef Py_ssize_t xsz = c * sw * h * ((wd + sw - 1) // sw) if 1 < sw <= wd and not one else 0
    cdef Py_ssize_t kg = k // groups, per = bsz + crs * GM_NR + xsz
    cdef Py_ssize_t aps = (kg + GM_MR - 1) // GM_MR * GM_MR * crs
    cdef floating* bufs = <floating*> malloc(nbuf * per * sizeof(floating))
    cdef floating* apk = <floating*> malloc(groups * aps * sizeof(floating))
    if bufs == NULL or apk == NULL:
        free(bufs)
        free(apk)
        raise MemoryError("conv_forward: cannot allocate the column buffers")
    with nogil:
        for i in range(groups):
            gm_pack_a_all(kg, crs, wp + i * kg * crs, crs, 1, apk + i * aps)
        if per_image:
            for i in prange(n, num_threads=nt, schedule="dynamic"):
                t = threadid()
                rc += conv_fwd_image(xp + i * chw, wp, op + i * kl, bp, bufs + t * per, c, h, wd, k,
                                     groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, one, trows, 1,
                                     apk, bufs + t * per + bsz, bufs + t * per + bsz + crs * GM_NR) != 0
        else:
            for i in range(n):
                if conv_fwd_image(xp + i * chw, wp, op + i * kl, bp, bufs, c, h, wd, k, groups,
                                  kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, one, trows, nt, apk, bufs + bsz,
                                  bufs + bsz + crs * GM_NR) != 0:
                    rc = -1
                    break
    free(bufs)
    free(apk)
    if rc != 0:
        raise MemoryError("conv_forward: cannot allocate the GEMM's packing buffers")


def conv_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] w, const floating[:, :, ::1] gy,
                  floating[:, :, :, ::1] dx, floating[:, ::1] dw_out, tuple geometry, Py_ssize_t groups):
    """dx (N, C, H, W) and dw_out (K, C/G*R*S) of conv2d (both written in full) from gy
    (N, K, OH*OW); w as (K, C/G*R*S); all C-contiguous. dx None: dW only (no W^T GEMM nor
    col2im: the gradient of a network's input that nobody wants)."""
    cdef Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3], k = w.shape[0]
    cdef Py_ssize_t oh = conv_out(h, kh, sh, ph, dh), ow = conv_out(wd, kw, sw, pw, dw)
    cdef Py_ssize_t L = oh * ow, crs = w.shape[1], i, j, q
    cdef int nt = _threads(), rc = 0, t
    cdef bint one = conv_is_1x1(kh, kw, sh, sw, ph, pw)
    if (groups < 1 or c % groups or k % groups or crs != c // groups * kh * kw or oh < 1 or ow < 1
            or tuple(gy.shape)[:3] != (n, k, L) or (dx is not None and tuple(dx.shape)[:4] != (n, c, h, wd))
            or tuple(dw_out.shape)[:2] != (k, crs)):
        raise ValueError("conv_backward: inconsistent shapes")
    cdef floating* dwo = &dw_out[0, 0]
    cdef Py_ssize_t wsz = k * crs
    for j in range(wsz):
        dwo[j] = 0
    if n == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &w[0, 0]
    cdef const floating* gp = &gy[0, 0, 0]
    cdef floating* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef Py_ssize_t trows = conv_tile_rows(crs, oh, ow, sizeof(floating))
    cdef Py_ssize_t chw = c * h * wd, kl = k * L, bsz = 1 if one else crs * trows * ow
    if 2 * n * k * L * crs < CONV_SERIAL_FLOPS:
        nt = 1
    cdef bint per_image = n >= nt and nt > 1
    cdef Py_ssize_t nbuf = nt if per_image else 1
    # per thread: columns, column gradients, a dW partial, the packed dy tile, one B sliver;
    # shared: each W_g^T packed once
    cdef Py_ssize_t kg = k // groups, tmax = trows * ow
    cdef Py_ssize_t apgs = (kg + GM_MR - 1) // GM_MR * GM_MR * tmax
    cdef Py_ssize_t sbs = max(crs, tmax, kg) * GM_NR  # the depth of either GEMM's B: T, or kg
    cdef Py_ssize_t apts = (crs + GM_MR - 1) // GM_MR * GM_MR * kg
    cdef Py_ssize_t per = 2 * bsz + wsz + apgs + sbs
    cdef floating* bufs = <floating*> malloc(nbuf * per * sizeof(floating))
    cdef floating* apt = <floating*> malloc(groups * apts * sizeof(floating))
    if bufs == NULL or apt == NULL:
        free(bufs)
        free(apt)
        raise MemoryError("conv_backward: cannot allocate the column buffers")
    with nogil:
        for q in range(nbuf):
            for j in range(wsz):
                bufs[q * per + 2 * bsz + j] = 0
        for q in range(groups if dxp != NULL else 0):  # W_g^T (crs x kg: strides 1, crs), for dx
            gm_pack_a_all(crs, kg, wp + q * kg * crs, 1, crs, apt + q * apts)
        if per_image:
            for i in prange(n, num_threads=nt, schedule="dynamic"):
                t = threadid()
                rc += conv_bwd_image(xp + i * chw, wp, gp + i * kl, dxp + i * chw if dxp != NULL else NULL,
                                     bufs + t * per + 2 * bsz,
                                     bufs + t * per, bufs + t * per + bsz, c, h, wd, k, groups,
                                     kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, one, trows, 1, apt,
                                     bufs + t * per + 2 * bsz + wsz, bufs + t * per + 2 * bsz + wsz + apgs) != 0
        else:
            for i in range(n):
                if conv_bwd_image(xp + i * chw, wp, gp + i * kl, dxp + i * chw if dxp != NULL else NULL,
                                  bufs + 2 * bsz, bufs,
                                  bufs + bsz, c, h, wd, k, groups, kh, kw, sh, sw, ph, pw, dh, dw,
                                  oh, ow, one, trows, nt, apt, bufs + 2 * bsz + wsz,
                                  bufs + 2 * bsz + wsz + apgs) != 0:
                    rc = -1
                    break
        for q in range(nbuf):
            for j in range(wsz):
                dwo[j] = dwo[j] + bufs[q * per + 2 * bsz + j]
    free(bufs)
    free(apt)
    if rc != 0:
        raise MemoryError("conv_backward: cannot allocate the GEMM's packing buffers")
