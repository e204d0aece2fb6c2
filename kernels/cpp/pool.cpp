// Pool family (pydl._cpp): max_pool2d, avg_pool2d, adaptive_avg_pool2d, forward and backward.
//
// Computes, for float32 and float64 NCHW arrays (C-contiguous, P = N*C planes of H x W):
//   max:  out[p, oh, ow] = max over the window's input positions, idx = argmax as h*W + w
//         (first maximum in row-major tap order, the last NaN if any, -1 for an empty window);
//         backward: gx[p, idx] += grad (per plane, so threads never touch the same plane).
//   avg / adaptive avg: out = (sum over the window's input positions) / (dvh[oh] * dvw[ow]);
//         backward gathers: gx[h, w] = sum over the windows holding (h, w) of grad / divisor.
// Windows come as tables built in Python (pydl.ops.pool.window_table): along each dimension,
// output o reads the input positions start[o] + t*step for t < count[o] (padding already clipped).
// Algorithm: every window is separable into rows and columns, so each plane takes two passes
//   over small per-thread buffers that stay in L1/L2:
//   max fwd:  horizontal (value, column) max of every input row over each output column's taps,
//             then a vertical max over each output row's rows. Row-major tap order is kept:
//             the horizontal pass keeps the first max / last NaN of a row, the vertical pass the
//             first row holding the max / the last row holding a NaN.
//   avg fwd:  vertical sum of each output row's rows (contiguous), then horizontal taps.
//   avg bwd:  q = grad / divisor; horizontal gather t[oh, w] = sum q[oh, o] over the windows
//             holding column w; vertical gather gx[h, :] = sum t[oh, :] over the windows holding
//             row h. Each gx element is written once (no zeroing pass, no scatter).
//             At stride 1 or 2 (uniform windows) the horizontal gather is a sum of shifted loads
//             of q per phase of w, the two phases interleaved on the store (no gather instruction).
//   Every read stream is prefetched 8 KB ahead in software (Ahead): the hardware prefetchers
//   lose the stream at each row and plane start.
//   The strided horizontal passes are explicit SIMD along the output width at simd_level()
//   (AVX-512 16 float32 / 8 float64 lanes, AVX2 8 / 4; V512, V256 and their float64 twins
//   V512d, V256d, whose column lanes stay int32): stride 1 loads, stride 2 de-interleaved from
//   two loads with one permute, other strides gathered; window columns in the padding (the
//   borders) run the scalar code. The contiguous vertical passes are plain loops GCC vectorizes.
//   OpenMP threads over planes.
//   Small planes (the output row, or its part clear of the padding, narrower than a vector:
//   2x2/2 on 8x8 planes has 4 outputs a row): G consecutive planes (~8 KB of input) become one
//   flat list of windows, and the same two passes run along the list, across rows and planes,
//   with masked gathers from tables built once per call (entry j reads src[pos[j] + t*step] for
//   t < n[j]; borders, padding, dilation and empty windows are just table entries). Rows that
//   tile exactly (every window full, W == OW*stride) make the whole group one long strided row:
//   the horizontal pass then loads as on wide rows. The max keeps the winning tap's position and
//   looks its index up once. Adaptive windows that are uniform (n a multiple of out) are given
//   their stride and kernel, so they take the uniform paths.
//   Third pass (issue 18): the vertical sums add up to four rows per pass over the row buffer
//   (sum_rows); windows with kernel == stride 4 or 8 (adaptive 56 -> 7, 8 -> 2) are summed by a
//   tree of adjacent-pair sums of contiguous loads (sum_runs), and such exact rows take the group
//   path at any width; the avg backward on small planes at stride 1 or 2 embeds each output row's
//   q in zeros, segments back to back, so the whole group is one row of shifted loads
//   (shifted_groups: no gathers, no scalar borders); the row-path backward of windows that do not
//   overlap takes q by a permute of one load, not a gather; the row paths' prefetch streams
//   continue across a thread's planes instead of restarting at each (8 KB per 512-byte plane).
//
// Napkin math (Zen 5, 2 cores, ~29 GB/s copy bandwidth): N32 C64 112x112 float32 is 103 MB in;
//   2x2/2 max writes 26 MB of values + 51 MB of int64 indices: 180 MB -> ~6 ms at copy speed.
//   avg 2x2/2 moves 128 MB -> ~4.4 ms. Compute: ~6 vector instructions per tap per 16 outputs,
//   9 taps for 3x3 -> ~3.5 instructions per output, 6.4M outputs -> ~1.5 ms on 2 cores.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "check.hpp"
#include "simd.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

using std::int32_t;
using std::int64_t;
using std::ptrdiff_t;

template <class T>
using Array = py::array_t<T, py::array::c_style>;
using Table = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// One dimension's windows: output o reads start[o] + t*step, t < count[o]. `kernel`/`stride`/`pad`
// describe uniform windows (avg/max pooling) for the SIMD interior; stride 0: no uniform layout.
struct Axis {
  std::vector<int32_t> start, count;
  int kernel = 0, stride = 0, pad = 0, step = 1;
  int n = 0;  // input size along this dimension
  int out() const { return static_cast<int>(start.size()); }
  // [lo, hi): the outputs whose every tap lies inside the input (start == o*stride - pad);
  // set once by axis_of (the row passes ask for it on every row)
  int lo = 0, hi = 0;
  std::pair<int, int> interior() const { return {lo, hi}; }
};

Axis axis_of(const Table& start, const Table& count, int n, int kernel, int stride, int pad, int step,
             const char* name) {
  PYDL_CHECK(start.ndim() == 1 && count.ndim() == 1 && start.size() == count.size(),
             name << ": expected two 1-D tables of one length");
  Axis a;
  a.n = n, a.kernel = kernel, a.stride = stride, a.pad = pad, a.step = step;
  const int64_t* s = start.data();
  const int64_t* c = count.data();
  for (ptrdiff_t o = 0; o < start.size(); ++o) {
    PYDL_CHECK(c[o] >= 0 && (c[o] == 0 || (s[o] >= 0 && s[o] + (c[o] - 1) * step < n)),
               name << ": window " << o << " runs outside the input");
    a.start.push_back(static_cast<int32_t>(s[o]));
    a.count.push_back(static_cast<int32_t>(c[o]));
  }
  if (stride == 0 && a.out() > 0 && a.start[0] == 0 && a.count[0] > 0) {
    // adaptive windows that happen to be uniform (n a multiple of out: 56 -> 7, 8 -> 2) take the
    // uniform paths: stride, kernel and no padding, as avg_pool2d would
    const int k = a.count[0], st = a.out() > 1 ? a.start[1] : k;
    bool uniform = st >= 1;
    for (int o = 0; o < a.out() && uniform; ++o) uniform = a.count[o] == k && a.start[o] == o * st;
    if (uniform) a.kernel = k, a.stride = st, a.pad = 0;
  }
  if (a.stride > 0) {
    int lo = a.out(), hi = 0;
    for (int o = 0; o < a.out(); ++o)
      if (a.count[o] == a.kernel && a.start[o] == o * a.stride - a.pad) lo = std::min(lo, o), hi = o + 1;
    if (lo < hi) a.lo = lo, a.hi = hi;
  }
  return a;
}

// -- SIMD along the output width (float32) ----------------------------------------------

