// attention family (pydl._cpp): scaled dot-product attention, forward and
// backward, flash-style (the L x S score matrix is never materialized).
//
// Entry points (T = f32 | f64). q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv),
// out / grad (B, H, L, Dv), dq/dk/dv like q/k/v: any strides over (B, H, rows),
// unit stride along the last dimension (the adapter pydl/backends/cpp/attention.py
// makes them so; multi_head_attention passes head views of its packed projection).
// lse (B, H, L) C-contiguous. mask: None, a bool (True = may attend) or a T
// (added) array of shape (B, H, L, S) with any strides (0 where it broadcasts);
// keep: None or the dropout keep-mask, a C-contiguous bool (B, H, L, S) array.
//   attention_sdpa_forward_<T>(q, k, v, mask, causal, scale, keep, p_drop, out, lse)
//   attention_sdpa_backward_<T>(q, k, v, out, grad, lse, mask, causal, scale, keep, p_drop,
//                               dq, dk, dv, dmask|None)
//     dmask: a writeable (B, H, L, S) view (0 strides where the mask broadcasts) of a
//     zero-filled array of the mask's shape; the float mask's gradient is added into it.
//
// Forward: K^T (D, S) per head once per call; then per work item (b, h, block of BQ query
// rows), items shared by the threads: for each block of BK keys (causal: only blocks
// holding a key j <= the block's last query; the diagonal one masked element-wise):
//     S = Q_blk @ K^T[:, blk] * scale (+ mask);
//     online softmax per row: m' = max(m, rowmax S), P = exp(S - m'), l = l e^(m-m') + sum P,
//     O = O e^(m-m') + P @ V_blk.
//   out = O / l, lse = m + log l (l = 0: a fully masked row, out 0 and lse +inf).
// Backward, per work item (b, h, block of BKb keys): Q and dO are transposed once per
// call (QT (D, L), dOT (Dv, L) per head) so that every product below reads unit-stride
// rows; per block of BQb queries (causal: those >= the first key):
//   St = K_blk @ QT[:, blk] (keys x queries); Pt = exp(St * scale + mask - lse);
//   dPt = V_blk @ dOT[:, blk]; dSt = Pt * (dPt - delta), delta = rowsum(dO * O);
//   dV += Pt @ dO_blk; dK += dSt @ Q_blk; dQT[:, blk] += Kt @ dSt (Kt packed once per item).
//   dK, dV are owned by the item; dQ is summed in per-thread (D, L) accumulators and
//   reduced (transposed, times scale) at the end. B*H*ceil(S/BKb) items: more than B*H.
// Tile products: a register-blocked MR x (NV vectors) kernel over unit-stride rows of both
// operands (AVX-512 float 6 x 64, AVX2 6 x 16, scalar 4 x 8), no packing; the development
// variant tile_gemm = 1 calls gemm.hpp's gemm_at (nthreads = 1) instead: dev/attention.
// Napkin math: B1 H8 S2048 D64 forward = 4*8*2048^2*64 = 8.6 GFLOP, ~40 ms at 200 GFLOP/s;
// it reads q, k, v once per query block (8 MB / 64 rows), so it is compute-bound.
// Memory: O(S*D) per head (K^T; QT, dOT, dQ accumulators in the backward) plus per-thread tiles.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "check.hpp"
#include "gemm.hpp"
#include "ndarray.hpp"
#include "simd.hpp"
#include "simd_math.hpp"

namespace py = pybind11;

