# Elementwise activations (forward and backward), softmax and log_softmax.
# float32 and float64 (Cython's `floating` fused type), C-contiguous inputs;
# outputs are allocated by the Python adapter (pydl/backends/cython/elementwise.py).
#
# Activations: x, y flat (N,). Split into chunks of EW_CHUNK elements, chunks
# shared between OpenMP threads (prange, static schedule: each thread gets one
# contiguous run); the op switch sits outside the per-chunk loop, so the loops
# vectorize. float32 exp/expm1/tanh/erfc are the call-free inline functions
# below (ew_fast_expf...), so GCC vectorizes the whole loop (zmm vfmadd, no
# call); float64 calls libm, one scalar call per element.
# Napkin math: relu is bandwidth-bound; float32 over N elements moves 8N
# bytes, at ~29 GB/s copy bandwidth N = 4M takes ~1.2 ms (less while 32 MB
# fit in L3). A libm expf per element (~2.5 ns, scalar: GCC does not
# vectorize a loop that calls libm) made sigmoid ~5x that floor; the inline
# exp is ~25 flops in 16 lanes, and sigmoid over 2M float32 now takes
# ~0.4 ms on 2 cores (was 3.4 ms), exact gelu ~0.8 ms (was 10.9 ms).
#
# Softmax: x viewed as (outer, n, inner), normalized along n. inner == 1 (the
# hot case, a contiguous row per task): a max pass, an exp pass writing
# exp(x - max) into y, a sum pass, then a scale pass (log_softmax rewrites y
# from x). GCC does not vectorize an ordered float sum or max without
# -ffast-math, so both reductions run in EW_LANES independent accumulators,
# which vectorize (vmaxps, vaddpd). inner > 1: tasks
# are tiles of (n, EW_TILE) columns, reductions kept per column on the stack
# so the inner loops run along contiguous memory. Sums accumulate in double.
# Reads x once from memory (later passes hit cache), writes y once: 8N bytes
# for float32; (4096, 512) float32 ~0.6 ms (was 4.1 ms, bound by expf).
#
# NaN/inf follow the NumPy reference: every comparison is written so that a
# NaN falls into the branch that propagates it (relu: `v < 0 ? 0 : v`; the
# clamps in the fast exp pass NaN through, and it poisons the result).
# gelu, the tanh-gelu and sigmoid use forms without cancellation (erfc,
# exp(-|u|)) that equal the reference's formulas.
from cython cimport floating
from libc.math cimport copysignf, erfc, exp, expm1, fabs, fabsf, log, tanh

cdef enum:
    EW_CHUNK = 8192   # elements per activation task
    EW_TILE = 128     # softmax columns per task when inner > 1
    EW_LANES = 64     # independent accumulators in row reductions (64, not 16: GCC unrolls a
                      # 16-trip loop fully, and then does not vectorize the max)

cdef enum:
    EW_RELU
    EW_LEAKY_RELU
    EW_ELU
    EW_GELU
    EW_GELU_TANH
    EW_SIGMOID
    EW_TANH

#: kernel name -> op code for elementwise_activation(_backward)
ELEMENTWISE_ACTIVATIONS = {"relu": EW_RELU, "leaky_relu": EW_LEAKY_RELU, "elu": EW_ELU, "gelu": EW_GELU,
                           "gelu_tanh": EW_GELU_TANH, "sigmoid": EW_SIGMOID, "tanh": EW_TANH}

cdef extern from *:
    # C constants, not module variables: the compiler folds them into the loops
    """
    #include <stdint.h>
    #include <string.h>
    #define EW_SQRT1_2 0.70710678118654752440
    #define EW_INV_SQRT_2PI 0.39894228040143267794
    #define EW_SQRT_2_OVER_PI 0.79788456080286535588
    #define EW_GELU_C 0.044715
    """
    const double EW_SQRT1_2
    const double EW_INV_SQRT_2PI
    const double EW_SQRT_2_OVER_PI
    const double EW_GELU_C

