# gemm family (pydl._cython): a blocked, packed GEMM with a fused epilogue (bias +
# activation, or grad * activation'), for matmul and linear (adapters:
# pydl/backends/cython/gemm.py). Included by _cython.pyx. Figures: dev/gemm/cython.md.
#
# C = epi(op(A) @ op(B)), any strides (transposes are strides: packing reads them).
# 1. pack all of B into GM_NR-wide slivers (prange over slivers), depth-major,
# 2. pack all of A into GM_MR-row micro-panels (prange over micro-panels),
# 3. prange over tasks (GM_MC rows x GM_JG slivers); a task runs K in blocks of KC
#    (256 float32, 128 float64: a KC x GM_NR sliver of B is 32 KiB, L1-resident), for
#    each B sliver, each A micro-panel: gm_kernel, a GM_MR x GM_NR register tile.
# gm_kernel keeps its tile in a local C array acc[6*32] with constant bounds: GCC
# (-O3 -march=native) vectorizes the j loop (2 zmm per row in float32, 4 in float64),
# unrolls the i loop and keeps the whole tile in registers: 12 accumulators, 2 loads
# of B and 6 broadcasts of A per depth (float32: 12 vfmadd231ps zmm per depth, no
# spill; float64: 24 vfmadd231pd). Edge tiles: packing pads with zeros, the store
# writes the valid part. The epilogue runs in the store of the last K block.
# Few rows (M <= 4): no packing; row updates or dot products, parallel over columns.
from libc.stdlib cimport malloc, free

cdef enum:
    GM_MR = 6        # register tile rows
    GM_NR = 32       # register tile columns (2 zmm float32)
    GM_MC = 96       # rows per task (16 micro-panels)
    GM_JG = 8        # slivers per task (256 columns)
    GM_SMALL_M = 4   # up to this many rows: the unpacked path
    GM_CHUNK = 2048  # most columns per task on the unpacked path
    GM_BWD = 5       # epilogue modes from here on: grad * act'(z)
    GM_SERIAL_FLOPS = 1 << 22  # below: one thread (a parallel launch costs more)

#: epilogue modes: activation (forward), then GM_BWD + activation: grad * act'(z)
GEMM_MODES = {None: 0, "relu": 1, "gelu": 2, "tanh": 3, "sigmoid": 4}
GEMM_BWD = GM_BWD


cdef inline floating gm_epi(floating v, int mode, floating g) noexcept nogil:
    """Epilogue of one element z = v (bias already added)."""
    cdef floating e, s, t
    if mode == 0:
        return v
    if mode == 1:
        return 0 if v < 0 else v
    if mode == 2:
        return <floating>0.5 * v * ew_erfc(-v * <floating>EW_SQRT1_2)
    if mode == 3:
        return ew_tanh(v)
    if mode == 4:
        e = ew_exp(-ew_fabs(v))
        return 1 / (1 + e) if v >= 0 else e / (1 + e)
    if mode == 5:
        return g
    if mode == 6:
        return g if v > 0 else 0
    if mode == 7:
        return g * (<floating>0.5 * ew_erfc(-v * <floating>EW_SQRT1_2)
                    + v * <floating>EW_INV_SQRT_2PI * ew_exp(<floating>-0.5 * v * v))
    if mode == 8:
        t = ew_tanh(v)
        return g * (1 - t * t)
    e = ew_exp(-ew_fabs(v))
    s = 1 / (1 + e)
    return g * (e * s * s)


cdef void gm_kernel(Py_ssize_t kc, const floating* ap, const floating* bp, floating* c,
                    Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t n, bint first, bint last,
                    const floating* bias, int mode, const floating* g, Py_ssize_t ldg) noexcept nogil:
    """c[0:m, 0:n] (=|+=) ap (GM_MR x kc micro-panel) @ bp (kc x GM_NR sliver); on the last
    K block the epilogue (bias: NULL or at the tile's first column; g: grad tile) too."""
    cdef floating acc[GM_MR * GM_NR]
    cdef floating a, v
    cdef Py_ssize_t p, i, j
    for i in range(GM_MR * GM_NR):
        acc[i] = 0
    for p in range(kc):
        for i in range(GM_MR):
            a = ap[p * GM_MR + i]
            for j in range(GM_NR):
                acc[i * GM_NR + j] += a * bp[p * GM_NR + j]
    if m == GM_MR and n == GM_NR and not (last and (bias != NULL or mode != 0)):
        # a full tile, no epilogue: constant bounds, so these loops vectorize too (a scalar
        # store loop here cost as much as the kernel's 256 depths)
        if first:
            for i in range(GM_MR):
                for j in range(GM_NR):
                    c[i * ldc + j] = acc[i * GM_NR + j]
        else:
            for i in range(GM_MR):
                for j in range(GM_NR):
                    c[i * ldc + j] += acc[i * GM_NR + j]
        return
    for i in range(m):
        for j in range(n):
            v = acc[i * GM_NR + j]
            if not first:
                v = v + c[i * ldc + j]
            if last:
                if bias != NULL:
                    v = v + bias[j]
                if mode != 0:
                    v = gm_epi(v, mode, g[i * ldg + j] if mode >= GM_BWD else <floating>0)
            c[i * ldc + j] = v