#if defined(__AVX512F__)
struct V512 {
  static constexpr int W = 16;
  using R = __m512;
  using I = __m512i;
  using M = __mmask16;
  static I iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  // p[0], p[s], ..., p[15 s]; never reads past p[15 s] (the stride-2 high load is masked)
  static R load_strided(const float* p, int s) {
    if (s == 1) return load(p);
    if (s == 2) {
      const I even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      return _mm512_permutex2var_ps(load(p), even, _mm512_maskz_loadu_ps(0x7FFF, p + 16));
    }
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF,
                                    _mm512_mullo_epi32(iota(), _mm512_set1_epi32(s)), p, 4);
  }
  static R gather_n(const float* p, I idx, I n, int j) {  // p[idx + j] where j < n, else 0
    const M m = _mm512_cmpgt_epi32_mask(n, _mm512_set1_epi32(j));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, _mm512_add_epi32(idx, _mm512_set1_epi32(j)),
                                    p, 4);
  }
  static M takes(R v, R best) {  // v replaces best: strictly greater, or NaN (the last NaN wins)
    return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  static R blend(M m, R a, R b) { return _mm512_mask_blend_ps(m, a, b); }
  static I blendi(M m, I a, I b) { return _mm512_mask_blend_epi32(m, a, b); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static I seti(int v) { return _mm512_set1_epi32(v); }
  static I addi(I a, I b) { return _mm512_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm512_sub_epi32(a, b); }
  static M active(I n, int t) { return _mm512_cmpgt_epi32_mask(n, _mm512_set1_epi32(t)); }  // t < n
  static M mand(M a, M b) { return a & b; }
  static R gather(const float* p, I idx, M m) { return _mm512_mask_i32gather_ps(zero(), m, idx, p, 4); }
  static I gatheri(const int32_t* p, I idx, M m) {
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, p, 4);
  }
  static I muli(I a, int s) { return _mm512_mullo_epi32(a, _mm512_set1_epi32(s)); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R zero() { return _mm512_setzero_ps(); }
  static I loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static void storei(int32_t* p, I v) { _mm512_storeu_si512(p, v); }
  static void store_i64(int64_t* p, I v) {
    _mm512_storeu_si512(p, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    _mm512_storeu_si512(p + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
  }
  static R permute(R v, I idx) { return _mm512_permutexvar_ps(idx, v); }  // v[idx[i]], idx < 16
  // [a0 + a1, ..., a14 + a15, b0 + b1, ..., b14 + b15]: the sums of adjacent pairs of a then b
  static R pairsum(R a, R b) {
    const I even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const I odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_ps(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
  }
  // p[2i] = a[i], p[2i + 1] = b[i] for i < 16
  static void store_interleaved(float* p, R a, R b) {
    const I lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const I hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_storeu_ps(p, _mm512_permutex2var_ps(a, lo, b));
    _mm512_storeu_ps(p + 16, _mm512_permutex2var_ps(a, hi, b));
  }
};

// float64 twins: 8 (4) doubles per register, the column/index lanes as 8 (4) int32
struct V512d {
  static constexpr int W = 8;
  using R = __m512d;
  using I = __m256i;
  using M = __mmask8;
  static I iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R load_strided(const double* p, int s) {  // p[0], p[s], ..., p[7 s]; never past p[7 s]
    if (s == 1) return load(p);
    if (s == 2) {
      const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
      return _mm512_permutex2var_pd(load(p), even, _mm512_maskz_loadu_pd(0x7F, p + 8));
    }
    return _mm512_i32gather_pd(_mm256_mullo_epi32(iota(), _mm256_set1_epi32(s)), p, 8);
  }
  static R gather_n(const double* p, I idx, I n, int j) {
    return gather(p, _mm256_add_epi32(idx, _mm256_set1_epi32(j)), active(n, j));
  }
  static M takes(R v, R best) {
    return _mm512_cmp_pd_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
  }
  static R blend(M m, R a, R b) { return _mm512_mask_blend_pd(m, a, b); }
  static I blendi(M m, I a, I b) { return _mm256_mask_blend_epi32(m, a, b); }
  static R set1(double v) { return _mm512_set1_pd(v); }
  static I seti(int v) { return _mm256_set1_epi32(v); }
  static I addi(I a, I b) { return _mm256_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I muli(I a, int s) { return _mm256_mullo_epi32(a, _mm256_set1_epi32(s)); }
  static M active(I n, int t) { return _mm256_cmpgt_epi32_mask(n, _mm256_set1_epi32(t)); }
  static M mand(M a, M b) { return a & b; }
  static R gather(const double* p, I idx, M m) { return _mm512_mask_i32gather_pd(zero(), m, idx, p, 8); }
  static I gatheri(const int32_t* p, I idx, M m) {
    return _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), m, idx, p, 4);
  }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R div(R a, R b) { return _mm512_div_pd(a, b); }
  static R zero() { return _mm512_setzero_pd(); }
  static I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(double* p, R v) { _mm512_storeu_pd(p, v); }
  static void storei(int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void store_i64(int64_t* p, I v) { _mm512_storeu_si512(p, _mm512_cvtepi32_epi64(v)); }
  static R permute(R v, I idx) { return _mm512_permutexvar_pd(_mm512_cvtepi32_epi64(idx), v); }  // idx < 8
  static R pairsum(R a, R b) {  // [a0 + a1, ..., a6 + a7, b0 + b1, ..., b6 + b7]
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    return _mm512_add_pd(_mm512_permutex2var_pd(a, even, b), _mm512_permutex2var_pd(a, odd, b));
  }
  static void store_interleaved(double* p, R a, R b) {  // p[2i] = a[i], p[2i + 1] = b[i], i < 8
    const __m512i lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    _mm512_storeu_pd(p, _mm512_permutex2var_pd(a, lo, b));
    _mm512_storeu_pd(p + 8, _mm512_permutex2var_pd(a, hi, b));
  }
};
#endif

#if defined(__AVX2__) && defined(__FMA__)
struct V256 {
  static constexpr int W = 8;
  using R = __m256;
  using I = __m256i;
  using M = __m256;
  static I iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R load_strided(const float* p, int s) {
    if (s == 1) return load(p);
    if (s == 2) {  // de-interleave p[0..15] (p[15] not read: masked load)
      const I perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
      const R a = _mm256_permutevar8x32_ps(load(p), perm);
      const R b = _mm256_permutevar8x32_ps(
          _mm256_maskload_ps(p + 8, _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0)), perm);
      return _mm256_permute2f128_ps(a, b, 0x20);
    }
    return _mm256_i32gather_ps(p, _mm256_mullo_epi32(iota(), _mm256_set1_epi32(s)), 4);
  }
  static R gather_n(const float* p, I idx, I n, int j) {
    const R m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, _mm256_set1_epi32(j)));
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, _mm256_add_epi32(idx, _mm256_set1_epi32(j)),
                                    m, 4);
  }
  static M takes(R v, R best) {
    return _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  static R blend(M m, R a, R b) { return _mm256_blendv_ps(a, b, m); }
  static I blendi(M m, I a, I b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), m));
  }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static I seti(int v) { return _mm256_set1_epi32(v); }
  static I addi(I a, I b) { return _mm256_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm256_sub_epi32(a, b); }
  static M active(I n, int t) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, _mm256_set1_epi32(t))); }
  static M mand(M a, M b) { return _mm256_and_ps(a, b); }
  static R gather(const float* p, I idx, M m) { return _mm256_mask_i32gather_ps(zero(), p, idx, m, 4); }
  static I gatheri(const int32_t* p, I idx, M m) {
    return _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), p, idx, _mm256_castps_si256(m), 4);
  }
  static I muli(I a, int s) { return _mm256_mullo_epi32(a, _mm256_set1_epi32(s)); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R zero() { return _mm256_setzero_ps(); }
  static I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static void storei(int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void store_i64(int64_t* p, I v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 4),
                        _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  }
  static R permute(R v, I idx) { return _mm256_permutevar8x32_ps(v, idx); }  // v[idx[i]], idx < 8
  // [a0 + a1, ..., a6 + a7, b0 + b1, ..., b6 + b7]: the sums of adjacent pairs of a then b
  static R pairsum(R a, R b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_hadd_ps(a, b)), 0xD8));
  }
  static void store_interleaved(float* p, R a, R b) {  // p[2i] = a[i], p[2i + 1] = b[i], i < 8
    const R lo = _mm256_unpacklo_ps(a, b), hi = _mm256_unpackhi_ps(a, b);  // a0b0a1b1|a4b4a5b5, a2..|a6..
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
};

struct V256d {
  static constexpr int W = 4;
  using R = __m256d;
  using I = __m128i;
  using M = __m256d;
  static I iota() { return _mm_setr_epi32(0, 1, 2, 3); }
  // the 4 x 64-bit mask as 4 x 32 bits (each 64-bit lane is all ones or all zeros)
  static __m128i narrow(M m) {
    const __m256i m32 = _mm256_castpd_si256(m);
    return _mm_packs_epi32(_mm256_castsi256_si128(m32), _mm256_extracti128_si256(m32, 1));
  }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R load_strided(const double* p, int s) {  // p[0], p[s], p[2 s], p[3 s]; never past p[3 s]
    if (s == 1) return load(p);
    if (s == 2) {  // p0 p4 p2 p6 (unpacklo of p0..3 and p4..6), then lanes 0 2 1 3
      const R b = _mm256_maskload_pd(p + 4, _mm256_setr_epi64x(-1, -1, -1, 0));
      return _mm256_permute4x64_pd(_mm256_unpacklo_pd(load(p), b), 0xD8);
    }
    return _mm256_i32gather_pd(p, _mm_mullo_epi32(iota(), _mm_set1_epi32(s)), 8);
  }
  static R gather_n(const double* p, I idx, I n, int j) {
    return gather(p, _mm_add_epi32(idx, _mm_set1_epi32(j)), active(n, j));
  }
  static M takes(R v, R best) {
    return _mm256_or_pd(_mm256_cmp_pd(v, best, _CMP_GT_OQ), _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
  }
  static R blend(M m, R a, R b) { return _mm256_blendv_pd(a, b, m); }
  static I blendi(M m, I a, I b) { return _mm_blendv_epi8(a, b, narrow(m)); }
  static R set1(double v) { return _mm256_set1_pd(v); }
  static I seti(int v) { return _mm_set1_epi32(v); }
  static I addi(I a, I b) { return _mm_add_epi32(a, b); }
  static I subi(I a, I b) { return _mm_sub_epi32(a, b); }
  static I muli(I a, int s) { return _mm_mullo_epi32(a, _mm_set1_epi32(s)); }
  static M active(I n, int t) {
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpgt_epi32(n, _mm_set1_epi32(t))));
  }
  static M mand(M a, M b) { return _mm256_and_pd(a, b); }
  static R gather(const double* p, I idx, M m) { return _mm256_mask_i32gather_pd(zero(), p, idx, m, 8); }
  static I gatheri(const int32_t* p, I idx, M m) {
    return _mm_mask_i32gather_epi32(_mm_setzero_si128(), p, idx, narrow(m), 4);
  }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R div(R a, R b) { return _mm256_div_pd(a, b); }
  static R zero() { return _mm256_setzero_pd(); }
  static I loadi(const int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static void storei(int32_t* p, I v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  static void store_i64(int64_t* p, I v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepi32_epi64(v));
  }
  static R permute(R v, I idx) {  // v[idx[i]], idx < 4 (as pairs of float lanes 2 idx, 2 idx + 1)
    const __m256i e = _mm256_cvtepu32_epi64(idx);
    const __m256i f = _mm256_add_epi32(_mm256_or_si256(_mm256_slli_epi64(e, 1), _mm256_slli_epi64(e, 33)),
                                       _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1));
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), f));
  }
  // [a0 + a1, a2 + a3, b0 + b1, b2 + b3]: the sums of adjacent pairs of a then b
  static R pairsum(R a, R b) { return _mm256_permute4x64_pd(_mm256_hadd_pd(a, b), 0xD8); }
  static void store_interleaved(double* p, R a, R b) {  // p[2i] = a[i], p[2i + 1] = b[i], i < 4
    const R lo = _mm256_unpacklo_pd(a, b), hi = _mm256_unpackhi_pd(a, b);  // a0b0|a2b2, a1b1|a3b3
    _mm256_storeu_pd(p, _mm256_permute2f128_pd(lo, hi, 0x20));
    _mm256_storeu_pd(p + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
  }
};
#endif