namespace pydl {
namespace {

template <class T>
using Array = NdArray<T>;

// Block sizes and the tile-product choice (development controls: dev/attention, tests).
// 0 = default. tile_gemm: 0 or 2 the register tiles below (the default), 1 gemm.hpp's
// products (nthreads = 1).
constexpr int kGemmTiles = 1;
struct Tuning {
  int bq = 0, bk = 0, bq_bwd = 0, bk_bwd = 0, tile_gemm = 0;
};
Tuning& tuning() {
  static Tuning t;
  return t;
}

// (B, H, rows, cols) with unit column stride.
template <class T>
struct Heads {
  T* p = nullptr;
  int64_t sb = 0, sh = 0, sr = 0;
  T* at(int64_t b, int64_t h) const { return p + b * sb + h * sh; }
};

template <class T>
struct Mask {
  const T* f = nullptr;             // additive
  const unsigned char* m = nullptr;  // bool (numpy bool is one byte, 0 or 1)
  int64_t sb = 0, sh = 0, sl = 0, ss = 0;
  bool any() const { return f || m; }
};

// -- tile products -------------------------------------------------------------------

template <class T, Simd S>
struct Tile {
  using K = gemm::detail::KT<T, S>;
  static constexpr int W = K::W;
  static constexpr int MR = S == Simd::avx512 ? 6 : S == Simd::avx2 ? 6 : 4;
  static constexpr int NV = S == Simd::avx512 ? 4 : 2;
};

// C[0:m, 0:n] (+)= A[0:m, 0:kc] @ B[0:kc, 0:n], A(i, k) at a[i*lda + k], B(k, j) at b[k*ldb + j],
// 0 < n <= NV*W (n == NV*W when FULL: no masked load in the k loop), 0 < m <= MR.
// Rows past m repeat row m-1 (computed, not stored).
template <class T, Simd S, int NV, bool FULL>
inline void tile(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, int m,
                 int n, bool acc_c) {
  using K = typename Tile<T, S>::K;
  using R = typename K::R;
  constexpr int W = K::W, MR = Tile<T, S>::MR;
  R acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int q = 0; q < NV; ++q) acc[i][q] = K::zero();
  const T* ar[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) ar[i] = a + (i < m ? i : m - 1) * lda;
  const int nl = n - (NV - 1) * W;  // lanes of the last vector, 1..W
  for (int64_t k = 0; k < kc; ++k) {
    const T* bk = b + k * ldb;
    R bv[NV];
#pragma GCC unroll 4
    for (int q = 0; q < NV; ++q) bv[q] = (FULL || q < NV - 1) ? K::load(bk + q * W) : K::load_n(bk + q * W, nl);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const R av = K::bcast(ar[i] + k);
#pragma GCC unroll 4
      for (int q = 0; q < NV; ++q) acc[i][q] = K::fma(av, bv[q], acc[i][q]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    T* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int q = 0; q < NV; ++q) {
      const int cnt = FULL ? W : std::min(W, n - q * W);
      R z = acc[i][q];
      if (acc_c) z = K::add(z, K::load_n(ci + q * W, cnt));
      K::store_n(ci + q * W, z, cnt);
    }
  }
}

// C (M x N, ldc) (+)= A (M x K, lda) @ B (K x N, ldb); all unit column strides.
template <class T, Simd S>
void mm(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
        bool acc_c) {
  if (M <= 0 || N <= 0) return;
  if (tuning().tile_gemm == kGemmTiles) {
    gemm::Epilogue<T> ep;
    ep.accumulate = acc_c;
    gemm::gemm_at<T>(S, gemm::Algo::automatic, M, N, K, {a, lda, 1}, {b, ldb, 1}, c, ldc, ep, 1);
    return;
  }
  constexpr int W = Tile<T, S>::W, MR = Tile<T, S>::MR, NV = Tile<T, S>::NV;
  for (int64_t j0 = 0; j0 < N; j0 += NV * W) {
    const int n = static_cast<int>(std::min<int64_t>(NV * W, N - j0));
    const int nv = (n + W - 1) / W;
    const T* bj = b + j0;
    for (int64_t i0 = 0; i0 < M; i0 += MR) {
      const int m = static_cast<int>(std::min<int64_t>(MR, M - i0));
      const T* ai = a + i0 * lda;
      T* ci = c + i0 * ldc + j0;
      if (n == NV * W) tile<T, S, NV, true>(K, ai, lda, bj, ldb, ci, ldc, m, n, acc_c);
      else if (nv == NV) tile<T, S, NV, false>(K, ai, lda, bj, ldb, ci, ldc, m, n, acc_c);
      else if (NV >= 4 && nv == 3) tile<T, S, (NV >= 4 ? 3 : 1), false>(K, ai, lda, bj, ldb, ci, ldc, m, n, acc_c);
      else if (NV >= 3 && nv == 2) tile<T, S, (NV >= 3 ? 2 : 1), false>(K, ai, lda, bj, ldb, ci, ldc, m, n, acc_c);
      else tile<T, S, 1, false>(K, ai, lda, bj, ldb, ci, ldc, m, n, acc_c);
    }
  }
}

// dst (cols x rows, ld) = src (rows x cols, row stride ss)^T
template <class T>
void transpose(const T* src, int64_t ss, int64_t rows, int64_t cols, T* dst, int64_t ld) {
  constexpr int64_t TB = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += TB)
    for (int64_t c0 = 0; c0 < cols; c0 += TB) {
      const int64_t r1 = std::min(rows, r0 + TB), c1 = std::min(cols, c0 + TB);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) dst[c * ld + r] = src[r * ss + c];
    }
}

// The vector wrapper for exp/max over T at level S (float64: libm, scalar).
template <class T, Simd S>
struct VecOf {
  using type = vm::Scalar<T>;
};
#if defined(__AVX512F__)
template <>
struct VecOf<float, Simd::avx512> {
  using type = vm::Avx512F;
};
#endif
#if defined(__AVX2__) && defined(__FMA__)
template <>
struct VecOf<float, Simd::avx2> {
  using type = vm::Avx2F;
};
#endif

