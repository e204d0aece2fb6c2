# conv family (pydl._cython): im2col, col2im, conv2d forward and backward. Included by _cython.pyx.
#
# conv_im2col(x, cols, geometry) and conv_col2im(cols, x, geometry): x (N, C, H, W) and cols
# (N, C*R*S, OH*OW) C-contiguous, float32 or float64 (the `floating` fused type), geometry the
# tuple (R, S, sh, sw, ph, pw, dh, dw). One prange over the N*C planes (each thread owns whole
# planes, so col2im's overlapping-window sums need no atomics); per kernel tap the valid output
# columns [lo, hi) are computed once, so each row is a zero fill, a branch-free copy (or add)
# that GCC vectorizes when the stride is 1, and a zero fill. conv2d = these + GEMM
# (pydl/backends/_conv_im2col.py, the GEMM chosen in pydl/backends/cython/conv.py `_gemm`).
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
                            Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
                            Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t r, s, o, j, ih, off, lo, hi
    cdef floating* d
    cdef const floating* src
    for r in range(kh):
        for s in range(kw):
            off = s * dw - pw
            conv_valid(off, sw, w, ow, &lo, &hi)
            for o in range(oh):
                d = cols + ((r * kw + s) * oh + o) * ow
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


cdef void conv_col2im_plane(const floating* cols, floating* x, Py_ssize_t h, Py_ssize_t w,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                            Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
                            Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t r, s, o, j, ih, off, lo, hi
    cdef floating* d
    cdef const floating* src
    for j in range(h * w):
        x[j] = 0
    for r in range(kh):
        for s in range(kw):
            off = s * dw - pw
            conv_valid(off, sw, w, ow, &lo, &hi)
            for o in range(oh):
                ih = o * sh - ph + r * dh
                if ih < 0 or ih >= h:
                    continue
                src = cols + ((r * kw + s) * oh + o) * ow
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
        conv_im2col_plane(xp + p * hw, cp + p * crs, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


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
        conv_col2im_plane(cp + p * crs, xp + p * hw, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