cdef extern from *:
    # float32 <-> int32 bit casts (memcpy: no aliasing question; GCC turns it into a
    # register move and vectorizes it)
    """
    static inline int32_t ew_f32_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }
    static inline float ew_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
    """
    int ew_f32_bits(float f) noexcept nogil
    float ew_f32_from_bits(int i) noexcept nogil


# -- float32 exp / expm1 / tanh without libm -------------------------------------------
# A libm call per element keeps GCC from vectorizing the loop; these inline into it, and
# the loops vectorize (vfmadd on zmm/ymm, no call). Cody-Waite: n = round(x log2e) from the
# 1.5*2^23 shifter (t = x log2e + S leaves n in t's low mantissa bits and t - S is n as a
# float: no float -> int conversion, so NaN is no undefined case), r = x - n ln2 with ln2
# split in a hi part (9 significant bits: n * hi is exact) and a lo part, |r| <= ln2/2,
# expm1(r) = r + r^2 q(r) with q of degree 4 (fitted for this file on Chebyshev nodes,
# relative error 1.3e-8 in exact arithmetic), then a scale by 2^n built from exponent bits.
# exp clamps x to [-104, 89] first (a NaN fails both compares and goes on to poison r) and
# applies 2^n as two normal factors 2^(n>>1) 2^(n - n>>1): exp(89) rounds to inf, exp(-104)
# to 0, and results in between to denormals as in libm. Accuracy vs float64 on a dense grid:
# exp 8e-8, expm1 9e-8, tanh 1.6e-7 relative (the op tolerance is 2e-5).
cdef extern from *:
    """
    #define EW_LOG2E 1.4426950408889634f
    #define EW_SHIFT 12582912.0f
    #define EW_LN2_HI 0.693359375f
    #define EW_LN2_LO (-2.12194440054690583e-4f)
    #define EW_Q0 0.49999997f
    #define EW_Q1 0.16666543f
    #define EW_Q2 0.041667204f
    #define EW_Q3 0.008366526f
    #define EW_Q4 0.0013882293f
    """
    const float EW_LOG2E
    const float EW_SHIFT
    const float EW_LN2_HI
    const float EW_LN2_LO
    const float EW_Q0
    const float EW_Q1
    const float EW_Q2
    const float EW_Q3
    const float EW_Q4

cdef inline float ew_pow2f(int n) noexcept nogil:
    # 2^n for integer n in [-126, 127]
    return ew_f32_from_bits((n + 127) << 23)

cdef inline float ew_reducef(float x, float lo, int* n) noexcept nogil:
    # r with x + lo = n ln2 + r, |r| <= ln2/2 (x clamped; lo tiny next to x, or 0):
    # x - n ln2_hi is exact, so lo (x's rounding error) is kept
    cdef float t = (x + lo) * EW_LOG2E + EW_SHIFT
    cdef float nf = t - EW_SHIFT
    n[0] = ew_f32_bits(t) - ew_f32_bits(EW_SHIFT)
    return ((x - nf * EW_LN2_HI) + lo) - nf * EW_LN2_LO

cdef inline float ew_expm1_reducedf(float r) noexcept nogil:
    return r + r * r * (EW_Q0 + r * (EW_Q1 + r * (EW_Q2 + r * (EW_Q3 + r * EW_Q4))))

cdef inline float ew_fast_exp_hilof(float x, float lo) noexcept nogil:
    # exp(x + lo), lo a small correction to x (|lo| <= ~0.1) or 0:
    # inf above ~88.72, 0 below ~-103.3, NaN stays NaN
    cdef int n, n1
    cdef float r
    x = <float>-104 if x < <float>-104 else x
    x = <float>89 if x > <float>89 else x
    r = ew_reducef(x, lo, &n)
    n1 = n >> 1
    return (ew_expm1_reducedf(r) + <float>1) * ew_pow2f(n1) * ew_pow2f(n - n1)

cdef inline float ew_fast_expf(float x) noexcept nogil:
    return ew_fast_exp_hilof(x, 0)