constexpr int64_t kDefaultBQ = 64, kDefaultBK = 128, kDefaultBQb = 64, kDefaultBKb = 64;

inline int64_t pick(int v, int64_t dflt) { return v > 0 ? v : dflt; }

template <class T>
struct Fwd {
  int64_t B, H, L, S, D, Dv;
  Heads<const T> q, k, v;
  Heads<T> out;
  T* lse;
  Mask<T> mask;
  bool causal;
  T scale;
  const unsigned char* keep;  // (B, H, L, S) C-contiguous or null
  T rdrop;                    // 1 / (1 - p), 0 at p = 1
};

// scores row r of a block (query i, keys j0..j0+n): scale, mask, causal; returns nothing.
template <class T, class V>
inline void scale_mask_row(T* row, int64_t n, T scale, const Mask<T>& mk, int64_t b, int64_t h, int64_t i,
                           int64_t j0, int64_t causal_limit) {
  const T ninf = -std::numeric_limits<T>::infinity();
  const typename V::R sc = V::set1(scale);
  for (int64_t j = 0; j < n; j += V::W) {
    const std::size_t cnt = static_cast<std::size_t>(std::min<int64_t>(V::W, n - j));
    V::store_n(row + j, V::mul(V::load_n(row + j, cnt, T(0)), sc), cnt);
  }
  if (mk.f) {
    const T* mr = mk.f + b * mk.sb + h * mk.sh + i * mk.sl + j0 * mk.ss;
    for (int64_t j = 0; j < n; ++j) row[j] += mr[j * mk.ss];
  } else if (mk.m) {
    const unsigned char* mr = mk.m + b * mk.sb + h * mk.sh + i * mk.sl + j0 * mk.ss;
    for (int64_t j = 0; j < n; ++j)
      if (!mr[j * mk.ss]) row[j] = ninf;
  }
  for (int64_t j = std::max<int64_t>(causal_limit, 0); j < n; ++j) row[j] = ninf;
}

