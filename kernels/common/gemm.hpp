// The CPU GEMM every pydl C++ family calls (gemm, conv, rnn, attention).
//
// Interface (stable; kernels/cpp/gemm.cpp binds it, kernels/cpp/conv.cpp packs
// straight from images through gemm_packed_b):
//
//   C (M x N, row stride ldc, unit column stride) = epilogue(A @ B)
//   A (M x K) and B (K x N) are strided views: element (i, j) at p[i*rs + j*cs],
//   so A^T, B^T and any non-contiguous slice are read without a copy.
//   epilogue: C = act(A@B + bias) [+ C if accumulate]; bias per column (length N,
//   linear) or per row (length M, conv channels); optionally the pre-activation
//   is stored too (for a backward that needs it).
//
//   gemm_packed_b: B is not a matrix in memory but produced panel by panel by a
//   functor pack_b(k0, kc, n0, nc, dst) that writes B[k0:k0+kc, n0:n0+nc] as
//   ceil(nc / NR) panels of kc x NR (panel p at dst + p*kc*NR, row k of it at
//   + k*NR, column j of the block at panel j/NR, lane j%NR), zero-filling lanes
//   past nc. NR = panel_width<T>() for the SIMD level in use. This is how an
//   implicit-GEMM convolution packs its column matrix without materializing it.
//
//   gemm_rows_a: B row-major, A read in place and never packed (the unpacked-B
//   path's row pointers): for an A used by many small products (conv.cpp's
//   Winograd filters, a 1x1 conv's weights image after image).
//
//   pack_b_once + gemm_prepacked: B packed once into the panels of the SIMD level in use
//   and read by many products (rnn.cpp: a recurrence's weights, read by every step):
//   a B read in place with a power-of-two row stride sets all its rows in a few L1
//   sets and is fetched again for every row tile (an LSTM's 32 x 1024 x 256 step ran
//   at half the speed of the same step with 248 hidden units).
//
//   nthreads: 0 = pydl::num_threads(); 1 = run serially on the calling thread
//   (safe inside a caller's own parallel region).
//
//   pack_b may be called from every thread of gemm's parallel region at once,
//   each call for a different, panel-aligned range of columns (n0 a multiple
//   of NR), so it must not share scratch state between calls.
//
// Implementation (Goto/BLIS): for each NC-column block of B and KC-row block
// of K, B is packed once into kc x NR panels shared by the threads (an L3
// resident block); each thread packs MC x KC blocks of A into MR-row
// micro-panels (L2) and runs a register-blocked MR x (2*NR) microkernel over
// them (the B micro-panel pair stays in L1). The epilogue (bias, pre-activation,
// activation, accumulate) is applied to each C tile on the last KC block while
// it is in L1. Small M (<= 4 rows) and K-contiguous B skip packing: GEMV-like
// direct loops, bandwidth-bound as they must be. Register shapes per level:
//   AVX-512: float 14 x 32 (28 zmm accumulators), double 14 x 16;
//   AVX2:    float 6 x 16 (12 ymm),               double 6 x 8;
//   scalar:  4 x (2 panels of 16 bytes), plain C++.
// Measurements and the path to these choices: dev/gemm/README.md.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "check.hpp"
#include "simd.hpp"
#include "simd_math.hpp"

