# Elementwise activations (forward and backward), softmax and log_softmax.
# float32 and float64 (Cython's `floating` fused type), C-contiguous inputs;
# outputs are allocated by the Python adapter (pydl/backends/cython/elementwise.py).
#
# Activations: x, y flat (N,). Split into chunks of EW_CHUNK elements, chunks
# shared between OpenMP threads (prange, static schedule: each thread gets one
# contiguous run); the op switch sits outside the per-chunk loop, so relu-like
# loops vectorize. exp/erfc/tanh/expm1 are libm calls (one per element).
# Napkin math: relu is bandwidth-bound; float32 over N elements moves 8N
# bytes, at ~29 GB/s copy bandwidth N = 4M takes ~1.2 ms (less while 32 MB
# fit in L3). The libm ops are compute-bound: GCC does not vectorize a loop
# that calls libm, so each element pays a scalar expf (~2.5 ns) and a scalar
# divide: sigmoid over 4M float32 takes ~6.5 ms on 2 cores, ~5x the memory
# floor. NumPy's own SIMD exp is ~6x faster per element than libm, which is
# why the exp-bound softmax here only matches NumPy.
#
# Softmax: x viewed as (outer, n, inner), normalized along n. inner == 1 (the
# hot case, a contiguous row per task): a max pass, an exp+sum pass writing
# exp(x - max) into y, then a scale pass. inner > 1: tasks are tiles of
# (n, EW_TILE) columns, reductions kept per column on the stack so the inner
# loops run along contiguous memory. Sums accumulate in double. Reads x once
# from memory (later passes hit cache), writes y once: 8N bytes for float32,
# but bound by the N expf calls.
#
# NaN/inf follow the NumPy reference: every comparison is written so that a
# NaN falls into the branch that propagates it (relu: `v < 0 ? 0 : v`).
# gelu, the tanh-gelu and sigmoid use forms without cancellation (erfc,
# exp(-|u|)) that equal the reference's formulas.
from cython cimport floating
from libc.math cimport erfc, erfcf, exp, expf, expm1, expm1f, fabs, fabsf, log, tanh, tanhf