template <class T, Simd S>
void forward(const Fwd<T>& a) {
  using V = typename VecOf<T, S>::type;
  using R = typename V::R;
  const Tuning tu = tuning();
  const int64_t BQ = pick(tu.bq, kDefaultBQ), BK = pick(tu.bk, kDefaultBK);
  const int64_t L = a.L, S_ = a.S, D = a.D, Dv = a.Dv;
  const int64_t nqb = (L + BQ - 1) / BQ, items = a.B * a.H * nqb;
  if (items == 0) return;
  const T ninf = -std::numeric_limits<T>::infinity(), inf = std::numeric_limits<T>::infinity();
  int nt = static_cast<int>(std::min<int64_t>(num_threads(), items));
  // K^T per head (D, S), once per call: every query block reads its key blocks as unit-stride
  // rows (transposing per block cost a third of the products' time at D = 64, BQ = 64)
  const int64_t BH = a.B * a.H;
  const std::size_t hk = static_cast<std::size_t>(D * S_);
  std::vector<T> kt(BH * hk);
  {
    const int ntt = static_cast<int>(std::min<int64_t>(nt, BH));
#pragma omp parallel for num_threads(ntt) schedule(static) if (ntt > 1)
    for (int64_t bh = 0; bh < BH; ++bh)
      transpose(a.k.at(bh / a.H, bh % a.H), a.k.sr, S_, D, kt.data() + bh * hk, S_);
  }
  std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    std::vector<T> sb(BQ * BK), o(static_cast<std::size_t>(BQ * std::max<int64_t>(Dv, 1))), m(BQ), l(BQ);
    for (int64_t it = next.fetch_add(1); it < items; it = next.fetch_add(1)) {
      // causal: the last query blocks carry the most keys; hand them out first
      const int64_t bh = it / nqb, qb = a.causal ? nqb - 1 - it % nqb : it % nqb;
      const int64_t b = bh / a.H, h = bh % a.H, i0 = qb * BQ, bq = std::min(BQ, L - i0);
      const T* qp = a.q.at(b, h) + i0 * a.q.sr;
      const T* kth = kt.data() + bh * hk;
      const T* vp = a.v.at(b, h);
      std::fill(o.begin(), o.end(), T(0));
      std::fill(m.begin(), m.end(), ninf);
      std::fill(l.begin(), l.end(), T(0));
      const int64_t jend = a.causal ? std::min(S_, i0 + bq) : S_;
      for (int64_t j0 = 0; j0 < jend; j0 += BK) {
        const int64_t bk = std::min(BK, jend - j0);
        if (D > 0) mm<T, S>(bq, bk, D, qp, a.q.sr, kth + j0, S_, sb.data(), BK, false);
        else std::fill(sb.begin(), sb.end(), T(0));
        for (int64_t r = 0; r < bq; ++r) {
          T* row = sb.data() + r * BK;
          const int64_t i = i0 + r;
          scale_mask_row<T, V>(row, bk, a.scale, a.mask, b, h, i, j0, a.causal ? i - j0 + 1 : bk);
          R mx = V::set1(ninf);
          for (int64_t j = 0; j < bk; j += V::W) {
            const std::size_t cnt = static_cast<std::size_t>(std::min<int64_t>(V::W, bk - j));
            mx = V::max(mx, V::load_n(row + j, cnt, ninf));
          }
          const T bmax = V::reduce_max(mx);
          const T mnew = std::max(m[r], bmax);
          const T mu = mnew == ninf ? T(0) : mnew;  // a row masked so far: exp(-inf - 0) = 0
          const T alpha = std::exp(m[r] - mu);
          const R muv = V::set1(mu);
          R sum = V::set1(T(0));
          for (int64_t j = 0; j < bk; j += V::W) {
            const std::size_t cnt = static_cast<std::size_t>(std::min<int64_t>(V::W, bk - j));
            const R p = vm::exp<V>(V::sub(V::load_n(row + j, cnt, ninf), muv));
            sum = V::add(sum, p);  // masked-off lanes load -inf: exp gives 0
            V::store_n(row + j, p, cnt);
          }
          l[r] = l[r] * alpha + V::reduce_add(sum);
          m[r] = mnew;
          if (alpha != T(1)) {
            T* orow = o.data() + r * Dv;
            for (int64_t d = 0; d < Dv; ++d) orow[d] *= alpha;
          }
          if (a.keep) {
            const unsigned char* kr = a.keep + ((b * a.H + h) * L + i) * S_ + j0;
            for (int64_t j = 0; j < bk; ++j) row[j] = kr[j] ? row[j] * a.rdrop : T(0);
          }
        }
        mm<T, S>(bq, Dv, bk, sb.data(), BK, vp + j0 * a.v.sr, a.v.sr, o.data(), Dv, true);
      }
      T* lse = a.lse + bh * L + i0;
      for (int64_t r = 0; r < bq; ++r) {
        T* dst = a.out.at(b, h) + (i0 + r) * a.out.sr;
        const T* orow = o.data() + r * Dv;
        if (l[r] == T(0)) {  // every key masked (l is NaN, not 0, when a score was NaN)
          std::fill(dst, dst + Dv, T(0));
          lse[r] = inf;
        } else {
          const T inv = T(1) / l[r];
          for (int64_t d = 0; d < Dv; ++d) dst[d] = orow[d] * inv;
          lse[r] = m[r] + std::log(l[r]);
        }
      }
    }
  }
}

template <class T>
struct Bwd {
  int64_t B, H, L, S, D, Dv;
  Heads<const T> q, k, v, out, g;
  const T* lse;
  Mask<T> mask;
  bool causal;
  T scale;
  const unsigned char* keep;
  T rdrop;
  Heads<T> dq, dk, dv;
  T* dmask;  // same strides as mask.f; null: no mask gradient
  int64_t dm_extent;  // elements of the array dmask points into
};

