# Pool family: max_pool2d, avg_pool2d, adaptive_avg_pool2d, forward and backward.
# float32 and float64 (fused `floating`), C-contiguous (planes, H, W) views; outputs allocated
# by the Python adapter (pydl/backends/cython/pool.py), which also builds the window tables
# (pydl.ops.pool.window_table: output o reads start[o] + t*step for t < count[o]).
#
# Same algorithm as kernels/cpp/pool.cpp: windows are separable, so each plane (one prange
# task, per-thread scratch from malloc inside the parallel block) takes two passes over
# buffers that stay in L1/L2. max: horizontal (value, column) max of every input row, then a
# vertical max over each output row's rows; the row-major tap order is kept (strictly greater
# keeps the first max, a NaN always replaces, so the last NaN wins). avg: vertical sum of
# the window's rows, then the horizontal taps, divided by hdiv[oh] * wdiv[ow]. avg backward
# gathers (q = grad / divisor; t[oh, w] = sum of q over the windows holding column w;
# gx[h, :] = sum of t over the windows holding row h), writing each gx element once. max
# backward zeroes a plane and adds each gradient at its index (planes never shared).
# Inner loops run tap by tap with the output position innermost, so GCC can vectorize the
# contiguous ones (vertical passes) and the compare/select of the strided ones.
# Napkin math: N32 C64 112x112 float32 reads 103 MB; 2x2/2 max writes 77 MB (values + int64
# indices): ~6 ms at ~29 GB/s.
from libc.stdlib cimport malloc, free
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel
cimport cython


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _pool_max_row(const floating* row, const int64_t* start, const int64_t* count,
                               Py_ssize_t n, Py_ssize_t step, Py_ssize_t most,
                               floating* hv, int64_t* hc) noexcept nogil:
    cdef Py_ssize_t o, t, w
    cdef floating v
    cdef bint take
    for o in range(n):
        if count[o] > 0:
            hv[o] = row[start[o]]
            hc[o] = start[o]
        else:
            hv[o] = -1.0 / 0.0
            hc[o] = -1
    for t in range(1, most):
        for o in range(n):
            if t < count[o]:
                w = start[o] + t * step
                v = row[w]
                # selects, not a branch on the data (mispredicted half the time on random input)
                take = (v > hv[o]) | (v != v)
                hv[o] = v if take else hv[o]
                hc[o] = w if take else hc[o]


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _pool_max_col(const floating* hv, const int64_t* hc, Py_ssize_t h0, Py_ssize_t c,
                               Py_ssize_t step, Py_ssize_t width, Py_ssize_t n,
                               floating* out, int64_t* idx) noexcept nogil:
    cdef Py_ssize_t o, t, h
    cdef floating v
    if c == 0:
        for o in range(n):
            out[o] = -1.0 / 0.0
            idx[o] = -1
        return
    for o in range(n):
        out[o] = hv[h0 * n + o]
        idx[o] = h0 * width + hc[h0 * n + o] if hc[h0 * n + o] >= 0 else -1
    cdef bint take
    cdef int64_t j
    for t in range(1, c):
        h = h0 + t * step
        for o in range(n):
            v = hv[h * n + o]
            j = h * width + hc[h * n + o] if hc[h * n + o] >= 0 else -1
            take = (v > out[o]) | (v != v)
            out[o] = v if take else out[o]
            idx[o] = j if take else idx[o]


@cython.boundscheck(False)
@cython.wraparound(False)
def pool_max_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out, int64_t[:, :, ::1] idx,
                     const int64_t[::1] hs, const int64_t[::1] hc, Py_ssize_t dh,
                     const int64_t[::1] ws, const int64_t[::1] wc, Py_ssize_t dw):
    cdef Py_ssize_t planes = x.shape[0], height = x.shape[1], width = x.shape[2]
    cdef Py_ssize_t oh_n = hs.shape[0], ow_n = ws.shape[0], wmost = 1, p, h, oh, o
    cdef floating* hv
    cdef int64_t* hcol
    if out.shape[0] != planes or out.shape[1] != oh_n or out.shape[2] != ow_n or idx.shape[0] != planes \
            or idx.shape[1] != oh_n or idx.shape[2] != ow_n:
        raise ValueError("out/indices: expected shape (planes, %d, %d)" % (oh_n, ow_n))
    if planes == 0 or oh_n == 0 or ow_n == 0:
        return
    for o in range(ow_n):
        wmost = max(wmost, wc[o])
    with nogil, parallel(num_threads=_threads()):
        hv = <floating*> malloc(height * ow_n * sizeof(floating))
        hcol = <int64_t*> malloc(height * ow_n * sizeof(int64_t))
        for p in prange(planes, schedule="static"):
            for h in range(height):
                _pool_max_row(&x[p, h, 0], &ws[0], &wc[0], ow_n, dw, wmost, hv + h * ow_n, hcol + h * ow_n)
            for oh in range(oh_n):
                _pool_max_col(hv, hcol, hs[oh], hc[oh], dh, width, ow_n, &out[p, oh, 0], &idx[p, oh, 0])
        free(hv)
        free(hcol)