struct Scalar {};  // marker: no SIMD

template <class V>
constexpr int lanes_of() {
  if constexpr (std::is_same_v<V, Scalar>) return 1;
  else return V::W;
}

// Software prefetch of a sequential stream, kAhead bytes in front of the reader (Ahead<>) or the
// writer (AheadW: prefetchw, the line fetched for ownership before the store needs it). Each thread
// walks its planes row by row; at the start of every row the hardware prefetchers had not caught
// up (perf: ~40% of max forward's samples on the first load of an input row). upto(p): every line
// below p + kAhead has been prefetched. Prefetches never fault, so running past the array is safe
// (and a write prefetch into a page not yet mapped does nothing: fresh outputs gain little).
// Measured (2 threads, N32 C64 112x112, medians of 11, one process): reads: max 2x2/2 fwd
// 27.1 -> 15.0 ms, 3x3/2 p1 30.0 -> 19.5, avg 2x2/2 13.0 -> 6.8, avg 3x3/2 p1 8.4 -> 7.2 (4 KB and
// 8 KB ahead within noise, 16 KB slightly worse); writes on top: avg bwd into a gx written before
// 8.9 -> 6.1 ms (into a fresh gx 11.0 -> 10.4), avg fwd 5.0 -> 4.4, max unchanged.
constexpr ptrdiff_t kAhead = 8192;
template <bool Write = false>
struct Ahead {
  const char* next = nullptr;
  const char* from = nullptr;  // the last seek
  Ahead() = default;
  explicit Ahead(const void* start) : next(line(start)) {}
  static const char* line(const void* p) {
    return reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63));
  }
  // a thread's next block of a stream: continue when it follows the blocks before (no line
  // prefetched twice), restart there when the schedule jumped
  void seek(const void* start) {
    const char* s = static_cast<const char*>(start);
    if (s < from || s > next) next = line(s);
    from = s;
  }
  void upto(const void* p) {
    const char* end = static_cast<const char*>(p) + kAhead;
    for (; next < end; next += 64) _mm_prefetch(next, Write ? _MM_HINT_ET0 : _MM_HINT_T0);
  }
};
using AheadW = Ahead<true>;

// the half-width wrapper of an AVX-512 one (the same type elsewhere)
template <class V>
struct NarrowOf {
  using type = V;
};
#if defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
template <>
struct NarrowOf<V512> {
  using type = V256;
};
template <>
struct NarrowOf<V512d> {
  using type = V256d;
};
#endif

// f(V{}) with the SIMD wrapper for T at the current level
template <class T, class F>
void with_simd(F&& f) {
  [[maybe_unused]] constexpr bool f32 = std::is_same_v<T, float>;  // unused in a scalar-only build
  switch (simd_level()) {
#if defined(__AVX512F__)
    case Simd::avx512: f(std::conditional_t<f32, V512, V512d>{}); return;
#endif
#if defined(__AVX2__) && defined(__FMA__)
    case Simd::avx2: f(std::conditional_t<f32, V256, V256d>{}); return;
#endif
    default: break;
  }
  f(Scalar{});
}

// body(o) for the vectors of [lo, hi): starts lo, lo + W, ..., and a last one ending at hi that
// may overlap the one before (its lanes are recomputed, same values); scalar(o) where hi - lo < W.
template <int W, class Vec, class One>
inline void vectors(int lo, int hi, Vec&& vec, One&& one) {
  if (hi - lo < W) {
    for (int o = lo; o < hi; ++o) one(o);
    return;
  }
  int o = lo;
  for (; o + W <= hi; o += W) vec(o);
  if (o < hi) vec(hi - W);
}

// Runs of s = 2, 4 or 8 consecutive values summed V::W at a time without gathers: lane i is
// p[i*s] + ... + p[i*s + s - 1] (reads p[0, s*V::W)): s/2 + s/4 + ... adjacent-pair sums of
// contiguous loads (a tree: the order of the additions differs from a running sum).
// The avg windows with kernel == stride (adaptive 56 -> 7, 8 -> 2, avg 4x4/4).
inline bool runs_ok(const Axis& a) { return a.kernel == a.stride && (a.stride == 4 || a.stride == 8); }

template <class V, int S, class T>
inline typename V::R sum_runs_of(const T* p) {
  typename V::R x[S];
  for (int i = 0; i < S; ++i) x[i] = V::load(p + i * V::W);
  for (int n = S; n > 1; n /= 2)
    for (int i = 0; i < n / 2; ++i) x[i] = V::pairsum(x[2 * i], x[2 * i + 1]);
  return x[0];
}

template <class V, class T>
inline typename V::R sum_runs(const T* p, int s) {
  return s == 4 ? sum_runs_of<V, 4>(p) : sum_runs_of<V, 8>(p);
}

// dst[w] = sum of rows r0, r0 + ld, ..., (c rows, c >= 1) at w < n: up to four rows per pass over
// dst (contiguous, compiler-vectorized). A running sum, row by row, loaded and stored dst once per
// row: on 56-wide rows of 8 that read-modify-write was ~70% of adaptive 56 -> 7 (perf).
template <class T>
inline void sum_rows(const T* r0, ptrdiff_t ld, int c, int n, T* __restrict dst) {
  const T* a = r0;
  const T* b = r0 + ld;
  const T* e = r0 + 2 * ld;
  const T* f = r0 + 3 * ld;
  switch (std::min(c, 4)) {
    case 1: for (int w = 0; w < n; ++w) dst[w] = a[w]; break;
    case 2: for (int w = 0; w < n; ++w) dst[w] = a[w] + b[w]; break;
    case 3: for (int w = 0; w < n; ++w) dst[w] = (a[w] + b[w]) + e[w]; break;
    default: for (int w = 0; w < n; ++w) dst[w] = (a[w] + b[w]) + (e[w] + f[w]); break;
  }
  for (int t = 4; t < c; t += 4) {
    a = r0 + t * ld, b = a + ld, e = b + ld, f = e + ld;
    switch (std::min(c - t, 4)) {
      case 1: for (int w = 0; w < n; ++w) dst[w] += a[w]; break;
      case 2: for (int w = 0; w < n; ++w) dst[w] += a[w] + b[w]; break;
      case 3: for (int w = 0; w < n; ++w) dst[w] += (a[w] + b[w]) + e[w]; break;
      default: for (int w = 0; w < n; ++w) dst[w] += (a[w] + b[w]) + (e[w] + f[w]); break;
    }
  }
}

// Items (planes or groups) per scheduled chunk: at least `least` (8 planes: ~400 KB of 112x112
// input) and up to kChunkBytes of input, but no more than 1/16 of the items (balance between
// threads). Each chunk restarts the thread's prefetch streams (kAhead bytes issued at once), so a
// chunk of 8 small planes (8x8 float64: 4 KB) spent more on prefetching the other thread's planes
// than on its own (2 threads, small planes: up to 1.5x cython before this bound).
constexpr ptrdiff_t kChunkBytes = 65536;
inline int chunk_of(ptrdiff_t least, ptrdiff_t bytes, ptrdiff_t items) {
  return static_cast<int>(
      std::max<ptrdiff_t>(least, std::min(kChunkBytes / std::max<ptrdiff_t>(bytes, 1), items / 16)));
}

// Loop over planes on all threads; each thread owns `Buf` scratch. Dynamic chunks (chunk_of):
// on a shared machine a thread that loses its core for a while no longer holds the other one at
// the barrier; on a quiet one it costs ~1 atomic per chunk.
template <class Buf, class Body>
void for_planes(ptrdiff_t planes, ptrdiff_t plane_bytes, Body&& body) {
  const int chunk = chunk_of(8, plane_bytes, planes);
#pragma omp parallel num_threads(num_threads()) if (planes > 1)
  {
    Buf buf;
#pragma omp for schedule(dynamic, chunk)
    for (ptrdiff_t p = 0; p < planes; ++p) body(p, buf);
  }
}

// -- small planes: groups of planes as flat lists of windows ---------------------------------
// Where a plane's output rows are narrower than a vector (2x2/2 on 8x8 planes: 4 outputs a row)
// the row passes would run scalar. There, G consecutive planes (contiguous in NCHW) become one
// flat list of windows and the vectors run along the list, across rows and planes: entry j of a
// pass reads src[pos[j] + t*step] for t < n[j] (masked gathers; tables built once per call, a
// few KB). The horizontal pass of exactly tiled rows (every window full and W == OW*stride) is
// one long strided row of the whole group: plain or de-interleaved loads, no gather. Entries are
// ordered by plane, so the last group, of fewer planes, uses a prefix of the tables.
struct Flat {
  std::vector<int32_t> pos, n, off;  // off: the entry's plane offset in the group (max indices)
  int step = 0, taps = 0;
  bool monotone = true;  // pos nondecreasing (sum_flat may then permute instead of gathering)
  void add(int64_t p, int c, int64_t o) {
    monotone = monotone && (pos.empty() || p >= pos.back());
    pos.push_back(static_cast<int32_t>(p)), n.push_back(c), off.push_back(static_cast<int32_t>(o));
    taps = std::max(taps, c);
  }
};