template <class T, Simd S>
void backward(const Bwd<T>& a) {
  using V = typename VecOf<T, S>::type;
  using R = typename V::R;
  const Tuning tu = tuning();
  const int64_t BQ = pick(tu.bq_bwd, kDefaultBQb), BK = pick(tu.bk_bwd, kDefaultBKb);
  const int64_t B = a.B, H = a.H, L = a.L, S_ = a.S, D = a.D, Dv = a.Dv, BH = B * H;
  if (BH == 0) return;
  const int nth = num_threads();
  const std::size_t hq = static_cast<std::size_t>(D * L), ho = static_cast<std::size_t>(Dv * L);
  // Q^T and dO^T per head, delta per row: O(L*D) per head, read by every key block.
  std::vector<T> qt(BH * hq), got(BH * ho), delta(static_cast<std::size_t>(BH * L));
  {
    const int nt = static_cast<int>(std::min<int64_t>(nth, BH));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t bh = 0; bh < BH; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      transpose(a.q.at(b, h), a.q.sr, L, D, qt.data() + bh * hq, L);
      transpose(a.g.at(b, h), a.g.sr, L, Dv, got.data() + bh * ho, L);
      for (int64_t i = 0; i < L; ++i) {
        const T* gi = a.g.at(b, h) + i * a.g.sr;
        const T* oi = a.out.at(b, h) + i * a.out.sr;
        T s = T(0);
        for (int64_t d = 0; d < Dv; ++d) s += gi[d] * oi[d];
        delta[bh * L + i] = s;
      }
    }
  }
  const int64_t nkb = (S_ + BK - 1) / BK, items = BH * nkb;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nth, items)));
  // dQ^T accumulators (D, L) per head, one set per thread (thread 0's is reduced into dq)
  std::vector<T> dqt(static_cast<std::size_t>(nt) * BH * hq, T(0));
  // the mask gradient: threads would add into one element when the mask broadcasts over
  // what items split (b, h or keys), so then each thread sums into its own copy
  const bool dm_shared = a.dmask && nt > 1 &&
                         ((B > 1 && a.mask.sb == 0) || (H > 1 && a.mask.sh == 0) || (nkb > 1 && a.mask.ss == 0));
  std::vector<T> dmt(dm_shared ? static_cast<std::size_t>(nt) * a.dm_extent : 0, T(0));
  const T ninf = -std::numeric_limits<T>::infinity();
  std::atomic<int64_t> next{0};
  if (items > 0) {
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      const int tid = omp_get_thread_num();
      T* my_dqt = dqt.data() + static_cast<std::size_t>(tid) * BH * hq;
      T* my_dm = dm_shared ? dmt.data() + static_cast<std::size_t>(tid) * a.dm_extent : a.dmask;
      std::vector<T> kt(static_cast<std::size_t>(std::max<int64_t>(D, 1) * BK)), st(BK * BQ), dpt(BK * BQ),
          dka(static_cast<std::size_t>(BK * std::max<int64_t>(D, 1))),
          dva(static_cast<std::size_t>(BK * std::max<int64_t>(Dv, 1)));
      for (int64_t it = next.fetch_add(1); it < items; it = next.fetch_add(1)) {
        const int64_t bh = it / nkb, kb = it % nkb;  // causal: low key blocks (most queries) first
        const int64_t b = bh / H, h = bh % H, j0 = kb * BK, bk = std::min(BK, S_ - j0);
        const T* kp = a.k.at(b, h) + j0 * a.k.sr;
        const T* vp = a.v.at(b, h) + j0 * a.v.sr;
        const T* qth = qt.data() + bh * hq;
        const T* goth = got.data() + bh * ho;
        const T* lse = a.lse + bh * L;
        const T* dl = delta.data() + bh * L;
        T* dqth = my_dqt + bh * hq;
        transpose(kp, a.k.sr, bk, D, kt.data(), BK);
        std::fill(dka.begin(), dka.end(), T(0));
        std::fill(dva.begin(), dva.end(), T(0));
        for (int64_t i0 = a.causal ? j0 : 0; i0 < L; i0 += BQ) {
          const int64_t bq = std::min(BQ, L - i0);
          if (D > 0) mm<T, S>(bk, bq, D, kp, a.k.sr, qth + i0, L, st.data(), BQ, false);
          else std::fill(st.begin(), st.end(), T(0));
          if (Dv > 0) mm<T, S>(bk, bq, Dv, vp, a.v.sr, goth + i0, L, dpt.data(), BQ, false);
          else std::fill(dpt.begin(), dpt.end(), T(0));
          for (int64_t jj = 0; jj < bk; ++jj) {
            const int64_t j = j0 + jj;
            T* srow = st.data() + jj * BQ;
            T* drow = dpt.data() + jj * BQ;
            const R sc = V::set1(a.scale);
            for (int64_t r = 0; r < bq; r += V::W) {
              const std::size_t cnt = static_cast<std::size_t>(std::min<int64_t>(V::W, bq - r));
              V::store_n(srow + r, V::mul(V::load_n(srow + r, cnt, T(0)), sc), cnt);
            }
            if (a.mask.f) {
              const T* mc = a.mask.f + b * a.mask.sb + h * a.mask.sh + i0 * a.mask.sl + j * a.mask.ss;
              for (int64_t r = 0; r < bq; ++r) srow[r] += mc[r * a.mask.sl];
            } else if (a.mask.m) {
              const unsigned char* mc = a.mask.m + b * a.mask.sb + h * a.mask.sh + i0 * a.mask.sl + j * a.mask.ss;
              for (int64_t r = 0; r < bq; ++r)
                if (!mc[r * a.mask.sl]) srow[r] = ninf;
            }
            if (a.causal)  // query i0 + r sees key j iff j <= i0 + r
              for (int64_t r = 0; r < std::min(bq, j - i0); ++r) srow[r] = ninf;
            for (int64_t r = 0; r < bq; r += V::W) {
              const std::size_t cnt = static_cast<std::size_t>(std::min<int64_t>(V::W, bq - r));
              const R p = vm::exp<V>(V::sub(V::load_n(srow + r, cnt, ninf), V::load_n(lse + i0 + r, cnt, T(0))));
              R dp = V::load_n(drow + r, cnt, T(0));
              if (a.keep) {  // dP of the dropped weights
                alignas(64) T kf[64];
                for (std::size_t u = 0; u < cnt; ++u)
                  kf[u] = a.keep[(bh * L + i0 + r + static_cast<int64_t>(u)) * S_ + j] ? a.rdrop : T(0);
                const R kv = V::load_n(kf, cnt, T(0));
                dp = V::mul(dp, kv);
                V::store_n(srow + r, V::mul(p, kv), cnt);  // the dropped P, for dV
              } else {
                V::store_n(srow + r, p, cnt);
              }
              V::store_n(drow + r, V::mul(p, V::sub(dp, V::load_n(dl + i0 + r, cnt, T(0)))), cnt);
            }
            if (my_dm) {
              T* mc = my_dm + b * a.mask.sb + h * a.mask.sh + i0 * a.mask.sl + j * a.mask.ss;
              for (int64_t r = 0; r < bq; ++r) mc[r * a.mask.sl] += drow[r];
            }
          }
          // st: (dropped) P^T, dpt: dS^T (of the unscaled scores), keys x queries
          if (Dv > 0) mm<T, S>(bk, Dv, bq, st.data(), BQ, a.g.at(b, h) + i0 * a.g.sr, a.g.sr, dva.data(), Dv, true);
          if (D > 0) {
            mm<T, S>(bk, D, bq, dpt.data(), BQ, a.q.at(b, h) + i0 * a.q.sr, a.q.sr, dka.data(), D, true);
            mm<T, S>(D, bq, bk, kt.data(), BK, dpt.data(), BQ, dqth + i0, L, true);
          }
        }
        for (int64_t jj = 0; jj < bk; ++jj) {
          T* dkr = a.dk.at(b, h) + (j0 + jj) * a.dk.sr;
          T* dvr = a.dv.at(b, h) + (j0 + jj) * a.dv.sr;
          for (int64_t d = 0; d < D; ++d) dkr[d] = dka[jj * D + d] * a.scale;
          for (int64_t d = 0; d < Dv; ++d) dvr[d] = dva[jj * Dv + d];
        }
      }
    }
  }
  // dq = scale * (sum over threads of dQ^T)^T; the mask gradient's per-thread copies summed
  const int ntr = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nth, BH)));