cdef enum:
    EW_CHUNK = 8192   # elements per activation task
    EW_TILE = 128     # softmax columns per task when inner > 1

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
    #define EW_SQRT1_2 0.70710678118654752440
    #define EW_INV_SQRT_2PI 0.39894228040143267794
    #define EW_SQRT_2_OVER_PI 0.79788456080286535588
    #define EW_GELU_C 0.044715
    """
    const double EW_SQRT1_2
    const double EW_INV_SQRT_2PI
    const double EW_SQRT_2_OVER_PI
    const double EW_GELU_C


# -- libm in the input's precision ---------------------------------------------------
cdef inline floating ew_exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)

cdef inline floating ew_expm1(floating v) noexcept nogil:
    if floating is float:
        return expm1f(v)
    else:
        return expm1(v)

cdef inline floating ew_erfc(floating v) noexcept nogil:
    if floating is float:
        return erfcf(v)
    else:
        return erfc(v)

cdef inline floating ew_tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
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
            y[i] = v if v > zero else p * ew_expm1(v)
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
    # dx = g f'(x) on n elements
    cdef Py_ssize_t i
    cdef floating v, u, e, d
    cdef floating zero = 0, one = 1, two = 2, four = 4, half = 0.5
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
    elif op == EW_SIGMOID:
        # s (1 - s) = e / (1 + e)^2 with e = exp(-|x|), either sign
        for i in range(n):
            e = ew_exp(-ew_fabs(x[i]))
            d = one / (one + e)
            dx[i] = g[i] * e * d * d
    elif op == EW_TANH:
        # 1 - tanh(x)^2 = 4 e / (1 + e)^2 with e = exp(-2|x|)
        for i in range(n):
            e = ew_exp(-two * ew_fabs(x[i]))
            d = one / (one + e)
            dx[i] = g[i] * four * e * d * d


def elementwise_activation(int op, const floating[::1] x, floating[::1] y, double p=0.0):
    """y = activation ``op`` (a value of ELEMENTWISE_ACTIVATIONS) of x; p its parameter."""
    cdef Py_ssize_t n = x.shape[0], c, lo
    cdef Py_ssize_t chunks = (n + EW_CHUNK - 1) // EW_CHUNK
    if y.shape[0] != n:
        raise ValueError(f"y: expected {n} elements (the size of x), got {y.shape[0]}")
    if op < EW_RELU or op > EW_TANH:
        raise ValueError(f"op: expected a value of ELEMENTWISE_ACTIVATIONS, got {op}")
    for c in prange(chunks, nogil=True, schedule="static", use_threads_if=chunks > 1):
        lo = c * EW_CHUNK
        ew_activation_chunk(op, &x[lo], &y[lo], min(<Py_ssize_t>EW_CHUNK, n - lo), <floating>p)


def elementwise_activation_backward(int op, const floating[::1] g, const floating[::1] x,
                                    floating[::1] dx, double p=0.0):
    """dx = g * activation ``op``'(x)."""
    cdef Py_ssize_t n = x.shape[0], c, lo
    cdef Py_ssize_t chunks = (n + EW_CHUNK - 1) // EW_CHUNK
    if g.shape[0] != n or dx.shape[0] != n:
        raise ValueError(f"g, dx: expected {n} elements (the size of x), "
                         f"got {g.shape[0]} and {dx.shape[0]}")
    if op < EW_RELU or op > EW_TANH:
        raise ValueError(f"op: expected a value of ELEMENTWISE_ACTIVATIONS, got {op}")
    for c in prange(chunks, nogil=True, schedule="static", use_threads_if=chunks > 1):
        lo = c * EW_CHUNK
        ew_activation_backward_chunk(op, &g[lo], &x[lo], &dx[lo], min(<Py_ssize_t>EW_CHUNK, n - lo),
                                     <floating>p)


# -- softmax / log_softmax ---------------------------------------------------------
cdef inline floating ew_max(floating m, floating v) noexcept nogil:
    # `v > m ? v : m`: one maxss/maxsd. A NaN in x may be skipped here (np.max would
    # return it), but it still makes exp(x - max), the sum, and so the whole row NaN,
    # as in the reference; +inf gives inf - inf = NaN there as well.
    return v if v > m else m

cdef void ew_softmax_row(const floating* x, floating* y, Py_ssize_t n, bint is_log) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating m = x[0], e
    cdef double s = 0
    for j in range(1, n):
        m = ew_max(m, x[j])
    if is_log:
        for j in range(n):
            s += ew_exp(x[j] - m)
        e = <floating>log(s)
        for j in range(n):
            y[j] = (x[j] - m) - e
    else:
        for j in range(n):
            e = ew_exp(x[j] - m)
            y[j] = e
            s += e
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
    cdef floating e
    for k in range(w):
        m[k] = x[k]
        s[k] = 0
    for j in range(1, n):
        r = x + j * inner
        for k in range(w):
            m[k] = ew_max(m[k], r[k])
    for j in range(n):
        r = x + j * inner
        for k in range(w):
            e = ew_exp(r[k] - m[k])
            s[k] += e
            if not is_log:
                y[j * inner + k] = e
    for k in range(w):
        s[k] = log(s[k]) if is_log else 1 / s[k]
    for j in range(n):
        r = x + j * inner
        for k in range(w):
            if is_log:
                y[j * inner + k] = (r[k] - m[k]) - <floating>s[k]
            else:
                y[j * inner + k] = y[j * inner + k] * <floating>s[k]