cdef inline float ew_fast_expm1f_neg(float x) noexcept nogil:
    # expm1(x) for x <= 0 or NaN as 2^n expm1(r) + (2^n - 1): no cancellation near 0; below
    # -87 expm1 is -1 in float32, so 2^n stays a normal number
    cdef int n
    cdef float r, s
    x = <float>-87 if x < <float>-87 else x
    r = ew_reducef(x, 0, &n)
    s = ew_pow2f(n)
    return s * ew_expm1_reducedf(r) + (s - <float>1)

cdef inline float ew_fast_tanhf(float x) noexcept nogil:
    # sign(x) (-m / (2 + m)) with m = expm1(-2|x|): no cancellation near 0
    cdef float m = ew_fast_expm1f_neg(<float>-2 * fabsf(x))
    return copysignf(-m / (<float>2 + m), x)

# erfc(z) = 1 - z P(z^2) for |z| < 0.5 (P of degree 4, relative error 1.4e-9), else
# erfc(|z|) = exp(-z^2) R(u), u = 3.45 / (1 + |z|) - 1.3 in [-1, 1] on |z| in [0.5, 10.5]
# (R of degree 8, relative error 5e-8; both fitted for this file), and erfc(z) = 2 - erfc(-z)
# for z < 0. Both forms are computed and one is selected. z^2 = h^2 + d with h = z's top 12
# bits (h^2 exact) goes into exp as hi + lo: without it exp(-z^2) has z^2's rounding,
# ~7e-6 relative at z = 10. |z| is clamped at 10.5 (NaN passes), where exp gives exactly 0,
# as erfc(inf) must for gelu(-inf) = -inf * 0 = NaN. Float32 accuracy ~6e-7 relative
# (rounding of 1 / (1 + |z|), to which R is sensitive).
cdef extern from *:
    """
    #define EW_ERF_P0 1.1283791f
    #define EW_ERF_P1 (-0.37612608f)
    #define EW_ERF_P2 0.11282828f
    #define EW_ERF_P3 (-0.026757453f)
    #define EW_ERF_P4 0.0047184727f
    #define EW_ERFC_R0 0.2981022f
    #define EW_ERFC_R1 0.29059377f
    #define EW_ERFC_R2 0.03767585f
    #define EW_ERFC_R3 (-0.010496637f)
    #define EW_ERFC_R4 (-0.0010480931f)
    #define EW_ERFC_R5 0.001079356f
    #define EW_ERFC_R6 (-0.00017803768f)
    #define EW_ERFC_R7 (-7.726387e-05f)
    #define EW_ERFC_R8 3.9207138e-05f
    """
    const float EW_ERF_P0, EW_ERF_P1, EW_ERF_P2, EW_ERF_P3, EW_ERF_P4
    const float EW_ERFC_R0, EW_ERFC_R1, EW_ERFC_R2, EW_ERFC_R3, EW_ERFC_R4
    const float EW_ERFC_R5, EW_ERFC_R6, EW_ERFC_R7, EW_ERFC_R8

cdef inline float ew_fast_erfcf(float z) noexcept nogil:
    cdef float one = 1
    cdef float s = z * z
    cdef float small = one - z * (EW_ERF_P0 + s * (EW_ERF_P1 + s * (EW_ERF_P2 + s * (EW_ERF_P3
                                                                       + s * EW_ERF_P4))))
    cdef float a = fabsf(z), u, r, h, big
    a = <float>10.5 if a > <float>10.5 else a
    u = <float>3.45 / (one + a) + <float>-1.3
    r = EW_ERFC_R8
    r = r * u + EW_ERFC_R7
    r = r * u + EW_ERFC_R6
    r = r * u + EW_ERFC_R5
    r = r * u + EW_ERFC_R4
    r = r * u + EW_ERFC_R3
    r = r * u + EW_ERFC_R2
    r = r * u + EW_ERFC_R1
    r = r * u + EW_ERFC_R0
    h = ew_f32_from_bits(ew_f32_bits(a) & -4096)   # sign, exponent, top 12 significant bits
    big = ew_fast_exp_hilof(-(h * h), -((a - h) * (a + h))) * r
    big = <float>2 - big if z < 0 else big
    return small if a < <float>0.5 else big