namespace pydl {
namespace gemm {

enum class Act : int { none = 0, relu, gelu, tanh, sigmoid };

template <class T>
struct View {
  const T* p;
  int64_t rs, cs;  // element (i, j) at p[i*rs + j*cs]
  T at(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
};

template <class T>
struct Epilogue {
  const T* bias = nullptr;    // added before the activation
  bool bias_per_row = false;  // true: bias[i] (length M); false: bias[j] (length N)
  Act act = Act::none;
  T* preact = nullptr;        // if set, also store A@B + bias here (row stride ldc)
  bool accumulate = false;    // C += result (bias/act/preact must be unset)
};

// B (K x N) packed once by pack_b_once in the panels of the level it was packed at: K in
// blocks of kc rows (the level's KC, equal_blocks), the block of rows pc.. at p + pc * np
// (np = N rounded up to the panel width W), its panel q (columns q*W..) at + q * kcb * W
// (kcb: that block's rows), row k of a panel at + k * W, lanes past N zero.
template <class T>
struct PackedB {
  const T* p = nullptr;
  int64_t K = 0, N = 0, kc = 0;
  Simd level = Simd::scalar;
};

template <class T>
inline T activate(Act act, T z) {
  switch (act) {
    case Act::relu: return z > T(0) ? z : (z == z ? T(0) : z);
    case Act::gelu: return T(0.5) * z * (T(1) + std::erf(z * T(0.70710678118654752440)));
    case Act::tanh: return std::tanh(z);
    case Act::sigmoid: return T(1) / (T(1) + std::exp(-z));
    default: return z;
  }
}

// Width of a packed B panel for a SIMD level (one vector register of T).
template <class T>
inline int panel_width_at(Simd level) {
  const int lanes = level == Simd::avx512 ? 64 : level == Simd::avx2 ? 32 : 16;
  return lanes / static_cast<int>(sizeof(T));
}

// Width of a packed B panel for the SIMD level in use.
template <class T>
inline int panel_width() {
  return panel_width_at<T>(simd_level());
}

// Development controls (dev/gemm/bench.py, tests): which algorithm gemm() uses
// and the cache blocking. Process-wide; Algo::automatic and 0 mean the defaults.
enum class Algo : int { automatic = 0, naive, packed, direct, unpacked };

struct Tuning {
  int kc = 0, mc = 0, nc = 0;  // 0: the level's default
  int direct_max_m = 4;        // gemm() takes the direct path for M <= this (and a usable B layout)
  int unpacked_max_m = 512;    // ... and the unpacked-B path for M or K <= this (row-major B; 0: never)
};

inline Tuning& tuning() {
  static Tuning t;
  return t;
}

// The caches of the CPU the code runs on, per core, in bytes (0: unknown). Set once at import
// from the operating system (pydl.machine.tuning -> set_cache_sizes); the cache blocks below are
// derived from them.
struct CacheSizes {
  int64_t l1d = 0, l2 = 0, l3 = 0;
};

inline CacheSizes& cache_sizes() {
  static CacheSizes c;
  return c;
}

struct Blocks {
  int64_t kc, mc, nc;
};

namespace detail {

template <class T>
inline void check_epilogue(const Epilogue<T>& ep) {
  PYDL_CHECK(!ep.accumulate || (ep.bias == nullptr && ep.act == Act::none && ep.preact == nullptr),
             "gemm: accumulate cannot be combined with bias, activation or preact");
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
// K cut into equal blocks of at most kc (784 = 4 x 196, not 3 x 256 + 16: a thin last block
// loads and stores every C tile for a few k): the block length.
inline int64_t equal_blocks(int64_t k, int64_t kc) { return ceil_div(k, ceil_div(k, kc)); }

// -- activation over a row of C (in L1 when called), vectorized at a level ----

template <class V>
inline void act_span(Act act, typename V::T* p, int64_t n) {
  using R = typename V::R;
  using T = typename V::T;
  for (int64_t j = 0; j < n; j += V::W) {
    const std::size_t cnt = static_cast<std::size_t>(std::min<int64_t>(V::W, n - j));
    R x = V::load_n(p + j, cnt, T(0)), y;
    switch (act) {
      case Act::relu: y = V::max(V::set1(T(0)), x); break;  // max(0, nan) = nan
      case Act::gelu: y = V::mul(x, vm::normal_cdf<V>(x, vm::gauss<V>(x))); break;
      case Act::tanh: y = vm::tanh<V>(x); break;
      case Act::sigmoid: y = vm::sigmoid<V>(x); break;
      default: y = x;
    }
    V::store_n(p + j, y, cnt);
  }
}

template <class T>
inline void act_row(Simd level, Act act, T* p, int64_t n) {
  if (act == Act::none || n <= 0) return;
  if constexpr (std::is_same_v<T, double>) {
    (void)level;
    act_span<vm::ScalarD>(act, p, n);
  } else {
    switch (level) {
#if defined(__AVX512F__)
      case Simd::avx512: act_span<vm::Avx512F>(act, p, n); return;
#endif
#if defined(__AVX2__) && defined(__FMA__)
      case Simd::avx2: act_span<vm::Avx2F>(act, p, n); return;
#endif
      default: act_span<vm::ScalarF>(act, p, n); return;
    }
  }
}

// -- register traits of the microkernels ---------------------------------------
// KT<T, level>: R (a register of W lanes), MR (rows of the micro-tile), NP (B
// panels per micro-tile), default cache blocks, and the few operations the
// kernels need. load_n/store_n touch only the first n lanes' memory.

template <class T, Simd S>
struct KT;

template <class T>
struct KT<T, Simd::scalar> {
  static constexpr int W = 16 / static_cast<int>(sizeof(T)), MR = 4, NP = 2;
  static constexpr int KC = 256, MC = 64, NC = 1024;
  struct R {
    T v[W];
  };
  static R zero() {
    R r;
    for (int l = 0; l < W; ++l) r.v[l] = T(0);
    return r;
  }
  static R load(const T* p) {
    R r;
    for (int l = 0; l < W; ++l) r.v[l] = p[l];
    return r;
  }
  static R load_n(const T* p, int n) {
    R r = zero();
    for (int l = 0; l < W && l < n; ++l) r.v[l] = p[l];
    return r;
  }
  static void store_n(T* p, const R& x, int n) {
    for (int l = 0; l < W && l < n; ++l) p[l] = x.v[l];
  }
  static R bcast(const T* p) {
    R r;
    for (int l = 0; l < W; ++l) r.v[l] = *p;
    return r;
  }
  static R set1(T x) { return bcast(&x); }
  static R fma(const R& a, const R& b, R c) {
    for (int l = 0; l < W; ++l) c.v[l] += a.v[l] * b.v[l];
    return c;
  }
  static R add(R a, const R& b) {
    for (int l = 0; l < W; ++l) a.v[l] += b.v[l];
    return a;
  }
  static T hsum(const R& a) {
    T s = T(0);
    for (int l = 0; l < W; ++l) s += a.v[l];
    return s;
  }
};

#if defined(__AVX2__) && defined(__FMA__)
template <>
struct KT<float, Simd::avx2> {
  using R = __m256;
  static constexpr int W = 8, MR = 6, NP = 2;
  static constexpr int KC = 256, MC = 144, NC = 4096;
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R load_n(const float* p, int n) { return n >= W ? load(p) : _mm256_maskload_ps(p, mask(n)); }
  static void store_n(float* p, R x, int n) {
    if (n >= W) _mm256_storeu_ps(p, x);
    else _mm256_maskstore_ps(p, mask(n), x);
  }
  // set1 of a plain load, not _mm256_broadcast_ss: GCC treats that builtin as an opaque read
  // that may alias a tile's accumulator array, and then stores every accumulator to the stack
  // after each FMA (the smallk tiles ran store-bound at half speed); both compile to vbroadcastss.
  static R bcast(const float* p) { return _mm256_set1_ps(*p); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static float hsum(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
};

template <>
struct KT<double, Simd::avx2> {
  using R = __m256d;
  static constexpr int W = 4, MR = 6, NP = 2;
  static constexpr int KC = 256, MC = 96, NC = 2048;
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R load_n(const double* p, int n) { return n >= W ? load(p) : _mm256_maskload_pd(p, mask(n)); }
  static void store_n(double* p, R x, int n) {
    if (n >= W) _mm256_storeu_pd(p, x);
    else _mm256_maskstore_pd(p, mask(n), x);
  }
  static R bcast(const double* p) { return _mm256_set1_pd(*p); }  // (see the float one)
  static R set1(double x) { return _mm256_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static double hsum(R a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};
#endif

#if defined(__AVX512F__)
template <>
struct KT<float, Simd::avx512> {
  using R = __m512;
  static constexpr int W = 16, MR = 14, NP = 2;
  static constexpr int KC = 256, MC = 168, NC = 4096;
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R load_n(const float* p, int n) { return n >= W ? load(p) : _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_n(float* p, R x, int n) {
    if (n >= W) _mm512_storeu_ps(p, x);
    else _mm512_mask_storeu_ps(p, mask(n), x);
  }
  static R bcast(const float* p) { return _mm512_set1_ps(*p); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static float hsum(R a) { return _mm512_reduce_add_ps(a); }
};

template <>
struct KT<double, Simd::avx512> {
  using R = __m512d;
  static constexpr int W = 8, MR = 14, NP = 2;
  static constexpr int KC = 256, MC = 112, NC = 2048;
  static __mmask8 mask(int n) { return static_cast<__mmask8>((1u << n) - 1u); }
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R load_n(const double* p, int n) { return n >= W ? load(p) : _mm512_maskz_loadu_pd(mask(n), p); }
  static void store_n(double* p, R x, int n) {
    if (n >= W) _mm512_storeu_pd(p, x);
    else _mm512_mask_storeu_pd(p, mask(n), x);
  }
  static R bcast(const double* p) { return _mm512_set1_pd(*p); }
  static R set1(double x) { return _mm512_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static double hsum(R a) { return _mm512_reduce_add_pd(a); }
};
#endif

// Cache blocks at level S, from the caches (measured on Zen 4 and Zen 5, dev/gemm/README.md):
// - KC: the B micro-panel pair (KC x NR) fills at most the L1d (it is streamed through L1 while
//   each MR x KC A micro-panel and the C tile pass), within 128-256: on Zen 4 and Zen 5 KC = 384
//   gained nothing at AVX-512 and lost 3-6% at AVX2; 128 lost 5-10% (the C tile is loaded and
//   stored once per KC block).
// - MC: the packed A block (MC x KC) in a quarter of the L2 (room for B's panels and C).
// - NC: the packed B block (KC x NC) in a quarter of one core's share of the L3.
// Unknown caches (0) keep the level's constants. A positive tuning() field overrides each.
template <class T, Simd S>
inline Blocks blocks_from(const CacheSizes& c) {
  using Kt = KT<T, S>;
  constexpr int64_t MR = Kt::MR, NR = Kt::W * Kt::NP, sz = sizeof(T);
  Blocks b{Kt::KC, Kt::MC, Kt::NC};
  if (c.l1d > 0) b.kc = std::clamp<int64_t>(c.l1d / (NR * sz) / 32 * 32, 128, 256);
  if (c.l2 > 0) b.mc = std::clamp<int64_t>(c.l2 / 4 / (b.kc * sz) / MR * MR, 4 * MR, 48 * MR);
  if (c.l3 > 0) b.nc = std::clamp<int64_t>(c.l3 / 4 / (b.kc * sz) / NR * NR, 16 * NR, 8192);
  return b;
}

template <class T, Simd S>
inline Blocks blocks() {
  Blocks b = blocks_from<T, S>(cache_sizes());
  const Tuning& tu = tuning();
  if (tu.kc > 0) b.kc = tu.kc;
  if (tu.mc > 0) b.mc = tu.mc;
  if (tu.nc > 0) b.nc = tu.nc;
  return b;
}

// The epilogue of the last KC block, with the tile's position in C.
template <class T>
struct TileEp {
  const Epilogue<T>* ep;
  Simd level;
};

// Writes a micro-tile's accumulators to C[0:m, 0:n]: adds the C there (load_c),
// then on the last K block the epilogue (bias, pre-activation store, activation).
template <class T, Simd S, int NP, int ROWS>
__attribute__((always_inline)) inline void store_tile(typename KT<T, S>::R (&acc)[ROWS][NP], T* c,
                                                       int64_t ldc, int m, int n, bool load_c,
                                                       const Epilogue<T>* last, int64_t row0, int64_t col0) {
  using K = KT<T, S>;
  using R = typename K::R;
  constexpr int W = K::W;
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    if (i >= m) break;
    T* ci = c + i * ldc;
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) {
      const int nq = std::min(n - q * W, W);
      if (nq <= 0) break;
      R z = acc[i][q];
      if (load_c) z = K::add(z, K::load_n(ci + q * W, nq));
      if (last) {
        if (last->bias)
          z = K::add(z, last->bias_per_row ? K::set1(last->bias[row0 + i])
                                           : K::load_n(last->bias + col0 + q * W, nq));
        if (last->preact) K::store_n(last->preact + (row0 + i) * ldc + col0 + q * W, z, nq);
      }
      K::store_n(ci + q * W, z, nq);
    }
  }
  if (last && last->act != Act::none)
    for (int i = 0; i < m; ++i) act_row<T>(S, last->act, c + i * ldc, n);
}

// One micro-tile: C[0:m, 0:n] (+)= A_panel (MR x kc) @ B_panels (kc x NP*W).
// a: packed A, a[k*MR + i]; b: NP consecutive B panels (panel q at b + q*kc*W).
// load_c: add the C already there (a later KC block, or accumulate).
// last: apply the epilogue (bias, preact, activation) after the sum.
// ROWS: the panel's first ROWS rows only (m <= ROWS; an edge tile, see with_rows).
template <class T, Simd S, int NP, int ROWS = KT<T, S>::MR>
inline void micro_tile(int64_t kc, const T* __restrict a, const T* __restrict b, T* c, int64_t ldc,
                       int m, int n, bool load_c, const Epilogue<T>* last, int64_t row0,
                       int64_t col0) {
  using K = KT<T, S>;
  using R = typename K::R;
  constexpr int MR = K::MR, W = K::W;
  R acc[ROWS][NP];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) acc[i][q] = K::zero();
  const T* b1 = b + (NP > 1 ? kc * W : 0);
  if (load_c)  // the C tile is read after the k loop: start its (L2/L3) lines now
    for (int i = 0; i < m; ++i) {
      __builtin_prefetch(c + i * ldc, 1, 3);
      __builtin_prefetch(c + i * ldc + n - 1, 1, 3);
    }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const R b0v = K::load(b + k * W);
    const R b1v = NP > 1 ? K::load(b1 + k * W) : b0v;
    const T* ak = a + k * MR;
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const R ai = K::bcast(ak + i);
      acc[i][0] = K::fma(ai, b0v, acc[i][0]);
      if constexpr (NP > 1) acc[i][1] = K::fma(ai, b1v, acc[i][1]);
    }
  }
  store_tile<T, S, NP, ROWS>(acc, c, ldc, m, n, load_c, last, row0, col0);
}

// Where the micro-tile of the unpacked-B path reads A: packed MR-row panels
// (PanelA, element (i, k) at p[k*MR + i]) or MR rows of A in place (RowsA, row
// pointers clamped to the last row past M; those rows are computed, not stored).
template <class T, int MR>
struct PanelA {
  const T* p;
  const T* at(int64_t k, int i) const { return p + k * MR + i; }
};
template <class T, int MR>
struct RowsA {
  const T* rows[MR];
  int64_t cs;
  const T* at(int64_t k, int i) const { return rows[i] + k * cs; }
};

// The micro-tile with B read in place: row k of the tile at b + k*ldb, columns
// contiguous (a row-major B, never packed). FULL: all NP*W columns exist
// (plain loads); else the first n are loaded under a mask.
template <class T, Simd S, int NP, bool FULL, int ROWS, class AOp>
inline void micro_tile_rows(int64_t kc, const AOp& a, const T* __restrict b, int64_t ldb, T* c,
                            int64_t ldc, int m, int n, bool load_c, const Epilogue<T>* last,
                            int64_t row0, int64_t col0) {
  using K = KT<T, S>;
  using R = typename K::R;
  constexpr int W = K::W;
  R acc[ROWS][NP];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) acc[i][q] = K::zero();
  const int n0 = FULL ? W : std::min(n, W), n1 = FULL ? W : n - W;
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const T* bk = b + k * ldb;
    if (k + 8 < kc) __builtin_prefetch(bk + 8 * ldb);  // B streams in from L2/L3/memory
    const R b0v = FULL ? K::load(bk) : K::load_n(bk, n0);
    R b1v = b0v;
    if constexpr (NP > 1) b1v = FULL ? K::load(bk + W) : K::load_n(bk + W, n1);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const R ai = K::bcast(a.at(k, i));
      acc[i][0] = K::fma(ai, b0v, acc[i][0]);
      if constexpr (NP > 1) acc[i][1] = K::fma(ai, b1v, acc[i][1]);
    }
  }
  store_tile<T, S, NP, ROWS>(acc, c, ldc, m, n, load_c, last, row0, col0);
}

// f(std::integral_constant<int, ROWS>) for the micro-tile rows an edge tile of m rows computes:
// the fewest of MR and two shorter shapes (AVX2's 6 rows: 2, 4; AVX-512's 14: 4, 8) that cover m.
// The batch sizes of training (32, 64, 128, 256) all leave an edge tile (2 or 4 rows of 6; 4, 8
// or 2 of 14), whose padded rows were FMAs thrown away: 32 rows cost 36 at AVX2 and 42 at AVX-512.
template <int MR, class F>
__attribute__((always_inline)) inline void with_rows(int m, F&& f) {
  constexpr int R1 = MR >= 12 ? 4 : 2, R2 = MR >= 12 ? 8 : 4;
  if constexpr (R2 < MR) {
    if (m <= R1) return f(std::integral_constant<int, R1>{});
    if (m <= R2) return f(std::integral_constant<int, R2>{});
  }
  f(std::integral_constant<int, MR>{});
}

// The edge tiles' shorter shapes, compiled on their own: inlined into the drivers' loops beside
// the full shape, GCC 12 spilled two of AVX2's 12 accumulators of the full one (1024^3 at half
// speed), and the full shape as a call of its own cost 3-5% on short K blocks (linear 64x784).
template <class T, Simd S, int NP, bool FULL, int ROWS, class AOp>
__attribute__((noinline)) void micro_tile_rows_edge(int64_t kc, const AOp& a, const T* b, int64_t ldb, T* c,
                                                    int64_t ldc, int m, int n, bool load_c,
                                                    const Epilogue<T>* last, int64_t row0, int64_t col0) {
  micro_tile_rows<T, S, NP, FULL, ROWS>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row0, col0);
}
template <class T, Simd S, int NP, int ROWS>
__attribute__((noinline)) void micro_tile_edge(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int m, int n,
                                               bool load_c, const Epilogue<T>* last, int64_t row0, int64_t col0) {
  micro_tile<T, S, NP, ROWS>(kc, a, b, c, ldc, m, n, load_c, last, row0, col0);
}

// C tile at (row, col) of the unpacked-B path, with the register shape its size needs.
template <class T, Simd S, class AOp>
inline void tile_rows(int64_t kc, const AOp& a, const T* b, int64_t ldb, T* c, int64_t ldc, int m,
                      int n, bool load_c, const Epilogue<T>* last, int64_t row, int64_t col) {
  constexpr int W = KT<T, S>::W, NP = KT<T, S>::NP, NR = W * NP, MR = KT<T, S>::MR;
  if (m == MR) {
    if (n == NR)
      micro_tile_rows<T, S, NP, true, MR>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row, col);
    else if (n > W)
      micro_tile_rows<T, S, NP, false, MR>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row, col);
    else
      micro_tile_rows<T, S, 1, false, MR>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row, col);
    return;
  }
  with_rows<MR>(m, [&](auto rows) {
    constexpr int RW = decltype(rows)::value;
    if (n == NR)
      micro_tile_rows_edge<T, S, NP, true, RW>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row, col);
    else if (n > W)
      micro_tile_rows_edge<T, S, NP, false, RW>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row, col);
    else
      micro_tile_rows_edge<T, S, 1, false, RW>(kc, a, b, ldb, c, ldc, m, n, load_c, last, row, col);
  });
}