// Planes per group: at least ~8 KB of float32 input (the per-group work dwarfs the schedule's
// atomic), at least 2 vectors of outputs.
inline ptrdiff_t group_planes(ptrdiff_t planes, ptrdiff_t hw, ptrdiff_t ohw, int lanes) {
  const ptrdiff_t g = std::max((2048 + hw - 1) / hw, (2 * lanes + ohw - 1) / std::max<ptrdiff_t>(ohw, 1));
  return std::max<ptrdiff_t>(1, std::min({g, planes, ((ptrdiff_t(1) << 30) - 1) / hw}));
}

// the horizontal pass's entries: rows r < G*H of the group, output columns o
Flat row_entries(ptrdiff_t G, int H, int W, const Axis& aw) {
  Flat f;
  f.step = aw.step;
  for (ptrdiff_t r = 0; r < G * H; ++r)
    for (int o = 0; o < aw.out(); ++o) f.add(r * W + aw.start[o], aw.count[o], (r / H) * H * W);
  return f;
}

// the vertical pass's entries: outputs (g, oh, ow) over a buffer of `rows` rows of `width` per plane
// (entry (g, oh, ow) reads rows start[oh] + t*step of column ow)
Flat col_entries(ptrdiff_t G, int rows, int width, int OW, const Axis& ah) {
  Flat f;
  f.step = ah.step * width;
  for (ptrdiff_t g = 0; g < G; ++g)
    for (int oh = 0; oh < ah.out(); ++oh)
      for (int ow = 0; ow < OW; ++ow) f.add((g * rows + ah.start[oh]) * width + ow, ah.count[oh], 0);
  return f;
}

bool exact_rows(const Axis& aw, int W) {  // every window full, W == OW*stride: one long strided row
  return aw.stride > 0 && aw.lo == 0 && aw.hi == aw.out() && W == aw.out() * aw.stride;
}

template <class V>
void store_idx(int32_t* p, typename V::I v) { V::storei(p, v); }
template <class V>
void store_idx(int64_t* p, typename V::I v) { V::store_i64(p, v); }

// dv[j], di[j] for the first `count` entries of f: the max over the taps (first max in tap order,
// the last NaN) and its index in the plane: sidx[src position] when given (the vertical pass
// reading the horizontal pass's columns), else src position - off[j]; (-inf, -1) without taps.
template <class V, class T, class IOut>
void max_flat(const T* src, const int32_t* sidx, const Flat& f, int count, T* dv, IOut* di) {
  const T ninf = -std::numeric_limits<T>::infinity();
  vectors<V::W>(0, count, [&](int j) {
    const typename V::I pos = V::loadi(&f.pos[j]), n = V::loadi(&f.n[j]);
    typename V::R best = V::set1(ninf);
    typename V::I bpos = pos;  // the winning tap's source position
    for (int t = 0; t < f.taps; ++t) {
      const auto act = V::active(n, t);
      const typename V::I at = V::addi(pos, V::seti(t * f.step));
      const typename V::R v = V::gather(src, at, act);
      const auto take = t == 0 ? act : V::mand(act, V::takes(v, best));
      best = V::blend(take, best, v);
      bpos = V::blendi(take, bpos, at);
    }
    const auto any = V::active(n, 0);  // the index looked up once, at the winner
    const typename V::I bi = sidx ? V::gatheri(sidx, bpos, any) : V::subi(bpos, V::loadi(&f.off[j]));
    V::store(dv + j, best);
    store_idx<V>(di + j, V::blendi(any, V::seti(-1), bi));
  }, [&](int j) {
    T best = ninf;
    int32_t bi = -1;
    for (int t = 0, at = f.pos[j]; t < f.n[j]; ++t, at += f.step) {
      const T v = src[at];
      const bool take = t == 0 || v > best || v != v;
      best = take ? v : best;
      bi = take ? (sidx ? sidx[at] : at - f.off[j]) : bi;
    }
    dv[j] = best, di[j] = bi;
  });
}

// Windowed max of V::W windows at once: lane i's window starts at src[w0 + i*s] and has k taps
// `step` apart. best: the maxima (NaN wins, the first of equal values stays); bi: their columns.
template <class V, class T>
inline void max_taps(const T* src, int w0, int s, int k, int step, typename V::R& best, typename V::I& bi) {
  const typename V::I cols = V::addi(V::muli(V::iota(), s), V::seti(w0));
  best = V::load_strided(src + w0, s);
  bi = cols;
  for (int t = 1; t < k; ++t) {
    const typename V::R v = V::load_strided(src + w0 + t * step, s);
    const auto m = V::takes(v, best);
    best = V::blend(m, best, v);
    bi = V::blendi(m, bi, V::addi(cols, V::seti(t * step)));
  }
}

// The same for one window in scalar code: its max over c taps from src[w] on, and that column.
template <class T>
inline void max_taps1(const T* src, int w, int c, int step, T& best_out, int& bi_out) {
  int bi = w;
  T best = src[w];
  for (int t = 1; t < c; ++t) {
    w += step;
    const T v = src[w];
    const bool take = v > best || v != v;  // selects, not a branch: random data mispredicts half
    best = take ? v : best;
    bi = take ? w : bi;
  }
  best_out = best, bi_out = bi;
}

// max_flat's horizontal pass over exactly tiled rows: entry j's taps are src[j*s + t*step]
template <class V, class T>
void max_flat_exact(const T* src, const Axis& aw, const Flat& f, int count, T* dv, int32_t* di) {
  const int s = aw.stride, k = aw.kernel, step = aw.step;
  vectors<V::W>(0, count, [&](int j) {
    typename V::R best;
    typename V::I bi;
    max_taps<V>(src, j * s, s, k, step, best, bi);
    V::store(dv + j, best);
    V::storei(di + j, V::subi(bi, V::loadi(&f.off[j])));
  }, [&](int j) {
    int bi;
    max_taps1(src, j * s, k, step, dv[j], bi);
    di[j] = bi - f.off[j];
  });
}

// dst[j] = the sum over entry j's taps (0 without taps), divided by div[j] when given
template <class V, class T>
void sum_flat(const T* src, const Flat& f, int count, T* dst, const T* div) {
  vectors<V::W>(0, count, [&](int j) {
    const typename V::I pos = V::loadi(&f.pos[j]), n = V::loadi(&f.n[j]);
    typename V::R acc = V::zero();
    const int b = f.pos[j];
    if (f.monotone && f.pos[j + V::W - 1] + (f.taps - 1) * f.step - b < V::W) {
      // every tap of these lanes lies within one vector from src[b] (short rows, few windows:
      // adaptive 11x11 -> 2): permutes of one load, not gathers (src has a vector of slack)
      const typename V::R v = V::load(src + b);
      const typename V::I rel = V::subi(pos, V::seti(b));
      for (int t = 0; t < f.taps; ++t)
        acc = V::add(acc, V::blend(V::active(n, t), V::zero(), V::permute(v, V::addi(rel, V::seti(t * f.step)))));
      V::store(dst + j, div ? V::div(acc, V::load(div + j)) : acc);
      return;
    }
    for (int t = 0; t < f.taps; ++t)
      acc = V::add(acc, V::gather(src, V::addi(pos, V::seti(t * f.step)), V::active(n, t)));
    V::store(dst + j, div ? V::div(acc, V::load(div + j)) : acc);
  }, [&](int j) {
    T acc = 0;
    for (int t = 0, at = f.pos[j]; t < f.n[j]; ++t, at += f.step) acc += src[at];
    dst[j] = div ? acc / div[j] : acc;
  });
}

// sum_flat's horizontal pass over exactly tiled rows (taps src[j*s + t], step 1), divided
template <class V, class T>
void sum_flat_exact(const T* src, const Axis& aw, int count, T* dst, const T* div) {
  const int s = aw.stride, k = aw.kernel;
  const bool runs = runs_ok(aw);
  vectors<V::W>(0, count, [&](int j) {
    typename V::R acc;
    if (runs) {
      acc = sum_runs<V>(src + j * s, s);
    } else {
      acc = V::load_strided(src + j * s, s);
      for (int t = 1; t < k; ++t) acc = V::add(acc, V::load_strided(src + j * s + t, s));
    }
    V::store(dst + j, V::div(acc, V::load(div + j)));
  }, [&](int j) {
    T acc = src[j * s];
    for (int t = 1; t < k; ++t) acc += src[j * s + t];
    dst[j] = acc / div[j];
  });
}

// The group path where the row path would leave vectors idle: the output row, or its interior
// (windows clear of the padding: the row path's vector part), is narrower than a vector.
// Adaptive windows (no uniform stride) have no interior in the row path.
// (Flat positions are int32: planes of 2^30 elements or more stay on the row path.)
inline bool use_groups(const Axis& aw, int lanes, ptrdiff_t hw) {
  if (hw >= (ptrdiff_t(1) << 30)) return false;
  return aw.out() < lanes || aw.hi - aw.lo < lanes;
}

// body(first plane, planes in the group, thread's Buf) for groups of G planes on all threads
// (dynamic chunks of at least 8 planes, as for_planes: one group can be a single 56x56 plane)
template <class Buf, class Body>
void for_groups(ptrdiff_t planes, ptrdiff_t G, ptrdiff_t plane_bytes, Body&& body) {
  const ptrdiff_t groups = (planes + G - 1) / G;
  // (a group is already ~8 KB or more of input: more groups a chunk only unbalanced the threads,
  // 6-9% on 2 threads and 4x4 .. 8x8 max planes)
  const int chunk = static_cast<int>(std::max<ptrdiff_t>(1, 8 / G));
  (void)plane_bytes;
#pragma omp parallel num_threads(num_threads()) if (groups > 1)
  {
    Buf buf;
#pragma omp for schedule(dynamic, chunk)
    for (ptrdiff_t i = 0; i < groups; ++i) body(i * G, std::min(G, planes - i * G), buf);
  }
}