#pragma omp parallel for num_threads(ntr) schedule(static) if (ntr > 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    T* acc = dqt.data() + bh * hq;
    for (int t = 1; t < nt; ++t) {
      const T* o = dqt.data() + (static_cast<std::size_t>(t) * BH + bh) * hq;
      for (std::size_t e = 0; e < hq; ++e) acc[e] += o[e];
    }
    for (int64_t i = 0; i < L; ++i) {
      T* dst = a.dq.at(b, h) + i * a.dq.sr;
      for (int64_t d = 0; d < D; ++d) dst[d] = acc[d * L + i] * a.scale;
    }
  }
  if (dm_shared)
    for (int t = 0; t < nt; ++t) {
      const T* o = dmt.data() + static_cast<std::size_t>(t) * a.dm_extent;
      for (int64_t e = 0; e < a.dm_extent; ++e) a.dmask[e] += o[e];
    }
}

// -- argument plumbing -------------------------------------------------------------

template <class T, class A>
Heads<T> heads(A& x, const char* name, int64_t B, int64_t H, int64_t R, int64_t C) {
  PYDL_CHECK(x.ndim() == 4 && x.shape(0) == B && x.shape(1) == H && x.shape(2) == R && x.shape(3) == C,
             name << ": expected shape (" << B << ", " << H << ", " << R << ", " << C << "), got "
                  << shape_str(x));
  const int64_t it = static_cast<int64_t>(sizeof(std::remove_const_t<T>));
  if (B * H * R * C == 0) return Heads<T>{static_cast<T*>(nullptr), 0, 0, 0};  // nothing is read or written
  PYDL_CHECK(C <= 1 || x.strides(3) == it, name << ": the last dimension must be contiguous");
  for (int d = 0; d < 3; ++d)
    PYDL_CHECK(x.strides(d) % it == 0, name << ": strides must be multiples of the item size");
  Heads<T> h;
  if constexpr (std::is_const_v<T>) {
    h.p = static_cast<T*>(x.data());
  } else {
    PYDL_CHECK(x.writeable(), name << ": must be writeable");
    h.p = static_cast<T*>(x.mutable_data());
  }
  h.sb = x.strides(0) / it;
  h.sh = x.strides(1) / it;
  h.sr = x.strides(2) / it;
  return h;
}