# -- exp, expm1 (x <= 0), tanh, erfc: the call-free forms above for float32, libm for float64
cdef inline floating ew_exp(floating v) noexcept nogil:
    if floating is float:
        return ew_fast_expf(v)
    else:
        return exp(v)

cdef inline floating ew_expm1_neg(floating v) noexcept nogil:
    # v <= 0 or NaN
    if floating is float:
        return ew_fast_expm1f_neg(v)
    else:
        return expm1(v)

cdef inline floating ew_erfc(floating v) noexcept nogil:
    if floating is float:
        return ew_fast_erfcf(v)
    else:
        return erfc(v)

cdef inline floating ew_tanh(floating v) noexcept nogil:
    if floating is float:
        return ew_fast_tanhf(v)
    else:
        return tanh(v)

cdef inline floating ew_fabs(floating v) noexcept nogil:
    if floating is float:
        return fabsf(v)
    else:
        return fabs(v)


# -- activations -------------------------------------------------------------------
cdef inline floating ew_one_or(bint c, floating e) noexcept nogil:
    # `1 if c else e` for e in [0, 1] or NaN, without a branch (GCC branches on the
    # ternary, and the random sign of x mispredicts half the time): exact, NaN stays NaN
    cdef floating f = c, one = 1
    return f + (one - f) * e

cdef inline floating ew_gelu_tanh_inner(floating v) noexcept nogil:
    return <floating>EW_SQRT_2_OVER_PI * (v + <floating>EW_GELU_C * v * v * v)

cdef void ew_activation_chunk(int op, const floating* x, floating* y, Py_ssize_t n,
                              floating p) noexcept nogil:
    # y = f(x) on n elements; p: negative_slope (leaky_relu), alpha (elu).
    # Constants are typed: a bare 1 or 0.5 becomes a double literal in the generated C,
    # which would turn float32 arithmetic into double.
    cdef Py_ssize_t i
    cdef floating v, u, e
    cdef floating zero = 0, one = 1, two = 2, half = 0.5
    if op == EW_RELU:
        for i in range(n):
            v = x[i]
            y[i] = zero if v < zero else v
    elif op == EW_LEAKY_RELU:
        for i in range(n):
            v = x[i]
            y[i] = v if v > zero else v * p
    elif op == EW_ELU:
        for i in range(n):
            v = x[i]
            u = zero if v > zero else v  # <= 0 or NaN: both sides are computed (a select)
            y[i] = v if v > zero else p * ew_expm1_neg(u)
    elif op == EW_GELU:
        # 0.5 x (1 + erf(x/sqrt2)) as 0.5 x erfc(-x/sqrt2): no cancellation for x << 0
        for i in range(n):
            v = x[i]
            y[i] = half * v * ew_erfc(-v * <floating>EW_SQRT1_2)
    elif op == EW_GELU_TANH:
        # 0.5 x (1 + tanh(u)) = x sigmoid(2u), from exp(-2|u|) only (never overflows)
        for i in range(n):
            v = x[i]
            u = ew_gelu_tanh_inner(v)
            e = ew_exp(-two * ew_fabs(u))
            y[i] = v * ew_one_or(u >= zero, e) / (one + e)
    elif op == EW_SIGMOID:
        for i in range(n):
            v = x[i]
            e = ew_exp(-ew_fabs(v))
            y[i] = ew_one_or(v >= zero, e) / (one + e)
    elif op == EW_TANH:
        for i in range(n):
            y[i] = ew_tanh(x[i])