// The packed micro-tile at (row, col) with the register shape its size needs.
template <class T, Simd S>
inline void tile_packed(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int m, int n, bool load_c,
                        const Epilogue<T>* last, int64_t row, int64_t col) {
  constexpr int W = KT<T, S>::W, NP = KT<T, S>::NP, MR = KT<T, S>::MR;
  if (m == MR) {
    if (n > W)
      micro_tile<T, S, NP>(kc, a, b, c, ldc, m, n, load_c, last, row, col);
    else
      micro_tile<T, S, 1>(kc, a, b, c, ldc, m, n, load_c, last, row, col);
    return;
  }
  with_rows<MR>(m, [&](auto rows) {
    constexpr int RW = decltype(rows)::value;
    if (n > W)
      micro_tile_edge<T, S, NP, RW>(kc, a, b, c, ldc, m, n, load_c, last, row, col);
    else
      micro_tile_edge<T, S, 1, RW>(kc, a, b, c, ldc, m, n, load_c, last, row, col);
  });
}

#if defined(__AVX512F__)
// o[c] lane j = r[j] lane c (in registers; transpose16x16 below and pack_a's rows use it).
inline void transpose16x16_regs(const __m512 (&r)[16], __m512 (&o)[16]) {
  __m512 t[16], u[16], v[16];
  for (int j = 0; j < 16; j += 2) {  // per 128-bit lane: (r_j[c], r_j+1[c]) pairs
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g+q], lane l: rows g..g+3 of column 4l+q
    const __m512d a0 = _mm512_castps_pd(t[g]), a1 = _mm512_castps_pd(t[g + 1]);
    const __m512d b0 = _mm512_castps_pd(t[g + 2]), b1 = _mm512_castps_pd(t[g + 3]);
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
  }
  for (int q = 0; q < 4; ++q) {  // lanes of row groups 0,1 and 2,3 side by side
    v[q] = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x88);
    v[4 + q] = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xdd);
    v[8 + q] = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x88);
    v[12 + q] = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xdd);
  }
  for (int q = 0; q < 4; ++q) {  // column c of all 16 rows
    o[q] = _mm512_shuffle_f32x4(v[q], v[8 + q], 0x88);
    o[8 + q] = _mm512_shuffle_f32x4(v[q], v[8 + q], 0xdd);
    o[4 + q] = _mm512_shuffle_f32x4(v[4 + q], v[12 + q], 0x88);
    o[12 + q] = _mm512_shuffle_f32x4(v[4 + q], v[12 + q], 0xdd);
  }
}