template <class T>
Mask<T> mask_of(const std::optional<py::array>& mask, int64_t B, int64_t H, int64_t L, int64_t S) {
  Mask<T> mk;
  if (!mask) return mk;
  const py::array& m = *mask;
  PYDL_CHECK(m.ndim() == 4 && m.shape(0) == B && m.shape(1) == H && m.shape(2) == L && m.shape(3) == S,
             "attn_mask: expected a (B, H, L, S) = (" << B << ", " << H << ", " << L << ", " << S
                                                      << ") view, got " << shape_str(m));
  int64_t it;
  if (Array<bool>::check_(m)) {
    mk.m = static_cast<const unsigned char*>(m.data());
    it = 1;
  } else if (Array<T>::check_(m)) {
    mk.f = static_cast<const T*>(m.data());
    it = sizeof(T);
  } else {
    PYDL_CHECK(false, "attn_mask: expected a bool array or one of the inputs' dtype");
  }
  for (int d = 0; d < 4; ++d) PYDL_CHECK(m.strides(d) % it == 0, "attn_mask: strides must be multiples of the item size");
  mk.sb = m.strides(0) / it;
  mk.sh = m.strides(1) / it;
  mk.sl = m.strides(2) / it;
  mk.ss = m.strides(3) / it;
  return mk;
}

const unsigned char* keep_of(const std::optional<Array<bool>>& keep, int64_t B, int64_t H, int64_t L, int64_t S) {
  if (!keep) return nullptr;
  PYDL_CHECK(keep->ndim() == 4 && keep->shape(0) == B && keep->shape(1) == H && keep->shape(2) == L &&
                 keep->shape(3) == S && (keep->flags() & py::array::c_style),
             "dropout_mask: expected a C-contiguous bool array of shape (" << B << ", " << H << ", " << L << ", "
                                                                           << S << "), got " << shape_str(*keep));
  return reinterpret_cast<const unsigned char*>(keep->data());
}

template <class T>
T rdrop_of(double p) {
  PYDL_CHECK(p >= 0.0 && p <= 1.0, "dropout_p: expected a number in [0, 1], got " << p);
  return p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
}

template <class T>
void forward_py(const Array<T>& q, const Array<T>& k, const Array<T>& v, const std::optional<py::array>& mask,
                bool causal, double scale, const std::optional<Array<bool>>& keep, double p_drop, Array<T> out,
                Array<T> lse) {
  PYDL_CHECK(q.ndim() == 4, "q: expected (B, H, L, D), got shape " << shape_str(q));
  PYDL_CHECK(k.ndim() == 4, "k: expected (B, H, S, D), got shape " << shape_str(k));
  PYDL_CHECK(v.ndim() == 4, "v: expected (B, H, S, Dv), got shape " << shape_str(v));
  const int64_t B = q.shape(0), H = q.shape(1), L = q.shape(2), D = q.shape(3), S = k.shape(2), Dv = v.shape(3);
  Fwd<T> a{B, H, L, S, D, Dv, heads<const T>(q, "q", B, H, L, D), heads<const T>(k, "k", B, H, S, D),
           heads<const T>(v, "v", B, H, S, Dv), heads<T>(out, "out", B, H, L, Dv), nullptr,
           mask_of<T>(mask, B, H, L, S), causal, static_cast<T>(scale), keep_of(keep, B, H, L, S),
           rdrop_of<T>(p_drop)};
  PYDL_CHECK(lse.ndim() == 3 && lse.shape(0) == B && lse.shape(1) == H && lse.shape(2) == L &&
                 (lse.flags() & py::array::c_style) && lse.writeable(),
             "lse: expected a writeable C-contiguous (" << B << ", " << H << ", " << L << ") array, got "
                                                         << shape_str(lse));
  PYDL_CHECK(!(causal && a.mask.any()), "is_causal: expected False when attn_mask is given");
  a.lse = lse.mutable_data();
  py::gil_scoped_release nogil;
  with_level(simd_level(), [&](auto s) { forward<T, decltype(s)::value>(a); });
}