// -- max_pool2d --------------------------------------------------------------------------

template <class T>
struct MaxBuf {
  std::vector<T> v;
  std::vector<int32_t> col;
  Ahead<> ahead;   // the input stream
  AheadW ao, ai;   // the row path's output and index streams
};

// hv[ow], hc[ow]: max over output column ow's taps of one input row, and its column (-1: no tap)
template <class V, class T>
void max_row(const T* row, const Axis& ax, T* hv, int32_t* hc) {
  const int ow_n = ax.out(), step = ax.step;
  auto one = [&](int o) {
    const int c = ax.count[o];
    if (c == 0) {
      hv[o] = -std::numeric_limits<T>::infinity(), hc[o] = -1;
      return;
    }
    int bi;
    max_taps1(row, ax.start[o], c, step, hv[o], bi);
    hc[o] = bi;
  };
  if constexpr (std::is_same_v<V, Scalar>) {
    for (int o = 0; o < ow_n; ++o) one(o);
  } else {
    const auto [lo, hi] = ax.interior();
    const int s = ax.stride, k = ax.kernel;
    for (int o = 0; o < lo; ++o) one(o);
    vectors<V::W>(lo, hi, [&](int o) {
      typename V::R best;
      typename V::I bi;
      max_taps<V>(row, o * s - ax.pad, s, k, step, best, bi);
      V::store(hv + o, best);
      V::storei(hc + o, bi);
    }, one);
    for (int o = hi; o < ow_n; ++o) one(o);
  }
}

template <class T>
void max_forward(const Array<T>& x, Array<T>& out, py::array_t<int64_t, py::array::c_style>& idx,
                 const Axis& ah, const Axis& aw) {
  PYDL_CHECK(x.ndim() == 4, "x: expected 4 dimensions");
  const ptrdiff_t planes = x.shape(0) * x.shape(1);
  const int H = static_cast<int>(x.shape(2)), W = static_cast<int>(x.shape(3));
  const int OH = ah.out(), OW = aw.out();
  PYDL_CHECK(ah.n == H && aw.n == W, "x: plane size does not match the window tables");
  PYDL_CHECK(int64_t(H) * W < (int64_t(1) << 31), "x: planes over 2^31 elements are not supported");
  PYDL_CHECK(out.ndim() == 4 && out.shape(0) * out.shape(1) == planes && out.shape(2) == OH &&
                 out.shape(3) == OW && idx.ndim() == 4 && idx.size() == out.size(),
             "out/indices: expected shape (N, C, " << OH << ", " << OW << ")");
  const T* xp = x.data();
  T* op = out.mutable_data();
  int64_t* ip = idx.mutable_data();
  std::vector<int> empty_cols;
  for (int o = 0; o < OW; ++o)
    if (aw.count[o] == 0) empty_cols.push_back(o);
  py::gil_scoped_release nogil;
  with_simd<T>([&](auto v) {
    using V = decltype(v);
    if constexpr (!std::is_same_v<V, Scalar>) {
      if (use_groups(aw, V::W, ptrdiff_t(H) * W)) {
        const ptrdiff_t G = group_planes(planes, ptrdiff_t(H) * W, ptrdiff_t(OH) * OW, V::W);
        const Flat hf = row_entries(G, H, W, aw), vf = col_entries(G, H, OW, OW, ah);
        const bool exact = exact_rows(aw, W);
        for_groups<MaxBuf<T>>(planes, G, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p0, ptrdiff_t g, MaxBuf<T>& buf) {
          buf.v.resize(size_t(G) * H * OW);
          buf.col.resize(size_t(G) * H * OW);
          const T* xg = xp + p0 * H * W;
          buf.ahead.seek(xg);
          buf.ahead.upto(xg + g * H * W);
          const int eh = int(g * H * OW), ev = int(g * OH * OW);
          if (exact) max_flat_exact<V>(xg, aw, hf, eh, buf.v.data(), buf.col.data());
          else max_flat<V>(xg, nullptr, hf, eh, buf.v.data(), buf.col.data());
          max_flat<V>(buf.v.data(), buf.col.data(), vf, ev, op + p0 * OH * OW, ip + p0 * OH * OW);
        });
        return;
      }
    }
    for_planes<MaxBuf<T>>(planes, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p, MaxBuf<T>& buf) {
      buf.v.resize(size_t(H) * OW);
      buf.col.resize(size_t(H) * OW);
      const T* xpl = xp + p * H * W;
      Ahead<>& ahead = buf.ahead;
      AheadW &ao = buf.ao, &ai = buf.ai;
      ahead.seek(xpl), ao.seek(op + p * OH * OW), ai.seek(ip + p * OH * OW);
      for (int h = 0; h < H; ++h) {
        ahead.upto(xpl + ptrdiff_t(h + 1) * W);
        max_row<V>(xpl + ptrdiff_t(h) * W, aw, &buf.v[size_t(h) * OW], &buf.col[size_t(h) * OW]);
      }
      for (int oh = 0; oh < OH; ++oh) {
        T* orow = op + (p * OH + oh) * OW;
        int64_t* irow = ip + (p * OH + oh) * OW;
        ao.upto(orow + OW), ai.upto(irow + OW);
        const int c = ah.count[oh], h0 = ah.start[oh], dh = ah.step;
        if (c == 0) {
          std::fill(orow, orow + OW, -std::numeric_limits<T>::infinity());
          std::fill(irow, irow + OW, int64_t(-1));
          continue;
        }
        auto one = [&](int o) {
          int h = h0;
          T best = buf.v[size_t(h) * OW + o];
          int64_t bi = int64_t(h) * W + buf.col[size_t(h) * OW + o];
          for (int t = 1; t < c; ++t) {
            h += dh;
            const T v = buf.v[size_t(h) * OW + o];
            const bool take = v > best || v != v;
            best = take ? v : best;
            bi = take ? int64_t(h) * W + buf.col[size_t(h) * OW + o] : bi;
          }
          orow[o] = best, irow[o] = bi;
        };
        if constexpr (std::is_same_v<V, Scalar>) {
          for (int o = 0; o < OW; ++o) one(o);
        } else {
          vectors<V::W>(0, OW, [&](int o) {
            int h = h0;
            typename V::R best = V::load(&buf.v[size_t(h) * OW + o]);
            typename V::I bi = V::addi(V::loadi(&buf.col[size_t(h) * OW + o]), V::seti(h * W));
            for (int t = 1; t < c; ++t) {
              h += dh;
              const typename V::R val = V::load(&buf.v[size_t(h) * OW + o]);
              const auto m = V::takes(val, best);
              best = V::blend(m, best, val);
              bi = V::blendi(m, bi, V::addi(V::loadi(&buf.col[size_t(h) * OW + o]), V::seti(h * W)));
            }
            V::store(orow + o, best);
            V::store_i64(irow + o, bi);
          }, one);
        }
        for (int o : empty_cols) irow[o] = -1;  // no input column: -inf from max_row, no index
      }
    });
  });
}

template <class T>
void max_backward(const Array<T>& grad, const py::array_t<int64_t, py::array::c_style>& idx, Array<T>& gx) {
  PYDL_CHECK(grad.ndim() == 4 && gx.ndim() == 4 && idx.ndim() == 4, "grad: expected 4 dimensions");
  const ptrdiff_t planes = gx.shape(0) * gx.shape(1);
  const ptrdiff_t hw = gx.shape(2) * gx.shape(3);
  const ptrdiff_t ohw = grad.shape(2) * grad.shape(3);
  PYDL_CHECK(grad.shape(0) * grad.shape(1) == planes && idx.size() == grad.size(),
             "indices: expected the shape of grad");
  const T* gp = grad.data();
  const int64_t* ip = idx.data();
  T* dp = gx.mutable_data();
  // An index outside [-1, H*W) would write outside its plane: such entries are skipped and
  // reported after the loop (checking them in a pass of their own cost more than the scatter).
  bool bad = false;
  // chunks of at least 8 planes and ~32K gx elements, each plane zeroed then scattered into;
  // the prefetch streams run across the chunk (restarted at every 8x8 plane, they re-issued 8 KB
  // of prefetches for each 256-byte plane)
  const ptrdiff_t chunk = std::max<ptrdiff_t>(8, 32768 / std::max<ptrdiff_t>(hw, 1));
  const ptrdiff_t chunks = (planes + chunk - 1) / chunk;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads()) if (planes > 1) reduction(|| : bad)
    for (ptrdiff_t c = 0; c < chunks; ++c) {
      const ptrdiff_t p0 = c * chunk, p1 = std::min(planes, p0 + chunk);
      T* d = dp + p0 * hw;
      const T* g = gp + p0 * ohw;
      const int64_t* ix = ip + p0 * ohw;
      AheadW ad(d);
      Ahead<> ag(g), ai(ix);
      for (ptrdiff_t p = p0; p < p1; ++p, d += hw, g += ohw, ix += ohw) {
        for (ptrdiff_t i0 = 0; i0 < hw; i0 += 256) {
          const ptrdiff_t i1 = std::min(hw, i0 + 256);
          ad.upto(d + i1);
          std::fill(d + i0, d + i1, T(0));
        }
        for (ptrdiff_t i0 = 0; i0 < ohw; i0 += 64) {
          const ptrdiff_t i1 = std::min(ohw, i0 + 64);
          ag.upto(g + i1), ai.upto(ix + i1);
          for (ptrdiff_t i = i0; i < i1; ++i) {
            const int64_t j = ix[i];
            if (static_cast<uint64_t>(j) < static_cast<uint64_t>(hw)) d[j] += g[i];
            else bad = bad || j != -1;
          }
        }
      }
    }
  }
  PYDL_CHECK(!bad, "indices: expected values in [-1, " << hw << ")");
}