// dst[c*16 + j] = src[j*ld + c] for a 16x16 float block: 16 row loads, three
// rounds of shuffles (ps pairs, pd pairs, then 128-bit lanes twice), 16 row
// stores, instead of 256 scalar moves with a 64-byte store stride.
inline void transpose16x16(const float* src, int64_t ld, float* dst) {
  __m512 r[16], o[16];
  for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src + j * ld);
  transpose16x16_regs(r, o);
  for (int c = 0; c < 16; ++c) _mm512_storeu_ps(dst + c * 16, o[c]);
}
#endif

#if defined(__AVX2__)
// o[c] lane j = r[j] lane c (in registers; transpose8x8 below and pack_a's rows use it).
inline void transpose8x8_regs(const __m256 (&r)[8], __m256 (&o)[8]) {
  __m256 t[8], u[8];
  for (int j = 0; j < 8; j += 2) {  // per 128-bit half: (r_j[c], r_j+1[c]) pairs
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int g = 0; g < 8; g += 4) {  // u[g+q], half h: rows g..g+3 of column 4h+q
    u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
    u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xee);
    u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xee);
  }
  for (int q = 0; q < 4; ++q) {  // column q: rows 0-3 then 4-7; column 4+q from the high halves
    o[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
    o[4 + q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
  }
}

// dst[c*ldd + j] = src[j*ld + c] (+ add[c] when given) for an 8x8 float block (AVX2's panel
// width; conv's smallk emit with ldd = the output plane and add = the bias): 8 row loads, unpack
// pairs, shuffle quads, swap 128-bit halves, 8 row stores.
inline void transpose8x8(const float* src, int64_t ld, float* dst, int64_t ldd = 8, const float* add = nullptr) {
  __m256 r[8], o[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * ld);
  transpose8x8_regs(r, o);
  for (int c = 0; c < 8; ++c)
    _mm256_storeu_ps(dst + c * ldd, add ? _mm256_add_ps(o[c], _mm256_set1_ps(add[c])) : o[c]);
}

// pack_a's full row-major panels of float: MR rows, W columns at a time through a register
// transpose (the missing rows zero), column c's MR values stored at d + c*MR. Returns the
// columns done (a multiple of W; pack_a does the rest). AVX2 (MR 6): full-width stores in
// column order, each overwriting the 2 spill lanes of the one before, the last one masked.
template <int MR>
inline int64_t pack_a_rows_simd(const float* src, int64_t lda, int64_t kc, float* d) {
  int64_t k = 0;
#if defined(__AVX512F__)
  if constexpr (MR > 8 && MR <= 16) {
    const __mmask16 m = static_cast<__mmask16>((1u << MR) - 1);
    for (; k + 16 <= kc; k += 16) {
      __m512 r[16], o[16];
      for (int i = 0; i < 16; ++i) r[i] = i < MR ? _mm512_loadu_ps(src + i * lda + k) : _mm512_setzero_ps();
      transpose16x16_regs(r, o);
      for (int c = 0; c < 16; ++c) _mm512_mask_storeu_ps(d + (k + c) * MR, m, o[c]);
    }
  }
#endif
  if constexpr (MR <= 8) {
    const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(MR), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8], o[8];
      for (int i = 0; i < 8; ++i) r[i] = i < MR ? _mm256_loadu_ps(src + i * lda + k) : _mm256_setzero_ps();
      transpose8x8_regs(r, o);
      for (int c = 0; c < 7; ++c) _mm256_storeu_ps(d + (k + c) * MR, o[c]);
      _mm256_maskstore_ps(d + (k + 7) * MR, last, o[7]);
    }
  }
  return k;
}
#endif

// Packs rows [i0, i0+mc) x cols [k0, k0+kc) of A into MR-row micro-panels
// (panel r at dst + r*MR*kc, element (i, k) at + k*MR + i), zero rows past mc.
template <class T, int MR>
inline void pack_a(View<T> A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* dst) {
  for (int64_t r = 0; r < mc; r += MR) {
    T* d = dst + r * kc;
    const int mr = static_cast<int>(std::min<int64_t>(MR, mc - r));
    const T* src = A.p + (i0 + r) * A.rs + k0 * A.cs;
    if (A.rs == 1 && mr == MR) {  // A^T: the MR values of a column are contiguous
      for (int64_t k = 0; k < kc; ++k) {
        const T* s = src + k * A.cs;
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) d[k * MR + i] = s[i];
      }
    } else {
      int64_t k0 = 0;  // row-major full panels of float: register transposes (AVX2 up)
#if defined(__AVX2__)
      if constexpr (std::is_same_v<T, float>)
        if (A.cs == 1 && mr == MR) k0 = pack_a_rows_simd<MR>(src, A.rs, kc, d);
#endif
      for (int i = 0; i < mr; ++i) {
        const T* s = src + i * A.rs;
        if (A.cs == 1)
          for (int64_t k = k0; k < kc; ++k) d[k * MR + i] = s[k];
        else
          for (int64_t k = 0; k < kc; ++k) d[k * MR + i] = s[k * A.cs];
      }
      for (int i = mr; i < MR; ++i)
        for (int64_t k = 0; k < kc; ++k) d[k * MR + i] = T(0);
    }
  }
}

// Packs B[k0:k0+kc, n0:n0+nc] of a strided view into panels of width nr.
template <class T>
inline void pack_b_at(int nr, View<T> B, int64_t k0, int64_t kc, int64_t n0, int64_t nc, T* dst) {
  for (int64_t p = 0; p * nr < nc; ++p) {
    const int w = static_cast<int>(std::min<int64_t>(nr, nc - p * nr));
    T* d = dst + p * kc * nr;
    const T* src = B.p + k0 * B.rs + (n0 + p * nr) * B.cs;
    if (B.cs == 1) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* s = src + k * B.rs;
        for (int j = 0; j < w; ++j) d[k * nr + j] = s[j];
        for (int j = w; j < nr; ++j) d[k * nr + j] = T(0);
      }
    } else {  // a transposed B (e.g. a linear weight): in blocks of 16 rows of the panel,
              // so the w source lines and the 16 destination rows all stay in L1
      int64_t kb0 = 0;
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        if (nr == 16 && w == 16 && B.rs == 1)  // full 16x16 blocks: transposed in registers
          for (; kb0 + 16 <= kc; kb0 += 16) transpose16x16(src + kb0, B.cs, d + kb0 * 16);
      }