@cython.boundscheck(False)
@cython.wraparound(False)
def pool_max_backward(const floating[:, ::1] grad, const int64_t[:, ::1] idx, floating[:, ::1] gx):
    cdef Py_ssize_t planes = gx.shape[0], hw = gx.shape[1], n = grad.shape[1], p, i
    cdef int64_t j
    if grad.shape[0] != planes or idx.shape[0] != planes or idx.shape[1] != n:
        raise ValueError("indices: expected the shape of grad")
    for p in range(planes):
        for i in range(n):
            if idx[p, i] < -1 or idx[p, i] >= hw:
                raise ValueError("indices: expected values in [-1, %d)" % hw)
    if planes == 0 or hw == 0:
        return
    for p in prange(planes, nogil=True, schedule="static", num_threads=_threads()):
        memset(&gx[p, 0], 0, hw * sizeof(floating))
        for i in range(n):
            j = idx[p, i]
            if j >= 0:
                gx[p, j] += grad[p, i]


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _pool_row_sum(const floating* x, Py_ssize_t width, Py_ssize_t h0, Py_ssize_t c,
                               floating* acc) noexcept nogil:
    cdef Py_ssize_t t, w
    cdef const floating* r
    memcpy(acc, x + h0 * width, width * sizeof(floating))
    for t in range(1, c):
        r = x + (h0 + t) * width
        for w in range(width):
            acc[w] += r[w]


@cython.boundscheck(False)
@cython.wraparound(False)
def pool_avg_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                     const int64_t[::1] hs, const int64_t[::1] hc, const int64_t[::1] ws,
                     const int64_t[::1] wc, const floating[::1] hdiv, const floating[::1] wdiv):
    cdef Py_ssize_t planes = x.shape[0], height = x.shape[1], width = x.shape[2]
    cdef Py_ssize_t oh_n = hs.shape[0], ow_n = ws.shape[0], wmost = 1, p, oh, o, t
    cdef floating* rs
    cdef floating* orow
    if out.shape[0] != planes or out.shape[1] != oh_n or out.shape[2] != ow_n \
            or hdiv.shape[0] != oh_n or wdiv.shape[0] != ow_n:
        raise ValueError("out/divisors: expected shape (planes, %d, %d)" % (oh_n, ow_n))
    if planes == 0 or oh_n == 0 or ow_n == 0:
        return
    for o in range(ow_n):
        wmost = max(wmost, wc[o])
    with nogil, parallel(num_threads=_threads()):
        rs = <floating*> malloc(width * sizeof(floating))
        for p in prange(planes, schedule="static"):
            for oh in range(oh_n):
                _pool_row_sum(&x[p, 0, 0], width, hs[oh], hc[oh], rs)
                orow = &out[p, oh, 0]
                for o in range(ow_n):
                    orow[o] = rs[ws[o]]
                for t in range(1, wmost):
                    for o in range(ow_n):
                        if t < wc[o]:
                            orow[o] += rs[ws[o] + t]
                for o in range(ow_n):
                    orow[o] = orow[o] / (hdiv[oh] * wdiv[o])
        free(rs)


@cython.boundscheck(False)
@cython.wraparound(False)
def pool_avg_backward(const floating[:, :, ::1] grad, floating[:, :, ::1] gx,
                      const floating[::1] hdiv, const floating[::1] wdiv,
                      const int64_t[::1] hlo, const int64_t[::1] hn,
                      const int64_t[::1] wlo, const int64_t[::1] wn):
    """hlo/hn (per input row) and wlo/wn (per input column): the outputs [lo, lo + n) whose
    windows hold that position."""
    cdef Py_ssize_t planes = gx.shape[0], height = gx.shape[1], width = gx.shape[2]
    cdef Py_ssize_t oh_n = grad.shape[1], ow_n = grad.shape[2], wmost = 0, p, oh, o, h, j, w
    cdef floating* q
    cdef floating* tb
    cdef floating* trow
    if grad.shape[0] != planes or hdiv.shape[0] != oh_n or wdiv.shape[0] != ow_n \
            or hlo.shape[0] != height or hn.shape[0] != height or wlo.shape[0] != width or wn.shape[0] != width:
        raise ValueError("grad/tables: shapes do not match")
    for w in range(width):
        wmost = max(wmost, wn[w])
        if wn[w] > 0 and (wlo[w] < 0 or wlo[w] + wn[w] > ow_n):
            raise ValueError("tables: window outside the output")
    for h in range(height):
        if hn[h] > 0 and (hlo[h] < 0 or hlo[h] + hn[h] > oh_n):
            raise ValueError("tables: window outside the output")
    if planes == 0 or height == 0 or width == 0:
        return
    with nogil, parallel(num_threads=_threads()):
        q = <floating*> malloc((ow_n + 1) * sizeof(floating))
        tb = <floating*> malloc((oh_n + 1) * width * sizeof(floating))
        for p in prange(planes, schedule="static"):
            for oh in range(oh_n):
                for o in range(ow_n):
                    q[o] = grad[p, oh, o] / (hdiv[oh] * wdiv[o])
                trow = tb + oh * width
                for w in range(width):
                    trow[w] = 0
                for j in range(wmost):
                    for w in range(width):
                        if j < wn[w]:
                            trow[w] += q[wlo[w] + j]
            for h in range(height):
                if hn[h] == 0:
                    memset(&gx[p, h, 0], 0, width * sizeof(floating))
                else:
                    _pool_row_sum(tb, width, hlo[h], hn[h], &gx[p, h, 0])
        free(q)
        free(tb)