// -- avg_pool2d / adaptive_avg_pool2d ------------------------------------------------------

template <class T>
void check_divisors(const Array<T>& dv, const Axis& a, const char* name) {
  PYDL_CHECK(dv.ndim() == 1 && dv.size() == a.out(), name << ": expected " << a.out() << " divisors");
}

template <class T>
struct AvgBuf {
  std::vector<T> s;
  Ahead<> ahead;  // the input stream
  AheadW ao;      // the row path's output stream
};

template <class T>
void avg_forward(const Array<T>& x, Array<T>& out, const Axis& ah, const Axis& aw, const Array<T>& dvh,
                 const Array<T>& dvw) {
  PYDL_CHECK(x.ndim() == 4, "x: expected 4 dimensions");
  const ptrdiff_t planes = x.shape(0) * x.shape(1);
  const int H = static_cast<int>(x.shape(2)), W = static_cast<int>(x.shape(3));
  const int OH = ah.out(), OW = aw.out();
  PYDL_CHECK(ah.n == H && aw.n == W, "x: plane size does not match the window tables");
  PYDL_CHECK(out.ndim() == 4 && out.shape(0) * out.shape(1) == planes && out.shape(2) == OH &&
                 out.shape(3) == OW, "out: expected shape (N, C, " << OH << ", " << OW << ")");
  check_divisors(dvh, ah, "divisors (rows)");
  check_divisors(dvw, aw, "divisors (columns)");
  const T* xp = x.data();
  const T* dh = dvh.data();
  const T* dw = dvw.data();
  T* op = out.mutable_data();
  py::gil_scoped_release nogil;
  if (OH == 1 && OW == 1 && ah.count[0] == H && aw.count[0] == W) {
    // one window over the whole plane (global average): a flat sum (no per-row passes: a 7x7
    // plane is 49 elements), in two vector chains, then the lanes (scalar: four chains). The
    // scalar form for every level ran 4x512x7x7 -> 1 at 15.5 us on one Zen 5 thread.
    const ptrdiff_t hw = ptrdiff_t(H) * W;
    const T d = dh[0] * dw[0];
    with_simd<T>([&](auto v) {
      using V = decltype(v);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (planes * hw >= 32768)
      for (ptrdiff_t p = 0; p < planes; ++p) {
        const T* a = xp + p * hw;
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        ptrdiff_t i = 0;
        if constexpr (!std::is_same_v<V, Scalar>) {
          typename V::R v0 = V::zero(), v1 = V::zero();
          for (; i + 2 * V::W <= hw; i += 2 * V::W) v0 = V::add(v0, V::load(a + i)), v1 = V::add(v1, V::load(a + i + V::W));
          for (; i + V::W <= hw; i += V::W) v0 = V::add(v0, V::load(a + i));
          alignas(64) T lanes[V::W];
          V::store(lanes, V::add(v0, v1));
          for (int l = 0; l < V::W; l += 4) s0 += lanes[l], s1 += lanes[l + 1], s2 += lanes[l + 2], s3 += lanes[l + 3];
        }
        for (; i + 4 <= hw; i += 4) s0 += a[i], s1 += a[i + 1], s2 += a[i + 2], s3 += a[i + 3];
        for (; i < hw; ++i) s0 += a[i];
        op[p] = ((s0 + s1) + (s2 + s3)) / d;
      }
    });
    return;
  }
  auto body = [&](auto v) {
    using V = decltype(v);
    if constexpr (!std::is_same_v<V, Scalar>) {
      // (rows of two vectors or more keep the row path: its vertical sums already shrink the data
      // by the kernel height, and a group of one wide plane would only add gathers; but exact rows
      // of kernel == stride 4 or 8 take the group path at any width: no gathers, the row path's
      // OW < V::W outputs would be scalar: adaptive 56 -> 7)
      const bool exact = exact_rows(aw, W);
      if (use_groups(aw, V::W, ptrdiff_t(H) * W) && (W < 2 * V::W || (exact && runs_ok(aw)))) {
        // vertical sums first (each output row's input rows: contiguous, compiler-vectorized;
        // they shrink the data before the gathers), then the horizontal taps along the group's
        // G*OH summed rows (strided loads or gathers), divided
        const ptrdiff_t G = group_planes(planes, ptrdiff_t(H) * W, ptrdiff_t(OH) * OW, V::W);
        const Flat hf = row_entries(G, OH, W, aw);
        std::vector<T> div(size_t(G) * OH * OW);
        for (size_t j = 0; j < div.size(); ++j) div[j] = dh[(j / OW) % OH] * dw[j % OW];
        for_groups<AvgBuf<T>>(planes, G, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p0, ptrdiff_t g, AvgBuf<T>& buf) {
          buf.s.resize(size_t(G) * OH * W + 2 * V::W);  // a vector of slack: sum_flat's permutes
          const T* xg = xp + p0 * H * W;
          buf.ahead.seek(xg);
          for (ptrdiff_t r = 0; r < g * OH; ++r) {
            const int oh = int(r % OH), c = ah.count[oh];
            T* vs = buf.s.data() + r * W;
            const T* r0 = xg + ((r / OH) * H + ah.start[oh]) * W;
            // row by row, as the row path: a whole group's prefetches at once (a 56x56 plane:
            // 200 lines) stalled the loads behind them (N32 56 -> 7 float32 ran at 17 GB/s)
            buf.ahead.upto(r0 + ptrdiff_t(c) * W);
            if (c == 0) {
              std::fill(vs, vs + W, T(0));
              continue;
            }
            sum_rows(r0, W, c, W, vs);
          }
          const int e = int(g * OH * OW);
          T* og = op + p0 * OH * OW;
          if (exact) sum_flat_exact<V>(buf.s.data(), aw, e, og, div.data());
          else sum_flat<V>(buf.s.data(), hf, e, og, div.data());
        });
        return;
      }
    }
    for_planes<AvgBuf<T>>(planes, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p, AvgBuf<T>& buf) {
      std::vector<T>& rs = buf.s;
      rs.resize(W);
      const T* xpl = xp + p * H * W;
      Ahead<>& ahead = buf.ahead;
      AheadW& ao = buf.ao;
      ahead.seek(xpl), ao.seek(op + p * OH * OW);
      for (int oh = 0; oh < OH; ++oh) {
        // vertical: rs = sum of the window's rows (contiguous; vectorized by the compiler)
        const T* r0 = xpl + ptrdiff_t(ah.start[oh]) * W;
        ahead.upto(r0 + ptrdiff_t(ah.count[oh]) * W);
        if (ah.count[oh] == 0) std::fill(rs.begin(), rs.end(), T(0));
        else sum_rows(r0, W, ah.count[oh], W, rs.data());
        T* orow = op + (p * OH + oh) * OW;
        ao.upto(orow + OW);
        const T d0 = dh[oh];
        auto one = [&](int o) {
          const T* q = rs.data() + aw.start[o];
          T s = q[0];
          for (int t = 1; t < aw.count[o]; ++t) s += q[t];
          orow[o] = s / (d0 * dw[o]);
        };
        if constexpr (std::is_same_v<V, Scalar>) {
          for (int o = 0; o < OW; ++o) one(o);
        } else {
          const auto [lo, hi] = aw.interior();
          const int s = aw.stride, k = aw.kernel;
          for (int o = 0; o < lo; ++o) one(o);
          const bool runs = runs_ok(aw);
          vectors<V::W>(lo, hi, [&](int o) {
            const T* q = rs.data() + (o * s - aw.pad);
            typename V::R acc;
            if (runs) {
              acc = sum_runs<V>(q, s);
            } else {
              acc = V::load_strided(q, s);
              for (int t = 1; t < k; ++t) acc = V::add(acc, V::load_strided(q + t, s));
            }
            V::store(orow + o, V::div(acc, V::mul(V::set1(d0), V::load(dw + o))));
          }, one);
          for (int o = hi; o < OW; ++o) one(o);
        }
      }
    });
  };
  // Wide rows of runs too short for an AVX-512 vector (float64 56 -> 7: 7 outputs, 8 lanes) run
  // at half width: the row path's 4-lane runs. The group path there read N32 56 -> 7 float64 at
  // 1.2-1.4x cython (the AVX2 level of the same module: 0.85-1.0x).
  with_simd<T>([&](auto v) {
    using V = decltype(v);
    if constexpr (!std::is_same_v<V, Scalar>) {
      using N = typename NarrowOf<V>::type;
      if constexpr (!std::is_same_v<N, V>) {
        if (exact_rows(aw, W) && runs_ok(aw) && aw.out() < V::W && aw.out() >= N::W && W >= 2 * V::W) {
          body(N{});
          return;
        }
      }
    }
    body(v);
  });
}

// outputs [lo[i], hi[i]) hold input position i (windows of step 1 with nondecreasing ends)
void inverse(const Axis& a, std::vector<int32_t>& lo, std::vector<int32_t>& n, int& most) {
  lo.assign(a.n, 0), n.assign(a.n, 0);
  most = 0;
  int first = 0, last = 0;  // first window ending after i, first window starting after i
  for (int i = 0; i < a.n; ++i) {
    while (first < a.out() && a.start[first] + a.count[first] <= i) ++first;
    while (last < a.out() && a.start[last] <= i) ++last;
    lo[i] = first, n[i] = std::max(0, last - first);
    most = std::max(most, n[i]);
  }
}

template <class T>
struct AvgBwdBuf {
  std::vector<T> q, t;
  Ahead<> ahead;  // the grad stream
  AheadW aw;      // the row path's gx stream
};