#endif
#if defined(__AVX2__)
      if constexpr (std::is_same_v<T, float>) {
        if (nr == 8 && w == 8 && B.rs == 1)  // AVX2 panels: full 8x8 blocks in registers
          for (; kb0 + 8 <= kc; kb0 += 8) transpose8x8(src + kb0, B.cs, d + kb0 * 8);
      }
#endif
      for (int64_t kb = kb0; kb < kc; kb += 16) {
        const int64_t ke = std::min<int64_t>(kc, kb + 16);
        for (int j = 0; j < w; ++j) {
          const T* s = src + j * B.cs;
          if (B.rs == 1)
            for (int64_t k = kb; k < ke; ++k) d[k * nr + j] = s[k];
          else
            for (int64_t k = kb; k < ke; ++k) d[k * nr + j] = s[k * B.rs];
        }
        for (int j = w; j < nr; ++j)
          for (int64_t k = kb; k < ke; ++k) d[k * nr + j] = T(0);
      }
    }
  }
}

// A 64-byte aligned scratch buffer that grows and is kept (one per thread).
struct Scratch {
  void* p = nullptr;
  std::size_t cap = 0;
  ~Scratch() { std::free(p); }
  void release() {
    std::free(p);
    p = nullptr;
    cap = 0;
  }
  void* get(std::size_t bytes) {
    if (bytes > cap) {
      release();
      const std::size_t sz = (bytes + 4095) / 4096 * 4096;
      p = std::aligned_alloc(4096, sz);
      if (!p) throw std::bad_alloc();
      cap = sz;
    }
    return p;
  }
};

inline Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

// C = epilogue(0) (K == 0): zeros plus bias, activated; accumulate leaves C.
template <class T>
void empty_k(int64_t M, int64_t N, T* C, int64_t ldc, const Epilogue<T>& ep, Simd level) {
  if (ep.accumulate) return;
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) {
      const T z = ep.bias ? (ep.bias_per_row ? ep.bias[i] : ep.bias[j]) : T(0);
      if (ep.preact) ep.preact[i * ldc + j] = z;
      c[j] = z;
    }
    act_row<T>(level, ep.act, c, N);
  }
}

// Whether the unpacked-B path beats packing B (measured: dev/gemm/README.md).
template <class T>
inline bool unpacked_pays(Simd level, int64_t M, int64_t K, View<T> B) {
  // few rows, or at AVX-512 a shallow product (conv's W^T @ dy: 2304 x 256 x 392 unpacked 329
  // vs packed 225 GFLOP/s); not deep and tall ones (1024^3: packed 291 vs 274); the packed A
  // stays <= 8 MB. At AVX2 the shallow tall products run better packed (2 threads, Zen 4:
  // 2304 x 256 x 392 171 vs 138, 576 x 512 x 196 188 vs 171): each thread's column tiles
  // re-read all of A's 6-row panels, twice as many as AVX-512's 14-row ones. A transposed B
  // (linear's weight) with few rows too: each thread transposes its own slices as it goes, no
  // packing phase and barrier per K block (2 threads, 16-512 rows: 1.0-1.3x packed at AVX2,
  // 0.93-1.22x at AVX-512; linear 32x4096->4096 AVX2 84 -> 102 GFLOP/s).
  const int64_t lim = tuning().unpacked_max_m;
  const bool rows = B.cs == 1 && (M <= lim || (level == Simd::avx512 && K <= lim));
  const bool cols = B.rs == 1 && M <= lim;
  return (rows || cols) && M * K <= (int64_t(1) << 21);
}

template <class T>
inline int resolve_threads(int nthreads, int64_t M, int64_t N, int64_t K) {
  int nt = nthreads > 0 ? nthreads : num_threads();
  if (nthreads == 0 && static_cast<double>(M) * N * K < 96.0 * 96 * 96) nt = 1;  // fork costs more
  return std::max(nt, 1);
}

// The packed Goto/BLIS driver at level S.
template <class T, Simd S, class PackB>
void packed(int64_t M, int64_t N, int64_t K, View<T> A, PackB& pack_b, T* C, int64_t ldc,
            const Epilogue<T>& ep, int nt) {
  using Kt = KT<T, S>;
  constexpr int MR = Kt::MR, W = Kt::W, NP = Kt::NP, NR = W * NP;
  const Blocks bl = blocks<T, S>();
  const int64_t KC = bl.kc;
  const int64_t MC = round_up(bl.mc, MR);
  const int64_t NC = round_up(bl.nc, NR);
  const int64_t kc_max = equal_blocks(K, KC);
  const int64_t nc_max = std::min(round_up(N, NR), NC);
  // blocks of M: a multiple of the thread count when there are enough rows
  int64_t mblocks = ceil_div(M, MC);
  const bool one_block = mblocks == 1;
  if (nt > 1 && M >= nt * MR) mblocks = round_up(mblocks, nt);
  int64_t mc_max = std::min(round_up(ceil_div(M, mblocks), MR), round_up(M, MR));
  mblocks = ceil_div(M, mc_max);
  bool split_n = nt > 1 && mblocks < nt;  // too few rows: threads share the columns
  if (nt > 1 && one_block && !split_n) {
    // rows that fit one block: split the columns instead when that leaves each thread fewer
    // micro-tiles (64 rows, 2 threads, MR 6: 2 x 36 rows run 6 row tiles each, where all 64
    // rows run 11 on half the columns; the threads then both pack the same small A block)
    const int64_t tn = ceil_div(nc_max, NR);
    const int64_t by_rows = ceil_div(mblocks, nt) * ceil_div(mc_max, MR) * tn;
    const int64_t by_cols = ceil_div(M, MR) * ceil_div(tn, nt);
    if (by_cols * 20 < by_rows * 19) {
      mc_max = round_up(M, MR);
      mblocks = 1;
      split_n = true;
    }
  }
  const std::size_t b_elems = static_cast<std::size_t>(kc_max * nc_max);
  const std::size_t a_elems = static_cast<std::size_t>(round_up(mc_max * kc_max, 64 / sizeof(T)));
  // Two B blocks: the threads pack block s+1 into one while a slower thread
  // may still compute on block s in the other, so one barrier per block suffices
  // (each C tile belongs to one thread for every KC block: no race on C).
  const std::size_t b_round = static_cast<std::size_t>(round_up(b_elems, 64 / sizeof(T)));
  const int nbuf = nt > 1 ? 2 : 1;
  T* base = static_cast<T*>(scratch().get((b_round * nbuf + a_elems * nt) * sizeof(T) + 64));
  T* abufs = base + b_round * nbuf;
  // Items (row block x column part) are taken dynamically within each KC block: a thread whose
  // core is shared for a while (a neighbour library's spinning pool, a busy VM) leaves its items
  // to the others instead of holding them at the next barrier. One counter per B buffer: the
  // barrier after packing block s+1 is passed only when every item of block s is done, so
  // thread 0 rewinds block s's counter there, before any thread can reach block s+2's items.
  std::atomic<int64_t> next_item[2] = {0, 0};

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    T* abuf = abufs + a_elems * tid;
    int64_t step = 0;
    for (int64_t jc = 0; jc < N; jc += NC) {
      const int64_t nc = std::min(NC, N - jc);
      const int64_t panels = ceil_div(nc, W);
      const int64_t tiles_n = ceil_div(nc, NR);
      for (int64_t pc = 0; pc < K; pc += kc_max) {
        const int64_t kc = std::min(kc_max, K - pc);
        const bool first = pc == 0, last = pc + kc == K;
        T* bbuf = base + b_round * (step++ % nbuf);
        {  // B block: threads pack disjoint, pair-aligned ranges of panels
          const int64_t pairs = ceil_div(panels, NP);
          const int64_t q0 = pairs * tid / nth * NP, q1 = std::min(panels, pairs * (tid + 1) / nth * NP);
          if (q1 > q0) pack_b(pc, kc, jc + q0 * W, std::min(nc, q1 * W) - q0 * W, bbuf + q0 * kc * W);
        }
#pragma omp barrier
        const int64_t cur = (step - 1) % 2;
        if (tid == 0 && step >= 2) next_item[step % 2].store(0, std::memory_order_relaxed);  // block step-2's
        const int64_t jparts = split_n ? nth : 1, items = mblocks * jparts;
        for (int64_t item = nth > 1 ? next_item[cur].fetch_add(1, std::memory_order_relaxed) : 0; item < items;
             item = nth > 1 ? next_item[cur].fetch_add(1, std::memory_order_relaxed) : item + 1) {
          const int64_t ib = item / jparts, jp = item % jparts;
          const int64_t ic = ib * mc_max, mc = std::min(mc_max, M - ic);
          const int64_t t0 = tiles_n * jp / jparts, t1 = tiles_n * (jp + 1) / jparts;
          if (t1 <= t0) continue;
          pack_a<T, MR>(A, ic, mc, pc, kc, abuf);
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t j0 = t * NR;
            const int n = static_cast<int>(std::min<int64_t>(NR, nc - j0));
            const T* bp = bbuf + (j0 / W) * kc * W;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int m = static_cast<int>(std::min<int64_t>(MR, mc - ir));
              const int64_t row = ic + ir, col = jc + j0;
              T* c = C + row * ldc + col;
              const bool load_c = !first || ep.accumulate;
              const Epilogue<T>* l = last ? &ep : nullptr;
              tile_packed<T, S>(kc, abuf + ir * kc, bp, c, ldc, m, n, load_c, l, row, col);
            }
          }
        }
        if (nbuf == 1) {
#pragma omp barrier
        }
      }
    }
  }
}