cdef void ew_activation_backward_chunk(int op, const floating* g, const floating* x, floating* dx,
                                       Py_ssize_t n, floating p) noexcept nogil:
    # dx = g f'(x) on n elements; for sigmoid and tanh x is the forward's output y
    cdef Py_ssize_t i
    cdef floating v, u, e, d
    cdef floating zero = 0, one = 1, two = 2, half = 0.5
    if op == EW_RELU:
        for i in range(n):
            dx[i] = g[i] if x[i] > zero else zero
    elif op == EW_LEAKY_RELU:
        for i in range(n):
            dx[i] = g[i] if x[i] > zero else g[i] * p
    elif op == EW_ELU:
        for i in range(n):
            v = x[i]
            dx[i] = g[i] if v > zero else g[i] * p * ew_exp(v)
    elif op == EW_GELU:
        # Phi(x) + x phi(x)
        for i in range(n):
            v = x[i]
            dx[i] = g[i] * (half * ew_erfc(-v * <floating>EW_SQRT1_2)
                            + v * <floating>EW_INV_SQRT_2PI * ew_exp(-half * v * v))
    elif op == EW_GELU_TANH:
        # with s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh(u)^2 = 4 s (1 - s) = 4 e d^2,
        # e = exp(-2|u|), d = 1/(1 + e): exact where 1 - t*t would cancel
        for i in range(n):
            v = x[i]
            u = ew_gelu_tanh_inner(v)
            e = ew_exp(-two * ew_fabs(u))
            d = one / (one + e)
            dx[i] = g[i] * (ew_one_or(u >= zero, e) * d
                            + two * v * e * d * d * <floating>EW_SQRT_2_OVER_PI
                            * (one + <floating>(3 * EW_GELU_C) * v * v))
    elif op == EW_SIGMOID:   # from y: y (1 - y)
        for i in range(n):
            dx[i] = g[i] * x[i] * (one - x[i])
    elif op == EW_TANH:      # from y: 1 - y^2
        for i in range(n):
            dx[i] = g[i] * (one - x[i] * x[i])


def elementwise_activation(int op, const floating[::1] x, floating[::1] y, double p=0.0):
    """y = activation ``op`` (a value of ELEMENTWISE_ACTIVATIONS) of x; p its parameter."""
    cdef Py_ssize_t n = x.shape[0], c, lo
    cdef Py_ssize_t chunks = (n + EW_CHUNK - 1) // EW_CHUNK
    if y.shape[0] != n:
        raise ValueError(f"y: expected {n} elements (the size of x), got {y.shape[0]}")
    if op < EW_RELU or op > EW_TANH:
        raise ValueError(f"op: expected a value of ELEMENTWISE_ACTIVATIONS, got {op}")
    for c in prange(chunks, nogil=True, schedule="static", num_threads=_threads(), use_threads_if=chunks > 1):
        lo = c * EW_CHUNK
        ew_activation_chunk(op, &x[lo], &y[lo], min(<Py_ssize_t>EW_CHUNK, n - lo), <floating>p)


def elementwise_activation_backward(int op, const floating[::1] g, const floating[::1] x,
                                    floating[::1] dx, double p=0.0):
    """dx = g * activation ``op``'(x); for sigmoid and tanh ``x`` is the forward's output y."""
    cdef Py_ssize_t n = x.shape[0], c, lo
    cdef Py_ssize_t chunks = (n + EW_CHUNK - 1) // EW_CHUNK
    if g.shape[0] != n or dx.shape[0] != n:
        raise ValueError(f"g, dx: expected {n} elements (the size of x), "
                         f"got {g.shape[0]} and {dx.shape[0]}")
    if op < EW_RELU or op > EW_TANH:
        raise ValueError(f"op: expected a value of ELEMENTWISE_ACTIVATIONS, got {op}")
    for c in prange(chunks, nogil=True, schedule="static", num_threads=_threads(), use_threads_if=chunks > 1):
        lo = c * EW_CHUNK
        ew_activation_backward_chunk(op, &g[lo], &x[lo], &dx[lo], min(<Py_ssize_t>EW_CHUNK, n - lo),
                                     <floating>p)


# -- softmax / log_softmax ---------------------------------------------------------
cdef inline floating ew_max(floating m, floating v) noexcept nogil:
    # `v > m ? v : m`: one maxss/maxsd. A NaN in x may be skipped here (np.max would
    # return it), but it still makes exp(x - max), the sum, and so the whole row NaN,
    # as in the reference; +inf gives inf - inf = NaN there as well.
    return v if v > m else m