// The horizontal gather t[w] = sum of q over the windows holding column w, for uniform windows of
// stride 1 or 2 (no gather instruction): with w = s*m + e, the windows holding w are o = m + d for
// d in [dlo[e], dhi[e]] (constants per phase e), so t at phase e is a sum of shifted loads of q,
// and for stride 2 the two phases are interleaved on the store. Valid for m in [mlo, mhi): every
// such o is a real window and s*m + s - 1 < W; checked against the inverse tables once per call.
// whole: the same sums over q embedded in zeros (lead zeros before q[0]) hold for every m in
// [0, ceil(n / s)): windows past either end of q read zeros, so no column is left to scalar code.
struct Shifts {
  int s = 0, dlo[2] = {0, 0}, dhi[2] = {-1, -1}, mlo = 0, mhi = 0, lead = 0, trail = 0;
  bool ok = false, whole = false;
};

inline int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

Shifts shifts_of(const Axis& a, const std::vector<int32_t>& lo, const std::vector<int32_t>& n) {
  Shifts r;
  if (a.stride != 1 && a.stride != 2) return r;
  r.s = a.stride;
  int lowest = 0, highest = 0;
  for (int e = 0; e < r.s; ++e) {
    // o holds w = s*m + e iff 0 <= w + pad - s*o <= kernel - 1
    r.dlo[e] = -floor_div(-(e + a.pad - a.kernel + 1), r.s);
    r.dhi[e] = floor_div(e + a.pad, r.s);
    lowest = std::min(lowest, r.dlo[e]), highest = std::max(highest, r.dhi[e]);
  }
  r.mlo = -lowest;
  r.mhi = std::min(a.out() - highest, a.n / r.s);
  r.lead = -lowest, r.trail = highest;
  r.whole = true;
  for (int m = 0; m * r.s < a.n && r.whole; ++m)
    for (int e = 0; e < r.s; ++e) {
      const int w = r.s * m + e;
      if (w >= a.n) break;
      const int o0 = std::max(0, m + r.dlo[e]), o1 = std::min(a.out() - 1, m + r.dhi[e]);
      const int cnt = std::max(0, o1 - o0 + 1);
      if (n[w] != cnt || (cnt > 0 && lo[w] != o0)) r.whole = false;
    }
  if (r.mhi <= r.mlo) return r;
  for (int m = r.mlo; m < r.mhi; ++m)
    for (int e = 0; e < r.s; ++e) {
      const int w = r.s * m + e, cnt = std::max(0, r.dhi[e] - r.dlo[e] + 1);
      if (n[w] != cnt || (cnt > 0 && lo[w] != m + r.dlo[e])) return r;
    }
  r.ok = true;
  return r;
}

// The group path for the backward where the row path's vectors would idle: the shifted-load
// range (stride 1, 2) or the row (gathers) narrower than two vectors (the row path's per-row
// steps cost more than the group's gathers there).
inline bool use_groups_bwd(const Shifts& sh, int W, int lanes, ptrdiff_t hw) {
  if (hw >= (ptrdiff_t(1) << 30)) return false;
  return (sh.ok ? sh.mhi - sh.mlo : W) < 2 * lanes;
}

// The group path's gather-free form for stride 1 or 2 (Shifts::whole): each output row's q in a
// segment of Mq slots (lead zeros, q, zeros), segments back to back, so t over the whole group is
// one long row of shifted loads: t[s*m' + e] = sum over d of qz[lead + m' + d] for m' along every
// segment (output row r's t in [r*s*Mq, r*s*Mq + W), the rest unused); then each gx row sums its
// windows' t rows (contiguous, sum_rows). No gathers, no scalar borders.
template <class V, class T>
void shifted_groups(const T* gp, T* dp, ptrdiff_t planes, int H, int W, const Axis& ah, const Axis& aw,
                    const Shifts& sh, const std::vector<int32_t>& hlo, const std::vector<int32_t>& hn,
                    const T* dh, const T* dw) {
  const int OH = ah.out(), OW = aw.out(), s = sh.s, L = V::W;
  const int M = (W + s - 1) / s, Mq = std::max(sh.lead + OW, M + sh.trail);
  const ptrdiff_t G = group_planes(planes, ptrdiff_t(H) * W, ptrdiff_t(OH) * OW, L);
  std::vector<T> div(size_t(OH) * OW);
  for (size_t j = 0; j < div.size(); ++j) div[j] = dh[j / OW] * dw[j % OW];
  for_groups<AvgBwdBuf<T>>(planes, G, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p0, ptrdiff_t g, AvgBwdBuf<T>& buf) {
    const ptrdiff_t rows = g * OH, span = rows * Mq;
    // zeros once per thread: only the q slots are ever written; reads reach lead + trail
    // (each at most Mq) past the last segment, plus a vector
    if (buf.q.empty()) buf.q.assign(size_t(G * OH + 2) * Mq + 2 * L, T(0));
    buf.t.resize(size_t(G * OH + 1) * s * Mq + 2 * L);
    const T* gg = gp + p0 * OH * OW;
    buf.ahead.seek(gg);
    buf.ahead.upto(gg + rows * OW);
    T* qz = buf.q.data();
    for (ptrdiff_t r = 0; r < rows; ++r) {
      T* qr = qz + r * Mq + sh.lead;
      const T* gr = gg + r * OW;
      const T* dr = div.data() + (r % OH) * OW;
      for (int o = 0; o < OW; ++o) qr[o] = gr[o] / dr[o];
    }
    T* t = buf.t.data();
    const T* q0 = qz + sh.lead;
    auto sum = [&](ptrdiff_t m, int e) {
      typename V::R a = V::zero();
      for (int d = sh.dlo[e]; d <= sh.dhi[e]; ++d) a = V::add(a, V::load(q0 + m + d));
      return a;
    };
    vectors<V::W>(0, int(span), [&](int m) {
      if (s == 1) V::store(t + m, sum(m, 0));
      else V::store_interleaved(t + 2 * m, sum(m, 0), sum(m, 1));
    }, [&](int m) {
      for (int e = 0; e < s; ++e) {
        T a = 0;
        for (int d = sh.dlo[e]; d <= sh.dhi[e]; ++d) a += q0[m + d];
        t[s * m + e] = a;
      }
    });
    const ptrdiff_t ld = ptrdiff_t(s) * Mq;
    for (ptrdiff_t gi = 0; gi < g; ++gi)
      for (int h = 0; h < H; ++h) {
        T* dst = dp + ((p0 + gi) * H + h) * W;
        if (hn[h] == 0) std::fill(dst, dst + W, T(0));
        else sum_rows(t + (gi * OH + hlo[h]) * ld, ld, hn[h], W, dst);
      }
  });
}