// Unpacked-B path for few rows of A and a row-major B (B.cs == 1) or a transposed one
// (B.rs == 1): B is never packed as a whole: each micro-tile streams its kc x NR slice of B
// straight from where it lies (or from the thread's copy of it, below), so the reading of B
// overlaps the FMAs instead of preceding them in a packing pass. A is packed once into
// MR-row panels (threads pack disjoint panels) when its rows are re-read for more than two
// column tiles or B is transposed; otherwise the tiles broadcast from A's rows in place
// (tiny products: no pass at all).
// Threads take contiguous ranges of NR-wide column tiles and run every row tile
// on each (the slice of B is reused from L1/L2 across row tiles); with fewer
// column tiles than threads they share the (row, column) tiles. K is blocked by
// KC; below AVX-512 each thread copies its kc x NR slice of B into a contiguous buffer of
// its own before the row tiles read it (when there are two or more; a transposed B is
// always copied, into the packed kernel's panels, at every level): read in place, the
// slice's rows lie ldb apart, and a power-of-two ldb maps all of them to a few L1
// sets, so every row tile fetched B again from L2 (AVX2, 128 x 1024 x 4096: 38
// GFLOP/s in place against 83 packed; dev/gemm/README.md, session 9).
// a_in_place: A never packed (row-major B; gemm_rows_a).
template <class T, Simd S>
void unpacked(int64_t M, int64_t N, int64_t K, View<T> A, View<T> B, T* C, int64_t ldc,
              const Epilogue<T>& ep, int nt, bool a_in_place = false, const PackedB<T>* pre = nullptr) {
  using Kt = KT<T, S>;
  constexpr int MR = Kt::MR, W = Kt::W, NR = W * Kt::NP;
  const int64_t KC = pre ? pre->kc : equal_blocks(K, blocks<T, S>().kc);
  const int64_t tiles_m = ceil_div(M, MR), tiles_n = ceil_div(N, NR);
  // a transposed B (columns contiguous: linear's weight) is always copied, into the packed
  // kernel's panels (register transposes), and then A must be packed too
  // (pre: B packed once already, gemm_prepacked; A is packed and the tiles read B's panels)
  const bool trans = !pre && B.cs != 1;
  const bool pack = (tiles_n > 2 || trans || pre) && !a_in_place;
  // A row-major slice is copied below AVX-512 when its rows conflict in the caches: rows
  // >= 4 KiB apart (all in one L1 set, and few L2 sets) at any M, >= 2 KiB apart from 16 row
  // tiles on. The copy waits for B to arrive (the first row tile reading in place overlaps
  // that with its FMAs), which costs more than it saves with few row tiles (AVX2, 2 threads,
  // B cold: 64x784x256 161 -> 156, 64x784x500 174 -> 145 copied; 256x4608x512 130 -> 179,
  // 128x784x512 151 -> 167). AVX-512 reads in place: its 28 FMAs per row of B hide the L2
  // fetch (copying measured 0.9-1.1x there, within the noise); AVX2's 12 do not.
  const int64_t ldb_bytes = B.rs * static_cast<int64_t>(sizeof(T));
  const bool copy_b = trans || (!pre && S != Simd::avx512 && tiles_m > 1 &&
                                (ldb_bytes >= 4096 || (ldb_bytes >= 2048 && tiles_m >= 16)));
  if (nt > tiles_m * tiles_n) nt = static_cast<int>(std::max<int64_t>(tiles_m * tiles_n, 1));
  // one allocation before the parallel region (nothing may throw inside it): packed A, then
  // one kc x NR slice buffer per thread
  const std::size_t a_elems = pack ? static_cast<std::size_t>(round_up(tiles_m * MR * K, 64 / sizeof(T))) : 0;
  const std::size_t s_elems = copy_b ? static_cast<std::size_t>(round_up(std::min(K, KC) * NR, 64 / sizeof(T))) : 0;
  T* base = (pack || copy_b) ? static_cast<T*>(scratch().get((a_elems + s_elems * nt) * sizeof(T) + 64)) : nullptr;
  T* abuf = pack ? base : nullptr;
  auto body = [&](const int tid, const int nth) {
    T* sbuf = copy_b ? base + a_elems + s_elems * tid : nullptr;
    if (pack) {
      for (int64_t r = tid; r < tiles_m; r += nth)
        pack_a<T, MR>(A, r * MR, std::min<int64_t>(MR, M - r * MR), 0, K, abuf + r * MR * K);
      if (nth > 1) {
#pragma omp barrier
      }
    }
    const bool by_cols = tiles_n >= nth;
    const int64_t t0 = by_cols ? tiles_n * tid / nth : 0, t1 = by_cols ? tiles_n * (tid + 1) / nth : tiles_n;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const Epilogue<T>* l = pc + kc == K ? &ep : nullptr;
      const bool load_c = pc > 0 || ep.accumulate;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t col = t * NR;
        const int n = static_cast<int>(std::min<int64_t>(NR, N - col));
        const T* b = B.p + pc * B.rs + col;  // (row-major B; a transposed one goes to sbuf)
        int64_t ldb = B.rs;
        if (pre) {
          b = pre->p + pc * round_up(N, W) + (col / W) * kc * W;
        } else if (trans) {
          pack_b_at(W, B, pc, kc, col, n, sbuf);
        } else if (copy_b) {
          if (n == NR) {
            for (int64_t k = 0; k < kc; ++k) {
              if (k + 8 < kc) __builtin_prefetch(b + (k + 8) * ldb);
              std::memcpy(sbuf + k * NR, b + k * ldb, NR * sizeof(T));
            }
          } else {
            for (int64_t k = 0; k < kc; ++k) std::memcpy(sbuf + k * NR, b + k * ldb, n * sizeof(T));
          }
          b = sbuf;
          ldb = NR;
        }
        for (int64_t r = 0; r < tiles_m; ++r) {
          // a C tile belongs to one thread in every KC block (it reads what the last block wrote)
          if (!by_cols && (t * tiles_m + r) % nth != tid) continue;
          const int64_t row = r * MR;
          const int m = static_cast<int>(std::min<int64_t>(MR, M - row));
          T* c = C + row * ldc + col;
          if (trans || pre) {
            const T* ap = abuf + r * MR * K + pc * MR;
            tile_packed<T, S>(kc, ap, pre ? b : sbuf, c, ldc, m, n, load_c, l, row, col);
          } else if (pack) {
            const PanelA<T, MR> a{abuf + r * MR * K + pc * MR};
            tile_rows<T, S>(kc, a, b, ldb, c, ldc, m, n, load_c, l, row, col);
          } else {
            RowsA<T, MR> a;
            a.cs = A.cs;
            for (int i = 0; i < MR; ++i) a.rows[i] = A.p + std::min<int64_t>(row + i, M - 1) * A.rs + pc * A.cs;
            tile_rows<T, S>(kc, a, b, ldb, c, ldc, m, n, load_c, l, row, col);
          }
        }
      }
    }
  };
  if (nt == 1) return body(0, 1);  // small products: no parallel region at all (~0.2 us)