cdef void ew_softmax_backward_row(const floating* g, const floating* x, floating* dx, Py_ssize_t n,
                                  bint is_log) noexcept nogil:
    # softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g).
    # exp(x - max) is kept in dx between passes.
    cdef Py_ssize_t j
    cdef floating m = x[0], e, inv, c
    cdef double s = 0, t = 0
    for j in range(1, n):
        m = ew_max(m, x[j])
    for j in range(n):
        e = ew_exp(x[j] - m)
        dx[j] = e
        s += e
        if is_log:
            t += g[j]
    inv = <floating>(1 / s)
    if is_log:
        c = <floating>t * inv
        for j in range(n):
            dx[j] = g[j] - dx[j] * c
    else:
        for j in range(n):
            t += g[j] * dx[j]
        c = <floating>(t / s)
        for j in range(n):
            dx[j] = dx[j] * inv * (g[j] - c)

cdef void ew_softmax_backward_tile(const floating* g, const floating* x, floating* dx, Py_ssize_t n,
                                   Py_ssize_t inner, Py_ssize_t w, bint is_log) noexcept nogil:
    cdef floating m[EW_TILE]
    cdef double s[EW_TILE]
    cdef double t[EW_TILE]
    cdef Py_ssize_t j, k, o
    cdef floating e
    for k in range(w):
        m[k] = x[k]
        s[k] = 0
        t[k] = 0
    for j in range(1, n):
        for k in range(w):
            m[k] = ew_max(m[k], x[j * inner + k])
    for j in range(n):
        for k in range(w):
            o = j * inner + k
            e = ew_exp(x[o] - m[k])
            dx[o] = e
            s[k] += e
            t[k] += g[o] if is_log else g[o] * e
    for k in range(w):
        t[k] = t[k] / s[k]   # log: sum(g) / sum(e); softmax: sum(g y)
        s[k] = 1 / s[k]
    for j in range(n):
        for k in range(w):
            o = j * inner + k
            if is_log:
                dx[o] = g[o] - dx[o] * <floating>t[k]
            else:
                dx[o] = dx[o] * <floating>s[k] * (g[o] - <floating>t[k])


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
        for o in prange(outer, nogil=True, schedule="static", use_threads_if=outer * n > EW_CHUNK):
            ew_softmax_row(&x[o, 0, 0], &y[o, 0, 0], n, is_log)
    else:
        for t in prange(outer * tiles, nogil=True, schedule="static",
                        use_threads_if=outer * n * inner > EW_CHUNK):
            o = t // tiles
            k0 = (t % tiles) * EW_TILE
            ew_softmax_tile(&x[o, 0, k0], &y[o, 0, k0], n, inner, min(<Py_ssize_t>EW_TILE, inner - k0),
                            is_log)


def elementwise_softmax_backward(const floating[:, :, ::1] g, const floating[:, :, ::1] x,
                                 floating[:, :, ::1] dx, bint is_log):
    """Gradient of softmax (log_softmax when ``is_log``) along axis 1 of (outer, n, inner)."""
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t tiles = (inner + EW_TILE - 1) // EW_TILE, t, o, k0
    if (g.shape[0] != outer or g.shape[1] != n or g.shape[2] != inner
            or dx.shape[0] != outer or dx.shape[1] != n or dx.shape[2] != inner):
        raise ValueError(f"g, dx: expected shape {(outer, n, inner)} (the shape of x), "
                         f"got {(g.shape[0], g.shape[1], g.shape[2])} and "
                         f"{(dx.shape[0], dx.shape[1], dx.shape[2])}")
    if outer == 0 or n == 0 or inner == 0:
        return
    if inner == 1:
        for o in prange(outer, nogil=True, schedule="static", use_threads_if=outer * n > EW_CHUNK):
            ew_softmax_backward_row(&g[o, 0, 0], &x[o, 0, 0], &dx[o, 0, 0], n, is_log)
    else:
        for t in prange(outer * tiles, nogil=True, schedule="static",
                        use_threads_if=outer * n * inner > EW_CHUNK):
            o = t // tiles
            k0 = (t % tiles) * EW_TILE
            ew_softmax_backward_tile(&g[o, 0, k0], &x[o, 0, k0], &dx[o, 0, k0], n, inner,
                                     min(<Py_ssize_t>EW_TILE, inner - k0), is_log)