cdef inline void gm_pack_b(Py_ssize_t kc, Py_ssize_t n, const floating* b, Py_ssize_t rsb,
                           Py_ssize_t csb, floating* bp) noexcept nogil:
    """bp[p * GM_NR + j] = b[p, j] for one sliver (n <= GM_NR valid columns, rest 0)."""
    cdef Py_ssize_t p, j
    if csb == 1:
        for p in range(kc):
            for j in range(n):
                bp[p * GM_NR + j] = b[p * rsb + j]
            for j in range(n, GM_NR):
                bp[p * GM_NR + j] = 0
    else:
        for j in range(n):
            for p in range(kc):
                bp[p * GM_NR + j] = b[p * rsb + j * csb]
        for j in range(n, GM_NR):
            for p in range(kc):
                bp[p * GM_NR + j] = 0


cdef inline void gm_pack_a(Py_ssize_t kc, Py_ssize_t m, const floating* a, Py_ssize_t rsa,
                           Py_ssize_t csa, floating* ap) noexcept nogil:
    """ap[p * GM_MR + i] = a[i, p] for one micro-panel (m <= GM_MR valid rows, rest 0)."""
    cdef Py_ssize_t p, i
    if csa == 1:
        for i in range(m):
            for p in range(kc):
                ap[p * GM_MR + i] = a[i * rsa + p]
    else:
        for p in range(kc):
            for i in range(m):
                ap[p * GM_MR + i] = a[i * rsa + p * csa]
    for i in range(m, GM_MR):
        for p in range(kc):
            ap[p * GM_MR + i] = 0


cdef void gm_small_task(Py_ssize_t j0, Py_ssize_t nj, Py_ssize_t M, Py_ssize_t K,
                        const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                        const floating* B, Py_ssize_t rsb, Py_ssize_t csb,
                        floating* C, Py_ssize_t ldc, bint accumulate,
                        const floating* bias, int mode, const floating* G, Py_ssize_t ldg) noexcept nogil:
    """Columns j0:j0+nj (nj <= GM_CHUNK) of gm_small; its own function: the local
    arrays are private to the thread running the task."""
    cdef floating acc[GM_CHUNK]
    cdef floating lanes[16]
    cdef floating a, v
    cdef const floating* brow
    cdef Py_ssize_t i, j, p, l
    for i in range(M):
        if csb == 1:
            for j in range(nj):
                acc[j] = 0
            for p in range(K):
                a = A[i * rsa + p * csa]
                brow = B + p * rsb + j0
                for j in range(nj):
                    acc[j] += a * brow[j]
        else:
            for j in range(nj):
                for l in range(16):
                    lanes[l] = 0
                brow = B + (j0 + j) * csb
                p = 0
                while p + 16 <= K:
                    for l in range(16):
                        lanes[l] += A[i * rsa + (p + l) * csa] * brow[(p + l) * rsb]
                    p = p + 16
                v = 0
                while p < K:
                    v = v + A[i * rsa + p * csa] * brow[p * rsb]
                    p = p + 1
                for l in range(16):
                    v = v + lanes[l]
                acc[j] = v
        for j in range(nj):
            v = acc[j]
            if accumulate:
                v = v + C[i * ldc + j0 + j]
            if bias != NULL:
                v = v + bias[j0 + j]
            if mode != 0:
                v = gm_epi(v, mode, G[i * ldg + j0 + j] if mode >= GM_BWD else <floating>0)
            C[i * ldc + j0 + j] = v