template <class T>
void backward_py(const Array<T>& q, const Array<T>& k, const Array<T>& v, const Array<T>& out,
                 const Array<T>& grad, const Array<T>& lse, const std::optional<py::array>& mask, bool causal,
                 double scale, const std::optional<Array<bool>>& keep, double p_drop, Array<T> dq, Array<T> dk,
                 Array<T> dv, std::optional<Array<T>> dmask) {
  PYDL_CHECK(q.ndim() == 4, "q: expected (B, H, L, D), got shape " << shape_str(q));
  PYDL_CHECK(k.ndim() == 4, "k: expected (B, H, S, D), got shape " << shape_str(k));
  PYDL_CHECK(v.ndim() == 4, "v: expected (B, H, S, Dv), got shape " << shape_str(v));
  const int64_t B = q.shape(0), H = q.shape(1), L = q.shape(2), D = q.shape(3), S = k.shape(2), Dv = v.shape(3);
  Bwd<T> a{B, H, L, S, D, Dv,
           heads<const T>(q, "q", B, H, L, D), heads<const T>(k, "k", B, H, S, D),
           heads<const T>(v, "v", B, H, S, Dv), heads<const T>(out, "out", B, H, L, Dv),
           heads<const T>(grad, "grad", B, H, L, Dv), nullptr, mask_of<T>(mask, B, H, L, S), causal,
           static_cast<T>(scale), keep_of(keep, B, H, L, S), rdrop_of<T>(p_drop),
           heads<T>(dq, "dq", B, H, L, D), heads<T>(dk, "dk", B, H, S, D), heads<T>(dv, "dv", B, H, S, Dv),
           nullptr, 0};
  PYDL_CHECK(lse.ndim() == 3 && lse.shape(0) == B && lse.shape(1) == H && lse.shape(2) == L &&
                 (lse.flags() & py::array::c_style),
             "lse: expected a C-contiguous (" << B << ", " << H << ", " << L << ") array, got " << shape_str(lse));
  PYDL_CHECK(!(causal && a.mask.any()), "is_causal: expected False when attn_mask is given");
  a.lse = lse.data();
  if (dmask) {
    PYDL_CHECK(a.mask.f, "dmask: only a float attn_mask has a gradient");
    PYDL_CHECK(dmask->ndim() == 4 && dmask->writeable(), "dmask: expected a writeable (B, H, L, S) view");
    const int64_t it = sizeof(T);
    const py::array& m = *mask;
    int64_t extent = 1;
    for (int d = 0; d < 4; ++d) {
      PYDL_CHECK(dmask->shape(d) == m.shape(d) && dmask->strides(d) == m.strides(d) && m.strides(d) >= 0,
                 "dmask: expected the strides of attn_mask's (B, H, L, S) view over a C-contiguous array");
      extent += (m.shape(d) - 1) * (m.strides(d) / it);
    }
    a.dmask = dmask->mutable_data();
    a.dm_extent = B * H * L * S == 0 ? 0 : extent;
  }
  py::gil_scoped_release nogil;
  with_level(simd_level(), [&](auto s) { backward<T, decltype(s)::value>(a); });
}

template <class T>
void bind_dtype(py::module_& m, const std::string& sfx) {
  const auto opt = [](const char* n) { return py::arg(n).noconvert().none(true); };
  m.def(("attention_sdpa_forward_" + sfx).c_str(), &forward_py<T>, py::arg("q").noconvert(),
        py::arg("k").noconvert(), py::arg("v").noconvert(), opt("mask"), py::arg("causal"), py::arg("scale"),
        opt("keep"), py::arg("p_drop"), py::arg("out").noconvert(), py::arg("lse").noconvert());
  m.def(("attention_sdpa_backward_" + sfx).c_str(), &backward_py<T>, py::arg("q").noconvert(),
        py::arg("k").noconvert(), py::arg("v").noconvert(), py::arg("out").noconvert(),
        py::arg("grad").noconvert(), py::arg("lse").noconvert(), opt("mask"), py::arg("causal"),
        py::arg("scale"), opt("keep"), py::arg("p_drop"), py::arg("dq").noconvert(), py::arg("dk").noconvert(),
        py::arg("dv").noconvert(), opt("dmask"));
}

}  // namespace

void bind_attention(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
  m.def("attention_tuning", [](int bq, int bk, int bq_bwd, int bk_bwd, int tile_gemm) {
          PYDL_CHECK(bq >= 0 && bk >= 0 && bq_bwd >= 0 && bk_bwd >= 0 && bq <= 4096 && bk <= 4096 &&
                         bq_bwd <= 4096 && bk_bwd <= 4096,
                     "attention_tuning: block sizes must be in [0, 4096] (0: default)");
          PYDL_CHECK(tile_gemm >= 0 && tile_gemm <= 2, "attention_tuning: tile_gemm must be 0, 1 or 2");
          tuning() = {bq, bk, bq_bwd, bk_bwd, tile_gemm};
        },
        py::arg("bq") = 0, py::arg("bk") = 0, py::arg("bq_bwd") = 0, py::arg("bk_bwd") = 0,
        py::arg("tile_gemm") = 0,
        "Development control: query/key block sizes of the forward and backward (0: default) and "
        "the tile product (0: default = 2, 1: gemm.hpp, 2: the kernel's own register tiles).");
}

}  // namespace pydl