#pragma omp parallel num_threads(nt)
  body(omp_get_thread_num(), omp_get_num_threads());
}

// Direct path for few rows of A (M <= 4 or so): no packing; B read once, in place.
//  - B rows contiguous (cs == 1): C[i, j-chunk] += A[i, k] * B[k, j-chunk] over k;
//  - B columns contiguous (rs == 1, e.g. a linear weight): dot products.
template <class T, Simd S>
void direct(int64_t M, int64_t N, int64_t K, View<T> A, View<T> B, T* C, int64_t ldc,
            const Epilogue<T>& ep, int nt) {
  using Kt = KT<T, S>;
  using R = typename Kt::R;
  constexpr int W = Kt::W;
  constexpr int MAXM = 8;
  auto finish = [&](int64_t i, int64_t j0, int64_t n, const T* z) {  // z: n sums of row i
    T* c = C + i * ldc + j0;
    for (int64_t j = 0; j < n; ++j) {
      T v = z[j];
      if (ep.accumulate) v += c[j];
      if (ep.bias) v += ep.bias_per_row ? ep.bias[i] : ep.bias[j0 + j];
      if (ep.preact) ep.preact[i * ldc + j0 + j] = v;
      c[j] = v;
    }
    act_row<T>(S, ep.act, c, n);
  };
  if (B.cs == 1) {
    // Whole rows of B stream through (the prefetcher's best case): a chunk of
    // columns as wide as an L1-resident accumulator allows (32 KiB for all M
    // rows), split further only so that every thread gets one.
    constexpr int64_t ACC = 32768 / sizeof(T);
    int64_t ch = std::max<int64_t>(W, ACC / std::max<int64_t>(M, 1) / W * W);
    ch = std::min(ch, round_up(ceil_div(N, nt), W));  // (and never zero more than N columns)
    const int64_t CH = ch;
    const int64_t chunks = ceil_div(N, CH);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      alignas(64) T acc[ACC];
      const int64_t j0 = c * CH, n = std::min(CH, N - j0);
      for (int64_t j = 0; j < M * CH; ++j) acc[j] = T(0);
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {  // four rows of B per pass over the accumulator
        const T* b0 = B.p + k * B.rs + j0;
        const T* b1 = b0 + B.rs;
        const T* b2 = b1 + B.rs;
        const T* b3 = b2 + B.rs;
        for (int64_t i = 0; i < M; ++i) {
          const R a0 = Kt::set1(A.at(i, k)), a1 = Kt::set1(A.at(i, k + 1));
          const R a2 = Kt::set1(A.at(i, k + 2)), a3 = Kt::set1(A.at(i, k + 3));
          T* ac = acc + i * CH;
          for (int64_t j = 0; j < n; j += W) {
            const int w = static_cast<int>(std::min<int64_t>(W, n - j));
            R s = Kt::fma(a0, Kt::load_n(b0 + j, w), Kt::load_n(ac + j, w));
            s = Kt::fma(a1, Kt::load_n(b1 + j, w), s);
            s = Kt::fma(a2, Kt::load_n(b2 + j, w), s);
            s = Kt::fma(a3, Kt::load_n(b3 + j, w), s);
            Kt::store_n(ac + j, s, w);
          }
        }
      }
      for (; k < K; ++k) {
        const T* b = B.p + k * B.rs + j0;
        for (int64_t i = 0; i < M; ++i) {
          const R a = Kt::set1(A.at(i, k));
          T* ac = acc + i * CH;
          for (int64_t j = 0; j < n; j += W) {
            const int w = static_cast<int>(std::min<int64_t>(W, n - j));
            Kt::store_n(ac + j, Kt::fma(a, Kt::load_n(b + j, w), Kt::load_n(ac + j, w)), w);
          }
        }
      }
      for (int64_t i = 0; i < M; ++i) finish(i, j0, n, acc + i * CH);
    }
  } else {  // B.rs == 1
    std::vector<T> arow(static_cast<std::size_t>(M * K));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) arow[i * K + k] = A.at(i, k);
    constexpr int64_t CH = 64;
    const int64_t chunks = ceil_div(N, CH);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      T z[MAXM][CH];
      const int64_t j0 = ch * CH, n = std::min(CH, N - j0);
      int64_t j = 0;
      for (; j + 4 <= n; j += 4) {  // four columns of B at once: four memory streams in flight
        const T* b0 = B.p + (j0 + j) * B.cs;
        const T* b1 = b0 + B.cs;
        const T* b2 = b1 + B.cs;
        const T* b3 = b2 + B.cs;
        for (int64_t i = 0; i < M; ++i) {
          const T* a = arow.data() + i * K;
          R s0 = Kt::zero(), s1 = Kt::zero(), s2 = Kt::zero(), s3 = Kt::zero();
          R t0 = Kt::zero(), t1 = Kt::zero(), t2 = Kt::zero(), t3 = Kt::zero();
          int64_t k = 0;
          for (; k + 2 * W <= K; k += 2 * W) {
            const R x0 = Kt::load(a + k), x1 = Kt::load(a + k + W);
            s0 = Kt::fma(x0, Kt::load(b0 + k), s0);
            s1 = Kt::fma(x0, Kt::load(b1 + k), s1);
            s2 = Kt::fma(x0, Kt::load(b2 + k), s2);
            s3 = Kt::fma(x0, Kt::load(b3 + k), s3);
            t0 = Kt::fma(x1, Kt::load(b0 + k + W), t0);
            t1 = Kt::fma(x1, Kt::load(b1 + k + W), t1);
            t2 = Kt::fma(x1, Kt::load(b2 + k + W), t2);
            t3 = Kt::fma(x1, Kt::load(b3 + k + W), t3);
          }
          for (; k < K; k += W) {
            const int w = static_cast<int>(std::min<int64_t>(W, K - k));
            const R x0 = Kt::load_n(a + k, w);
            s0 = Kt::fma(x0, Kt::load_n(b0 + k, w), s0);
            s1 = Kt::fma(x0, Kt::load_n(b1 + k, w), s1);
            s2 = Kt::fma(x0, Kt::load_n(b2 + k, w), s2);
            s3 = Kt::fma(x0, Kt::load_n(b3 + k, w), s3);
          }
          z[i][j] = Kt::hsum(Kt::add(s0, t0));
          z[i][j + 1] = Kt::hsum(Kt::add(s1, t1));
          z[i][j + 2] = Kt::hsum(Kt::add(s2, t2));
          z[i][j + 3] = Kt::hsum(Kt::add(s3, t3));
        }
      }
      for (; j < n; ++j) {
        const T* b = B.p + (j0 + j) * B.cs;
        for (int64_t i = 0; i < M; ++i) {
          const T* a = arow.data() + i * K;
          R s0 = Kt::zero(), s1 = Kt::zero(), s2 = Kt::zero(), s3 = Kt::zero();
          int64_t k = 0;
          for (; k + 4 * W <= K; k += 4 * W) {
            s0 = Kt::fma(Kt::load(a + k), Kt::load(b + k), s0);
            s1 = Kt::fma(Kt::load(a + k + W), Kt::load(b + k + W), s1);
            s2 = Kt::fma(Kt::load(a + k + 2 * W), Kt::load(b + k + 2 * W), s2);
            s3 = Kt::fma(Kt::load(a + k + 3 * W), Kt::load(b + k + 3 * W), s3);
          }
          for (; k < K; k += W) {
            const int w = static_cast<int>(std::min<int64_t>(W, K - k));
            s0 = Kt::fma(Kt::load_n(a + k, w), Kt::load_n(b + k, w), s0);
          }
          z[i][j] = Kt::hsum(Kt::add(Kt::add(s0, s1), Kt::add(s2, s3)));
        }
      }
      for (int64_t i = 0; i < M; ++i) finish(i, j0, n, z[i]);
    }
  }
}