template <class T>
void avg_backward(const Array<T>& grad, Array<T>& gx, const Axis& ah, const Axis& aw, const Array<T>& dvh,
                  const Array<T>& dvw) {
  PYDL_CHECK(grad.ndim() == 4 && gx.ndim() == 4, "grad: expected 4 dimensions");
  const ptrdiff_t planes = gx.shape(0) * gx.shape(1);
  const int H = static_cast<int>(gx.shape(2)), W = static_cast<int>(gx.shape(3));
  const int OH = ah.out(), OW = aw.out();
  PYDL_CHECK(ah.n == H && aw.n == W, "x: plane size does not match the window tables");
  PYDL_CHECK(grad.shape(0) * grad.shape(1) == planes && grad.shape(2) == OH && grad.shape(3) == OW,
             "grad: expected shape (N, C, " << OH << ", " << OW << ")");
  check_divisors(dvh, ah, "divisors (rows)");
  check_divisors(dvw, aw, "divisors (columns)");
  for (const Axis* a : {&ah, &aw})
    for (int o = 0; o < a->out(); ++o)
      PYDL_CHECK(a->step == 1 && (o == 0 || (a->start[o] >= a->start[o - 1] &&
                                            a->start[o] + a->count[o] >= a->start[o - 1] + a->count[o - 1])),
                 "windows: expected step 1 and nondecreasing bounds");
  std::vector<int32_t> hlo, hn, wlo, wn;
  int hmost, wmost;
  inverse(ah, hlo, hn, hmost);
  inverse(aw, wlo, wn, wmost);
  const Shifts sh = shifts_of(aw, wlo, wn);
  const T* gp = grad.data();
  const T* dh = dvh.data();
  const T* dw = dvw.data();
  T* dp = gx.mutable_data();
  py::gil_scoped_release nogil;
  if (OH == 1 && OW == 1 && ah.count[0] == H && aw.count[0] == W) {  // global average: a fill
    const ptrdiff_t hw = ptrdiff_t(H) * W;
    const T d = dh[0] * dw[0];
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (planes * hw >= 32768)
    for (ptrdiff_t p = 0; p < planes; ++p) std::fill(dp + p * hw, dp + (p + 1) * hw, gp[p] / d);
    return;
  }
  with_simd<T>([&](auto v) {
    using V = decltype(v);
    if constexpr (!std::is_same_v<V, Scalar>) {
      // (windows that do not overlap on rows under 1.5 vectors keep the one-pass gather below:
      // the shifted form's per-row vertical step costs more there: 4x4 and 8x8 at 8 or 16 lanes)
      const bool tiny_direct = hmost <= 1 && wmost <= 1 && 2 * W < 3 * V::W;
      if (use_groups_bwd(sh, W, V::W, ptrdiff_t(H) * W) && sh.whole && !tiny_direct) {
        shifted_groups<V>(gp, dp, planes, H, W, ah, aw, sh, hlo, hn, dh, dw);
        return;
      }
      if (use_groups_bwd(sh, W, V::W, ptrdiff_t(H) * W)) {
        // q = grad / divisor over the group's outputs; t[(g, oh), w] = sum of q over the windows
        // holding column w; gx[(g, h), w] = sum of t over the windows holding row h
        // Windows that do not overlap (2x2/2, 8 -> 2 adaptive): each gx element takes at most one
        // q, gathered in one pass straight into gx.
        const ptrdiff_t G = group_planes(planes, ptrdiff_t(H) * W, ptrdiff_t(OH) * OW, V::W);
        const bool direct = hmost <= 1 && wmost <= 1;
        Flat hf, vf;
        hf.step = 1, vf.step = W;
        if (direct) {
          for (ptrdiff_t g = 0; g < G; ++g)
            for (int h = 0; h < H; ++h)
              for (int w = 0; w < W; ++w) vf.add((g * OH + hlo[h]) * OW + wlo[w], hn[h] * wn[w], 0);
        } else {
          for (ptrdiff_t r = 0; r < G * OH; ++r)
            for (int w = 0; w < W; ++w) hf.add(r * OW + wlo[w], wn[w], 0);
        }
        std::vector<T> div(size_t(G) * OH * OW);
        for (size_t j = 0; j < div.size(); ++j) div[j] = dh[(j / OW) % OH] * dw[j % OW];
        for_groups<AvgBwdBuf<T>>(planes, G, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p0, ptrdiff_t g, AvgBwdBuf<T>& buf) {
          buf.q.resize(size_t(G) * OH * OW + 2 * V::W);  // a vector of slack: sum_flat's permutes
          buf.t.resize(size_t(G) * OH * W + 2 * V::W);
          const T* gg = gp + p0 * OH * OW;
          buf.ahead.seek(gg);
          buf.ahead.upto(gg + g * OH * OW);
          T* q = buf.q.data();
          for (ptrdiff_t j = 0; j < g * OH * OW; ++j) q[j] = gg[j] / div[j];
          if (direct) {
            sum_flat<V>(q, vf, int(g * H * W), dp + p0 * H * W, static_cast<const T*>(nullptr));
            return;
          }
          sum_flat<V>(q, hf, int(g * OH * W), buf.t.data(), static_cast<const T*>(nullptr));
          // gx rows: sums of the t rows of their windows (contiguous rows: no gathers)
          const T* t = buf.t.data();
          for (ptrdiff_t gi = 0; gi < g; ++gi)
            for (int h = 0; h < H; ++h) {
              T* dst = dp + ((p0 + gi) * H + h) * W;
              if (hn[h] == 0) std::fill(dst, dst + W, T(0));
              else sum_rows(t + (gi * OH + hlo[h]) * W, W, hn[h], W, dst);
            }
        });
        return;
      }
    }
    for_planes<AvgBwdBuf<T>>(planes, ptrdiff_t(H) * W * sizeof(T), [&](ptrdiff_t p, AvgBwdBuf<T>& buf) {
      buf.q.resize(size_t(OW) + 2 * lanes_of<V>());
      buf.t.resize(size_t(OH) * W + 1);
      Ahead<>& ahead = buf.ahead;
      ahead.seek(gp + p * OH * OW);
      for (int oh = 0; oh < OH; ++oh) {
        // q = grad / divisor for this output row; t[oh, w] = sum of q over the windows holding w
        const T* g = gp + (p * OH + oh) * OW;
        ahead.upto(g + OW);
        T* q = buf.q.data();
        if constexpr (std::is_same_v<V, Scalar>) {
          for (int o = 0; o < OW; ++o) q[o] = g[o] / (dh[oh] * dw[o]);
        } else {
          const typename V::R d0 = V::set1(dh[oh]);
          vectors<V::W>(0, OW, [&](int o) { V::store(q + o, V::div(V::load(g + o), V::mul(d0, V::load(dw + o)))); },
                        [&](int o) { q[o] = g[o] / (dh[oh] * dw[o]); });
        }
        T* t = buf.t.data() + size_t(oh) * W;
        auto one = [&](int w) {
          T s = 0;
          for (int j = 0; j < wn[w]; ++j) s += q[wlo[w] + j];
          t[w] = s;
        };
        if constexpr (std::is_same_v<V, Scalar>) {
          for (int w = 0; w < W; ++w) one(w);
        } else if (sh.ok) {
          const int s = sh.s;
          for (int w = 0; w < s * sh.mlo; ++w) one(w);
          auto sum = [&](int m, int e) {
            typename V::R a = V::zero();
            for (int d = sh.dlo[e]; d <= sh.dhi[e]; ++d) a = V::add(a, V::load(q + m + d));
            return a;
          };
          vectors<V::W>(sh.mlo, sh.mhi, [&](int m) {
            if (s == 1) V::store(t + m, sum(m, 0));
            else V::store_interleaved(t + 2 * m, sum(m, 0), sum(m, 1));
          }, [&](int m) {
            for (int e = 0; e < s; ++e) one(s * m + e);
          });
          for (int w = s * sh.mhi; w < W; ++w) one(w);
        } else {
          vectors<V::W>(0, W, [&](int w) {
            const typename V::I lo = V::loadi(&wlo[w]), n = V::loadi(&wn[w]);
            const int b = wlo[w];
            if (wmost == 1 && wlo[w + V::W - 1] - b < V::W) {
              // windows that do not overlap (56 -> 7 adaptive): the lanes' q are within one load
              // of q[b]: a permute of it, not a gather (q holds 2 W slots past OW)
              V::store(t + w, V::blend(V::active(n, 0), V::zero(), V::permute(V::load(q + b), V::subi(lo, V::seti(b)))));
              return;
            }
            typename V::R s = V::zero();
            for (int j = 0; j < wmost; ++j) s = V::add(s, V::gather_n(q, lo, n, j));
            V::store(t + w, s);
          }, one);
        }
      }
      // gx[h, :] = sum of t over the output rows whose window holds h (contiguous)
      T* d = dp + p * H * W;
      AheadW& aw_ = buf.aw;
      aw_.seek(d);
      for (int h = 0; h < H; ++h) {
        T* dr = d + ptrdiff_t(h) * W;
        aw_.upto(dr + W);
        if (hn[h] == 0) {
          std::fill(dr, dr + W, T(0));
          continue;
        }
        sum_rows(buf.t.data() + size_t(hlo[h]) * W, W, hn[h], W, dr);
      }
    });
  });
}

// -- bindings ------------------------------------------------------------------------------
// pool_max_<sfx>(x, out, indices, hstart, hcount, wstart, wcount, kernel, stride, padding, dilation)
// pool_max_backward_<sfx>(grad, indices, gx)
// pool_avg_<sfx>(x, out, hstart, hcount, wstart, wcount, hdiv, wdiv, kernel, stride, padding)
// pool_avg_backward_<sfx>(grad, gx, hstart, hcount, wstart, wcount, hdiv, wdiv, kernel, stride, padding)
// kernel/stride/padding/dilation are (h, w) pairs describing uniform windows; stride (0, 0): none
// (adaptive pooling), the tables alone then say what each output reads.

using Pair = std::pair<int, int>;

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  using A = Array<T>;
  using I64 = py::array_t<int64_t, py::array::c_style>;
  const auto x = py::arg("x").noconvert(), out = py::arg("out").noconvert(), grad = py::arg("grad").noconvert();
  m.def(("pool_max_" + sfx).c_str(),
        [](const A& x, A& out, I64& idx, const Table& hs, const Table& hc, const Table& ws, const Table& wc,
           Pair k, Pair s, Pair p, Pair d) {
          const Axis ah = axis_of(hs, hc, int(x.shape(2)), k.first, s.first, p.first, d.first, "rows");
          const Axis aw = axis_of(ws, wc, int(x.shape(3)), k.second, s.second, p.second, d.second, "columns");
          max_forward<T>(x, out, idx, ah, aw);
        },
        x, out, py::arg("indices").noconvert(), py::arg("hstart"), py::arg("hcount"), py::arg("wstart"),
        py::arg("wcount"), py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("dilation"));
  m.def(("pool_max_backward_" + sfx).c_str(), &max_backward<T>, grad, py::arg("indices").noconvert(),
        py::arg("gx").noconvert());
  m.def(("pool_avg_" + sfx).c_str(),
        [](const A& x, A& out, const Table& hs, const Table& hc, const Table& ws, const Table& wc, const A& dh,
           const A& dw, Pair k, Pair s, Pair p) {
          const Axis ah = axis_of(hs, hc, int(x.shape(2)), k.first, s.first, p.first, 1, "rows");
          const Axis aw = axis_of(ws, wc, int(x.shape(3)), k.second, s.second, p.second, 1, "columns");
          avg_forward<T>(x, out, ah, aw, dh, dw);
        },
        x, out, py::arg("hstart"), py::arg("hcount"), py::arg("wstart"), py::arg("wcount"),
        py::arg("hdiv").noconvert(), py::arg("wdiv").noconvert(), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"));
  m.def(("pool_avg_backward_" + sfx).c_str(),
        [](const A& g, A& gx, const Table& hs, const Table& hc, const Table& ws, const Table& wc, const A& dh,
           const A& dw, Pair k, Pair s, Pair p) {
          const Axis ah = axis_of(hs, hc, int(gx.shape(2)), k.first, s.first, p.first, 1, "rows");
          const Axis aw = axis_of(ws, wc, int(gx.shape(3)), k.second, s.second, p.second, 1, "columns");
          avg_backward<T>(g, gx, ah, aw, dh, dw);
        },
        grad, py::arg("gx").noconvert(), py::arg("hstart"), py::arg("hcount"), py::arg("wstart"),
        py::arg("wcount"), py::arg("hdiv").noconvert(), py::arg("wdiv").noconvert(), py::arg("kernel"),
        py::arg("stride"), py::arg("padding"));
}

}  // namespace

void bind_pool(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace pydl