cdef void gm_small(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                   const floating* B, Py_ssize_t rsb, Py_ssize_t csb,
                   floating* C, Py_ssize_t ldc, bint accumulate,
                   const floating* bias, int mode, const floating* G, Py_ssize_t ldg,
                   int nthreads) noexcept nogil:
    """Few rows: B read once, in place, parallel over column chunks. B row-major
    (csb == 1): row updates; else dot products along K in 16 lanes (GCC vectorizes
    them without reassociation)."""
    # wide chunks (up to GM_CHUNK): B's rows are read in runs of chunk columns; runs of 256
    # (1 KiB) from rows 16 KiB apart touched a new page every KiB (0.33x NumPy, 1x4096x4096)
    cdef Py_ssize_t chunk = min(<Py_ssize_t>GM_CHUNK, max(<Py_ssize_t>64, ((N + nthreads - 1) // nthreads + 15) // 16 * 16))
    cdef Py_ssize_t nch = (N + chunk - 1) // chunk
    cdef Py_ssize_t t
    for t in prange(nch, num_threads=nthreads, schedule="static"):
        gm_small_task(t * chunk, min(chunk, N - t * chunk), M, K, A, rsa, csa,
                      B, rsb, csb, C, ldc, accumulate, bias, mode, G, ldg)


cdef void gm_task(Py_ssize_t ic, Py_ssize_t jg, Py_ssize_t nmp, Py_ssize_t nsl,
                  Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t kcb,
                  const floating* abuf, const floating* bbuf, floating* C, Py_ssize_t ldc,
                  bint accumulate, const floating* bias, int mode, const floating* G,
                  Py_ssize_t ldg) noexcept nogil:
    """One task: rows of micro-panels ic*16.., slivers jg*GM_JG.., all of K in blocks of
    kcb (A and B packed in full: micro-panel ir at abuf + ir*GM_MR*K, depth-major)."""
    cdef Py_ssize_t pc = 0, kc, jr, ir
    cdef Py_ssize_t jr1 = min(jg * GM_JG + GM_JG, nsl)
    cdef Py_ssize_t ir1 = min(ic * (GM_MC // GM_MR) + GM_MC // GM_MR, nmp)
    while pc < K:
        kc = min(kcb, K - pc)
        for jr in range(jg * GM_JG, jr1):
            for ir in range(ic * (GM_MC // GM_MR), ir1):
                gm_kernel(kc, abuf + ir * GM_MR * K + pc * GM_MR, bbuf + jr * GM_NR * K + pc * GM_NR,
                          C + ir * GM_MR * ldc + jr * GM_NR, ldc,
                          min(<Py_ssize_t>GM_MR, M - ir * GM_MR), min(<Py_ssize_t>GM_NR, N - jr * GM_NR),
                          pc == 0 and not accumulate, pc + kc >= K,
                          bias + jr * GM_NR if bias != NULL else NULL, mode,
                          G + ir * GM_MR * ldg + jr * GM_NR if mode >= GM_BWD else NULL, ldg)
        pc = pc + kc


cdef int gm_gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                 const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                 const floating* B, Py_ssize_t rsb, Py_ssize_t csb,
                 floating* C, Py_ssize_t ldc, bint accumulate,
                 const floating* bias, int mode, const floating* G, Py_ssize_t ldg,
                 int nthreads) noexcept nogil:
    """C = epi(A @ B (+ C if accumulate)): the GEMM other .pyx files call (float or double).

    A (M, K) with element strides (rsa, csa); B (K, N) with (rsb, csb) (a transpose is a
    swap of the strides); C (M, N) row-major with row stride ldc (column stride 1),
    written in full. Epilogue, per element: + bias[j] (bias NULL: none), then mode 0:
    nothing; 1..4: relu, gelu (erf), tanh, sigmoid; 5 + activation code (GEMM_BWD + ...):
    z -> G[i * ldg + j] * act'(z) (G: the upstream grad, only read then). nthreads: the
    OpenMP threads of its parallel loops (pass 1 when calling from inside a prange).
    M, N, K >= 1. Returns 0, or -1 when a work buffer cannot be allocated.
    """
    cdef Py_ssize_t kcb = 256 if floating is float else 128
    cdef Py_ssize_t pc, kc, nsl, nmp, nic, njg, s, t, ic, jg, jr, ir, jr1, ir1
    cdef floating* bbuf
    cdef floating* abuf
    if M <= GM_SMALL_M:
        gm_small(M, N, K, A, rsa, csa, B, rsb, csb, C, ldc, accumulate, bias, mode, G, ldg, nthreads)
        return 0
    nsl = (N + GM_NR - 1) // GM_NR
    nmp = (M + GM_MR - 1) // GM_MR
    bbuf = <floating*> malloc(nsl * GM_NR * K * sizeof(floating))
    abuf = <floating*> malloc(nmp * GM_MR * K * sizeof(floating))
    if bbuf == NULL or abuf == NULL:
        free(bbuf)
        free(abuf)
        return -1
    # pack everything first (two parallel loops), then one parallel loop over tasks that
    # each run all of K: three barriers in all (one set per K block cost 2-thread runs
    # much on a busy machine, where every barrier waits for a descheduled thread)
    for s in prange(nsl, num_threads=nthreads, schedule="static"):
        gm_pack_b(K, min(<Py_ssize_t>GM_NR, N - s * GM_NR), B + s * GM_NR * csb, rsb, csb,
                  bbuf + s * GM_NR * K)
    for s in prange(nmp, num_threads=nthreads, schedule="static"):
        gm_pack_a(K, min(<Py_ssize_t>GM_MR, M - s * GM_MR), A + s * GM_MR * rsa, rsa, csa,
                  abuf + s * GM_MR * K)
    nic = (nmp + GM_MC // GM_MR - 1) // (GM_MC // GM_MR)
    njg = (nsl + GM_JG - 1) // GM_JG
    for t in prange(nic * njg, num_threads=nthreads, schedule="dynamic"):
        gm_task(t // njg, t % njg, nmp, nsl, M, N, K, kcb, abuf, bbuf, C, ldc, accumulate,
                bias, mode, G, ldg)
    free(bbuf)
    free(abuf)
    return 0


cdef void gm_pack_a_all(Py_ssize_t M, Py_ssize_t K, const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                        floating* ap) noexcept nogil:
    """All of A (M, K) (strides rsa, csa) in GM_MR-row micro-panels for gm_gemm_serial_pa:
    panel ir at ap + ir*GM_MR*K, depth-major, rows past M zero. ap: ceil(M/GM_MR)*GM_MR*K."""
    cdef Py_ssize_t ir
    for ir in range((M + GM_MR - 1) // GM_MR):
        gm_pack_a(K, min(<Py_ssize_t>GM_MR, M - ir * GM_MR), A + ir * GM_MR * rsa, rsa, csa,
                  ap + ir * GM_MR * K)


cdef void gm_gemm_serial_pa(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* ap,
                            const floating* B, Py_ssize_t rsb, Py_ssize_t csb,
                            floating* C, Py_ssize_t ldc, bint accumulate, floating* bbuf) noexcept nogil:
    """C (=|+=) A @ B on the calling thread, no allocation, no OpenMP region: A packed once
    by the caller (gm_pack_a_all, reused across calls: a conv's weights), B packed sliver by
    sliver into bbuf (K*GM_NR elements, the caller's), each sliver used by every micro-panel
    while it is in L1/L2. For callers inside their own prange (per-image conv drivers),
    where gm_gemm re-packed A, allocated two buffers and opened three (nested) parallel
    regions per call. M, N, K >= 1."""
    cdef Py_ssize_t kcb = 256 if floating is float else 128
    cdef Py_ssize_t nsl = (N + GM_NR - 1) // GM_NR, nmp = (M + GM_MR - 1) // GM_MR
    cdef Py_ssize_t jr, ir, pc, kc, nj
    for jr in range(nsl):
        nj = min(<Py_ssize_t>GM_NR, N - jr * GM_NR)
        gm_pack_b(K, nj, B + jr * GM_NR * csb, rsb, csb, bbuf)
        pc = 0
        while pc < K:
            kc = min(kcb, K - pc)
            for ir in range(nmp):
                gm_kernel(kc, ap + ir * GM_MR * K + pc * GM_MR, bbuf + pc * GM_NR,
                          C + ir * GM_MR * ldc + jr * GM_NR, ldc, min(<Py_ssize_t>GM_MR, M - ir * GM_MR), nj,
                          pc == 0 and not accumulate, pc + kc >= K, NULL, 0, NULL, 0)
            pc = pc + kc


def gemm(const floating[:, :, :] a, const floating[:, :, :] b, floating[:, :, ::1] out,
         const floating[::1] bias, bint has_bias, int mode, const floating[:, :, :] g):
    """out[i] = epi(a[i] @ b[i]) for each batch entry i (strides as given: 0 for a shared
    operand, swapped for a transpose). Shapes: a (B, M, K), b (B, K, N), out (B, M, N),
    bias (N,) (used when has_bias), g like out (read when mode >= GEMM_BWD). M, N, K >= 1."""
    cdef Py_ssize_t nb = out.shape[0], M = out.shape[1], N = out.shape[2], K = a.shape[2]
    cdef Py_ssize_t isz = sizeof(floating), i
    cdef int nt = _threads() if 2 * nb * M * N * K >= GM_SERIAL_FLOPS else 1, rc = 0
    cdef const floating* bp = &bias[0] if has_bias else NULL
    with nogil:
        for i in range(nb):
            rc = gm_gemm(M, N, K, &a[i, 0, 0], a.strides[1] // isz, a.strides[2] // isz,
                         &b[i, 0, 0], b.strides[1] // isz, b.strides[2] // isz,
                         &out[i, 0, 0], out.strides[1] // isz, False, bp, mode,
                         &g[i, 0, 0], g.strides[1] // isz, nt)
            if rc != 0:
                break
    if rc != 0:
        raise MemoryError("gemm: cannot allocate the packing buffers")