// The simple reference driver (the "naive" development variant): rows of C in
// parallel, B packed once, scalar loops.
template <class T, class PackB>
void naive(int64_t M, int64_t N, int64_t K, View<T> A, PackB&& pack_b, int nr, T* C, int64_t ldc,
           const Epilogue<T>& ep, int nt) {
  const int64_t panels = (N + nr - 1) / nr;
  std::vector<T> bp(static_cast<size_t>(std::max<int64_t>(K, 1) * panels * nr));
  if (K > 0) pack_b(int64_t(0), K, int64_t(0), N, bp.data());
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < M; ++i) {
    std::vector<T> acc(static_cast<size_t>(N), T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T a = A.at(i, k);
      for (int64_t p = 0; p < panels; ++p) {
        const T* b = bp.data() + (p * K + k) * nr;
        const int64_t w = std::min<int64_t>(nr, N - p * nr);
        for (int64_t j = 0; j < w; ++j) acc[p * nr + j] += a * b[j];
      }
    }
    T* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) {
      if (ep.accumulate) {
        c[j] += acc[j];
        continue;
      }
      T z = acc[j];
      if (ep.bias) z += ep.bias_per_row ? ep.bias[i] : ep.bias[j];
      if (ep.preact) ep.preact[i * ldc + j] = z;
      c[j] = activate(ep.act, z);
    }
  }
}

}  // namespace detail

// Packs B[k0:k0+kc, n0:n0+nc] of a strided view into panels (the default packer).
template <class T>
inline void pack_b_view(View<T> B, int64_t k0, int64_t kc, int64_t n0, int64_t nc, T* dst) {
  detail::pack_b_at(panel_width<T>(), B, k0, kc, n0, nc, dst);
}

template <class T, class PackB>
void gemm_packed_b(int64_t M, int64_t N, int64_t K, View<T> A, PackB&& pack_b, T* C,
                   int64_t ldc, const Epilogue<T>& ep = {}, int nthreads = 0) {
  detail::check_epilogue(ep);
  if (M <= 0 || N <= 0) return;
  const Simd level = simd_level();
  if (K <= 0) return detail::empty_k(M, N, C, ldc, ep, level);
  const int nt = detail::resolve_threads<T>(nthreads, M, N, K);
  with_level(level, [&](auto s) { detail::packed<T, decltype(s)::value>(M, N, K, A, pack_b, C, ldc, ep, nt); });
}

// gemm at an explicit SIMD level (clamped to the current one) and algorithm:
// the entry the development variants and tests use to time and check each path.
template <class T>
void gemm_at(Simd level, Algo algo, int64_t M, int64_t N, int64_t K, View<T> A, View<T> B, T* C,
             int64_t ldc, const Epilogue<T>& ep = {}, int nthreads = 0) {
  detail::check_epilogue(ep);
  if (M <= 0 || N <= 0) return;
  if (static_cast<int>(level) > static_cast<int>(simd_level())) level = simd_level();
  if (K <= 0) return detail::empty_k(M, N, C, ldc, ep, level);
  const int nt = detail::resolve_threads<T>(nthreads, M, N, K);
  const int nr = panel_width_at<T>(level);
  auto pack = [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, T* dst) {
    detail::pack_b_at(nr, B, k0, kc, n0, nc, dst);
  };
  const bool direct_ok = (B.cs == 1 || B.rs == 1) && M <= 8;
  if (algo == Algo::naive) return detail::naive(M, N, K, A, pack, nr, C, ldc, ep, nt);
  if (algo == Algo::direct ? direct_ok : (algo == Algo::automatic && direct_ok && M <= tuning().direct_max_m))
    return with_level(level, [&](auto s) { detail::direct<T, decltype(s)::value>(M, N, K, A, B, C, ldc, ep, nt); });
  if (algo == Algo::unpacked ? (B.cs == 1 || B.rs == 1) : (algo == Algo::automatic && detail::unpacked_pays(level, M, K, B)))
    return with_level(level, [&](auto s) { detail::unpacked<T, decltype(s)::value>(M, N, K, A, B, C, ldc, ep, nt); });
  with_level(level, [&](auto s) { detail::packed<T, decltype(s)::value>(M, N, K, A, pack, C, ldc, ep, nt); });
}

// C = A B with B row-major (B.cs == 1) and A read in place, never packed: the unpacked-B path
// for products whose A is too big to pack again for every call (Winograd's 16 products per chunk
// of tiles, conv.cpp: packing them cost 5-15% there).
template <class T>
void gemm_rows_a(Simd level, int64_t M, int64_t N, int64_t K, View<T> A, View<T> B, T* C, int64_t ldc,
                 const Epilogue<T>& ep = {}, int nthreads = 0) {
  detail::check_epilogue(ep);
  PYDL_CHECK(B.cs == 1, "gemm_rows_a: B must be row-major");
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return detail::empty_k(M, N, C, ldc, ep, level);
  const int nt = detail::resolve_threads<T>(nthreads, M, N, K);
  with_level(level, [&](auto s) {
    detail::unpacked<T, decltype(s)::value>(M, N, K, A, B, C, ldc, ep, nt, true);
  });
}

// Elements pack_b_once writes for a K x N matrix at the SIMD level in use.
template <class T>
int64_t packed_b_elems(int64_t K, int64_t N) {
  return std::max<int64_t>(K, 0) * detail::round_up(std::max<int64_t>(N, 0), panel_width<T>());
}

// Packs a K x N matrix into dst (packed_b_elems(K, N) elements) for gemm_prepacked at the SIMD
// level in use, serially (a caller's threads pack their own column ranges): pack_b is
// gemm_packed_b's functor (it writes B[k0:k0+kc, n0:n0+nc] as panels of the level's width).
template <class T, class PackB>
PackedB<T> pack_b_once(int64_t K, int64_t N, T* dst, PackB&& pack_b) {
  PackedB<T> pb;
  pb.p = dst;
  pb.K = K;
  pb.N = N;
  pb.level = simd_level();
  with_level(pb.level, [&](auto s) {
    pb.kc = detail::equal_blocks(std::max<int64_t>(K, 1), detail::blocks<T, decltype(s)::value>().kc);
  });
  const int64_t np = detail::round_up(N, panel_width_at<T>(pb.level));
  if (N > 0)
    for (int64_t pc = 0; pc < K; pc += pb.kc) pack_b(pc, std::min(pb.kc, K - pc), int64_t(0), N, dst + pc * np);
  return pb;
}

// ... of a strided view B (K x N).
template <class T>
PackedB<T> pack_b_once(View<T> B, int64_t K, int64_t N, T* dst) {
  return pack_b_once<T>(K, N, dst, [&](int64_t k0, int64_t kc, int64_t n0, int64_t nc, T* d) {
    pack_b_view<T>(B, k0, kc, n0, nc, d);
  });
}

// C (M x B.N) = epilogue(A @ B) with B packed by pack_b_once, at the SIMD level B was packed at
// (callable inside a caller's parallel region with nthreads = 1: throws only on a bad epilogue).
template <class T>
void gemm_prepacked(int64_t M, View<T> A, const PackedB<T>& B, T* C, int64_t ldc, const Epilogue<T>& ep = {},
                    int nthreads = 0) {
  detail::check_epilogue(ep);
  if (M <= 0 || B.N <= 0) return;
  if (B.K <= 0) return detail::empty_k(M, B.N, C, ldc, ep, B.level);
  const int nt = detail::resolve_threads<T>(nthreads, M, B.N, B.K);
  with_level(B.level, [&](auto s) {
    detail::unpacked<T, decltype(s)::value>(M, B.N, B.K, A, View<T>{B.p, 0, 1}, C, ldc, ep, nt, false, &B);
  });
}

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, View<T> A, View<T> B, T* C, int64_t ldc,
          const Epilogue<T>& ep = {}, int nthreads = 0) {
  gemm_at(simd_level(), Algo::automatic, M, N, K, A, B, C, ldc, ep, nthreads);
}

}  // namespace gemm
}  // namespace pydl