# Row reductions in EW_LANES independent accumulators (acc[k] over x[EW_LANES j + k]): GCC does not
# vectorize an ordered float sum or a float max without -ffast-math, but it vectorizes
# these elementwise updates of a small local array; sums are in double.
cdef inline floating ew_row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef floating acc[EW_LANES]
    cdef Py_ssize_t j, k, nb = n - n % EW_LANES
    cdef floating m = x[0]
    if nb:
        for k in range(EW_LANES):
            acc[k] = x[k]
        for j in range(1, nb // EW_LANES):
            for k in range(EW_LANES):
                acc[k] = ew_max(acc[k], x[j * EW_LANES + k])
        for k in range(EW_LANES):
            m = ew_max(m, acc[k])
    for j in range(nb, n):
        m = ew_max(m, x[j])
    return m

cdef inline double ew_row_dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    # sum(a * b), or sum(a) when b is NULL
    cdef double acc[EW_LANES]
    cdef double s = 0
    cdef Py_ssize_t j, k, nb = n - n % EW_LANES
    for k in range(EW_LANES):
        acc[k] = 0
    if b == NULL:
        for j in range(nb // EW_LANES):
            for k in range(EW_LANES):
                acc[k] += a[j * EW_LANES + k]
        for j in range(nb, n):
            s += a[j]
    else:
        for j in range(nb // EW_LANES):
            for k in range(EW_LANES):
                acc[k] += a[j * EW_LANES + k] * b[j * EW_LANES + k]
        for j in range(nb, n):
            s += a[j] * b[j]
    for k in range(EW_LANES):
        s += acc[k]
    return s

cdef inline void ew_exp_sub(const floating* x, const floating* m, floating* y,
                            Py_ssize_t n) noexcept nogil:
    # y = exp(x - m), elementwise
    cdef Py_ssize_t j
    for j in range(n):
        y[j] = ew_exp(x[j] - m[j])

cdef inline void ew_exp_shifted(const floating* x, floating m, floating* y,
                                Py_ssize_t n) noexcept nogil:
    # y = exp(x - m)
    cdef Py_ssize_t j
    for j in range(n):
        y[j] = ew_exp(x[j] - m)

cdef void ew_softmax_row(const floating* x, floating* y, Py_ssize_t n, bint is_log) noexcept nogil:
    # exp(x - max) goes into y first (log_softmax too), then the sum: each loop vectorizes
    cdef Py_ssize_t j
    cdef floating m = ew_row_max(x, n), e
    ew_exp_shifted(x, m, y, n)
    cdef double s = ew_row_dot(y, <const floating*>NULL, n)
    if is_log:
        e = <floating>log(s)
        for j in range(n):
            y[j] = (x[j] - m) - e
    else:
        e = <floating>(1 / s)
        for j in range(n):
            y[j] = y[j] * e

cdef void ew_softmax_tile(const floating* x, floating* y, Py_ssize_t n, Py_ssize_t inner,
                          Py_ssize_t w, bint is_log) noexcept nogil:
    # w <= EW_TILE columns; row j of the tile starts at x + j * inner
    cdef floating m[EW_TILE]
    cdef double s[EW_TILE]
    cdef Py_ssize_t j, k
    cdef const floating* r
    for k in range(w):
        m[k] = x[k]
        s[k] = 0
    for j in range(1, n):
        r = x + j * inner
        for k in range(w):
            m[k] = ew_max(m[k], r[k])
    for j in range(n):
        # exp into y (log_softmax too), then the sums: separate loops, both vectorize
        ew_exp_sub(x + j * inner, m, y + j * inner, w)
        for k in range(w):
            s[k] += y[j * inner + k]
    for k in range(w):
        s[k] = log(s[k]) if is_log else 1 / s[k]
    for j in range(n):
        r = x + j * inner
        for k in range(w):
            if is_log:
                y[j * inner + k] = (r[k] - m[k]) - <floating>s[k]
            else:
                y[j * inner + k] = y[j * inner + k] * <floating>s[k]


cdef void ew_softmax_backward_row(const floating* g, const floating* y, floating* dx, Py_ssize_t n,
                                  bint is_log) noexcept nogil:
    # from the forward's output y: softmax dx = y (g - sum(g y)); log_softmax dx = g - exp(y) sum(g)
    cdef Py_ssize_t j
    cdef floating c = <floating>ew_row_dot(g, <const floating*>NULL if is_log else y, n)
    if is_log:
        for j in range(n):
            dx[j] = g[j] - ew_exp(y[j]) * c
    else:
        for j in range(n):
            dx[j] = y[j] * (g[j] - c)

cdef void ew_softmax_backward_tile(const floating* g, const floating* y, floating* dx, Py_ssize_t n,
                                   Py_ssize_t inner, Py_ssize_t w, bint is_log) noexcept nogil:
    cdef double t[EW_TILE]
    cdef Py_ssize_t j, k, o
    for k in range(w):
        t[k] = 0
    for j in range(n):
        o = j * inner
        if is_log:
            for k in range(w):
                t[k] += g[o + k]
        else:
            for k in range(w):
                t[k] += g[o + k] * y[o + k]
    for j in range(n):
        for k in range(w):
            o = j * inner + k
            if is_log:
                dx[o] = g[o] - ew_exp(y[o]) * <floating>t[k]
            else:
                dx[o] = y[o] * (g[o] - <floating>t[k])


def elementwise_softmax(const floating[:, :, ::1] x, floating[:, :, ::1] y, bint is_log):
    """softmax (or log_softmax when ``is_log``) of x (outer, n, inner) along axis 1."""
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t tiles = (inner + EW_TILE - 1) // EW_TILE, t, o, k0
    if y.shape[0] != outer or y.shape[1] != n or y.shape[2] != inner:
        raise ValueError(f"y: expected shape {(outer, n, inner)} (the shape of x), "
                         f"got {(y.shape[0], y.shape[1], y.shape[2])}")
    if outer == 0 or n == 0 or inner == 0:
        return
    if inner == 1:
        for o in prange(outer, nogil=True, schedule="static", num_threads=_threads(), use_threads_if=outer * n > EW_CHUNK):
            ew_softmax_row(&x[o, 0, 0], &y[o, 0, 0], n, is_log)
    else:
        for t in prange(outer * tiles, nogil=True, schedule="static", num_threads=_threads(),
                        use_threads_if=outer * n * inner > EW_CHUNK):
            o = t // tiles
            k0 = (t % tiles) * EW_TILE
            ew_softmax_tile(&x[o, 0, k0], &y[o, 0, k0], n, inner, min(<Py_ssize_t>EW_TILE, inner - k0),
                            is_log)


def elementwise_softmax_backward(const floating[:, :, ::1] g, const floating[:, :, ::1] y,
                                 floating[:, :, ::1] dx, bint is_log):
    """Gradient of softmax (log_softmax when ``is_log``) along axis 1 of (outer, n, inner), from
    the forward's output y."""
    cdef Py_ssize_t outer = y.shape[0], n = y.shape[1], inner = y.shape[2]
    cdef Py_ssize_t tiles = (inner + EW_TILE - 1) // EW_TILE, t, o, k0
    if (g.shape[0] != outer or g.shape[1] != n or g.shape[2] != inner
            or dx.shape[0] != outer or dx.shape[1] != n or dx.shape[2] != inner):
        raise ValueError(f"g, dx: expected shape {(outer, n, inner)} (the shape of y), "
                         f"got {(g.shape[0], g.shape[1], g.shape[2])} and "
                         f"{(dx.shape[0], dx.shape[1], dx.shape[2])}")
    if outer == 0 or n == 0 or inner == 0:
        return
    if inner == 1:
        for o in prange(outer, nogil=True, schedule="static", num_threads=_threads(), use_threads_if=outer * n > EW_CHUNK):
            ew_softmax_backward_row(&g[o, 0, 0], &y[o, 0, 0], &dx[o, 0, 0], n, is_log)
    else:
        for t in prange(outer * tiles, nogil=True, schedule="static", num_threads=_threads(),
                        use_threads_if=outer * n * inner > EW_CHUNK):
            o = t // tiles
            k0 = (t % tiles) * EW_TILE
            ew_softmax_backward_tile(&g[o, 0, k0], &y[o, 0, k0], &dx[o, 0, k0], n, inner,
                                     min(<Py_ssize_t>EW_TILE, inner - k0), is_log)
